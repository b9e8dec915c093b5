package push

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// BenchmarkPushThroughput pushes b.N 1 KiB messages to a local endpoint (maxInFlight 64) and
// reports msg/s, publishing included; the endpoint runs in the same process, so on a small
// machine it competes with the broker for CPU. Run: go test -run - -bench PushThroughput -benchtime 50000x ./broker/push
func BenchmarkPushThroughput(b *testing.B) {
	for _, mode := range []struct {
		name string
		cfg  func() engine.Config
		dead bool // plus a subscription whose endpoint refuses connections
	}{
		{"memory", func() engine.Config { return engine.Config{Memory: true} }, false},
		{"memory+dead-endpoint", func() engine.Config { return engine.Config{Memory: true} }, true},
		{"file-fsync-always", func() engine.Config { return engine.Config{DataDir: b.TempDir(), Sync: store.SyncAlways} }, false},
		{"file-fsync-interval", func() engine.Config { return engine.Config{DataDir: b.TempDir(), Sync: store.SyncInterval} }, false},
	} {
		b.Run(mode.name, func(b *testing.B) {
			var got atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Add(1)
				w.WriteHeader(204)
			}))
			defer srv.Close()
			cfg := mode.cfg()
			cfg.Logger = testLogger()
			br, err := engine.Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			m := NewManager(br, Options{Logger: testLogger()})
			defer br.Close()
			defer m.Close()
			br.PutTopic("t", api.TopicSpec{Partitions: 4})
			br.PutSubscription("s", api.SubscriptionSpec{Topic: "t", Push: &api.PushConfig{Endpoint: srv.URL, MaxInFlight: 64}})
			if mode.dead {
				br.PutSubscription("dead", api.SubscriptionSpec{Topic: "t", Push: &api.PushConfig{Endpoint: "http://127.0.0.1:1/", MaxInFlight: 64}})
			}
			data := make([]byte, 1024)
			b.ResetTimer()
			start := time.Now()
			for sent := 0; sent < b.N; {
				n := min(500, b.N-sent)
				msgs := make([]api.PublishMessage, n)
				for i := range msgs {
					msgs[i] = api.PublishMessage{Data: data, Key: fmt.Sprint(i % 16)}
				}
				if _, err := br.Publish("t", msgs); err != nil {
					b.Fatal(err)
				}
				sent += n
			}
			for {
				s, _ := br.GetSubscription("s")
				if s.Stats.Acked >= int64(b.N) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		})
	}
}
