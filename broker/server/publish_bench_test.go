package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// BenchmarkPublishHandler is one batched publish (250 messages of 1 KiB, as herald bench sends)
// through the whole handler, on the memory store so that no disk is measured: read, decode,
// engine, response. The topic is recreated now and then (off the clock) to bound memory.
func BenchmarkPublishHandler(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	br, err := engine.Open(engine.Config{Memory: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	s := New(br, quiet)
	spec := api.TopicSpec{Partitions: 1}
	if _, _, err := br.PutTopic("t", spec); err != nil {
		b.Fatal(err)
	}
	body := publishBody(250, 1024)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if n++; n%200 == 0 {
			b.StopTimer()
			if err := br.DeleteTopic("t"); err != nil {
				b.Fatal(err)
			}
			if _, _, err := br.PutTopic("t", spec); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		r := httptest.NewRequest("POST", "/v1/topics/t/messages", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}
