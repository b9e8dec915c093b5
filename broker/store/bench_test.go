package store

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// benchBatch returns n records of 1 KiB Data with broker-like metadata.
func benchBatch(n int) []Record {
	rs := make([]Record, n)
	for i := range rs {
		rs[i] = Record{ID: fmt.Sprintf("%016x", i), Key: "customer-42", Data: make([]byte, 1024)}
	}
	return rs
}

// reportLatency adds latency percentiles and message rate to a benchmark's output.
func reportLatency(b *testing.B, lat []time.Duration, msgs int) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAppend appends 1 KiB records in batches of 1 and 100 under each sync policy (and to
// the memory store, for reference), one appender at a time.
func BenchmarkAppend(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) Store
	}{
		{"memory", func(b *testing.B) Store { return NewMemoryStore(Options{}) }},
	}
	for _, p := range []SyncPolicy{SyncAlways, SyncInterval, SyncNever} {
		stores = append(stores, struct {
			name string
			open func(b *testing.B) Store
		}{"file-" + p.String(), func(b *testing.B) Store { return newFileStore(b, b.TempDir(), Options{Sync: p}) }})
	}
	for _, st := range stores {
		for _, n := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/batch=%d", st.name, n), func(b *testing.B) {
				s := st.open(b)
				defer s.Close()
				l := mustOpen(b, s, "bench/0")
				batch := benchBatch(n)
				lat := make([]time.Duration, 0, 1024)
				b.SetBytes(int64(n * 1024))
				b.ReportAllocs()
				for b.Loop() {
					t0 := time.Now()
					if _, err := l.Append(batch); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				reportLatency(b, lat, n*len(lat))
			})
		}
	}
}

// BenchmarkAppendParallel runs many single-record appenders under SyncAlways: group commit
// should make fsyncs/op well below 1.
func BenchmarkAppendParallel(b *testing.B) {
	var syncs atomic.Int64
	s := newFileStore(b, b.TempDir(), Options{Sync: SyncAlways, OnSync: func(time.Duration) { syncs.Add(1) }})
	l := mustOpen(b, s, "bench/0")
	b.SetBytes(1024)
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	syncs.Store(0)
	b.RunParallel(func(pb *testing.PB) {
		batch := benchBatch(1)
		for pb.Next() {
			if _, err := l.Append(batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(syncs.Load())/float64(b.N), "fsyncs/op")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkRead reads a log sequentially, 100 records of 1 KiB per Read, from single-record
// batches (the worst case: one CRC check and header per record) and from 100-record batches.
func BenchmarkRead(b *testing.B) {
	for _, per := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", per), func(b *testing.B) {
			const total = 20000
			s := newFileStore(b, b.TempDir(), Options{Sync: SyncNever})
			l := mustOpen(b, s, "bench/0")
			batch := benchBatch(per)
			for l.EndOffset() < total {
				if _, err := l.Append(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(100 * 1024)
			b.ReportAllocs()
			var from int64
			for b.Loop() {
				got, err := l.Read(from, 100, 0)
				if err != nil || len(got) != 100 {
					b.Fatalf("Read(%d): %d records, %v", from, len(got), err)
				}
				from += 100
				if from+100 > total {
					from = 0
				}
			}
		})
	}
}
