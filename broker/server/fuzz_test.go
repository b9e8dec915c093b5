package server_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// The fuzz targets send arbitrary bodies, content types and path names to server.New over a live
// memory broker and check the API's promise: no input makes a handler panic or answer 5xx, and
// every non-2xx answer is the JSON error body. `make fuzz` (hack/fuzz.sh) runs each for FUZZTIME;
// plain `go test` runs their seeds. They call the handler in-process (real *http.Request, no
// socket): a loopback round trip per input made the fuzzer's minimizing of each new input take
// tens of seconds, and a panic now shows its stack at once. The other tests use a real listener.

// checkFuzzResponse fails on a transport error (a panic that killed the connection), a 5xx, a
// non-2xx without the JSON error shape, or a 2xx whose body is not JSON.
func checkFuzzResponse(t *testing.T, r response, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("request failed: %v", err)
	}
	if r.status >= 500 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if r.status < 200 || r.status >= 300 {
		checkErrorShape(t, r)
		return
	}
	if r.status != 204 && !json.Valid(r.body) {
		t.Fatalf("status %d with a body that is not JSON: %q", r.status, r.body)
	}
}

// headerValue drops what no HTTP client can send in a header value (control characters), so
// that every input reaches the server.
func headerValue(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

func contentTypeHeader(ct string) []string {
	if ct = strings.TrimSpace(headerValue(ct)); ct == "" {
		return nil
	}
	return []string{"Content-Type", ct}
}

// fuzzEnv gives a fuzz input an env whose failures go to its own t.
func fuzzEnv(e *env, t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func FuzzPublish(f *testing.F) {
	e := newInProcessEnv(f, engine.Config{Memory: true})
	topicSpec := `{"partitions":3,"maxMessageBytes":64}` // small: the seeds stay small, so minimizing is quick
	e.putTopic("fuzz", topicSpec)

	for _, s := range []struct{ ct, topic, body string }{
		{"application/json", "fuzz", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "fuzz", `{"messages":[{"data":"aGk=","key":"k"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","tag":"t","orderingKey":"o"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","attributes":{"a":"1"}}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":"30s"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","deliverAt":"2030-01-02T15:04:05Z"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a"},{"text":"b"}]}`},
		{"application/json; charset=utf-8", "fuzz", `{"messages":[{"text":""}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":"0s"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"b","deliverAt":"2000-01-01T00:00:00Z"}]}`},
		{"text/plain", "fuzz", "hello"},
		{"application/octet-stream", "fuzz", "\x00\x01\xff"},
		{"", "fuzz", ""},
		{"application/cloudevents+json", "fuzz", `{"specversion":"1.0"}`},
		{"application/json;", "fuzz", `{"messages":[{"text":"hi"}]}`},
		{"APPLICATION/JSON", "fuzz", `{"MESSAGES":[{"Text":"hi"}]}`},
		{"application/json", "nope", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "bad name", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "..", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "a/b", `{"messages":[{"text":"hi"}]}`},
		{"application/json", "fuzz", `{"messages":[]}`},
		{"application/json", "fuzz", `{"messages":null}`},
		{"application/json", "fuzz", `{}`},
		{"application/json", "fuzz", `{`},
		{"application/json", "fuzz", `[]`},
		{"application/json", "fuzz", `null`},
		{"application/json", "fuzz", `{"messages":[{"text":"a"}]} {}`},
		{"application/json", "fuzz", `{"messages":[{"text":5}]}`},
		{"application/json", "fuzz", `{"messages":[{"data":"not base64"}]}`},
		{"application/json", "fuzz", `{"messages":[{"data":"aGk=","text":"hi"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":30}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":null}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":"-1s"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","delay":"9999999h"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","deliverAt":"tomorrow"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","deliverAt":"9999-12-31T23:59:59Z"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","attributes":{"a":1}}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","attributes":{"":"v"}}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","attributes":{"\u0000deliverAt":"1"}}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","key":"\u0001"}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"a","unknown":1}]}`},
		{"application/json", "fuzz", `{"messages":[{"text":"` + strings.Repeat("x", 65) + `"}]}`},
		{"application/json", "fuzz", `{"messages":[[[[[[[[[[]]]]]]]]]]}`},
	} {
		f.Add(s.ct, s.topic, []byte(s.body))
	}

	published := 0
	f.Fuzz(func(t *testing.T, contentType, topic string, body []byte) {
		e := fuzzEnv(e, t)
		header := contentTypeHeader(contentType)
		r, err := e.tryDo("POST", "/v1/topics/"+url.PathEscape(topic)+"/messages", body, header...)
		checkFuzzResponse(t, r, err)
		if r.status != 200 {
			return
		}
		res := decode[api.PublishResponse](t, r).Results
		want := 1
		if len(header) > 0 && isJSONContentType(header[1]) {
			var req api.PublishRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("published a JSON body encoding/json cannot read: %v", err)
			}
			want = len(req.Messages)
		}
		if len(res) != want {
			t.Fatalf("%d results for %d messages", len(res), want)
		}
		// Keep the in-memory topic small over a long run.
		if published += len(res); published > 5000 {
			published = 0
			e.do("DELETE", "/v1/topics/fuzz", nil).want(t, 204)
			e.json("PUT", "/v1/topics/fuzz", topicSpec).want(t, 201)
		}
	})
}

// isJSONContentType mirrors what the server takes for a JSON publish: application/json, with or
// without parameters, in any case.
func isJSONContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

var leaseOps = []string{"pull", "ack", "nack", "visibility", "peek"}

// FuzzSubscriptionHandlers fuzzes pull, ack, nack, visibility and peek (op picks one). Before
// each input, two fresh messages are published (so a pull never has to long-poll) and one is
// pulled: "$HANDLE" in the body becomes its live receipt handle, so inputs reach the code past
// handle validation too.
func FuzzSubscriptionHandlers(f *testing.F) {
	e := newInProcessEnv(f, engine.Config{Memory: true})
	setup := func(e *env) {
		e.putTopic("fuzz", `{"partitions":2}`)
		e.putTopic("fuzz-dlq", nil)
		e.putSub("plain", msg{"topic": "fuzz", "ackDeadline": "1s"})
		e.putSub("ordered", msg{"topic": "fuzz", "ordered": true, "deadLetterTopic": "fuzz-dlq",
			"retry": msg{"maxAttempts": 2, "minBackoff": "1s", "maxBackoff": "2s"}, "filter": "!has(attributes.skip)"})
	}
	setup(e)

	for _, s := range []struct {
		op        uint8
		sub, body string
	}{
		{0, "plain", `{"max":10,"wait":"1s","visibility":"30s"}`},
		{0, "ordered", `{"max":1000}`},
		{0, "plain", ``},
		{0, "plain", `{}`},
		{0, "plain", `{"max":0,"visibility":"1ns"}`},
		{0, "plain", `{"max":-1}`},
		{0, "plain", `{"max":"10"}`},
		{0, "plain", `{"wait":20}`},
		{0, "plain", `{"wait":"31s"}`},
		{0, "plain", `{"visibility":"-1s"}`},
		{0, "plain", `{"visibility":null}`},
		{0, "nope", `{}`},
		{0, "..", `{}`},
		{0, "bad name", `{}`},
		{1, "plain", `{"receiptHandles":["$HANDLE"]}`},
		{1, "ordered", `{"receiptHandles":["$HANDLE","$HANDLE","garbage",""]}`},
		{1, "plain", `{"receiptHandles":[]}`},
		{1, "plain", `{"receiptHandles":"$HANDLE"}`},
		{1, "plain", `{"receiptHandles":["$HANDLE"],"delay":"1s"}`},
		{1, "plain", `{"receiptHandles":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}`},
		{1, "plain", `{"receiptHandles":["_____________________w"]}`},
		{1, "nope", `{"receiptHandles":["$HANDLE"]}`},
		{2, "plain", `{"receiptHandles":["$HANDLE"],"delay":"5s"}`},
		{2, "ordered", `{"receiptHandles":["$HANDLE"]}`},
		{2, "plain", `{"receiptHandles":["$HANDLE"],"delay":"13h"}`},
		{2, "plain", `{"receiptHandles":["$HANDLE"],"delay":5}`},
		{2, "plain", `{"delay":"1s"}`},
		{3, "plain", `{"receiptHandle":"$HANDLE","visibility":"60s"}`},
		{3, "ordered", `{"receiptHandle":"$HANDLE","visibility":"0s"}`},
		{3, "plain", `{"receiptHandle":"$HANDLE"}`},
		{3, "plain", `{"receiptHandle":"$HANDLE","visibility":"13h"}`},
		{3, "plain", `{"receiptHandle":"garbage","visibility":"1m"}`},
		{3, "plain", `{"receiptHandle":["$HANDLE"],"visibility":"1m"}`},
		{3, "plain", `{"visibility":"1m"}`},
		{4, "plain", `{"max":10}`},
		{4, "ordered", `{"max":1000}`},
		{4, "plain", ``},
		{4, "plain", `{"max":1001}`},
		{4, "plain", `{"max":1,"wait":"1s"}`},
	} {
		f.Add(s.op, s.sub, "application/json", []byte(s.body))
	}
	f.Add(uint8(0), "plain", "text/plain", []byte(`{"max":2}`))
	f.Add(uint8(1), "plain", "", []byte(`{"receiptHandles":["$HANDLE"]}`))

	iterations := 0
	f.Fuzz(func(t *testing.T, op uint8, sub, contentType string, body []byte) {
		e := fuzzEnv(e, t)
		if iterations++; iterations%2000 == 0 {
			// Start over now and then, so that a long run does not pile up messages and leases.
			for _, p := range []string{"/v1/subscriptions/plain", "/v1/subscriptions/ordered", "/v1/topics/fuzz", "/v1/topics/fuzz-dlq"} {
				e.do("DELETE", p, nil).want(t, 204)
			}
			setup(e)
		}
		e.publish("fuzz", msg{"text": "one"}, msg{"text": "two", "attributes": msg{"k": "v"}})
		target := "plain"
		if sub == "ordered" {
			target = sub
		}
		handle := "no-handle"
		if ms := e.pull(target, msg{"max": 1, "visibility": "30s"}); len(ms) == 1 {
			handle = ms[0].ReceiptHandle
		}
		body = bytes.ReplaceAll(body, []byte("$HANDLE"), []byte(handle))
		path := "/v1/subscriptions/" + url.PathEscape(sub) + "/" + leaseOps[int(op)%len(leaseOps)]
		r, err := e.tryDo("POST", path, body, contentTypeHeader(contentType)...)
		checkFuzzResponse(t, r, err)
	})
}

// FuzzAdmin fuzzes PUT /v1/topics/{name} (op even) and PUT /v1/subscriptions/{name} (op odd):
// above all the subscription's CEL filter, which is compiled from user input and then evaluated
// (a publish and a peek follow every subscription created). What was created is deleted again.
func FuzzAdmin(f *testing.F) {
	e := newInProcessEnv(f, engine.Config{Memory: true})
	const fuzzTopic = `{"partitions":2}`
	e.putTopic("fuzz", fuzzTopic)
	e.putTopic("fuzz-dlq", nil)

	for _, s := range []struct {
		op         uint8
		name, body string
	}{
		{0, "t", `{"partitions":3,"retention":{"maxAge":"168h","maxBytes":0}}`},
		{0, "t", `{"messageTTL":"0s","maxMessageBytes":1048576}`},
		{0, "t", ``},
		{0, "fuzz", `{"partitions":1}`},
		{0, "t", `{"partitions":"3"}`},
		{0, "t", `{"retention":{"maxAge":30}}`},
		{0, "t", `{"retention":null,"messageTTL":"1h","maxMessageBytes":-1}`},
		{0, "bad name", `{}`},
		{0, "..", `{}`},
		{1, "s", `{"topic":"fuzz","retry":{"policy":"linear","minBackoff":"1s","maxBackoff":"10m"}}`},
		{1, "s", `{"topic":"fuzz","retry":{"maxAttempts":10,"maxAge":"24h"}}`},
		{1, "s", `{"topic":"fuzz","deadLetterTopic":"fuzz-dlq","ackDeadline":"30s"}`},
		{1, "s", `{"topic":"fuzz","ordered":true,"startAt":"earliest"}`},
		{1, "s", `{"topic":"fuzz","filter":"tag == 'eu' && attributes.p == 'high'"}`},
		{1, "s", `{"topic":"fuzz","filter":"has(attributes.x) || key.startsWith('a')"}`},
		{1, "s", `{"topic":"fuzz","filter":"orderingKey in ['a','b']"}`},
		{1, "s", `{"topic":"fuzz","filter":"attributes.size() > 0 && tag.matches('^e.*$')"}`},
		{1, "s", `{"topic":"fuzz","filter":"int(attributes.n) > 3"}`},
		{1, "s", `{"topic":"fuzz","filter":"[1,2].exists(y, y == 2)"}`},
		{1, "s", `{"topic":"fuzz","filter":"tag =="}`},
		{1, "s", `{"topic":"fuzz","filter":"1"}`},
		{1, "s", `{"topic":"fuzz","startAt":"2020-01-01T00:00:00Z"}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://127.0.0.1:9/","format":"json"}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"topic:fuzz-dlq","timeout":"10s"}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://a/","maxInFlight":16}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://a/","headers":{"X-A":"b"}}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://a/","signingSecrets":["whsec_abcdefgh"]}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://169.254.169.254/"}}`},
		{1, "s", `{"topic":"fuzz","push":{"endpoint":"http://[fe80::1%25eth0]:80/"}}`},
		{1, "s", `{"topic":"nope"}`},
		{1, "s", `{}`},
		{1, "s", ``},
	} {
		f.Add(s.op, s.name, []byte(s.body))
	}

	published := 0
	f.Fuzz(func(t *testing.T, op uint8, name string, body []byte) {
		e := fuzzEnv(e, t)
		kind := "topics"
		if op%2 == 1 {
			kind = "subscriptions"
		}
		path := "/v1/" + kind + "/" + url.PathEscape(name)
		r, err := e.tryDo("PUT", path, body, "Content-Type", "application/json")
		checkFuzzResponse(t, r, err)
		if r.status != 200 && r.status != 201 {
			return
		}
		if kind == "subscriptions" {
			e.publish("fuzz", msg{"text": "a", "key": "k", "tag": "eu", "orderingKey": "o", "attributes": msg{"priority": "high", "n": "5", "x": ""}})
			r, err := e.tryDo("POST", path+"/peek", []byte(`{"max":10}`))
			checkFuzzResponse(t, r, err)
			if r.status != 200 && r.status != 409 { // 409: a push subscription
				t.Fatalf("peek on a new subscription: %d %s", r.status, r.body)
			}
			e.do("DELETE", path, nil).want(t, 204)
			if published++; published%1000 == 0 {
				e.do("DELETE", "/v1/topics/fuzz", nil).want(t, 204)
				e.json("PUT", "/v1/topics/fuzz", fuzzTopic).want(t, 201)
			}
			return
		}
		e.do("DELETE", path, nil).want(t, 204)
		if name == "fuzz" || name == "fuzz-dlq" {
			e.json("PUT", path, fuzzTopic).want(t, 201)
		}
	})
}
