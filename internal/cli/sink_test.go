package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/push"
)

// startSink runs a sink on a free loopback port until the test ends.
func startSink(t *testing.T, c sinkConfig) (string, *bytes.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	c.out = out
	if c.status == 0 {
		c.status = 200
	}
	if c.failStatus == 0 {
		c.failStatus = 503
	}
	if c.maxBody == 0 {
		c.maxBody = 1 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveSink(ctx, ln, c, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), out
}

func sinkStats(t *testing.T, base string) SinkStats {
	t.Helper()
	resp, err := http.Get(base + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st SinkStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// The broker pushes signed messages to the sink, which fails the first two and verifies every
// signature.
func TestSinkReceivesSignedPushes(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("sink-test-secret-0123456789"))
	base, out := startSink(t, sinkConfig{failFirst: 2, secrets: []string{secret}})
	b, err := engine.Open(engine.Config{Memory: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m := push.NewManager(b, push.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer b.Close()
	defer m.Close()
	if _, _, err := b.PutTopic("t", api.TopicSpec{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	spec := api.SubscriptionSpec{Topic: "t", StartAt: "earliest",
		Push:  &api.PushConfig{Endpoint: base + "/hook", SigningSecrets: []string{secret}},
		Retry: &api.RetryPolicy{MinBackoff: api.Duration(10 * time.Millisecond), MaxBackoff: api.Duration(50 * time.Millisecond)}}
	if _, _, err := b.PutSubscription("s", spec); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"one", "two", "three"} {
		if _, err := b.Publish("t", []api.PublishMessage{{Text: &s}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for sinkStats(t, base).Unique < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("sink stats %+v", sinkStats(t, base))
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := sinkStats(t, base)
	if st.OK != 3 || st.Failed != 2 || st.BadSignature != 0 || st.ByStatus["503"] != 2 || st.ByStatus["200"] != 3 {
		t.Errorf("stats %+v", st)
	}
	// An unsigned request is refused with 401 and counted.
	resp, err := http.Post(base+"/hook", "text/plain", strings.NewReader("forged"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned push answered %d", resp.StatusCode)
	}
	if st := sinkStats(t, base); st.BadSignature != 1 {
		t.Errorf("badSignature %d", st.BadSignature)
	}
	if !strings.Contains(out.String(), `body="three"`) {
		t.Errorf("sink output:\n%s", out.String())
	}
}

func TestSinkFlags(t *testing.T) {
	for _, args := range [][]string{{"--status", "42"}, {"--fail-first", "-1"}, {"extra"}} {
		var stderr bytes.Buffer
		if code := Main(append([]string{"sink"}, args...), io.Discard, &stderr); code != 2 {
			t.Errorf("sink %v: exit %d (%s)", args, code, stderr.String())
		}
	}
}
