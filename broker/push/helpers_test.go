package push

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// storageMode is one engine storage; tests where storage matters run on each.
type storageMode struct {
	name string
	cfg  func(t *testing.T) engine.Config
}

var storageModes = []storageMode{
	{name: "memory", cfg: func(*testing.T) engine.Config { return engine.Config{Memory: true} }},
	{name: "file", cfg: func(t *testing.T) engine.Config {
		return engine.Config{DataDir: t.TempDir(), Sync: store.SyncAlways, SegmentBytes: 256 << 10}
	}},
}

func forEachMode(t *testing.T, fn func(t *testing.T, cfg engine.Config)) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) { fn(t, m.cfg(t)) })
	}
}

// testLogger logs to stderr when -v is set and HERALD_TEST_LOG is set, else nowhere.
func testLogger() *slog.Logger {
	if os.Getenv("HERALD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testOptions are quick settings for tests.
func testOptions() Options {
	return Options{Logger: testLogger(), LeaseWait: time.Second, BreakerMinPause: 100 * time.Millisecond,
		BreakerMaxPause: time.Second, ShutdownGrace: time.Second}
}

type env struct {
	t *testing.T
	b *engine.Broker
	m *Manager
}

// newEnv opens a broker with a push manager; both are closed when the test ends.
func newEnv(t *testing.T, cfg engine.Config, o Options) *env {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	b, err := engine.Open(cfg)
	if err != nil {
		t.Fatalf("engine.Open: %v", err)
	}
	m := NewManager(b, o)
	t.Cleanup(func() {
		m.Close()
		b.Close()
	})
	return &env{t: t, b: b, m: m}
}

func (e *env) topic(name string, partitions int) {
	e.t.Helper()
	if _, _, err := e.b.PutTopic(name, api.TopicSpec{Partitions: partitions}); err != nil {
		e.t.Fatalf("PutTopic %s: %v", name, err)
	}
}

func (e *env) sub(name string, spec api.SubscriptionSpec) {
	e.t.Helper()
	if spec.StartAt == "" {
		spec.StartAt = "earliest"
	}
	if _, _, err := e.b.PutSubscription(name, spec); err != nil {
		e.t.Fatalf("PutSubscription %s: %v", name, err)
	}
}

func (e *env) publish(topic string, msgs ...api.PublishMessage) []api.PublishResult {
	e.t.Helper()
	res, err := e.b.Publish(topic, msgs)
	if err != nil {
		e.t.Fatalf("Publish %s: %v", topic, err)
	}
	return res
}

func (e *env) stats(sub string) api.SubscriptionStats {
	e.t.Helper()
	s, err := e.b.GetSubscription(sub)
	if err != nil {
		e.t.Fatalf("GetSubscription %s: %v", sub, err)
	}
	return *s.Stats
}

// pullAll pulls and acks from a pull subscription until want messages arrived or timeout.
func (e *env) pullAll(sub string, want int, timeout time.Duration) []api.Message {
	e.t.Helper()
	var got []api.Message
	deadline := time.Now().Add(timeout)
	for len(got) < want && time.Now().Before(deadline) {
		msgs, err := e.b.Pull(context.Background(), sub, engine.PullOptions{Max: 100, Wait: 500 * time.Millisecond})
		if err != nil {
			e.t.Fatalf("Pull %s: %v", sub, err)
		}
		if len(msgs) == 0 {
			continue
		}
		hs := make([]string, len(msgs))
		for i := range msgs {
			hs[i] = msgs[i].ReceiptHandle
		}
		if _, err := e.b.Ack(sub, hs); err != nil {
			e.t.Fatalf("Ack %s: %v", sub, err)
		}
		got = append(got, msgs...)
	}
	return got
}

func text(s string) *string { return &s }

func dur(d time.Duration) api.Duration { return api.Duration(d) }

// eventually polls cond until it holds; it fails the test after timeout (generous: the machine
// is shared, and this bounds a hang, not a performance).
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hit is one request an endpoint received.
type hit struct {
	at     time.Time
	header http.Header
	body   []byte
	status int
}

// endpoint is an httptest server that records requests and answers with respond (default 200).
type endpoint struct {
	*httptest.Server
	mu      sync.Mutex
	hits    []hit
	respond func(n int, w http.ResponseWriter, r *http.Request, body []byte) int // n: 0-based index of the request; may set headers
}

func newEndpoint(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request, body []byte) int) *endpoint {
	t.Helper()
	ep := &endpoint{respond: respond}
	ep.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ep.mu.Lock()
		n := len(ep.hits)
		ep.hits = append(ep.hits, hit{at: time.Now(), header: r.Header.Clone(), body: body})
		ep.mu.Unlock()
		code := 200
		if ep.respond != nil {
			code = ep.respond(n, w, r, body)
		}
		ep.mu.Lock()
		ep.hits[n].status = code
		ep.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(ep.Close)
	return ep
}

func (ep *endpoint) all() []hit {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return append([]hit(nil), ep.hits...)
}

func (ep *endpoint) count() int {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return len(ep.hits)
}

// okIDs returns the message ids answered 2xx, each once.
func (ep *endpoint) okIDs() map[string]int {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	out := map[string]int{}
	for _, h := range ep.hits {
		if h.status >= 200 && h.status < 300 {
			out[h.header.Get(HeaderMessageID)]++
		}
	}
	return out
}
