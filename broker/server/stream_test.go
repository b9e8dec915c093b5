package server

// Tests of GET /v1/subscriptions/{sub}/stream over real connections. White-box package (and
// names prefixed with stream) so as not to collide with the HTTP API tests of package
// server_test.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

type streamEnv struct {
	t   *testing.T
	b   *engine.Broker
	srv *httptest.Server
}

func streamForEachMode(t *testing.T, fn func(t *testing.T, e *streamEnv)) {
	modes := []struct {
		name string
		cfg  func() engine.Config
	}{
		{"memory", func() engine.Config { return engine.Config{Memory: true} }},
		{"file", func() engine.Config { return engine.Config{DataDir: t.TempDir(), Sync: store.SyncAlways} }},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { fn(t, newStreamEnv(t, m.cfg())) })
	}
}

func newStreamEnv(t *testing.T, cfg engine.Config) *streamEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Logger = log
	b, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(b, log))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		b.Close()
	})
	return &streamEnv{t: t, b: b, srv: srv}
}

func (e *streamEnv) setup(sub string, spec api.SubscriptionSpec) {
	e.t.Helper()
	if _, _, err := e.b.PutTopic("t", api.TopicSpec{Partitions: 2}); err != nil {
		e.t.Fatal(err)
	}
	spec.Topic, spec.StartAt = "t", "earliest"
	if _, _, err := e.b.PutSubscription(sub, spec); err != nil {
		e.t.Fatal(err)
	}
}

func (e *streamEnv) publish(n int) map[string]bool {
	e.t.Helper()
	msgs := make([]api.PublishMessage, n)
	for i := range msgs {
		s := "m" + string(rune('a'+i%26))
		msgs[i] = api.PublishMessage{Text: &s}
	}
	res, err := e.b.Publish("t", msgs)
	if err != nil {
		e.t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range res {
		ids[r.ID] = true
	}
	return ids
}

func (e *streamEnv) stats(sub string) api.SubscriptionStats {
	e.t.Helper()
	s, err := e.b.GetSubscription(sub)
	if err != nil {
		e.t.Fatal(err)
	}
	return *s.Stats
}

func streamEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *streamEnv) dial(ctx context.Context, path string) *websocket.Conn {
	e.t.Helper()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+path, nil)
	if err != nil {
		e.t.Fatalf("dial %s: %v (%v)", path, err, resp)
	}
	c.SetReadLimit(1 << 20)
	return c
}

// wsFrame is any server frame.
type wsFrame struct {
	api.Message
	Acked   *int       `json:"acked"`
	Nacked  *int       `json:"nacked"`
	Invalid []string   `json:"invalid"`
	Error   *api.Error `json:"error"`
}

func streamRead(t *testing.T, ctx context.Context, c *websocket.Conn) wsFrame {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f wsFrame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame %s: %v", data, err)
	}
	return f
}

func streamSend(t *testing.T, ctx context.Context, c *websocket.Conn, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestStreamWebsocketReceiveAndAck(t *testing.T) {
	streamForEachMode(t, func(t *testing.T, e *streamEnv) {
		e.setup("s", api.SubscriptionSpec{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := e.dial(ctx, "/v1/subscriptions/s/stream?visibility=30s")
		defer c.CloseNow()
		ids := e.publish(5)
		var handles []string
		for len(handles) < 5 {
			f := streamRead(t, ctx, c)
			if f.ID == "" || !ids[f.ID] || f.ReceiptHandle == "" || f.DeliveryAttempt != 1 {
				t.Fatalf("unexpected frame %+v", f)
			}
			handles = append(handles, f.ReceiptHandle)
		}
		streamSend(t, ctx, c, map[string]any{"ack": handles[:4]})
		if f := streamRead(t, ctx, c); f.Acked == nil || *f.Acked != 4 || len(f.Invalid) != 0 {
			t.Fatalf("ack reply %+v", f)
		}
		streamSend(t, ctx, c, map[string]any{"nack": handles[4:], "delay": "0s"})
		// The nack's reply, and the nacked message back on the same socket, in either order.
		var f wsFrame
		nacked := false
		for !nacked || f.ID == "" {
			g := streamRead(t, ctx, c)
			switch {
			case g.Nacked != nil:
				if *g.Nacked != 1 {
					t.Fatalf("nack reply %+v", g)
				}
				nacked = true
			case g.ID != "" && g.DeliveryAttempt == 2:
				f = g
			default:
				t.Fatalf("unexpected frame %+v", g)
			}
		}
		streamSend(t, ctx, c, map[string]any{"ack": []string{f.ReceiptHandle, "bogus"}})
		if f := streamRead(t, ctx, c); f.Acked == nil || *f.Acked != 1 || len(f.Invalid) != 1 {
			t.Fatalf("ack reply %+v", f)
		}
		streamSend(t, ctx, c, map[string]any{"ack": "not a list"})
		if f := streamRead(t, ctx, c); f.Error == nil || f.Error.Code != api.CodeInvalidArgument {
			t.Fatalf("malformed frame answered %+v", f)
		}
		if st := e.stats("s"); st.Acked != 5 || st.Backlog != 0 {
			t.Errorf("stats %+v", st)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
}

// Two clients share one subscription; what a client leased and never acked before going away
// is redelivered (here to the other client) once its lease expires.
func TestStreamWebsocketSharedAndRedelivered(t *testing.T) {
	e := newStreamEnv(t, engine.Config{Memory: true})
	e.setup("s", api.SubscriptionSpec{AckDeadline: api.Duration(time.Second)})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids := e.publish(20)

	a := e.dial(ctx, "/v1/subscriptions/s/stream?maxInFlight=5")
	var aGot []string
	for len(aGot) < 5 {
		aGot = append(aGot, streamRead(t, ctx, a).ID)
	}
	a.CloseNow() // gone without acking

	b := e.dial(ctx, "/v1/subscriptions/s/stream")
	defer b.CloseNow()
	var mu sync.Mutex
	acked := map[string]bool{}
	replies := 0
	for {
		mu.Lock()
		done := len(acked) == len(ids)
		mu.Unlock()
		if done {
			break
		}
		f := streamRead(t, ctx, b)
		if f.Acked != nil {
			replies++
			continue
		}
		acked[f.ID] = true
		streamSend(t, ctx, b, map[string]any{"ack": []string{f.ReceiptHandle}})
	}
	for _, id := range aGot {
		if !acked[id] {
			t.Errorf("message %s of the vanished client was not redelivered", id)
		}
	}
	streamEventually(t, 10*time.Second, "all acked", func() bool { st := e.stats("s"); return st.Acked == 20 && st.Backlog == 0 })
}

func TestStreamSSE(t *testing.T) {
	streamForEachMode(t, func(t *testing.T, e *streamEnv) {
		e.setup("s", api.SubscriptionSpec{})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/subscriptions/s/stream?max=3", nil)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		ids := e.publish(7)
		sc := bufio.NewScanner(resp.Body)
		var event, id string
		var data []byte
		got := map[string]bool{}
		var handles []string
		for len(got) < 7 && sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = []byte(strings.TrimPrefix(line, "data: "))
			case line == "" && event != "":
				if event != "message" {
					t.Fatalf("event %q: %s", event, data)
				}
				var m api.Message
				if err := json.Unmarshal(data, &m); err != nil || m.ID != id || !ids[m.ID] || m.ReceiptHandle == "" {
					t.Fatalf("event id %s data %s (%v)", id, data, err)
				}
				got[m.ID] = true
				handles = append(handles, m.ReceiptHandle)
				event, id, data = "", "", nil
			}
		}
		if len(got) != 7 {
			t.Fatalf("got %d events (%v)", len(got), sc.Err())
		}
		body, _ := json.Marshal(api.AckRequest{ReceiptHandles: handles})
		ar, err := http.Post(e.srv.URL+"/v1/subscriptions/s/ack", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var res api.AckResponse
		json.NewDecoder(ar.Body).Decode(&res)
		ar.Body.Close()
		if res.Acked != 7 {
			t.Errorf("ack: %+v", res)
		}
		if st := e.stats("s"); st.Acked != 7 || st.Backlog != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestStreamRefusals(t *testing.T) {
	e := newStreamEnv(t, engine.Config{Memory: true})
	e.setup("pull", api.SubscriptionSpec{})
	if _, _, err := e.b.PutSubscription("pushy", api.SubscriptionSpec{Topic: "t", Push: &api.PushConfig{Endpoint: "http://127.0.0.1:1/"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, accept string
		status       int
		field        string
	}{
		{"/v1/subscriptions/nope/stream", "text/event-stream", 404, ""},
		{"/v1/subscriptions/pushy/stream", "text/event-stream", 409, "subscription"},
		{"/v1/subscriptions/pull/stream", "application/json", 406, "Accept"},
		{"/v1/subscriptions/pull/stream?max=0", "text/event-stream", 400, "max"},
		{"/v1/subscriptions/pull/stream?visibility=soon", "text/event-stream", 400, "visibility"},
		{"/v1/subscriptions/pull/stream?maxInFlight=99999", "text/event-stream", 400, "maxInFlight"},
	} {
		req, _ := http.NewRequest("GET", e.srv.URL+tc.path, nil)
		req.Header.Set("Accept", tc.accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb api.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != tc.status || eb.Error == nil || (tc.field != "" && eb.Error.Field != tc.field) {
			t.Errorf("%s: %d %+v, want %d field %q", tc.path, resp.StatusCode, eb.Error, tc.status, tc.field)
		}
	}
}

// Deleting the subscription ends its websocket streams with an error frame and close code
// 4404.
func TestStreamWebsocketSubscriptionDeleted(t *testing.T) {
	e := newStreamEnv(t, engine.Config{Memory: true})
	e.setup("s", api.SubscriptionSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := e.dial(ctx, "/v1/subscriptions/s/stream")
	defer c.CloseNow()
	e.publish(1)
	streamRead(t, ctx, c)
	if err := e.b.DeleteSubscription("s"); err != nil {
		t.Fatal(err)
	}
	f := streamRead(t, ctx, c)
	if f.Error == nil || f.Error.Code != api.CodeNotFound {
		t.Fatalf("frame after delete: %+v", f)
	}
	_, _, err := c.Read(ctx)
	if code := websocket.CloseStatus(err); code != 4404 {
		t.Errorf("close status %d (%v), want 4404", code, err)
	}
}

// A graceful shutdown of the HTTP server ends open streams instead of waiting for them.
func TestStreamEndsOnShutdown(t *testing.T) {
	e := newStreamEnv(t, engine.Config{Memory: true})
	e.setup("s", api.SubscriptionSpec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/v1/subscriptions/s/stream", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ws := e.dial(ctx, "/v1/subscriptions/s/stream")
	defer ws.CloseNow()
	time.Sleep(100 * time.Millisecond) // both streams are in their long polls
	shCtx, shCancel := context.WithTimeout(ctx, 20*time.Second)
	defer shCancel()
	wsDone := make(chan error, 1)
	go func() { _, _, err := ws.Read(ctx); wsDone <- err }()
	if err := e.srv.Config.Shutdown(shCtx); err != nil {
		t.Fatalf("Shutdown with open streams: %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("SSE body after shutdown: %v", err)
	}
	if err := <-wsDone; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("websocket after shutdown: %v, want close status 1001", err)
	}
}
