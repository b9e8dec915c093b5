package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/server"
	"github.com/heraldmq/herald/broker/store"
)

// storageMode is one way the engine stores data; every HTTP test runs against each.
type storageMode struct {
	name string
	cfg  func(t testing.TB) engine.Config
}

var storageModes = []storageMode{
	{name: "memory", cfg: func(testing.TB) engine.Config { return engine.Config{Memory: true} }},
	{name: "file", cfg: func(t testing.TB) engine.Config {
		return engine.Config{DataDir: t.TempDir(), Sync: store.SyncAlways, SegmentBytes: 64 << 10}
	}},
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is one broker behind a real HTTP listener, or (url "") called in-process.
type env struct {
	t   testing.TB
	url string
	c   *http.Client
	h   http.Handler
	b   *engine.Broker
}

// newEnv opens a broker with cfg and serves server.New over it on a loopback listener.
func newEnv(t testing.TB, cfg engine.Config) *env {
	t.Helper()
	cfg.Logger = quietLog
	b, err := engine.Open(cfg)
	if err != nil {
		t.Fatalf("engine.Open: %v", err)
	}
	h := server.New(b, quietLog)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		// Close the broker first: it ends long polls, so the server's Close does not wait on them.
		b.Close()
		srv.Close()
	})
	c := srv.Client()
	c.Timeout = time.Minute // longer than any long poll: a hang fails instead of blocking
	return &env{t: t, url: srv.URL, c: c, h: h, b: b}
}

// newInProcessEnv opens a broker with cfg and calls server.New's handler directly, without a
// listener: what fuzzing needs, many thousand requests a second.
func newInProcessEnv(t testing.TB, cfg engine.Config) *env {
	t.Helper()
	cfg.Logger = quietLog
	b, err := engine.Open(cfg)
	if err != nil {
		t.Fatalf("engine.Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return &env{t: t, h: server.New(b, quietLog), b: b}
}

// forEachMode runs fn as a subtest per storage mode, each on a fresh broker.
func forEachMode(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			fn(t, newEnv(t, m.cfg(t)))
		})
	}
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return string(r.body) }

// do sends a request with a raw body (nil: none) and extra header pairs.
func (e *env) do(method, path string, body []byte, header ...string) response {
	e.t.Helper()
	r, err := e.tryDo(method, path, body, header...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// tryDo is do without failing the test, for use from other goroutines.
func (e *env) tryDo(method, path string, body []byte, header ...string) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if e.url == "" {
		req := httptest.NewRequest(method, path, rd)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Add(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}, nil
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		return response{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := e.c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

// json sends v (a string is sent as is) as an application/json body.
func (e *env) json(method, path string, v any) response {
	e.t.Helper()
	var body []byte
	switch x := v.(type) {
	case nil:
	case string:
		body = []byte(x)
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
	}
	return e.do(method, path, body, "Content-Type", "application/json")
}

// want fails unless the response has the status; it returns the response for chaining.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body: %s", r.status, status, r.body)
	}
	return r
}

// wantError fails unless the response is the API's JSON error with this status, code and field.
func (r response) wantError(t testing.TB, status int, code, field string) *api.Error {
	t.Helper()
	e := checkErrorShape(t, r)
	if r.status != status || e.Code != code || e.Field != field {
		t.Fatalf("got %d %s field %q, want %d %s field %q; body: %s", r.status, e.Code, e.Field, status, code, field, r.body)
	}
	return e
}

var errorCodes = map[string]int{
	api.CodeInvalidArgument: 400, api.CodeNotFound: 404, api.CodeAlreadyExists: 409,
	api.CodeFailedPrecondition: 409, api.CodeTooLarge: 413, api.CodeUnavailable: 503,
}

// checkErrorShape fails unless the body is exactly {"error":{"code","message"[,"field"]}} as JSON
// with a known code, and returns the error.
func checkErrorShape(t testing.TB, r response) *api.Error {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q, want application/json; status %d body %q", ct, r.status, r.body)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw) != 1 || raw["error"] == nil {
		t.Fatalf("error body is not {\"error\":{…}}: %q (%v)", r.body, err)
	}
	for k, v := range raw["error"] {
		if _, ok := v.(string); !ok || (k != "code" && k != "message" && k != "field") {
			t.Fatalf("error body has unexpected member %q: %q", k, r.body)
		}
	}
	var body api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	e := body.Error
	want, known := errorCodes[e.Code]
	if !known {
		t.Fatalf("unknown error code %q (status %d): %s", e.Code, r.status, r.body)
	}
	if e.Message == "" {
		t.Fatalf("error without a message: %s", r.body)
	}
	if r.status != want && !(r.status == http.StatusMethodNotAllowed && e.Code == api.CodeInvalidArgument) {
		t.Fatalf("status %d does not match code %s (%d): %s", r.status, e.Code, want, r.body)
	}
	return e
}

// decode strictly decodes the body into T.
func decode[T any](t testing.TB, r response) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	return v
}

// object decodes the body as a JSON object, to check its exact members.
func object(t testing.TB, r response) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %s", r.body)
	}
	return m
}

// wantKeys fails unless m has exactly the keys want (JSON members), order aside.
func wantKeys(t testing.TB, what string, m any, want ...string) {
	t.Helper()
	obj, ok := m.(map[string]any)
	if !ok {
		t.Fatalf("%s: %v is not an object", what, m)
	}
	got := make([]string, 0, len(obj))
	for k := range obj {
		got = append(got, k)
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s members %v, want %v", what, got, want)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Typed helpers over the API.

func (e *env) putTopic(name string, spec any) api.Topic {
	e.t.Helper()
	r := e.json("PUT", "/v1/topics/"+name, spec)
	if r.status != 200 && r.status != 201 {
		e.t.Fatalf("PUT topic %s: %d %s", name, r.status, r.body)
	}
	return decode[api.Topic](e.t, r)
}

func (e *env) putSub(name string, spec any) api.Subscription {
	e.t.Helper()
	r := e.json("PUT", "/v1/subscriptions/"+name, spec)
	if r.status != 200 && r.status != 201 {
		e.t.Fatalf("PUT subscription %s: %d %s", name, r.status, r.body)
	}
	return decode[api.Subscription](e.t, r)
}

type msg = map[string]any

func (e *env) publish(topic string, msgs ...msg) []api.PublishResult {
	e.t.Helper()
	r := e.json("POST", "/v1/topics/"+topic+"/messages", map[string]any{"messages": msgs}).want(e.t, 200)
	res := decode[api.PublishResponse](e.t, r).Results
	if len(res) != len(msgs) {
		e.t.Fatalf("publish: %d results for %d messages", len(res), len(msgs))
	}
	return res
}

func (e *env) publishTexts(topic string, texts ...string) []api.PublishResult {
	e.t.Helper()
	ms := make([]msg, len(texts))
	for i, s := range texts {
		ms[i] = msg{"text": s}
	}
	return e.publish(topic, ms...)
}

func (e *env) pull(sub string, req any) []api.Message {
	e.t.Helper()
	r := e.json("POST", "/v1/subscriptions/"+sub+"/pull", req).want(e.t, 200)
	return decode[api.PullResponse](e.t, r).Messages
}

func (e *env) peek(sub string, max int) []api.Message {
	e.t.Helper()
	r := e.json("POST", "/v1/subscriptions/"+sub+"/peek", map[string]any{"max": max}).want(e.t, 200)
	return decode[api.PullResponse](e.t, r).Messages
}

func (e *env) ack(sub string, handles ...string) api.AckResponse {
	e.t.Helper()
	r := e.json("POST", "/v1/subscriptions/"+sub+"/ack", map[string]any{"receiptHandles": handles}).want(e.t, 200)
	return decode[api.AckResponse](e.t, r)
}

func (e *env) nack(sub, delay string, handles ...string) api.NackResponse {
	e.t.Helper()
	body := map[string]any{"receiptHandles": handles}
	if delay != "" {
		body["delay"] = delay
	}
	r := e.json("POST", "/v1/subscriptions/"+sub+"/nack", body).want(e.t, 200)
	return decode[api.NackResponse](e.t, r)
}

func (e *env) subStats(sub string) api.SubscriptionStats {
	e.t.Helper()
	s := decode[api.Subscription](e.t, e.do("GET", "/v1/subscriptions/"+sub, nil).want(e.t, 200))
	if s.Stats == nil {
		e.t.Fatalf("subscription %s has no stats", sub)
	}
	return *s.Stats
}

// pullUntil pulls (long polls of wait each) until it has n messages or the deadline passes.
func (e *env) pullUntil(sub string, n int, req map[string]any, within time.Duration) []api.Message {
	e.t.Helper()
	var got []api.Message
	deadline := time.Now().Add(within)
	for len(got) < n && time.Now().Before(deadline) {
		r := map[string]any{"max": n - len(got), "wait": "2s"}
		for k, v := range req {
			r[k] = v
		}
		got = append(got, e.pull(sub, r)...)
	}
	if len(got) != n {
		e.t.Fatalf("pulled %d messages within %s, want %d: %v", len(got), within, n, texts(got))
	}
	return got
}

// eventually polls cond every 50ms until it holds, failing after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func texts(ms []api.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Data)
	}
	return out
}

func handles(ms []api.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ReceiptHandle
	}
	return out
}

func sorted(xs []string) []string {
	xs = slices.Clone(xs)
	sort.Strings(xs)
	return xs
}

func sameSet(a, b []string) bool { return slices.Equal(sorted(a), sorted(b)) }
