package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
)

// exchange is one request the fake broker expects and the response it gives.
type exchange struct {
	method string
	path   string // escaped, as on the wire
	body   string // expected JSON body (compared as JSON); "" means none
	// rawBody, with contentType, is an expected non-JSON body.
	rawBody     string
	contentType string
	header      map[string]string // expected request headers

	status   int
	respBody string
	respType string // Content-Type of the response; default application/json
}

// fakeBroker is a real HTTP server on a loopback listener that checks each request against
// the expected exchange and answers it.
func fakeBroker(t *testing.T, ex exchange) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checkRequest(t, ex, r)
		ct := ex.respType
		if ct == "" {
			ct = "application/json"
		}
		if ex.respBody != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.WriteHeader(ex.status)
		io.WriteString(w, ex.respBody)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func checkRequest(t *testing.T, ex exchange, r *http.Request) {
	t.Helper()
	if r.Method != ex.method {
		t.Errorf("method = %s, want %s", r.Method, ex.method)
	}
	if got := r.URL.EscapedPath(); got != ex.path {
		t.Errorf("path = %s, want %s", got, ex.path)
	}
	if r.URL.RawQuery != "" {
		t.Errorf("unexpected query %q", r.URL.RawQuery)
	}
	if got := r.Header.Get("User-Agent"); got != client.DefaultUserAgent && ex.header["User-Agent"] == "" {
		t.Errorf("User-Agent = %q, want %q", got, client.DefaultUserAgent)
	}
	for k, v := range ex.header {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("read body: %v", err)
	}
	switch {
	case ex.body != "":
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		if !jsonEqual(t, string(b), ex.body) {
			t.Errorf("body = %s\nwant %s", b, ex.body)
		}
	case ex.contentType != "":
		if ct := r.Header.Get("Content-Type"); ct != ex.contentType {
			t.Errorf("Content-Type = %q, want %q", ct, ex.contentType)
		}
		if string(b) != ex.rawBody {
			t.Errorf("raw body = %q, want %q", b, ex.rawBody)
		}
	default:
		if len(b) != 0 {
			t.Errorf("unexpected body %s", b)
		}
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Errorf("invalid JSON %q: %v", a, err)
		return false
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("invalid expected JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

var (
	t0     = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t0JSON = `"2026-01-02T03:04:05Z"`
)

func TestMethods(t *testing.T) {
	type result struct {
		v       any
		created bool
	}
	tests := []struct {
		name string
		call func(ctx context.Context, c *client.Client) (result, error)
		ex   exchange
		want result
	}{
		{
			name: "PutTopic created",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				tp, created, err := c.PutTopic(ctx, "orders", api.TopicSpec{
					Partitions:      3,
					Retention:       &api.Retention{MaxAge: api.Duration(168 * time.Hour)},
					MaxMessageBytes: 1048576,
				})
				return result{tp, created}, err
			},
			ex: exchange{
				method: "PUT", path: "/v1/topics/orders",
				body:   `{"partitions":3,"retention":{"maxAge":"168h","maxBytes":0},"messageTTL":"0s","maxMessageBytes":1048576}`,
				status: 201,
				respBody: `{"name":"orders","partitions":3,"retention":{"maxAge":"168h","maxBytes":0},"messageTTL":"0s",
					"maxMessageBytes":1048576,"createTime":` + t0JSON + `}`,
			},
			want: result{api.Topic{Name: "orders", TopicSpec: api.TopicSpec{
				Partitions: 3, Retention: &api.Retention{MaxAge: api.Duration(168 * time.Hour)}, MaxMessageBytes: 1048576,
			}, CreateTime: t0}, true},
		},
		{
			name: "PutTopic unchanged",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				tp, created, err := c.PutTopic(ctx, "orders", api.TopicSpec{Partitions: 1})
				return result{tp, created}, err
			},
			ex: exchange{
				method: "PUT", path: "/v1/topics/orders",
				body:     `{"partitions":1,"messageTTL":"0s","maxMessageBytes":0}`,
				status:   200,
				respBody: `{"name":"orders","partitions":1,"messageTTL":"0s","maxMessageBytes":1048576}`,
			},
			want: result{api.Topic{Name: "orders", TopicSpec: api.TopicSpec{Partitions: 1, MaxMessageBytes: 1048576}}, false},
		},
		{
			name: "GetTopic with stats, escaped name",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				tp, err := c.GetTopic(ctx, "a b/c")
				return result{v: tp}, err
			},
			ex: exchange{
				method: "GET", path: "/v1/topics/a%20b%2Fc", status: 200,
				respBody: `{"name":"a b/c","partitions":2,"messageTTL":"1m","maxMessageBytes":10,"createTime":` + t0JSON + `,
					"stats":{"messages":5,"bytes":50,"delayed":1,"partitions":[{"partition":0,"startOffset":0,"endOffset":3,"bytes":30},
					{"partition":1,"startOffset":1,"endOffset":3,"bytes":20}]}}`,
			},
			want: result{v: api.Topic{Name: "a b/c", TopicSpec: api.TopicSpec{Partitions: 2, MessageTTL: api.Duration(time.Minute), MaxMessageBytes: 10},
				CreateTime: t0, Stats: &api.TopicStats{Messages: 5, Bytes: 50, Delayed: 1, Partitions: []api.PartitionStats{
					{Partition: 0, StartOffset: 0, EndOffset: 3, Bytes: 30}, {Partition: 1, StartOffset: 1, EndOffset: 3, Bytes: 20}}}}},
		},
		{
			name: "ListTopics",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				l, err := c.ListTopics(ctx)
				return result{v: l}, err
			},
			ex: exchange{method: "GET", path: "/v1/topics", status: 200,
				respBody: `{"topics":[{"name":"a","partitions":1,"messageTTL":"0s","maxMessageBytes":1},{"name":"b","partitions":2,"messageTTL":"0s","maxMessageBytes":1}]}`},
			want: result{v: []api.Topic{
				{Name: "a", TopicSpec: api.TopicSpec{Partitions: 1, MaxMessageBytes: 1}},
				{Name: "b", TopicSpec: api.TopicSpec{Partitions: 2, MaxMessageBytes: 1}},
			}},
		},
		{
			name: "ListTopics empty is not nil",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				l, err := c.ListTopics(ctx)
				return result{v: l}, err
			},
			ex:   exchange{method: "GET", path: "/v1/topics", status: 200, respBody: `{"topics":null}`},
			want: result{v: []api.Topic{}},
		},
		{
			name: "DeleteTopic",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.DeleteTopic(ctx, "orders")
			},
			ex: exchange{method: "DELETE", path: "/v1/topics/orders", status: 204},
		},
		{
			name: "Publish",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				r, err := c.Publish(ctx, "orders", []api.PublishMessage{
					{Text: ptr("hello"), Key: "k1", Attributes: map[string]string{"a": "1"}, Tag: "eu"},
					{Data: []byte{0, 1, 2}, OrderingKey: "o", Delay: ptr(api.Duration(30 * time.Second))},
					{Text: ptr(""), DeliverAt: ptr(t0)},
				})
				return result{v: r}, err
			},
			ex: exchange{
				method: "POST", path: "/v1/topics/orders/messages",
				body: `{"messages":[{"text":"hello","key":"k1","attributes":{"a":"1"},"tag":"eu"},
					{"data":"AAEC","orderingKey":"o","delay":"30s"},{"text":"","deliverAt":` + t0JSON + `}]}`,
				status: 200,
				respBody: `{"results":[{"id":"m1","partition":0,"offset":12},{"id":"m2","partition":1,"offset":-1,"deliverAt":` + t0JSON + `},
					{"id":"m3","partition":2,"offset":-1,"deliverAt":` + t0JSON + `}]}`,
			},
			want: result{v: []api.PublishResult{
				{ID: "m1", Partition: 0, Offset: 12},
				{ID: "m2", Partition: 1, Offset: -1, DeliverAt: ptr(t0)},
				{ID: "m3", Partition: 2, Offset: -1, DeliverAt: ptr(t0)},
			}},
		},
		{
			name: "PublishRaw",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				r, err := c.PublishRaw(ctx, "orders", "text/plain", []byte("raw body\n"),
					map[string]string{"Herald-Attribute-priority": "high", "ce-type": "com.example"})
				return result{v: r}, err
			},
			ex: exchange{
				method: "POST", path: "/v1/topics/orders/messages",
				contentType: "text/plain", rawBody: "raw body\n",
				header:   map[string]string{"Herald-Attribute-priority": "high", "Ce-Type": "com.example"},
				status:   200,
				respBody: `{"results":[{"id":"m1","partition":2,"offset":7}]}`,
			},
			want: result{v: api.PublishResult{ID: "m1", Partition: 2, Offset: 7}},
		},
		{
			name: "PublishRaw default content type, bare result",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				r, err := c.PublishRaw(ctx, "orders", "", []byte{0xff, 0}, client.AttributeHeaders(map[string]string{"x": "y"}))
				return result{v: r}, err
			},
			ex: exchange{
				method: "POST", path: "/v1/topics/orders/messages",
				contentType: "application/octet-stream", rawBody: "\xff\x00",
				header:   map[string]string{"Herald-Attribute-x": "y"},
				status:   200,
				respBody: `{"id":"m9","partition":0,"offset":1}`,
			},
			want: result{v: api.PublishResult{ID: "m9", Partition: 0, Offset: 1}},
		},
		{
			name: "PutSubscription",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				s, created, err := c.PutSubscription(ctx, "orders-eu", api.SubscriptionSpec{
					Topic: "orders",
					Push: &api.PushConfig{Endpoint: "http://x/hook", Format: "json", Timeout: api.Duration(10 * time.Second),
						MaxInFlight: 16, Headers: map[string]string{"h": "v"}, SigningSecrets: []string{"whsec_a"}},
					Retry: &api.RetryPolicy{Policy: "exponential", MinBackoff: api.Duration(time.Second),
						MaxBackoff: api.Duration(10 * time.Minute), MaxAttempts: 10, MaxAge: api.Duration(24 * time.Hour)},
					DeadLetterTopic: "orders-dlq", AckDeadline: api.Duration(30 * time.Second),
					Filter: "tag == 'eu'", Ordered: true, StartAt: "earliest",
				})
				return result{s, created}, err
			},
			ex: exchange{
				method: "PUT", path: "/v1/subscriptions/orders-eu",
				body: `{"topic":"orders","push":{"endpoint":"http://x/hook","format":"json","timeout":"10s","maxInFlight":16,
					"headers":{"h":"v"},"signingSecrets":["whsec_a"]},"retry":{"policy":"exponential","minBackoff":"1s",
					"maxBackoff":"10m","maxAttempts":10,"maxAge":"24h"},"deadLetterTopic":"orders-dlq","ackDeadline":"30s",
					"filter":"tag == 'eu'","ordered":true,"startAt":"earliest"}`,
				status:   201,
				respBody: `{"name":"orders-eu","topic":"orders","ackDeadline":"30s","createTime":` + t0JSON + `}`,
			},
			want: result{api.Subscription{Name: "orders-eu", SubscriptionSpec: api.SubscriptionSpec{Topic: "orders",
				AckDeadline: api.Duration(30 * time.Second)}, CreateTime: t0}, true},
		},
		{
			name: "GetSubscription",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				s, err := c.GetSubscription(ctx, "s1")
				return result{v: s}, err
			},
			ex: exchange{method: "GET", path: "/v1/subscriptions/s1", status: 200,
				respBody: `{"name":"s1","topic":"t","stats":{"backlog":4,"inFlight":1,"delivered":9,"acked":5,"failed":2,"deadLettered":1,"lastError":"boom"}}`},
			want: result{v: api.Subscription{Name: "s1", SubscriptionSpec: api.SubscriptionSpec{Topic: "t"},
				Stats: &api.SubscriptionStats{Backlog: 4, InFlight: 1, Delivered: 9, Acked: 5, Failed: 2, DeadLettered: 1, LastError: "boom"}}},
		},
		{
			name: "ListSubscriptions",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				l, err := c.ListSubscriptions(ctx)
				return result{v: l}, err
			},
			ex: exchange{method: "GET", path: "/v1/subscriptions", status: 200,
				respBody: `{"subscriptions":[{"name":"s1","topic":"t"}]}`},
			want: result{v: []api.Subscription{{Name: "s1", SubscriptionSpec: api.SubscriptionSpec{Topic: "t"}}}},
		},
		{
			name: "DeleteSubscription",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				return result{}, c.DeleteSubscription(ctx, "s1")
			},
			ex: exchange{method: "DELETE", path: "/v1/subscriptions/s1", status: 204},
		},
		{
			name: "Pull",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				m, err := c.Pull(ctx, "s1", api.PullRequest{Max: 10, Wait: api.Duration(20 * time.Millisecond), Visibility: api.Duration(30 * time.Second)})
				return result{v: m}, err
			},
			ex: exchange{method: "POST", path: "/v1/subscriptions/s1/pull",
				body:   `{"max":10,"wait":"20ms","visibility":"30s"}`,
				status: 200,
				respBody: `{"messages":[{"id":"m1","receiptHandle":"rh1","partition":1,"offset":4,"data":"aGk=","attributes":{"a":"b"},
					"key":"k","tag":"t","publishTime":` + t0JSON + `,"deliveryAttempt":2}]}`},
			want: result{v: []api.Message{{ID: "m1", ReceiptHandle: "rh1", Partition: 1, Offset: 4, Data: []byte("hi"),
				Attributes: map[string]string{"a": "b"}, Key: "k", Tag: "t", PublishTime: t0, DeliveryAttempt: 2}}},
		},
		{
			name: "Pull none",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				m, err := c.Pull(ctx, "s1", api.PullRequest{})
				return result{v: m}, err
			},
			ex:   exchange{method: "POST", path: "/v1/subscriptions/s1/pull", body: `{}`, status: 200, respBody: `{"messages":[]}`},
			want: result{v: []api.Message{}},
		},
		{
			name: "Peek",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				m, err := c.Peek(ctx, "s1", 5)
				return result{v: m}, err
			},
			ex: exchange{method: "POST", path: "/v1/subscriptions/s1/peek", body: `{"max":5}`, status: 200,
				respBody: `{"messages":[{"id":"m1","partition":0,"offset":0,"data":"","publishTime":` + t0JSON + `,"deliveryAttempt":0}]}`},
			want: result{v: []api.Message{{ID: "m1", Data: []byte{}, PublishTime: t0}}},
		},
		{
			name: "Ack",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				r, err := c.Ack(ctx, "s1", []string{"rh1", "rh2"})
				return result{v: r}, err
			},
			ex: exchange{method: "POST", path: "/v1/subscriptions/s1/ack", body: `{"receiptHandles":["rh1","rh2"]}`,
				status: 200, respBody: `{"acked":1,"invalid":["rh2"]}`},
			want: result{v: api.AckResponse{Acked: 1, Invalid: []string{"rh2"}}},
		},
		{
			name: "Nack",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				r, err := c.Nack(ctx, "s1", []string{"rh1"}, 5*time.Second)
				return result{v: r}, err
			},
			ex: exchange{method: "POST", path: "/v1/subscriptions/s1/nack", body: `{"receiptHandles":["rh1"],"delay":"5s"}`,
				status: 200, respBody: `{"nacked":1,"invalid":[]}`},
			want: result{v: api.NackResponse{Nacked: 1, Invalid: []string{}}},
		},
		{
			name: "ModifyVisibility",
			call: func(ctx context.Context, c *client.Client) (result, error) {
				h, err := c.ModifyVisibility(ctx, "s1", "rh1", time.Minute)
				return result{v: h}, err
			},
			ex: exchange{method: "POST", path: "/v1/subscriptions/s1/visibility", body: `{"receiptHandle":"rh1","visibility":"1m"}`,
				status: 200, respBody: `{"receiptHandle":"rh1b"}`},
			want: result{v: "rh1b"},
		},
		{
			name: "Healthz",
			call: func(ctx context.Context, c *client.Client) (result, error) { return result{}, c.Healthz(ctx) },
			ex:   exchange{method: "GET", path: "/healthz", status: 200, respBody: "ok", respType: "text/plain"},
		},
		{
			name: "Readyz",
			call: func(ctx context.Context, c *client.Client) (result, error) { return result{}, c.Readyz(ctx) },
			ex:   exchange{method: "GET", path: "/readyz", status: 200, respBody: "ok", respType: "text/plain"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeBroker(t, tt.ex)
			c := newClient(t, srv.URL)
			got, err := tt.call(t.Context(), c)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		respType string
		want     api.Error
	}{
		{"contract error body", 400, `{"error":{"code":"InvalidArgument","message":"bad duration","field":"messages[2].delay"}}`, "",
			api.Error{Code: api.CodeInvalidArgument, Message: "bad duration", Field: "messages[2].delay", HTTPStatus: 400}},
		{"not found", 404, `{"error":{"code":"NotFound","message":"topic \"x\" not found"}}`, "",
			api.Error{Code: api.CodeNotFound, Message: `topic "x" not found`, HTTPStatus: 404}},
		{"precondition", 409, `{"error":{"code":"FailedPrecondition","message":"partitions can only grow","field":"partitions"}}`, "",
			api.Error{Code: api.CodeFailedPrecondition, Message: "partitions can only grow", Field: "partitions", HTTPStatus: 409}},
		{"too large", 413, `{"error":{"code":"TooLarge","message":"message over 1048576 bytes"}}`, "",
			api.Error{Code: api.CodeTooLarge, Message: "message over 1048576 bytes", HTTPStatus: 413}},
		{"plain text 502", 502, "upstream connect error\n", "text/plain",
			api.Error{Code: api.CodeUnavailable, Message: "upstream connect error", HTTPStatus: 502}},
		{"empty 404", 404, "", "",
			api.Error{Code: api.CodeNotFound, Message: "404 Not Found", HTTPStatus: 404}},
		{"html 500", 500, "<html>oops</html>", "text/html",
			api.Error{Code: api.CodeInternal, Message: "<html>oops</html>", HTTPStatus: 500}},
		{"JSON without error object", 403, `{"message":"forbidden"}`, "",
			api.Error{Code: api.CodeInvalidArgument, Message: `{"message":"forbidden"}`, HTTPStatus: 403}},
		{"409 without body", 409, "", "",
			api.Error{Code: api.CodeFailedPrecondition, Message: "409 Conflict", HTTPStatus: 409}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeBroker(t, exchange{method: "GET", path: "/v1/topics/x", status: tt.status, respBody: tt.body, respType: tt.respType})
			_, err := newClient(t, srv.URL).GetTopic(t.Context(), "x")
			var apiErr *api.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *api.Error", err, err)
			}
			if *apiErr != tt.want {
				t.Errorf("got  %#v\nwant %#v", *apiErr, tt.want)
			}
		})
	}
}

// Every method turns a non-2xx answer into an *api.Error.
func TestEveryMethodReturnsAPIError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"code":"Unavailable","message":"recovering"}}`)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL)
	ctx := t.Context()
	calls := map[string]func() error{
		"PutTopic":           func() error { _, _, err := c.PutTopic(ctx, "t", api.TopicSpec{}); return err },
		"GetTopic":           func() error { _, err := c.GetTopic(ctx, "t"); return err },
		"ListTopics":         func() error { _, err := c.ListTopics(ctx); return err },
		"DeleteTopic":        func() error { return c.DeleteTopic(ctx, "t") },
		"Publish":            func() error { _, err := c.Publish(ctx, "t", []api.PublishMessage{{Text: ptr("x")}}); return err },
		"PublishRaw":         func() error { _, err := c.PublishRaw(ctx, "t", "text/plain", []byte("x"), nil); return err },
		"PutSubscription":    func() error { _, _, err := c.PutSubscription(ctx, "s", api.SubscriptionSpec{Topic: "t"}); return err },
		"GetSubscription":    func() error { _, err := c.GetSubscription(ctx, "s"); return err },
		"ListSubscriptions":  func() error { _, err := c.ListSubscriptions(ctx); return err },
		"DeleteSubscription": func() error { return c.DeleteSubscription(ctx, "s") },
		"Pull":               func() error { _, err := c.Pull(ctx, "s", api.PullRequest{}); return err },
		"Peek":               func() error { _, err := c.Peek(ctx, "s", 1); return err },
		"Ack":                func() error { _, err := c.Ack(ctx, "s", []string{"h"}); return err },
		"Nack":               func() error { _, err := c.Nack(ctx, "s", []string{"h"}, 0); return err },
		"ModifyVisibility":   func() error { _, err := c.ModifyVisibility(ctx, "s", "h", time.Second); return err },
		"Healthz":            func() error { return c.Healthz(ctx) },
		"Readyz":             func() error { return c.Readyz(ctx) },
		"Cluster":            func() error { _, err := c.Cluster(ctx); return err },
		"ClusterMember":      func() error { _, err := c.ClusterMember(ctx, "b-0"); return err },
		"DrainMember":        func() error { _, err := c.DrainMember(ctx, "b-0"); return err },
		"UndrainMember":      func() error { return c.UndrainMember(ctx, "b-0") },
		"RemoveMember":       func() error { return c.RemoveMember(ctx, "b-0") },
	}
	for name, call := range calls {
		var apiErr *api.Error
		if err := call(); !errors.As(err, &apiErr) || apiErr.Code != api.CodeUnavailable || apiErr.HTTPStatus != 503 {
			t.Errorf("%s: got %v, want Unavailable 503", name, err)
		}
	}
}

func TestLocalValidation(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	c := newClient(t, srv.URL)
	ctx := t.Context()
	for name, call := range map[string]func() error{
		"empty topic":   func() error { _, err := c.GetTopic(ctx, ""); return err },
		"dot-dot topic": func() error { return c.DeleteTopic(ctx, "..") },
		"empty sub":     func() error { _, err := c.Pull(ctx, "", api.PullRequest{}); return err },
		"raw JSON": func() error {
			_, err := c.PublishRaw(ctx, "t", "application/json; charset=utf-8", []byte("{}"), nil)
			return err
		},
		"dot sub on delete": func() error { return c.DeleteSubscription(ctx, ".") },
	} {
		var apiErr *api.Error
		if err := call(); !errors.As(err, &apiErr) || apiErr.Code != api.CodeInvalidArgument {
			t.Errorf("%s: got %v, want a local InvalidArgument", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestPublishResultCountMismatch(t *testing.T) {
	srv := fakeBroker(t, exchange{method: "POST", path: "/v1/topics/t/messages",
		body: `{"messages":[{"text":"a"},{"text":"b"}]}`, status: 200, respBody: `{"results":[{"id":"m1","partition":0,"offset":0}]}`})
	_, err := newClient(t, srv.URL).Publish(t.Context(), "t", []api.PublishMessage{{Text: ptr("a")}, {Text: ptr("b")}})
	if err == nil || !strings.Contains(err.Error(), "1 results for 2 messages") {
		t.Errorf("got %v, want a result count error", err)
	}
}

func TestPublishEmptySendsEmptyList(t *testing.T) {
	srv := fakeBroker(t, exchange{method: "POST", path: "/v1/topics/t/messages", body: `{"messages":[]}`, status: 400,
		respBody: `{"error":{"code":"InvalidArgument","message":"no messages","field":"messages"}}`})
	_, err := newClient(t, srv.URL).Publish(t.Context(), "t", nil)
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Field != "messages" {
		t.Errorf("got %v", err)
	}
}

func TestMalformedSuccessBody(t *testing.T) {
	srv := fakeBroker(t, exchange{method: "GET", path: "/v1/topics", status: 200, respBody: `{"topics":[`})
	_, err := newClient(t, srv.URL).ListTopics(t.Context())
	var apiErr *api.Error
	if err == nil || errors.As(err, &apiErr) {
		t.Errorf("got %v, want a decode error that is not an *api.Error", err)
	}
}

func TestNew(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":          "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":         "http://127.0.0.1:8080",
		"127.0.0.1:8080":                 "http://127.0.0.1:8080",
		"localhost:8080":                 "http://localhost:8080",
		"https://broker.example/herald/": "https://broker.example/herald",
		" http://[::1]:9000 ":            "http://[::1]:9000",
	} {
		c, err := client.New(in)
		if err != nil {
			t.Errorf("New(%q): %v", in, err)
			continue
		}
		if c.BaseURL() != want {
			t.Errorf("New(%q).BaseURL() = %q, want %q", in, c.BaseURL(), want)
		}
	}
	for _, in := range []string{"", "ftp://x", "http://", "http://x/?a=b", "http://x:bad port"} {
		if _, err := client.New(in); err == nil {
			t.Errorf("New(%q) succeeded, want an error", in)
		}
	}
}

func TestPathPrefixAndUserAgent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/herald/v1/topics/t" {
			t.Errorf("path = %s", r.URL.Path)
		}
		if ua := r.Header.Get("User-Agent"); ua != "bench/1" {
			t.Errorf("User-Agent = %q", ua)
		}
		w.WriteHeader(204)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL+"/herald/", client.WithUserAgent("bench/1"))
	if err := c.DeleteTopic(t.Context(), "t"); err != nil {
		t.Fatal(err)
	}
}

// slowPull answers a pull after delay.
func slowServer(t *testing.T, delay time.Duration) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"messages":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestLongPollOutlivesTimeout(t *testing.T) {
	srv := slowServer(t, 600*time.Millisecond)
	tests := []struct {
		name string
		opts []client.Option
	}{
		{"WithTimeout", []client.Option{client.WithTimeout(200 * time.Millisecond)}},
		{"http.Client.Timeout", []client.Option{client.WithTimeout(0), client.WithHTTPClient(&http.Client{Timeout: 200 * time.Millisecond})}},
		{"both", []client.Option{client.WithTimeout(200 * time.Millisecond), client.WithHTTPClient(&http.Client{Timeout: 200 * time.Millisecond})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, srv.URL, tt.opts...)
			// The wait stretches the deadline: 200ms + 1s > 600ms.
			msgs, err := c.Pull(t.Context(), "s", api.PullRequest{Wait: api.Duration(time.Second)})
			if err != nil || len(msgs) != 0 {
				t.Fatalf("long poll: %v, %v", msgs, err)
			}
			// Without a wait the same slow answer times out.
			_, err = c.Pull(t.Context(), "s", api.PullRequest{})
			if err == nil {
				t.Fatal("pull without wait outlived the timeout")
			}
			var apiErr *api.Error
			if errors.As(err, &apiErr) {
				t.Errorf("timeout reported as an *api.Error: %v", err)
			}
		})
	}
}

func TestContextCancel(t *testing.T) {
	srv := slowServer(t, 5*time.Second)
	c := newClient(t, srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Pull(ctx, "s", api.PullRequest{Wait: api.Duration(20 * time.Second)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned after %v", d)
	}
}

// The default transport keeps connections alive: sequential calls share one connection, and a
// burst of concurrent calls leaves its connections idle for the next burst.
func TestKeepAlive(t *testing.T) {
	var newConns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"acked":1,"invalid":[]}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newClient(t, srv.URL)
	ctx := t.Context()
	for range 10 {
		if _, err := c.Ack(ctx, "s", []string{"h"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := newConns.Load(); n != 1 {
		t.Errorf("10 sequential calls opened %d connections, want 1", n)
	}

	burst := func() {
		var wg sync.WaitGroup
		for range 40 {
			wg.Go(func() {
				if _, err := c.Ack(ctx, "s", []string{"h"}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	burst()
	time.Sleep(100 * time.Millisecond) // let the transport put the connections back
	before := newConns.Load()
	burst()
	if extra := newConns.Load() - before; extra > 5 {
		t.Errorf("second burst of 40 opened %d new connections; idle ones were not kept", extra)
	}
}
