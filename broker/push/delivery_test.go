package push

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// quickRetry retries fast, so tests do not wait for real backoffs.
func quickRetry() *api.RetryPolicy {
	return &api.RetryPolicy{Policy: "exponential", MinBackoff: dur(20 * time.Millisecond), MaxBackoff: dur(200 * time.Millisecond)}
}

func pushSpec(topic, url string) api.SubscriptionSpec {
	return api.SubscriptionSpec{Topic: topic, Push: &api.PushConfig{Endpoint: url}, Retry: quickRetry()}
}

func TestServerErrorThenSuccessAcksOnce(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
			if n < 2 {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		})
		e.topic("orders", 1)
		e.sub("s", pushSpec("orders", ep.URL+"/hook"))
		e.publish("orders", api.PublishMessage{Text: text("hello")})
		eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
		hits := ep.all()
		if len(hits) != 3 {
			t.Fatalf("endpoint got %d requests, want 3", len(hits))
		}
		for i, h := range hits {
			if got := h.header.Get(HeaderDeliveryAttempt); got != strconv.Itoa(i+1) {
				t.Errorf("request %d: %s = %q, want %d", i, HeaderDeliveryAttempt, got, i+1)
			}
			if string(h.body) != "hello" {
				t.Errorf("request %d: body %q", i, h.body)
			}
		}
		// Nothing more comes: the message is done.
		time.Sleep(300 * time.Millisecond)
		st := e.stats("s")
		if ep.count() != 3 || st.Acked != 1 || st.Backlog != 0 || st.InFlight != 0 || st.Failed != 2 {
			t.Errorf("after the ack: %d requests, stats %+v; want 3 requests, acked 1, failed 2, backlog 0", ep.count(), st)
		}
		if !strings.Contains(st.LastError, "503") || st.LastErrorTime == nil {
			t.Errorf("lastError %q (time %v), want the 503", st.LastError, st.LastErrorTime)
		}
	})
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		if n == 0 {
			w.Header().Set("Retry-After", "2")
			return http.StatusTooManyRequests
		}
		return http.StatusNoContent
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", ep.URL))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
	hits := ep.all()
	if len(hits) != 2 {
		t.Fatalf("%d requests, want 2", len(hits))
	}
	// The policy alone would retry after ~20ms; Retry-After says 2s. Generous on the low side
	// only (clock granularity), never an upper bound.
	if gap := hits[1].at.Sub(hits[0].at); gap < 1900*time.Millisecond {
		t.Errorf("retried %s after a 429 with Retry-After: 2", gap)
	}
}

func TestHangPastTimeoutIsRetried(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
			if n == 0 {
				select { // hang until the broker gives up
				case <-r.Context().Done():
				case <-release:
				}
				return http.StatusOK
			}
			return http.StatusOK
		})
		e.topic("t", 1)
		spec := pushSpec("t", ep.URL)
		spec.Push.Timeout = dur(300 * time.Millisecond)
		e.sub("s", spec)
		e.publish("t", api.PublishMessage{Text: text("slow")})
		eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
		hits := ep.all()
		if len(hits) < 2 || hits[len(hits)-1].header.Get(HeaderDeliveryAttempt) != strconv.Itoa(len(hits)) {
			t.Fatalf("%d requests; want a retry after the timeout with the attempt counted up", len(hits))
		}
		if st := e.stats("s"); !strings.Contains(st.LastError, "timeout") {
			t.Errorf("lastError %q, want a timeout", st.LastError)
		}
	})
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestConnectionRefusedRetriesThenDeadLetters(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		e.topic("t", 1)
		e.topic("dlq", 1)
		e.sub("dlq-reader", api.SubscriptionSpec{Topic: "dlq"})
		spec := pushSpec("t", "http://"+closedPort(t)+"/hook")
		spec.Retry.MaxAttempts = 3
		spec.DeadLetterTopic = "dlq"
		e.sub("s", spec)
		res := e.publish("t", api.PublishMessage{Text: text("nobody home"), Key: "k1", Attributes: map[string]string{"a": "1"}})
		got := e.pullAll("dlq-reader", 1, 20*time.Second)
		if len(got) != 1 {
			t.Fatalf("dead letters: %d, want 1", len(got))
		}
		m := got[0]
		if string(m.Data) != "nobody home" || m.Key != "k1" || m.Attributes["a"] != "1" {
			t.Errorf("dead letter %+v does not carry the message", m)
		}
		a := m.Attributes
		if a["herald.deadLetter.attempts"] != "3" || a["herald.deadLetter.messageId"] != res[0].ID || a["herald.deadLetter.subscription"] != "s" {
			t.Errorf("dead-letter attributes %v", a)
		}
		if r := a["herald.deadLetter.reason"]; !strings.Contains(r, "maxAttempts") || !strings.Contains(r, "connection refused") {
			t.Errorf("reason %q, want maxAttempts and the connection error", r)
		}
		if _, ok := a["herald.deadLetter.lastStatus"]; ok {
			t.Errorf("lastStatus %q set for a connection error", a["herald.deadLetter.lastStatus"])
		}
		st := e.stats("s")
		if st.DeadLettered != 1 || st.Failed != 3 || st.Acked != 0 || st.Backlog != 0 {
			t.Errorf("stats %+v; want deadLettered 1, failed 3, acked 0, backlog 0", st)
		}
	})
}

func TestServerErrorDeadLetterHasLastStatus(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, func(int, http.ResponseWriter, *http.Request, []byte) int { return http.StatusBadGateway })
	e.topic("t", 1)
	e.topic("dlq", 1)
	e.sub("dlq-reader", api.SubscriptionSpec{Topic: "dlq"})
	spec := pushSpec("t", ep.URL)
	spec.Retry.MaxAttempts = 2
	spec.DeadLetterTopic = "dlq"
	e.sub("s", spec)
	e.publish("t", api.PublishMessage{Text: text("x")})
	got := e.pullAll("dlq-reader", 1, 20*time.Second)
	if len(got) != 1 {
		t.Fatalf("dead letters: %d", len(got))
	}
	a := got[0].Attributes
	if a["herald.deadLetter.lastStatus"] != "502" || a["herald.deadLetter.attempts"] != "2" || !strings.Contains(a["herald.deadLetter.reason"], "HTTP 502") {
		t.Errorf("dead-letter attributes %v", a)
	}
}

func TestPermanentStatusDeadLettersAtOnce(t *testing.T) {
	for _, code := range []int{400, 410, 413, 415, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			forEachMode(t, func(t *testing.T, cfg engine.Config) {
				e := newEnv(t, cfg, testOptions())
				ep := newEndpoint(t, func(int, http.ResponseWriter, *http.Request, []byte) int { return code })
				e.topic("t", 1)
				e.topic("dlq", 1)
				e.sub("dlq-reader", api.SubscriptionSpec{Topic: "dlq"})
				spec := pushSpec("t", ep.URL)
				spec.Retry.MaxAttempts = 10
				spec.DeadLetterTopic = "dlq"
				e.sub("s", spec)
				e.publish("t", api.PublishMessage{Text: text("bad")})
				got := e.pullAll("dlq-reader", 1, 20*time.Second)
				if len(got) != 1 {
					t.Fatalf("dead letters: %d", len(got))
				}
				a := got[0].Attributes
				if a["herald.deadLetter.lastStatus"] != strconv.Itoa(code) || a["herald.deadLetter.attempts"] != "1" ||
					!strings.HasPrefix(a["herald.deadLetter.reason"], "permanent failure: HTTP "+strconv.Itoa(code)) {
					t.Errorf("dead-letter attributes %v", a)
				}
				if n := ep.count(); n != 1 {
					t.Errorf("%d requests for a permanent %d, want 1", n, code)
				}
			})
		})
	}
}

func TestNotFoundIsRetried(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		if n == 0 {
			return http.StatusNotFound
		}
		return http.StatusOK
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", ep.URL))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
	if st := e.stats("s"); st.DeadLettered != 0 || ep.count() != 2 {
		t.Errorf("404 then 200: %d requests, stats %+v", ep.count(), st)
	}
}

// One subscription's endpoint hangs; another subscription of the same topic still gets every
// message.
func TestSlowEndpointDoesNotDelayOthers(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	release := make(chan struct{})
	hang := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return http.StatusOK
	})
	t.Cleanup(func() { close(release) })
	fast := newEndpoint(t, nil)
	e.topic("t", 2)
	slow := pushSpec("t", hang.URL)
	slow.Push.Timeout = dur(10 * time.Minute)
	slow.Push.MaxInFlight = 2
	e.sub("slow", slow)
	e.sub("fast", pushSpec("t", fast.URL))
	// The slow endpoint's requests are hanging before the fast one gets its messages.
	e.publish("t", api.PublishMessage{Text: text("first")}, api.PublishMessage{Text: text("second")})
	eventually(t, 20*time.Second, "the slow endpoint to be busy", func() bool { return hang.count() >= 2 })
	for i := 0; i < 50; i++ {
		e.publish("t", api.PublishMessage{Text: text(fmt.Sprint("m", i))})
	}
	eventually(t, 20*time.Second, "all 52 messages at the fast endpoint", func() bool { return len(fast.okIDs()) == 52 })
	if st := e.stats("fast"); st.Backlog != 0 {
		eventually(t, 20*time.Second, "fast backlog 0", func() bool { return e.stats("fast").Backlog == 0 })
	}
	if n := hang.count(); n != 2 {
		t.Errorf("the slow endpoint got %d requests, want 2 (maxInFlight)", n)
	}
}

// Messages of one ordering key arrive one at a time, in order, even when the first fails twice;
// another key is not held up.
func TestOrderedDeliveryWithFailures(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		var mu sync.Mutex
		active := map[string]int{}
		seq := map[string][]string{} // ordering key → bodies in arrival order (failures included)
		fails := map[string]int{}
		var overlap atomic.Int32
		ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
			k := r.Header.Get(HeaderOrderingKey)
			mu.Lock()
			active[k]++
			if active[k] > 1 {
				overlap.Add(1)
			}
			seq[k] = append(seq[k], string(body))
			fail := string(body) == "a-0" && fails["a-0"] < 2
			if fail {
				fails["a-0"]++
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			active[k]--
			mu.Unlock()
			if fail {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		e.topic("t", 2)
		spec := pushSpec("t", ep.URL)
		spec.Ordered = true
		spec.Push.MaxInFlight = 8
		e.sub("s", spec)
		var msgs []api.PublishMessage
		for i := 0; i < 5; i++ {
			for _, k := range []string{"a", "b", "c"} {
				msgs = append(msgs, api.PublishMessage{Text: text(fmt.Sprintf("%s-%d", k, i)), OrderingKey: k})
			}
		}
		e.publish("t", msgs...)
		eventually(t, 30*time.Second, "15 acks", func() bool { return e.stats("s").Acked == 15 })
		mu.Lock()
		defer mu.Unlock()
		if n := overlap.Load(); n > 0 {
			t.Errorf("%d times two messages of one key were out at once", n)
		}
		want := map[string][]string{
			"a": {"a-0", "a-0", "a-0", "a-1", "a-2", "a-3", "a-4"},
			"b": {"b-0", "b-1", "b-2", "b-3", "b-4"},
			"c": {"c-0", "c-1", "c-2", "c-3", "c-4"},
		}
		for k, w := range want {
			if !slices.Equal(seq[k], w) {
				t.Errorf("key %s arrived as %v, want %v", k, seq[k], w)
			}
		}
	})
}

// Switching the endpoint while messages flow loses none of them.
func TestEndpointChangeLosesNothing(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		slowish := func(int, http.ResponseWriter, *http.Request, []byte) int {
			time.Sleep(2 * time.Millisecond)
			return http.StatusOK
		}
		a, b := newEndpoint(t, slowish), newEndpoint(t, slowish)
		e.topic("t", 3)
		spec := pushSpec("t", a.URL)
		spec.Push.MaxInFlight = 4
		e.sub("s", spec)
		var ids []string
		for i := 0; i < 300; i++ {
			res := e.publish("t", api.PublishMessage{Text: text(fmt.Sprint("m", i))})
			ids = append(ids, res[0].ID)
			if i == 100 {
				eventually(t, 20*time.Second, "deliveries to the first endpoint", func() bool { return a.count() > 10 })
				spec.Push.Endpoint = b.URL
				spec.Push.MaxInFlight = 16
				e.sub("s", spec)
			}
		}
		eventually(t, 30*time.Second, "300 acks", func() bool { return e.stats("s").Acked >= 300 })
		seen := a.okIDs()
		for id, n := range b.okIDs() {
			seen[id] += n
		}
		for _, id := range ids {
			if seen[id] == 0 {
				t.Errorf("message %s never delivered", id)
			}
		}
		if b.count() == 0 {
			t.Errorf("the new endpoint got nothing")
		}
		if st := e.stats("s"); st.Backlog != 0 {
			t.Errorf("backlog %d after all acks", st.Backlog)
		}
	})
}

// A subscription that stops pushing (turned into a pull subscription) hands its messages to
// pull.
func TestPushToPullAndBack(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, nil)
	e.topic("t", 1)
	spec := pushSpec("t", ep.URL)
	spec.AckDeadline = dur(2 * time.Second)
	e.sub("s", spec)
	e.publish("t", api.PublishMessage{Text: text("pushed")})
	eventually(t, 20*time.Second, "the push", func() bool { return e.stats("s").Acked == 1 })
	spec.Push = nil
	e.sub("s", spec)
	e.publish("t", api.PublishMessage{Text: text("pulled")})
	got := e.pullAll("s", 1, 20*time.Second)
	if len(got) != 1 || string(got[0].Data) != "pulled" {
		t.Fatalf("pulled %v", got)
	}
	if n := ep.count(); n != 1 {
		t.Errorf("endpoint got %d pushes after the subscription became pull", n)
	}
	spec.Push = &api.PushConfig{Endpoint: ep.URL}
	e.sub("s", spec)
	e.publish("t", api.PublishMessage{Text: text("pushed again")})
	eventually(t, 20*time.Second, "the second push", func() bool { return len(ep.okIDs()) == 2 })
}

func TestForwardToTopic(t *testing.T) {
	forEachMode(t, func(t *testing.T, cfg engine.Config) {
		e := newEnv(t, cfg, testOptions())
		e.topic("in", 2)
		e.topic("out", 1)
		e.sub("out-reader", api.SubscriptionSpec{Topic: "out"})
		e.sub("fwd", pushSpec("in", "topic:out"))
		e.publish("in", api.PublishMessage{Text: text("hop"), Key: "k", Tag: "eu", Attributes: map[string]string{"x": "y"}})
		got := e.pullAll("out-reader", 1, 20*time.Second)
		if len(got) != 1 {
			t.Fatalf("forwarded: %d", len(got))
		}
		if m := got[0]; string(m.Data) != "hop" || m.Key != "k" || m.Tag != "eu" || m.Attributes["x"] != "y" {
			t.Errorf("forwarded %+v", m)
		}
		eventually(t, 10*time.Second, "the ack", func() bool { return e.stats("fwd").Acked == 1 })
	})
}

func TestForwardToMissingTopicIsRetried(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("in", 1)
	e.sub("fwd", pushSpec("in", "topic:later"))
	e.publish("in", api.PublishMessage{Text: text("wait for it")})
	eventually(t, 20*time.Second, "a failure", func() bool { return e.stats("fwd").Failed > 0 })
	e.topic("later", 1)
	e.sub("later-reader", api.SubscriptionSpec{Topic: "later"})
	if got := e.pullAll("later-reader", 1, 20*time.Second); len(got) != 1 {
		t.Fatalf("forwarded after the topic appeared: %d", len(got))
	}
}

func TestForwardLoopRefused(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("t", 1)
	_, _, err := e.b.PutSubscription("s", pushSpec("t", "topic:t"))
	assertInvalid(t, err, "push.endpoint")
	_, _, err = e.b.PutSubscription("s", pushSpec("t", "topic:bad/name"))
	assertInvalid(t, err, "push.endpoint")
}

// The circuit breaker opens on a failing endpoint and closes by itself when it recovers.
func TestCircuitBreakerOpensAndRecovers(t *testing.T) {
	o := testOptions()
	o.BreakerThreshold = 3
	e := newEnv(t, engine.Config{Memory: true}, o)
	var healthy atomic.Bool
	ep := newEndpoint(t, func(int, http.ResponseWriter, *http.Request, []byte) int {
		if healthy.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", ep.URL))
	for i := 0; i < 20; i++ {
		e.publish("t", api.PublishMessage{Text: text(fmt.Sprint(i))})
	}
	gauge := e.m.metrics.circuit.WithLabelValues("s")
	eventually(t, 20*time.Second, "the circuit to open", func() bool { return testutil.ToFloat64(gauge) == 1 })
	healthy.Store(true)
	eventually(t, 30*time.Second, "all 20 acked", func() bool { return e.stats("s").Acked == 20 })
	if v := testutil.ToFloat64(gauge); v != 0 {
		t.Errorf("circuit gauge %v after recovery", v)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		if n == 0 {
			return 500
		}
		return 200
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", ep.URL))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
	eventually(t, 5*time.Second, "the 200 counted", func() bool {
		return testutil.ToFloat64(e.m.metrics.requests.WithLabelValues("s", "200")) == 1
	})
	if v := testutil.ToFloat64(e.m.metrics.requests.WithLabelValues("s", "500")); v != 1 {
		t.Errorf("herald_push_requests_total{code=500} = %v", v)
	}
	mfs, err := e.b.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"herald_push_latency_seconds", "herald_push_requests_total", "herald_push_end_to_end_seconds"} {
		if !names[n] {
			t.Errorf("metric %s not on the broker's registry", n)
		}
	}
	// A second manager on the same broker reuses the collectors instead of panicking.
	m2 := NewManager(e.b, testOptions())
	m2.Close()
}

// What was leased but not acked when the broker stopped is pushed again after a restart.
func TestRestartRedeliversUnacked(t *testing.T) {
	dir := t.TempDir()
	cfg := engine.Config{DataDir: dir, Logger: testLogger()}
	var hangFirst atomic.Bool
	hangFirst.Store(true)
	ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		if hangFirst.Load() {
			<-r.Context().Done()
			return http.StatusOK
		}
		return http.StatusOK
	})
	b, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions()
	o.ShutdownGrace = 100 * time.Millisecond
	m := NewManager(b, o)
	if _, _, err := b.PutTopic("t", api.TopicSpec{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	spec := pushSpec("t", ep.URL)
	spec.StartAt = "earliest"
	spec.Push.Timeout = dur(time.Minute)
	if _, _, err := b.PutSubscription("s", spec); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish("t", []api.PublishMessage{{Text: text("survivor")}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the first request", func() bool { return ep.count() == 1 })
	m.Close() // cancels the hanging request: no ack
	b.Close()
	hangFirst.Store(false)

	e := newEnv(t, cfg, testOptions())
	eventually(t, 20*time.Second, "the redelivery's ack", func() bool { return e.stats("s").Acked == 1 })
	if ids := ep.okIDs(); len(ids) != 1 {
		t.Errorf("delivered ids %v", ids)
	}
}

func assertInvalid(t *testing.T, err error, field string) {
	t.Helper()
	ae, ok := err.(*api.Error)
	if !ok || ae.Code != api.CodeInvalidArgument || ae.Field != field {
		t.Fatalf("error %v, want InvalidArgument on %s", err, field)
	}
}
