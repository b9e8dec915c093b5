package engine

import (
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldmq/herald/broker/api"
)

// BenchmarkPublish is the engine's share of a batched publish (250 messages of 1 KiB, as
// herald bench sends) on the memory store, so that no disk is measured: building the records,
// ids, partitioning, the append and its metrics. The topic is recreated now and then (off the
// clock) so that memory stays bounded.
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		name  string
		parts int
		msg   func(i int, data []byte) api.PublishMessage
	}{
		{"data", 1, func(_ int, data []byte) api.PublishMessage { return api.PublishMessage{Data: data} }},
		{"keyed-4", 4, func(i int, data []byte) api.PublishMessage {
			return api.PublishMessage{Data: data, Key: "user-" + strconv.Itoa(i%37), Attributes: map[string]string{"a": "b"}}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			br, err := Open(Config{Memory: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			spec := api.TopicSpec{Partitions: c.parts}
			if _, _, err := br.PutTopic("t", spec); err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 250*1024)
			msgs := make([]api.PublishMessage, 250)
			for i := range msgs {
				msgs[i] = c.msg(i, data[i*1024:(i+1)*1024:(i+1)*1024])
			}
			b.SetBytes(int64(len(data)))
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
				if _, err := br.Publish("t", msgs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPartitionForIsFNV1a: the inlined hash is hash/fnv's New32a, so keys keep their partitions.
func TestPartitionForIsFNV1a(t *testing.T) {
	for _, k := range []string{"a", "user-1", "ключ", strings.Repeat("x", 5000), "\x00\xff"} {
		for _, n := range []int{1, 3, 7, 64} {
			h := fnv.New32a()
			h.Write([]byte(k))
			if got, want := partitionFor(k, "", n), int(h.Sum32()%uint32(n)); got != want {
				t.Errorf("partitionFor(%q, %d) = %d, want %d", k, n, got, want)
			}
			if got, want := partitionFor("", k, n), int(h.Sum32()%uint32(n)); got != want {
				t.Errorf("partitionFor(\"\", %q, %d) = %d, want %d", k, n, got, want)
			}
		}
	}
}

// TestNewIDFormat: ids are the 12 hex digits of the process's base, '-', and the 12 of the
// sequence; several share one builder without changing each other.
func TestNewIDFormat(t *testing.T) {
	b := &Broker{idBase: 0x0123456789ab}
	b.idSeq.Store(0xfffe)
	var ids strings.Builder
	var got []string
	for range 3 {
		got = append(got, b.newID(&ids))
	}
	for i, id := range got {
		if want := fmt.Sprintf("%012x-%012x", b.idBase, 0xffff+i); id != want {
			t.Errorf("id %d = %q, want %q", i, id, want)
		}
	}
}
