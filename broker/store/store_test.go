package store

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"
)

// impl is one Store implementation under the conformance suite.
type impl struct {
	name string
	file bool
	// open returns a new, empty store with opts; it is closed at the end of the test.
	open func(t testing.TB, opts Options) Store
}

// impls lists every implementation: memory, and the file store under each sync policy (the
// policy changes the append and visibility paths, so each must pass the same suite).
func impls() []impl {
	file := func(p SyncPolicy) func(testing.TB, Options) Store {
		return func(t testing.TB, opts Options) Store {
			opts.Sync = p
			s, err := NewFileStore(t.TempDir(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
	}
	return []impl{
		{name: "memory", open: func(t testing.TB, opts Options) Store {
			s := NewMemoryStore(opts)
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{name: "file-always", file: true, open: file(SyncAlways)},
		{name: "file-interval", file: true, open: file(SyncInterval)},
		{name: "file-never", file: true, open: file(SyncNever)},
	}
}

// TestConformance runs every behaviour of the Store and Log contract against every
// implementation (the nats-server pattern: one suite, all stores).
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, im impl)
	}{
		{"AppendRead", testAppendRead},
		{"ReadLimits", testReadLimits},
		{"Timestamps", testTimestamps},
		{"TooLarge", testTooLarge},
		{"SegmentRoll", testSegmentRoll},
		{"RetentionBytes", testRetentionBytes},
		{"RetentionAge", testRetentionAge},
		{"DropBefore", testDropBefore},
		{"OffsetForTime", testOffsetForTime},
		{"ConcurrentAppenders", testConcurrentAppenders},
		{"ReadWhileAppending", testReadWhileAppending},
		{"Reopen", testReopen},
		{"Remove", testRemove},
		{"Closed", testClosed},
		{"Names", testNames},
		{"CallerOwnsRecords", testCallerOwnsRecords},
		{"Truncate", testTruncate},
		{"TruncateFromStart", testTruncateFromStart},
		{"TruncateConcurrent", testTruncateConcurrent},
		{"Reset", testReset},
		{"ResetConcurrent", testResetConcurrent},
		{"OnWrite", testOnWrite},
		{"WrittenPending", testWrittenPending},
		{"ReadWrittenConcurrent", testReadWrittenConcurrent},
	}
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, im)
				})
			}
		})
	}
}

// rec returns a deterministic test record; n varies the sizes of its fields.
func rec(n int) Record {
	r := Record{
		Timestamp: int64(1_700_000_000_000_000_000 + n),
		ID:        fmt.Sprintf("id-%d", n),
		Data:      bytes.Repeat([]byte{byte(n)}, n%97),
	}
	if n%2 == 0 {
		r.Key = fmt.Sprintf("key-%d", n%7)
	}
	if n%3 == 0 {
		r.OrderingKey = "ok"
		r.Tag = "eu"
	}
	if n%4 == 0 {
		r.Attributes = map[string]string{"a": "1", "n": fmt.Sprint(n), "": "empty key"}
	}
	return r
}

// recs returns records rec(from) … rec(from+n-1).
func recs(from, n int) []Record {
	out := make([]Record, n)
	for i := range out {
		out[i] = rec(from + i)
	}
	return out
}

// sameRecord compares everything a reader sees (nil and empty Data or Attributes are equal).
func sameRecord(a, b Record) bool {
	return a.Offset == b.Offset && a.Timestamp == b.Timestamp && a.ID == b.ID && a.Key == b.Key &&
		a.OrderingKey == b.OrderingKey && a.Tag == b.Tag && bytes.Equal(a.Data, b.Data) &&
		len(a.Attributes) == len(b.Attributes) && (len(a.Attributes) == 0 || maps.Equal(a.Attributes, b.Attributes))
}

func checkRecords(t testing.TB, what string, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d records (%v), want %d (%v)", what, len(got), offsets(got), len(want), offsets(want))
	}
	for i := range got {
		if !sameRecord(got[i], want[i]) {
			t.Fatalf("%s: record %d:\n got %+v\nwant %+v", what, i, got[i], want[i])
		}
	}
}

func offsets(rs []Record) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Offset
	}
	return out
}

func mustOpen(t testing.TB, s Store, name string) Log {
	t.Helper()
	l, err := s.Open(name)
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	return l
}

func mustAppend(t testing.TB, l Log, rs []Record) int64 {
	t.Helper()
	base, err := l.Append(rs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return base
}

func mustRead(t testing.TB, l Log, from int64, max, maxBytes int) []Record {
	t.Helper()
	got, err := l.Read(from, max, maxBytes)
	if err != nil {
		t.Fatalf("Read(%d, %d, %d): %v", from, max, maxBytes, err)
	}
	return got
}

// appendBatches appends batches of the given sizes and returns all records with their offsets.
func appendBatches(t testing.TB, l Log, sizes ...int) []Record {
	t.Helper()
	var all []Record
	n := int(l.EndOffset())
	for _, size := range sizes {
		rs := recs(n, size)
		base := mustAppend(t, l, rs)
		if base != int64(n) {
			t.Fatalf("Append base %d, want %d", base, n)
		}
		for i, r := range rs {
			if r.Offset != int64(n+i) {
				t.Fatalf("record %d got offset %d, want %d", i, r.Offset, n+i)
			}
		}
		all = append(all, rs...)
		n += size
	}
	return all
}

func testAppendRead(t *testing.T, im impl) {
	l := mustOpen(t, im.open(t, Options{}), "topics/orders/0")
	if l.StartOffset() != 0 || l.EndOffset() != 0 || l.Size() != 0 {
		t.Fatalf("new log: start %d end %d size %d", l.StartOffset(), l.EndOffset(), l.Size())
	}
	if got := mustRead(t, l, 0, 10, 0); len(got) != 0 {
		t.Fatalf("read of empty log: %v", got)
	}
	all := appendBatches(t, l, 1, 3, 1, 10, 2)
	if l.EndOffset() != 17 || l.StartOffset() != 0 || l.Size() <= 0 {
		t.Fatalf("start %d end %d size %d", l.StartOffset(), l.EndOffset(), l.Size())
	}
	for from := int64(0); from <= 17; from++ {
		checkRecords(t, fmt.Sprintf("Read(%d)", from), mustRead(t, l, from, 0, 0), all[from:])
	}
	for _, from := range []int64{-1, 18, 1000} {
		if _, err := l.Read(from, 0, 0); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Read(%d): err %v, want ErrOutOfRange", from, err)
		}
	}
	if base, err := l.Append(nil); err != nil || base != 17 || l.EndOffset() != 17 {
		t.Errorf("Append(nil) = %d, %v; end %d", base, err, l.EndOffset())
	}
}

func testReadLimits(t *testing.T, im impl) {
	// Two batches of five records with 100-byte Data each: limits must cut inside and across
	// batches alike.
	l := mustOpen(t, im.open(t, Options{}), "l")
	for b := range 2 {
		rs := make([]Record, 5)
		for i := range rs {
			rs[i] = Record{ID: fmt.Sprint(b*5 + i), Data: bytes.Repeat([]byte("x"), 100)}
		}
		mustAppend(t, l, rs)
	}
	tests := []struct {
		from          int64
		max, maxBytes int
		want          []int64
	}{
		{0, 0, 0, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{0, 3, 0, []int64{0, 1, 2}},
		{0, 5, 0, []int64{0, 1, 2, 3, 4}},
		{4, 2, 0, []int64{4, 5}},
		{7, 100, 0, []int64{7, 8, 9}},
		{0, 0, 250, []int64{0, 1}},
		{0, 0, 99, []int64{0}}, // the first record always fits
		{9, 0, 1, []int64{9}},
		{3, 0, 300, []int64{3, 4, 5}},
		{0, 0, 1000, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{0, 0, 999, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8}},
		{0, 10, 500, []int64{0, 1, 2, 3, 4}},
		{2, 2, 150, []int64{2}},
		{10, 5, 5, []int64{}},
	}
	for _, tc := range tests {
		got := offsets(mustRead(t, l, tc.from, tc.max, tc.maxBytes))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Read(%d, %d, %d) = %v, want %v", tc.from, tc.max, tc.maxBytes, got, tc.want)
		}
	}
}

func testTimestamps(t *testing.T, im impl) {
	l := mustOpen(t, im.open(t, Options{}), "l")
	before := time.Now().UnixNano()
	rs := []Record{{ID: "a"}, {ID: "b", Timestamp: 42}, {ID: "c", Timestamp: -7}, {ID: "d"}}
	mustAppend(t, l, rs)
	after := time.Now().UnixNano()
	got := mustRead(t, l, 0, 0, 0)
	if got[0].Timestamp < before || got[0].Timestamp > after || got[3].Timestamp != got[0].Timestamp {
		t.Errorf("zero timestamps set to %d and %d, want one time in [%d, %d]", got[0].Timestamp, got[3].Timestamp, before, after)
	}
	if got[1].Timestamp != 42 || got[2].Timestamp != -7 {
		t.Errorf("explicit timestamps: %d %d", got[1].Timestamp, got[2].Timestamp)
	}
	checkRecords(t, "written back", got, rs)
}

func testTooLarge(t *testing.T, im impl) {
	l := mustOpen(t, im.open(t, Options{SegmentBytes: 1024}), "l")
	if _, err := l.Append([]Record{{Data: make([]byte, 1024)}}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of a batch over SegmentBytes: %v, want ErrTooLarge", err)
	}
	if l.EndOffset() != 0 || l.Size() != 0 {
		t.Fatalf("after a refused append: end %d size %d", l.EndOffset(), l.Size())
	}
	all := appendBatches(t, l, 3) // the log still works
	checkRecords(t, "after ErrTooLarge", mustRead(t, l, 0, 0, 0), all)
}

func testSegmentRoll(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 1024, IndexBytes: 100})
	l := mustOpen(t, s, "l")
	var all []Record
	for i := range 60 {
		all = append(all, appendBatches(t, l, 1+i%3)...)
	}
	checkRecords(t, "across segments", mustRead(t, l, 0, 0, 0), all)
	for from := range int64(len(all)) {
		checkRecords(t, fmt.Sprintf("Read(%d, 7)", from), mustRead(t, l, from, 7, 0), all[from:min(from+7, int64(len(all)))])
	}
	if im.file {
		if n := len(l.(*fileLog).segs); n < 5 {
			t.Fatalf("%d segments, want several", n)
		}
		for _, seg := range l.(*fileLog).segs {
			if seg.size > 1024 {
				t.Errorf("segment %d has %d bytes, over SegmentBytes", seg.base, seg.size)
			}
		}
	}
	// Only the active segment is left when every other one must go.
	start, err := l.EnforceRetention(time.Now(), 0, 1)
	if err != nil || start == 0 || start >= l.EndOffset() {
		t.Fatalf("EnforceRetention = %d, %v (end %d)", start, err, l.EndOffset())
	}
}

// uniformLog returns a log where each single-record batch fills exactly one segment, so
// retention outcomes are exact: segment i holds record i, with timestamp ts(i).
func uniformLog(t *testing.T, im impl, n int, ts func(i int) int64) (Log, int64) {
	mk := func(i int) Record {
		return Record{Timestamp: ts(i), ID: fmt.Sprintf("id-%03d", i), Data: []byte("0123456789")}
	}
	segBytes := int64(len(encodeBatch(nil, []Record{mk(0)})))
	l := mustOpen(t, im.open(t, Options{SegmentBytes: segBytes}), "l")
	for i := range n {
		r := mk(i)
		if int64(len(encodeBatch(nil, []Record{r}))) != segBytes {
			t.Fatal("test records must encode to one size")
		}
		mustAppend(t, l, []Record{r})
	}
	if l.Size() != int64(n)*segBytes {
		t.Fatalf("size %d, want %d", l.Size(), int64(n)*segBytes)
	}
	return l, segBytes
}

func testRetentionBytes(t *testing.T, im impl) {
	base := time.Now().UnixNano()
	l, seg := uniformLog(t, im, 10, func(i int) int64 { return base + int64(i) })
	tests := []struct {
		maxBytes  int64
		wantStart int64
	}{
		{0, 0},          // no limit
		{10 * seg, 0},   // fits
		{10*seg - 1, 1}, // one over: drop one segment
		{7*seg + 1, 3},  // keep seven
		{3 * seg, 7},    // keep three
		{1, 9},          // only the active segment is left
		{1, 9},          // and it is never dropped
		{100 * seg, 9},  // nothing comes back
	}
	for _, tc := range tests {
		start, err := l.EnforceRetention(time.Now(), 0, tc.maxBytes)
		if err != nil || start != tc.wantStart || l.StartOffset() != tc.wantStart {
			t.Fatalf("EnforceRetention(maxBytes %d) = %d, %v (StartOffset %d), want %d", tc.maxBytes, start, err, l.StartOffset(), tc.wantStart)
		}
		if want := (10 - tc.wantStart) * seg; l.Size() != want {
			t.Fatalf("size %d after retention, want %d", l.Size(), want)
		}
		if _, err := l.Read(tc.wantStart-1, 0, 0); tc.wantStart > 0 && !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Read below start: %v, want ErrOutOfRange", err)
		}
		got := mustRead(t, l, tc.wantStart, 0, 0)
		if len(got) != int(10-tc.wantStart) || got[0].Offset != tc.wantStart {
			t.Fatalf("Read(start) = %v", offsets(got))
		}
	}
	if base := mustAppend(t, l, []Record{{ID: "after"}}); base != 10 {
		t.Fatalf("append after retention at %d, want 10", base)
	}
}

func testDropBefore(t *testing.T, im impl) {
	base := time.Now().UnixNano()
	l, seg := uniformLog(t, im, 10, func(i int) int64 { return base + int64(i) }) // one record per segment
	tests := []struct{ offset, wantStart int64 }{
		{0, 0},  // nothing below 0
		{1, 1},  // the first segment ends at 1
		{1, 1},  // idempotent
		{5, 5},  // segments 1-4
		{3, 5},  // never back
		{99, 9}, // never the active segment
	}
	for _, tc := range tests {
		start, err := l.DropBefore(tc.offset)
		if err != nil || start != tc.wantStart || l.StartOffset() != tc.wantStart {
			t.Fatalf("DropBefore(%d) = %d, %v (StartOffset %d), want %d", tc.offset, start, err, l.StartOffset(), tc.wantStart)
		}
		if want := (10 - tc.wantStart) * seg; l.Size() != want {
			t.Fatalf("size %d after DropBefore(%d), want %d", l.Size(), tc.offset, want)
		}
	}
	if got := mustRead(t, l, 9, 0, 0); len(got) != 1 || got[0].ID != "id-009" {
		t.Fatalf("Read(9) = %v", got)
	}
}

func testRetentionAge(t *testing.T, im impl) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l, _ := uniformLog(t, im, 10, func(i int) int64 { return t0.Add(time.Duration(i) * time.Minute).UnixNano() })
	tests := []struct {
		now       time.Time
		maxAge    time.Duration
		wantStart int64
	}{
		{t0.Add(time.Hour), 0, 0},                                  // no age limit
		{t0.Add(10 * time.Minute), time.Hour, 0},                   // nothing old enough
		{t0.Add(10 * time.Minute), 10 * time.Minute, 0},            // cutoff t0: record 0 is not older
		{t0.Add(10*time.Minute + 1), 10 * time.Minute, 1},          // now it is
		{t0.Add(10 * time.Minute), 5*time.Minute + time.Second, 5}, // cutoff t0+4m59s
		{t0.Add(24 * time.Hour), time.Minute, 9},                   // everything old: the active stays
	}
	for _, tc := range tests {
		start, err := l.EnforceRetention(tc.now, tc.maxAge, 0)
		if err != nil || start != tc.wantStart {
			t.Fatalf("EnforceRetention(%v, %v) = %d, %v, want %d", tc.now.Sub(t0), tc.maxAge, start, err, tc.wantStart)
		}
	}
	// Age and size limits combine: size drops nothing more here.
	if start, err := l.EnforceRetention(t0, time.Minute, 1<<30); err != nil || start != 9 {
		t.Fatalf("combined = %d, %v", start, err)
	}
}

func testOffsetForTime(t *testing.T, im impl) {
	// Timestamps are not monotonic: the answer is the first offset at or after t, not a binary
	// search over times. Every batch is its own segment in the small-segment variant.
	stamps := [][]int64{{10, 20}, {20, 30, 5}, {40}, {35, 50}}
	tests := []struct{ t, want int64 }{
		{-100, 0}, {0, 0}, {10, 0}, {11, 1}, {20, 1}, {21, 3}, {30, 3}, {31, 5}, {35, 5}, {40, 5}, {41, 7}, {50, 7}, {51, 8},
	}
	for _, segBytes := range []int64{0, 200} {
		t.Run(fmt.Sprint("segment", segBytes), func(t *testing.T) {
			l := mustOpen(t, im.open(t, Options{SegmentBytes: segBytes, IndexBytes: 1}), "l")
			if got, err := l.OffsetForTime(0); err != nil || got != 0 {
				t.Fatalf("empty log: %d, %v", got, err)
			}
			for _, batch := range stamps {
				rs := make([]Record, len(batch))
				for i, ts := range batch {
					rs[i] = Record{Timestamp: ts, Data: make([]byte, 40)}
				}
				mustAppend(t, l, rs)
			}
			for _, tc := range tests {
				if got, err := l.OffsetForTime(tc.t); err != nil || got != tc.want {
					t.Errorf("OffsetForTime(%d) = %d, %v, want %d", tc.t, got, err, tc.want)
				}
			}
		})
	}
}

func testConcurrentAppenders(t *testing.T, im impl) {
	const writers, appends = 8, 100
	l := mustOpen(t, im.open(t, Options{SegmentBytes: 16 << 10, IndexBytes: 512}), "l")
	type batch struct {
		base int64
		rs   []Record
	}
	results := make([][]batch, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for j := range appends {
				rs := make([]Record, 1+j%3)
				for k := range rs {
					rs[k] = Record{ID: fmt.Sprintf("w%d-%d-%d", w, j, k), Data: []byte(fmt.Sprint(w * j))}
				}
				base, err := l.Append(rs)
				if err != nil {
					t.Error(err)
					return
				}
				results[w] = append(results[w], batch{base, rs})
			}
		})
	}
	wg.Wait()
	byOffset := map[int64]Record{}
	for _, bs := range results {
		for _, b := range bs {
			for i, r := range b.rs {
				if r.Offset != b.base+int64(i) {
					t.Fatalf("offset %d in batch at %d", r.Offset, b.base)
				}
				if _, dup := byOffset[r.Offset]; dup {
					t.Fatalf("offset %d given twice", r.Offset)
				}
				byOffset[r.Offset] = r
			}
		}
	}
	end := l.EndOffset()
	if int64(len(byOffset)) != end {
		t.Fatalf("%d records, end offset %d", len(byOffset), end)
	}
	got := mustRead(t, l, 0, 0, 0)
	if int64(len(got)) != end {
		t.Fatalf("read %d of %d records", len(got), end)
	}
	for _, r := range got {
		if !sameRecord(r, byOffset[r.Offset]) {
			t.Fatalf("offset %d: got %+v, want %+v", r.Offset, r, byOffset[r.Offset])
		}
	}
}

func testReadWhileAppending(t *testing.T, im impl) {
	const total = 1500
	l := mustOpen(t, im.open(t, Options{SegmentBytes: 8 << 10, IndexBytes: 256}), "l")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < total; {
			size := min(1+n%5, total-n)
			if _, err := l.Append(recs(n, size)); err != nil {
				t.Error(err)
				return
			}
			n += size
		}
	}()
	var next int64
	for lastEnd := int64(0); next < total; {
		end := l.EndOffset()
		if end < lastEnd {
			t.Fatalf("EndOffset went back from %d to %d", lastEnd, end)
		}
		lastEnd = end
		got, err := l.Read(next, 50, 0)
		if err != nil {
			t.Fatalf("Read(%d): %v", next, err)
		}
		for _, r := range got {
			want := rec(int(next))
			want.Offset = next
			if !sameRecord(r, want) {
				t.Fatalf("got %+v, want %+v", r, want)
			}
			next++
		}
		if len(got) == 0 {
			select {
			case <-done:
				if l.EndOffset() == next && next < total {
					t.Fatalf("writer stopped at %d", next)
				}
			default:
			}
		}
	}
	<-done
}

func testReopen(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 2048, IndexBytes: 128})
	l := mustOpen(t, s, "a/b")
	all := appendBatches(t, l, 5, 1, 7, 3, 20, 2, 9, 4, 11)
	start, err := l.EnforceRetention(time.Now(), 0, 3000)
	if err != nil || start == 0 {
		t.Fatalf("retention: %d, %v", start, err)
	}
	end, size := l.EndOffset(), l.Size()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, s, "a/b")
	if l2 == l {
		t.Fatal("Open returned the closed log")
	}
	if l2.StartOffset() != start || l2.EndOffset() != end || l2.Size() != size {
		t.Fatalf("reopened: start %d end %d size %d, want %d %d %d", l2.StartOffset(), l2.EndOffset(), l2.Size(), start, end, size)
	}
	checkRecords(t, "reopened", mustRead(t, l2, start, 0, 0), all[start:])
	more := appendBatches(t, l2, 3)
	if more[0].Offset != end {
		t.Fatalf("append after reopen at %d, want %d", more[0].Offset, end)
	}
	if got, err := l2.OffsetForTime(all[start].Timestamp); err != nil || got != start {
		t.Fatalf("OffsetForTime after reopen: %d, %v", got, err)
	}
}

func testRemove(t *testing.T, im impl) {
	s := im.open(t, Options{})
	a := mustOpen(t, s, "t/a")
	nested := mustOpen(t, s, "t/a/0") // lives inside t/a's folder in the file store
	appendBatches(t, a, 3)
	keep := appendBatches(t, nested, 4)
	if err := s.Remove("t/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append(recs(0, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("removed log: Append %v, want ErrClosed", err)
	}
	a2 := mustOpen(t, s, "t/a")
	if a2.EndOffset() != 0 || a2.Size() != 0 {
		t.Fatalf("re-created log: end %d size %d", a2.EndOffset(), a2.Size())
	}
	if err := nested.Close(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, "nested log", mustRead(t, mustOpen(t, s, "t/a/0"), 0, 0, 0), keep)
	for _, name := range []string{"t/a/0", "t/a", "never/was"} {
		if err := s.Remove(name); err != nil {
			t.Fatalf("Remove(%q): %v", name, err)
		}
	}
	if err := s.Remove("../x"); !errors.Is(err, ErrBadName) {
		t.Fatalf("Remove(../x): %v", err)
	}
}

func testClosed(t *testing.T, im impl) {
	s := im.open(t, Options{})
	l := mustOpen(t, s, "l")
	appendBatches(t, l, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{}
	_, checks["Append"] = l.Append(recs(0, 1))
	_, checks["Read"] = l.Read(0, 1, 0)
	_, checks["OffsetForTime"] = l.OffsetForTime(0)
	_, checks["EnforceRetention"] = l.EnforceRetention(time.Now(), time.Second, 1)
	checks["Truncate"] = l.Truncate(0)
	checks["Reset"] = l.Reset(0)
	checks["Close"] = l.Close()
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("closed log: %s: %v, want ErrClosed", name, err)
		}
	}

	l2 := mustOpen(t, s, "l")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Append(recs(0, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("log of a closed store: Append %v, want ErrClosed", err)
	}
	if _, err := s.Open("l"); !errors.Is(err, ErrClosed) {
		t.Errorf("closed store: Open %v", err)
	}
	if err := s.Remove("l"); !errors.Is(err, ErrClosed) {
		t.Errorf("closed store: Remove %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("closed store: Close %v", err)
	}
}

func testNames(t *testing.T, im impl) {
	s := im.open(t, Options{})
	tests := []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"topics/orders/0", true},
		{"a.b-c_d/0", true},
		{"..x/y..", true},
		{"", false},
		{"/abs", false},
		{"/", false},
		{"a/../b", false},
		{"..", false},
		{"../escape", false},
		{"a/..", false},
		{"a//b", false},
		{"a/", false},
		{"./a", false},
		{"a/./b", false},
		{`a\b`, false},
		{"a\x00b", false},
	}
	for _, tc := range tests {
		l, err := s.Open(tc.name)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrBadName)) {
			t.Errorf("Open(%q): %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if tc.ok {
			if again := mustOpen(t, s, tc.name); again != l {
				t.Errorf("Open(%q) twice returned two logs", tc.name)
			}
		}
	}
}

// testCallerOwnsRecords checks that neither side's later changes leak into the other: the store
// copies on Append, and records returned by Read belong to the caller.
func testCallerOwnsRecords(t *testing.T, im impl) {
	l := mustOpen(t, im.open(t, Options{}), "l")
	rs := []Record{{ID: "a", Data: []byte("hello"), Attributes: map[string]string{"k": "v"}}, {ID: "b", Data: []byte("world")}}
	mustAppend(t, l, rs)
	rs[0].Data[0] = 'X'
	rs[0].Attributes["k"] = "changed"
	got := mustRead(t, l, 0, 0, 0)
	if string(got[0].Data) != "hello" || got[0].Attributes["k"] != "v" {
		t.Fatalf("append did not copy: %+v", got[0])
	}
	got[0].Data = append(got[0].Data, "!!!!!"...) // must not run into the next record's bytes
	got[1].Data[0] = 'W'
	again := mustRead(t, l, 0, 0, 0)
	if string(again[0].Data) != "hello" || string(again[1].Data) != "world" {
		t.Fatalf("read records alias the store: %q %q", again[0].Data, again[1].Data)
	}
	if string(got[1].Data) != "World" {
		t.Fatalf("appending to one record changed another: %q", got[1].Data)
	}
}
