package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/server"
)

var forbiddenEndpoints = []string{
	"http://169.254.169.254/latest/meta-data/",
	"http://169.254.0.1:8080/",
	"http://[fd00:ec2::254]/",
	"http://[fe80::1]:80/",
	"http://[::ffff:169.254.169.254]/",
}

func TestLinkLocalEndpointRefusedAtPut(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("t", 1)
	for _, ep := range forbiddenEndpoints {
		_, _, err := e.b.PutSubscription("s", pushSpec("t", ep))
		assertInvalid(t, err, "push.endpoint")
	}
	// Loopback and private addresses are fine.
	for _, ep := range []string{"http://127.0.0.1:1/", "http://10.0.0.1/", "http://[::1]:9/", "https://example.com/hook"} {
		if _, _, err := e.b.PutSubscription("s", pushSpec("t", ep)); err != nil {
			t.Errorf("PUT %s: %v", ep, err)
		}
	}

	// Over HTTP: 400, field push.endpoint.
	srv := httptest.NewServer(server.New(e.b, testLogger()))
	defer srv.Close()
	body, _ := json.Marshal(pushSpec("t", "http://169.254.169.254/"))
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/subscriptions/s2", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	if resp.StatusCode != 400 || eb.Error == nil || eb.Error.Code != api.CodeInvalidArgument || eb.Error.Field != "push.endpoint" {
		t.Errorf("HTTP PUT: %d %+v", resp.StatusCode, eb.Error)
	}

	// The explicit allow flag lets them through.
	allowed := newEnv(t, engine.Config{Memory: true, AllowLinkLocalEndpoints: true}, testOptions())
	allowed.topic("t", 1)
	for _, ep := range forbiddenEndpoints {
		if _, _, err := allowed.b.PutSubscription("s", pushSpec("t", ep)); err != nil {
			t.Errorf("with AllowLinkLocalEndpoints, PUT %s: %v", ep, err)
		}
	}
}

func TestDialControl(t *testing.T) {
	deny := dialControl(false)
	for _, addr := range []string{"169.254.169.254:80", "[fd00:ec2::254]:443", "[fe80::1%eth0]:80", "169.254.1.1:8080"} {
		if err := deny("tcp", addr, nil); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("dial %s: %v, want ErrForbiddenAddress", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:80", "10.1.2.3:443", "[::1]:80", "192.168.0.1:8080", "8.8.8.8:53"} {
		if err := deny("tcp", addr, nil); err != nil {
			t.Errorf("dial %s: %v", addr, err)
		}
	}
	if err := dialControl(true)("tcp", "169.254.169.254:80", nil); err != nil {
		t.Errorf("allowed: %v", err)
	}
}

// fakeDNS answers every A query with ip (and AAAA with nothing), over UDP.
func fakeDNS(t *testing.T, ip [4]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			hdr, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RecursionAvailable: true})
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip})
			}
			out, err := b.Finish()
			if err == nil {
				pc.WriteTo(out, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// A name that resolves to the metadata address is refused when connecting: the message is not
// delivered and the failure says why.
func TestNameResolvingToLinkLocalRefusedAtConnect(t *testing.T) {
	dns := fakeDNS(t, [4]byte{169, 254, 169, 254})
	o := testOptions()
	o.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	// Check the fake resolver really answers.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := o.Resolver.LookupHost(ctx, "metadata.herald-test.example")
	if err != nil || len(addrs) == 0 || addrs[0] != "169.254.169.254" {
		t.Fatalf("fake DNS: %v %v", addrs, err)
	}
	e := newEnv(t, engine.Config{Memory: true}, o)
	e.topic("t", 1)
	e.sub("s", pushSpec("t", "http://metadata.herald-test.example/latest/meta-data/"))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "a refused delivery", func() bool { return e.stats("s").Failed > 0 })
	st := e.stats("s")
	if !strings.Contains(st.LastError, "link-local") || st.Acked != 0 {
		t.Errorf("stats %+v: want a link-local refusal and no ack", st)
	}
}

// A redirect to the metadata address is not followed.
func TestRedirectToLinkLocalRefused(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		w.Header().Set("Location", "http://169.254.169.254/latest/meta-data/")
		return http.StatusTemporaryRedirect
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", ep.URL))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "a refused redirect", func() bool { return e.stats("s").Failed > 0 })
	if st := e.stats("s"); !strings.Contains(st.LastError, "link-local") {
		t.Errorf("lastError %q", st.LastError)
	}
}

// Redirects elsewhere are followed (a bounded number of times).
func TestRedirectFollowed(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	final := newEndpoint(t, nil)
	hop := newEndpoint(t, func(n int, w http.ResponseWriter, r *http.Request, body []byte) int {
		w.Header().Set("Location", final.URL+"/landed")
		return http.StatusPermanentRedirect
	})
	e.topic("t", 1)
	e.sub("s", pushSpec("t", hop.URL))
	e.publish("t", api.PublishMessage{Text: text("follow me")})
	eventually(t, 20*time.Second, "the ack", func() bool { return e.stats("s").Acked == 1 })
	if h := final.all(); len(h) != 1 || string(h[0].body) != "follow me" {
		t.Errorf("final endpoint got %v", h)
	}
}

// A large response body is not read whole.
func TestLargeResponseBodyCapped(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for i := 0; i < 1024; i++ { // 64 MiB, unless the client hangs up
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	e.topic("t", 1)
	e.sub("s", pushSpec("t", srv.URL))
	e.publish("t", api.PublishMessage{Text: text("x")})
	eventually(t, 20*time.Second, "a failure", func() bool { return e.stats("s").Failed > 0 })
	if st := e.stats("s"); len(st.LastError) > 600 || !strings.HasPrefix(st.LastError, "HTTP 500") {
		t.Errorf("lastError (%d bytes) %.100q", len(st.LastError), st.LastError)
	}
}

func TestRetryPresets(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("t", 1)
	put := func(p *api.RetryPolicy) *api.RetryPolicy {
		t.Helper()
		sub, _, err := e.b.PutSubscription("s", api.SubscriptionSpec{Topic: "t", Retry: p})
		if err != nil {
			t.Fatalf("PUT retry %+v: %v", p, err)
		}
		return sub.Retry
	}
	r := put(&api.RetryPolicy{Policy: "mns-backoff"})
	if r.MinBackoff.D() != 10*time.Second || r.MaxBackoff.D() != 20*time.Second || r.MaxAttempts != 4 {
		t.Errorf("mns-backoff → %+v", r)
	}
	for i := 1; i < 50; i++ {
		if d := engine.Backoff(r, 1+i%3); d < 10*time.Second || d > 20*time.Second {
			t.Fatalf("mns-backoff delay %s outside [10s, 20s]", d)
		}
	}
	r = put(&api.RetryPolicy{Policy: "mns-exponential-decay"})
	if r.MinBackoff.D() != time.Second || r.MaxBackoff.D() != 512*time.Second || r.MaxAttempts != 177 {
		t.Errorf("mns-exponential-decay → %+v", r)
	}
	var total time.Duration
	for n := 1; n < r.MaxAttempts; n++ { // the delay after each of the 176 failed attempts but the last
		total += engine.Backoff(r, n)
	}
	if want := 86015 * time.Second; total != want {
		t.Errorf("mns-exponential-decay spreads 176 retries over %s, want %s (MNS: within a day)", total, want)
	}
	if got := engine.Backoff(r, 1); got != time.Second {
		t.Errorf("first retry after %s", got)
	}
	if got := engine.Backoff(r, 10); got != 512*time.Second {
		t.Errorf("tenth retry after %s", got)
	}
	// Explicit settings win over the preset's.
	r = put(&api.RetryPolicy{Policy: "mns-backoff", MaxAttempts: 2})
	if r.MaxAttempts != 2 || r.MinBackoff.D() != 10*time.Second {
		t.Errorf("mns-backoff with maxAttempts 2 → %+v", r)
	}
	_, _, err := e.b.PutSubscription("s", api.SubscriptionSpec{Topic: "t", Retry: &api.RetryPolicy{Policy: "fibonacci"}})
	assertInvalid(t, err, "retry.policy")
}

func TestRetryDelay(t *testing.T) {
	tg := &target{retry: api.RetryPolicy{Policy: "exponential", MinBackoff: dur(time.Second), MaxBackoff: dur(10 * time.Second)}}
	for i := 0; i < 200; i++ {
		if d := tg.retryDelay(1, 0); d < time.Second || d > 1200*time.Millisecond {
			t.Fatalf("attempt 1: %s", d)
		}
		if d := tg.retryDelay(3, 0); d < 3200*time.Millisecond || d > 4800*time.Millisecond {
			t.Fatalf("attempt 3: %s", d)
		}
		if d := tg.retryDelay(20, 0); d < 8*time.Second || d > 10*time.Second {
			t.Fatalf("attempt 20: %s", d)
		}
		if d := tg.retryDelay(1, 30*time.Second); d != 30*time.Second {
			t.Fatalf("Retry-After 30s: %s", d)
		}
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{"7": 7 * time.Second, "": 0, "soon": 0, "-3": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second, now.Add(-time.Hour).Format(http.TimeFormat): 0} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %s, want %s", v, got, want)
		}
	}
}
