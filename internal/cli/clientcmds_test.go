package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// call is one request the fake broker expects, in order, and its answer.
type call struct {
	method, path string
	body         string // expected JSON body, compared as JSON; "" means none
	status       int
	resp         string // JSON response body
}

// fakeBroker serves the expected calls in order on a real loopback listener and reports any
// other request, and any expected call that never came.
func fakeBroker(t *testing.T, calls []call) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	next := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		if next >= len(calls) {
			t.Errorf("unexpected request %s %s %s", r.Method, r.URL.EscapedPath(), b)
			w.WriteHeader(500)
			return
		}
		c := calls[next]
		next++
		if r.Method != c.method || r.URL.EscapedPath() != c.path {
			t.Errorf("request %d: %s %s, want %s %s", next, r.Method, r.URL.EscapedPath(), c.method, c.path)
		}
		if c.body != "" {
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("request %d: Content-Type %q", next, ct)
			}
			if !sameJSON(t, string(b), c.body) {
				t.Errorf("request %d (%s %s) body:\n got %s\nwant %s", next, c.method, c.path, b, c.body)
			}
		} else if len(b) != 0 {
			t.Errorf("request %d: unexpected body %s", next, b)
		}
		if c.resp != "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(c.status)
		io.WriteString(w, c.resp)
	}))
	t.Cleanup(func() {
		srv.Close()
		if next != len(calls) {
			t.Errorf("%d of %d expected requests came", next, len(calls))
		}
	})
	return srv
}

func sameJSON(t *testing.T, got, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("invalid JSON %q: %v", got, err)
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("invalid expected JSON %q: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

// cliCase runs `herald args...` against a fake broker.
type cliCase struct {
	name  string
	args  []string // "$URL" is replaced by the fake broker's URL
	stdin string
	calls []call
	code  int
	// stdout is the exact expected output unless it is empty and jsonOut or contains is set.
	stdout   string
	jsonOut  []string // expected JSON documents printed, in order (compared as JSON)
	contains []string // substrings of stdout
	stderr   string   // substring of stderr
}

func runCases(t *testing.T, tests []cliCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeBroker(t, tt.calls)
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "$URL", srv.URL)
			}
			old := stdinReader
			stdinReader = strings.NewReader(tt.stdin)
			defer func() { stdinReader = old }()
			var stdout, stderr bytes.Buffer
			code := Main(args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			switch {
			case tt.jsonOut != nil:
				dec := json.NewDecoder(&stdout)
				for i, want := range tt.jsonOut {
					var raw json.RawMessage
					if err := dec.Decode(&raw); err != nil {
						t.Fatalf("JSON document %d: %v", i, err)
					}
					if !sameJSON(t, string(raw), want) {
						t.Errorf("JSON document %d:\n got %s\nwant %s", i, raw, want)
					}
				}
				if dec.More() {
					t.Errorf("more JSON output than expected")
				}
			case tt.contains != nil:
				for _, s := range tt.contains {
					if !strings.Contains(stdout.String(), s) {
						t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
					}
				}
			default:
				if stdout.String() != tt.stdout {
					t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), tt.stdout)
				}
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr.String())
			}
		})
	}
}

func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

const createTime = `"createTime":"2026-01-02T03:04:05Z"`

func TestTopicsCommand(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "list",
			args: []string{"topics", "list", "--server", "$URL"},
			calls: []call{{method: "GET", path: "/v1/topics", status: 200, resp: `{"topics":[
				{"name":"orders","partitions":3,"retention":{"maxAge":"168h","maxBytes":0},"messageTTL":"0s","maxMessageBytes":1048576,
				 "stats":{"messages":12,"bytes":3400,"delayed":0,"partitions":[]}},
				{"name":"audit-log","partitions":1,"messageTTL":"1h","maxMessageBytes":0}]}`}},
			stdout: lines(
				"NAME       PARTITIONS  MESSAGES  BYTES  MAX-AGE  MAX-BYTES  TTL  MAX-MSG-BYTES  AGE",
				"orders     3           12        3400   168h     -          -    1048576        -",
				"audit-log  1           -         -      -        -          1h   -              -",
			),
		},
		{
			name:    "list json",
			args:    []string{"topics", "list", "--output", "json", "--server", "$URL"},
			calls:   []call{{method: "GET", path: "/v1/topics", status: 200, resp: `{"topics":[{"name":"a","partitions":1,"messageTTL":"0s","maxMessageBytes":5,` + createTime + `}]}`}},
			jsonOut: []string{`{"topics":[{"name":"a","partitions":1,"messageTTL":"0s","maxMessageBytes":5,` + createTime + `}]}`},
		},
		{
			name:    "list json empty",
			args:    []string{"topics", "list", "--output=json", "--server=$URL"},
			calls:   []call{{method: "GET", path: "/v1/topics", status: 200, resp: `{"topics":[]}`}},
			jsonOut: []string{`{"topics":[]}`},
		},
		{
			name:   "list empty",
			args:   []string{"topics", "list", "--server", "$URL"},
			calls:  []call{{method: "GET", path: "/v1/topics", status: 200, resp: `{"topics":[]}`}},
			stdout: "No topics.\n",
		},
		{
			name: "get",
			args: []string{"topics", "get", "orders", "--server", "$URL"},
			calls: []call{{method: "GET", path: "/v1/topics/orders", status: 200, resp: `{"name":"orders","partitions":2,
				"retention":{"maxAge":"0s","maxBytes":1000},"messageTTL":"30m","maxMessageBytes":1024,` + createTime + `,
				"stats":{"messages":7,"bytes":700,"delayed":2,"partitions":[{"partition":0,"startOffset":0,"endOffset":4,"bytes":400},
				{"partition":1,"startOffset":10,"endOffset":13,"bytes":300}]}}`}},
			stdout: lines(
				"Name:                 orders",
				"Partitions:           2",
				"Retention max age:    -",
				"Retention max bytes:  1000",
				"Message TTL:          30m",
				"Max message bytes:    1024",
				"Created:              2026-01-02T03:04:05Z",
				"Messages:             7",
				"Bytes:                700",
				"Delayed:              2",
				"",
				"PARTITION  START-OFFSET  END-OFFSET  BYTES",
				"0          0             4           400",
				"1          10            13          300",
			),
		},
		{
			name:   "get not found",
			args:   []string{"topics", "get", "nope", "--server", "$URL"},
			calls:  []call{{method: "GET", path: "/v1/topics/nope", status: 404, resp: `{"error":{"code":"NotFound","message":"topic \"nope\" not found"}}`}},
			code:   1,
			stderr: `herald topics: NotFound: topic "nope" not found`,
		},
		{
			name: "create with every flag, flags around the name",
			args: []string{"topics", "create", "--server", "$URL", "orders", "--partitions", "3", "--retention-max-age", "168h",
				"--retention-max-bytes", "1000000", "--message-ttl=1h", "--max-message-bytes", "2048"},
			calls: []call{{method: "PUT", path: "/v1/topics/orders",
				body:   `{"partitions":3,"retention":{"maxAge":"168h","maxBytes":1000000},"messageTTL":"1h","maxMessageBytes":2048}`,
				status: 201, resp: `{"name":"orders","partitions":3}`}},
			stdout: "Topic \"orders\" created.\n",
		},
		{
			name: "create defaults, existing",
			args: []string{"topics", "create", "orders", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/topics/orders", body: `{"partitions":1,"messageTTL":"0s","maxMessageBytes":0}`,
				status: 200, resp: `{"name":"orders","partitions":1}`}},
			stdout: "Topic \"orders\" configured.\n",
		},
		{
			name: "create json",
			args: []string{"topics", "create", "orders", "--partitions", "2", "--output", "json", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/topics/orders", body: `{"partitions":2,"messageTTL":"0s","maxMessageBytes":0}`,
				status: 201, resp: `{"name":"orders","partitions":2,"messageTTL":"0s","maxMessageBytes":1048576,` + createTime + `}`}},
			jsonOut: []string{`{"name":"orders","partitions":2,"messageTTL":"0s","maxMessageBytes":1048576,` + createTime + `}`},
		},
		{
			name: "create shrink refused",
			args: []string{"topics", "create", "orders", "--partitions", "1", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/topics/orders", body: `{"partitions":1,"messageTTL":"0s","maxMessageBytes":0}`,
				status: 409, resp: `{"error":{"code":"FailedPrecondition","message":"partitions can only grow","field":"partitions"}}`}},
			code:   1,
			stderr: "FailedPrecondition: partitions can only grow (field partitions)",
		},
		{
			name:   "delete",
			args:   []string{"topics", "delete", "orders", "--server", "$URL"},
			calls:  []call{{method: "DELETE", path: "/v1/topics/orders", status: 204}},
			stdout: "Topic \"orders\" deleted.\n",
		},
		{
			name:  "delete json prints nothing",
			args:  []string{"topics", "delete", "orders", "--output", "json", "--server", "$URL"},
			calls: []call{{method: "DELETE", path: "/v1/topics/orders", status: 204}},
		},
		{name: "create zero partitions", args: []string{"topics", "create", "x", "--partitions", "0", "--server", "$URL"}, code: 2, stderr: "--partitions must be at least 1"},
		{name: "create bad duration", args: []string{"topics", "create", "x", "--message-ttl", "5", "--server", "$URL"}, code: 2, stderr: "invalid value"},
		{name: "create negative duration", args: []string{"topics", "create", "x", "--retention-max-age", "-1h", "--server", "$URL"}, code: 2, stderr: "must not be negative"},
		{name: "get without name", args: []string{"topics", "get", "--server", "$URL"}, code: 2, stderr: "missing NAME"},
		{name: "delete two names", args: []string{"topics", "delete", "a", "b", "--server", "$URL"}, code: 2, stderr: `unexpected argument "b"`},
		{name: "unknown flag", args: []string{"topics", "list", "--bogus", "--server", "$URL"}, code: 2, stderr: "flag provided but not defined: -bogus"},
		{name: "bad output", args: []string{"topics", "list", "--output", "yaml", "--server", "$URL"}, code: 2, stderr: "--output must be text or json"},
		{name: "bad server URL", args: []string{"topics", "list", "--server", "ftp://x"}, code: 2, stderr: "scheme must be http or https"},
		{name: "no verb", args: []string{"topics"}, code: 2, stderr: "missing subcommand: list|get|create|delete"},
		{name: "unknown verb", args: []string{"topics", "frob"}, code: 2, stderr: `unknown subcommand "frob"`},
		{name: "group help", args: []string{"topics", "--help"}, code: 0, stderr: "Usage: herald topics <list|get|create|delete>"},
		{name: "verb help", args: []string{"topics", "create", "-h"}, code: 0, stderr: "-retention-max-age duration"},
	})
}

func TestSubsCommand(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "list",
			args: []string{"subs", "list", "--server", "$URL"},
			calls: []call{{method: "GET", path: "/v1/subscriptions", status: 200, resp: `{"subscriptions":[
				{"name":"orders-pull","topic":"orders","stats":{"backlog":5,"inFlight":2,"delivered":9,"acked":7,"failed":0,"deadLettered":1}},
				{"name":"orders-hook","topic":"orders","push":{"endpoint":"http://hook.local/x"}}]}`}},
			stdout: lines(
				"NAME         TOPIC   MODE  ENDPOINT             BACKLOG  IN-FLIGHT  DELIVERED  DEAD-LETTERED  AGE",
				"orders-pull  orders  pull  -                    5        2          9          1              -",
				"orders-hook  orders  push  http://hook.local/x  -        -          -          -              -",
			),
		},
		{
			name:    "list json",
			args:    []string{"subs", "list", "--output", "json", "--server", "$URL"},
			calls:   []call{{method: "GET", path: "/v1/subscriptions", status: 200, resp: `{"subscriptions":[{"name":"s","topic":"t",` + createTime + `}]}`}},
			jsonOut: []string{`{"subscriptions":[{"name":"s","topic":"t",` + createTime + `}]}`},
		},
		{
			name: "get push",
			args: []string{"subs", "get", "hook", "--server", "$URL"},
			calls: []call{{method: "GET", path: "/v1/subscriptions/hook", status: 200, resp: `{"name":"hook","topic":"orders",
				"push":{"endpoint":"http://h/x","format":"json","timeout":"10s","maxInFlight":16,"headers":{"b":"2","a":"1"},"signingSecrets":["whsec_x","whsec_y"]},
				"retry":{"policy":"exponential","minBackoff":"1s","maxBackoff":"10m","maxAttempts":10,"maxAge":"24h"},
				"deadLetterTopic":"orders-dlq","ackDeadline":"30s","filter":"tag == 'eu'","ordered":true,"startAt":"earliest",` + createTime + `,
				"stats":{"backlog":1,"inFlight":0,"delivered":4,"acked":3,"failed":1,"deadLettered":0,"expired":0,"lastError":"503 from endpoint"}}`}},
			stdout: lines(
				"Name:                hook",
				"Topic:               orders",
				"Mode:                push",
				"Push endpoint:       http://h/x",
				"Push format:         json",
				"Push timeout:        10s",
				"Push max in flight:  16",
				"Push headers:        a=1,b=2",
				"Signing secrets:     2",
				"Retry policy:        exponential",
				"Retry backoff:       1s .. 10m",
				"Max attempts:        10",
				"Retry max age:       24h",
				"Dead-letter topic:   orders-dlq",
				"Ack deadline:        30s",
				"Filter:              tag == 'eu'",
				"Ordered:             true",
				"Start at:            earliest",
				"Created:             2026-01-02T03:04:05Z",
				"Backlog:             1",
				"In flight:           0",
				"Delivered:           4",
				"Acked:               3",
				"Failed:              1",
				"Dead-lettered:       0",
				"Expired:             0",
				"Last error:          503 from endpoint",
			),
		},
		{
			name: "create pull",
			args: []string{"subs", "create", "orders-pull", "--topic", "orders", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/subscriptions/orders-pull", body: `{"topic":"orders"}`,
				status: 201, resp: `{"name":"orders-pull","topic":"orders"}`}},
			stdout: "Subscription \"orders-pull\" created.\n",
		},
		{
			name: "create push with every flag",
			args: []string{"subs", "create", "hook", "--server", "$URL", "--topic", "orders", "--push-endpoint", "http://h/x",
				"--push-format", "cloudevents-structured", "--push-timeout", "5s", "--push-max-in-flight", "8",
				"--push-header", "X-A=1", "--push-header", "X-B=two=2", "--signing-secret", "whsec_1", "--signing-secret", "whsec_2",
				"--ack-deadline", "45s", "--filter", "tag == 'eu' && attributes.priority == 'high'", "--dead-letter-topic", "dlq",
				"--retry-policy", "linear", "--min-backoff", "2s", "--max-backoff", "1m", "--max-attempts", "5", "--retry-max-age", "2h",
				"--ordered", "--start-at", "2026-01-02T03:04:05Z"},
			calls: []call{{method: "PUT", path: "/v1/subscriptions/hook", body: `{"topic":"orders",
				"push":{"endpoint":"http://h/x","format":"cloudevents-structured","timeout":"5s","maxInFlight":8,
				"headers":{"X-A":"1","X-B":"two=2"},"signingSecrets":["whsec_1","whsec_2"]},
				"retry":{"policy":"linear","minBackoff":"2s","maxBackoff":"1m","maxAttempts":5,"maxAge":"2h"},
				"deadLetterTopic":"dlq","ackDeadline":"45s","filter":"tag == 'eu' && attributes.priority == 'high'",
				"ordered":true,"startAt":"2026-01-02T03:04:05Z"}`,
				status: 200, resp: `{"name":"hook","topic":"orders"}`}},
			stdout: "Subscription \"hook\" configured.\n",
		},
		{
			name: "create max-attempts only",
			args: []string{"subs", "create", "s", "--topic", "t", "--max-attempts", "3", "--start-at", "latest", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/subscriptions/s", body: `{"topic":"t","retry":{"maxAttempts":3},"startAt":"latest"}`,
				status: 201, resp: `{"name":"s","topic":"t"}`}},
			stdout: "Subscription \"s\" created.\n",
		},
		{
			name: "create invalid filter",
			args: []string{"subs", "create", "s", "--topic", "t", "--filter", "tag ==", "--server", "$URL"},
			calls: []call{{method: "PUT", path: "/v1/subscriptions/s", body: `{"topic":"t","filter":"tag =="}`,
				status: 400, resp: `{"error":{"code":"InvalidArgument","message":"Syntax error","field":"filter"}}`}},
			code:   1,
			stderr: "InvalidArgument: Syntax error (field filter)",
		},
		{
			name:   "delete",
			args:   []string{"subs", "delete", "s", "--server", "$URL"},
			calls:  []call{{method: "DELETE", path: "/v1/subscriptions/s", status: 204}},
			stdout: "Subscription \"s\" deleted.\n",
		},
		{
			name:   "delete absent",
			args:   []string{"subs", "delete", "s", "--server", "$URL"},
			calls:  []call{{method: "DELETE", path: "/v1/subscriptions/s", status: 404, resp: `{"error":{"code":"NotFound","message":"no such subscription"}}`}},
			code:   1,
			stderr: "NotFound: no such subscription",
		},
		{name: "create without topic", args: []string{"subs", "create", "s", "--server", "$URL"}, code: 2, stderr: "--topic is required"},
		{name: "push flag without endpoint", args: []string{"subs", "create", "s", "--topic", "t", "--push-format", "json", "--server", "$URL"}, code: 2, stderr: "--push-format needs --push-endpoint"},
		{name: "bad push format", args: []string{"subs", "create", "s", "--topic", "t", "--push-endpoint", "http://h", "--push-format", "xml", "--server", "$URL"}, code: 2, stderr: "--push-format must be one of"},
		{name: "bad retry policy", args: []string{"subs", "create", "s", "--topic", "t", "--retry-policy", "random", "--server", "$URL"}, code: 2, stderr: "--retry-policy must be one of"},
		{name: "bad start-at", args: []string{"subs", "create", "s", "--topic", "t", "--start-at", "yesterday", "--server", "$URL"}, code: 2, stderr: "--start-at must be"},
		{name: "bad header", args: []string{"subs", "create", "s", "--topic", "t", "--push-endpoint", "http://h", "--push-header", "novalue", "--server", "$URL"}, code: 2, stderr: "want key=value"},
		{name: "negative attempts", args: []string{"subs", "create", "s", "--topic", "t", "--max-attempts", "-1", "--server", "$URL"}, code: 2, stderr: "must not be negative"},
	})
}

func TestPublishCommand(t *testing.T) {
	runCases(t, []cliCase{
		{
			name: "arguments with flags",
			args: []string{"publish", "orders", "hello", "--key", "k1", "--tag", "eu", "--ordering-key", "o1",
				"--attr", "priority=high", "--attr", "source=cli", "héllo wörld", "--server", "$URL"},
			calls: []call{{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[
				{"text":"hello","key":"k1","tag":"eu","orderingKey":"o1","attributes":{"priority":"high","source":"cli"}},
				{"text":"héllo wörld","key":"k1","tag":"eu","orderingKey":"o1","attributes":{"priority":"high","source":"cli"}}]}`,
				status: 200, resp: `{"results":[{"id":"m-1","partition":2,"offset":40},{"id":"m-2","partition":2,"offset":41}]}`}},
			stdout: lines(
				"ID   PARTITION  OFFSET",
				"m-1  2          40",
				"m-2  2          41",
			),
		},
		{
			name:  "stdin lines in batches",
			args:  []string{"publish", "orders", "--batch", "2", "--server", "$URL"},
			stdin: "one\r\ntwo\n\nthree\n",
			calls: []call{
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"one"},{"text":"two"}]}`,
					status: 200, resp: `{"results":[{"id":"a","partition":0,"offset":0},{"id":"b","partition":1,"offset":0}]}`},
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"three"}]}`,
					status: 200, resp: `{"results":[{"id":"c","partition":0,"offset":1}]}`},
			},
			stdout: lines(
				"ID  PARTITION  OFFSET",
				"a   0          0",
				"b   1          0",
				"c   0          1",
			),
		},
		{
			name:  "stdin json prints each response",
			args:  []string{"publish", "orders", "--batch", "1", "--output", "json", "--server", "$URL"},
			stdin: "one\ntwo", // no final newline
			calls: []call{
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"one"}]}`,
					status: 200, resp: `{"results":[{"id":"a","partition":0,"offset":0}]}`},
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"two"}]}`,
					status: 200, resp: `{"results":[{"id":"b","partition":0,"offset":1}]}`},
			},
			jsonOut: []string{`{"results":[{"id":"a","partition":0,"offset":0}]}`, `{"results":[{"id":"b","partition":0,"offset":1}]}`},
		},
		{
			name:  "binary stdin line goes as data",
			args:  []string{"publish", "bin", "--server", "$URL"},
			stdin: "\xff\xfe\x00\n",
			calls: []call{{method: "POST", path: "/v1/topics/bin/messages", body: `{"messages":[{"data":"//4A"}]}`,
				status: 200, resp: `{"results":[{"id":"a","partition":0,"offset":0}]}`}},
			contains: []string{"a   0          0"},
		},
		{
			name: "delayed",
			args: []string{"publish", "orders", "--delay", "90s", "later", "--server", "$URL"},
			calls: []call{{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"later","delay":"1m30s"}]}`,
				status: 200, resp: `{"results":[{"id":"a","partition":1,"offset":-1,"deliverAt":"2026-01-02T03:05:35Z"}]}`}},
			stdout: lines(
				"ID  PARTITION  OFFSET  DELIVER-AT",
				"a   1          -       2026-01-02T03:05:35Z",
			),
		},
		{
			name: "deliver-at, dash-dash before a message starting with a dash",
			args: []string{"publish", "--deliver-at", "2030-01-01T00:00:00Z", "--server", "$URL", "orders", "--", "-5 degrees"},
			calls: []call{{method: "POST", path: "/v1/topics/orders/messages",
				body:   `{"messages":[{"text":"-5 degrees","deliverAt":"2030-01-01T00:00:00Z"}]}`,
				status: 200, resp: `{"results":[{"id":"a","partition":0,"offset":-1,"deliverAt":"2030-01-01T00:00:00Z"}]}`}},
			contains: []string{"a   0          -       2030-01-01T00:00:00Z"},
		},
		{
			name: "too large",
			args: []string{"publish", "orders", "big", "--server", "$URL"},
			calls: []call{{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"big"}]}`,
				status: 413, resp: `{"error":{"code":"TooLarge","message":"message over 2 bytes","field":"messages[0].data"}}`}},
			code:   1,
			stderr: "herald publish: TooLarge: message over 2 bytes (field messages[0].data)",
		},
		{
			name:  "error after a first batch",
			args:  []string{"publish", "orders", "--batch", "1", "--server", "$URL"},
			stdin: "a\nb\n",
			calls: []call{
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"a"}]}`,
					status: 200, resp: `{"results":[{"id":"a","partition":0,"offset":0}]}`},
				{method: "POST", path: "/v1/topics/orders/messages", body: `{"messages":[{"text":"b"}]}`,
					status: 404, resp: `{"error":{"code":"NotFound","message":"topic deleted"}}`},
			},
			code:     1,
			contains: []string{"a   0          0"},
			stderr:   "after 1 messages published: NotFound: topic deleted",
		},
		{name: "no topic", args: []string{"publish", "--server", "$URL"}, code: 2, stderr: "missing TOPIC"},
		{name: "empty stdin", args: []string{"publish", "orders", "--server", "$URL"}, stdin: "\n\n", code: 2, stderr: "no messages"},
		{name: "delay and deliver-at", args: []string{"publish", "t", "x", "--delay", "1s", "--deliver-at", "2030-01-01T00:00:00Z", "--server", "$URL"}, code: 2, stderr: "not both"},
		{name: "bad deliver-at", args: []string{"publish", "t", "x", "--deliver-at", "tomorrow", "--server", "$URL"}, code: 2, stderr: "--deliver-at must be"},
		{name: "bad attr", args: []string{"publish", "t", "x", "--attr", "=v", "--server", "$URL"}, code: 2, stderr: "want key=value"},
		{name: "bad batch", args: []string{"publish", "t", "x", "--batch", "0", "--server", "$URL"}, code: 2, stderr: "--batch must be at least 1"},
	})
}

func TestPullCommand(t *testing.T) {
	const twoMessages = `{"messages":[
		{"id":"m1","receiptHandle":"rh-1","partition":0,"offset":5,"data":"aGVsbG8=","attributes":{"b":"2","a":"1"},"key":"k","tag":"eu",
		 "publishTime":"2026-01-02T03:04:05Z","deliveryAttempt":1},
		{"id":"m2","receiptHandle":"rh-2","partition":1,"offset":9,"data":"/wA=","publishTime":"2026-01-02T03:04:06Z","deliveryAttempt":3}]}`
	runCases(t, []cliCase{
		{
			name: "pull",
			args: []string{"pull", "orders-pull", "--max", "2", "--wait", "1s", "--visibility", "30s", "--server", "$URL"},
			calls: []call{{method: "POST", path: "/v1/subscriptions/orders-pull/pull", body: `{"max":2,"wait":"1s","visibility":"30s"}`,
				status: 200, resp: twoMessages}},
			stdout: lines(
				"ID  PARTITION  OFFSET  ATTEMPT  KEY  TAG  ATTRIBUTES  PUBLISHED             RECEIPT-HANDLE  DATA",
				"m1  0          5       1        k    eu   a=1,b=2     2026-01-02T03:04:05Z  rh-1            hello",
				"m2  1          9       3        -    -    -           2026-01-02T03:04:06Z  rh-2            base64:/wA=",
			),
		},
		{
			name: "pull and ack",
			args: []string{"pull", "s", "--max", "2", "--ack", "--server", "$URL"},
			calls: []call{
				{method: "POST", path: "/v1/subscriptions/s/pull", body: `{"max":2}`, status: 200, resp: twoMessages},
				{method: "POST", path: "/v1/subscriptions/s/ack", body: `{"receiptHandles":["rh-1","rh-2"]}`, status: 200, resp: `{"acked":2,"invalid":[]}`},
			},
			contains: []string{"rh-1", "base64:/wA=", "Acked 2 of 2 messages.\n"},
		},
		{
			name: "ack with expired handles",
			args: []string{"pull", "s", "--max", "2", "--ack", "--server", "$URL"},
			calls: []call{
				{method: "POST", path: "/v1/subscriptions/s/pull", body: `{"max":2}`, status: 200, resp: twoMessages},
				{method: "POST", path: "/v1/subscriptions/s/ack", body: `{"receiptHandles":["rh-1","rh-2"]}`, status: 200, resp: `{"acked":1,"invalid":["rh-2"]}`},
			},
			code:     1,
			contains: []string{"Acked 1 of 2 messages."},
			stderr:   "1 receipt handles were expired or unknown",
		},
		{
			name: "pull json and ack",
			args: []string{"pull", "s", "--ack", "--output", "json", "--server", "$URL"},
			calls: []call{
				{method: "POST", path: "/v1/subscriptions/s/pull", body: `{"max":1}`, status: 200,
					resp: `{"messages":[{"id":"m1","receiptHandle":"rh-1","partition":0,"offset":0,"data":"eA==","publishTime":"2026-01-02T03:04:05Z","deliveryAttempt":1}]}`},
				{method: "POST", path: "/v1/subscriptions/s/ack", body: `{"receiptHandles":["rh-1"]}`, status: 200, resp: `{"acked":1,"invalid":[]}`},
			},
			jsonOut: []string{`{"messages":[{"id":"m1","receiptHandle":"rh-1","partition":0,"offset":0,"data":"eA==","attributes":null,"key":"","tag":"","publishTime":"2026-01-02T03:04:05Z","deliveryAttempt":1}]}`},
		},
		{
			name:   "none, no ack sent",
			args:   []string{"pull", "s", "--ack", "--server", "$URL"},
			calls:  []call{{method: "POST", path: "/v1/subscriptions/s/pull", body: `{"max":1}`, status: 200, resp: `{"messages":[]}`}},
			stdout: "No messages.\n",
		},
		{
			name:    "none json",
			args:    []string{"pull", "s", "--output", "json", "--server", "$URL"},
			calls:   []call{{method: "POST", path: "/v1/subscriptions/s/pull", body: `{"max":1}`, status: 200, resp: `{"messages":[]}`}},
			jsonOut: []string{`{"messages":[]}`},
		},
		{
			name: "peek",
			args: []string{"pull", "s", "--peek", "--max", "5", "--server", "$URL"},
			calls: []call{{method: "POST", path: "/v1/subscriptions/s/peek", body: `{"max":5}`, status: 200,
				resp: `{"messages":[{"id":"m1","partition":0,"offset":0,"data":"bGluZSAxCmxpbmUgMg==","publishTime":"2026-01-02T03:04:05Z","deliveryAttempt":0}]}`}},
			stdout: lines(
				"ID  PARTITION  OFFSET  ATTEMPT  KEY  TAG  ATTRIBUTES  PUBLISHED             DATA",
				`m1  0          0       0        -    -    -           2026-01-02T03:04:05Z  "line 1\nline 2"`,
			),
		},
		{
			name:   "unknown subscription",
			args:   []string{"pull", "nope", "--server", "$URL"},
			calls:  []call{{method: "POST", path: "/v1/subscriptions/nope/pull", body: `{"max":1}`, status: 404, resp: `{"error":{"code":"NotFound","message":"subscription \"nope\" not found"}}`}},
			code:   1,
			stderr: `NotFound: subscription "nope" not found`,
		},
		{name: "peek and ack", args: []string{"pull", "s", "--peek", "--ack", "--server", "$URL"}, code: 2, stderr: "--peek takes no"},
		{name: "max zero", args: []string{"pull", "s", "--max", "0", "--server", "$URL"}, code: 2, stderr: "--max must be between 1 and 1000"},
		{name: "no subscription", args: []string{"pull", "--server", "$URL"}, code: 2, stderr: "missing SUBSCRIPTION"},
		{name: "bad wait", args: []string{"pull", "s", "--wait", "soon", "--server", "$URL"}, code: 2, stderr: "invalid value"},
	})
}

func TestServerFromEnv(t *testing.T) {
	srv := fakeBroker(t, []call{{method: "GET", path: "/v1/topics", status: 200, resp: `{"topics":[]}`}})
	t.Setenv(serverEnv, srv.URL)
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"topics", "list"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if stdout.String() != "No topics.\n" {
		t.Errorf("stdout %q", stdout.String())
	}
}

func TestDefaultServer(t *testing.T) {
	t.Setenv(serverEnv, "")
	var cf clientFlags
	fs := newCmdFlagSet("x", "", "", io.Discard)
	cf.add(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cf.server != "http://127.0.0.1:8080" {
		t.Errorf("default server %q", cf.server)
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	for _, args := range [][]string{
		{"topics", "list", "--server", url},
		{"subs", "get", "s", "--server", url},
		{"publish", "t", "m", "--server", url},
		{"pull", "s", "--server", url},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(args, &stdout, &stderr); code != 1 {
			t.Errorf("%v: exit %d, want 1 (%s)", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "connection refused") {
			t.Errorf("%v: stderr %q", args, stderr.String())
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		partStr string
	}{
		{[]string{"a", "--p", "x", "b"}, []string{"a", "b"}, "x"},
		{[]string{"--p=x", "a"}, []string{"a"}, "x"},
		{[]string{"a", "--", "--p", "y"}, []string{"a", "--p", "y"}, ""},
		{[]string{"-", "a"}, []string{"-", "a"}, ""},
		{nil, nil, ""},
	}
	for _, tt := range tests {
		fs := newCmdFlagSet("x", "", "", io.Discard)
		p := fs.String("p", "", "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if !reflect.DeepEqual(pos, tt.pos) || *p != tt.partStr {
			t.Errorf("%q: pos %q p %q, want %q %q", tt.args, pos, *p, tt.pos, tt.partStr)
		}
	}
}

func TestDataCell(t *testing.T) {
	for in, want := range map[string]string{
		"hello":         "hello",
		"héllo":         "héllo",
		"":              `""`,
		"a\tb":          `"a\tb"`,
		"\xff":          "base64:/w==",
		"base64:abc":    `"base64:abc"`,
		`"quoted"`:      `"\"quoted\""`,
		"two words ok!": "two words ok!",
	} {
		if got := dataCell([]byte(in)); got != want {
			t.Errorf("dataCell(%q) = %s, want %s", in, got, want)
		}
	}
}
