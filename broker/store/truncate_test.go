package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// Truncate cases of the conformance suite (TestConformance runs them against every
// implementation).

// logModel is what a log under test should hold, batch by batch, so that Size can be checked
// exactly: a straddling batch shrinks to its records below the cut.
type logModel struct {
	start   int64
	batches [][]Record // with their offsets
	n       int        // seed of the next rec(): never reused, so timestamps grow with offsets
}

func (m *logModel) end() int64 {
	if len(m.batches) == 0 {
		return m.start
	}
	b := m.batches[len(m.batches)-1]
	return b[len(b)-1].Offset + 1
}

func (m *logModel) records() []Record {
	var out []Record
	for _, b := range m.batches {
		out = append(out, b...)
	}
	return out
}

func (m *logModel) size() int64 {
	var n int64
	for _, b := range m.batches {
		n += int64(len(encodeBatch(nil, b)))
	}
	return n
}

// append appends batches of the given sizes to l and to the model.
func (m *logModel) append(t testing.TB, l Log, sizes ...int) {
	t.Helper()
	for _, size := range sizes {
		rs := recs(m.n, size)
		m.n += size
		if base := mustAppend(t, l, rs); base != m.end() {
			t.Fatalf("Append at %d, want %d", base, m.end())
		}
		m.batches = append(m.batches, rs)
	}
}

// truncate truncates l at off and expects it to succeed.
func (m *logModel) truncate(t testing.TB, l Log, off int64) {
	t.Helper()
	if err := l.Truncate(off); err != nil {
		t.Fatalf("Truncate(%d): %v", off, err)
	}
	var kept [][]Record
	for _, b := range m.batches {
		if b[0].Offset >= off {
			break
		}
		if end := b[len(b)-1].Offset + 1; end > off {
			b = b[:off-b[0].Offset]
		}
		kept = append(kept, b)
	}
	m.batches = kept
}

// check compares l with the model through every reader.
func (m *logModel) check(t testing.TB, l Log, what string) {
	t.Helper()
	end := m.end()
	if l.StartOffset() != m.start || l.EndOffset() != end || l.Size() != m.size() {
		t.Fatalf("%s: start %d end %d size %d, want %d %d %d", what, l.StartOffset(), l.EndOffset(), l.Size(), m.start, end, m.size())
	}
	all := m.records()
	checkRecords(t, what, mustRead(t, l, m.start, 0, 0), all)
	if len(all) > 3 {
		mid := len(all) / 2
		want := all[mid:min(mid+3, len(all))]
		checkRecords(t, what+" (from the middle)", mustRead(t, l, all[mid].Offset, 3, 0), want)
	}
	if got := mustRead(t, l, end, 0, 0); len(got) != 0 {
		t.Fatalf("%s: Read(end %d) = %v", what, end, offsets(got))
	}
	if _, err := l.Read(end+1, 0, 0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("%s: Read past the end: %v, want ErrOutOfRange", what, err)
	}
	// At rest (no fsync pending) the written end is the end, and ReadWritten reads what Read does.
	if w := l.WrittenEnd(); w != end {
		t.Fatalf("%s: WrittenEnd %d, want %d", what, w, end)
	}
	if got, err := l.ReadWritten(m.start, 0, 0); err != nil {
		t.Fatalf("%s: ReadWritten(%d): %v", what, m.start, err)
	} else {
		checkRecords(t, what+" (ReadWritten)", got, all)
	}
	if got, err := l.ReadWritten(end, 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("%s: ReadWritten(end %d) = %v, %v", what, end, offsets(got), err)
	}
	if _, err := l.ReadWritten(end+1, 0, 0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("%s: ReadWritten past the end: %v, want ErrOutOfRange", what, err)
	}
	if m.start > 0 {
		if _, err := l.ReadWritten(m.start-1, 0, 0); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("%s: ReadWritten below the start: %v, want ErrOutOfRange", what, err)
		}
	}
	for _, r := range all {
		if got, err := l.OffsetForTime(r.Timestamp); err != nil || got != r.Offset {
			t.Fatalf("%s: OffsetForTime(ts of %d) = %d, %v", what, r.Offset, got, err)
		}
	}
	// The timestamps of dropped records, and later ones, are past the end now.
	if got, err := l.OffsetForTime(rec(m.n).Timestamp); err != nil || got != end {
		t.Fatalf("%s: OffsetForTime(after the last) = %d, %v, want %d", what, got, err, end)
	}
	if fl, ok := l.(*fileLog); ok {
		fl.mu.RLock()
		defer fl.mu.RUnlock()
		var sum int64
		for _, s := range fl.segs {
			sum += s.size
			if s.size > fl.opts.SegmentBytes {
				t.Fatalf("%s: segment %d has %d bytes", what, s.base, s.size)
			}
		}
		a := fl.active()
		for _, e := range a.index {
			if int64(e.pos) >= a.size {
				t.Fatalf("%s: index entry %+v points past the end %d", what, e, a.size)
			}
		}
		if sum != fl.bytes || fl.next != end {
			t.Fatalf("%s: segment bytes %d, log bytes %d, next %d", what, sum, fl.bytes, fl.next)
		}
	}
}

// segmentBases returns the base offsets of l's segments.
func segmentBases(l Log) []int64 {
	var out []int64
	switch l := l.(type) {
	case *fileLog:
		l.mu.RLock()
		defer l.mu.RUnlock()
		for _, s := range l.segs {
			out = append(out, s.base)
		}
	case *memLog:
		l.mu.RLock()
		defer l.mu.RUnlock()
		for _, s := range l.segs {
			out = append(out, s.base)
		}
	}
	return out
}

func testTruncate(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 1024, IndexBytes: 100})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	for i := range 40 {
		m.append(t, l, 1+i%4)
	}
	m.append(t, l, 6) // the last batch is large enough to cut inside
	m.check(t, l, "before")
	if n := len(segmentBases(l)); n < 5 {
		t.Fatalf("%d segments, want several", n)
	}

	// Bad offsets change nothing; the end is a no-op.
	end := l.EndOffset()
	for _, off := range []int64{-1, end + 1, end + 100} {
		if err := l.Truncate(off); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Truncate(%d) with end %d: %v, want ErrOutOfRange", off, end, err)
		}
	}
	m.truncate(t, l, end)
	m.check(t, l, "no-op")

	// Inside the last batch, then at a batch boundary (where that batch now starts).
	m.truncate(t, l, end-2)
	m.check(t, l, "inside the last batch")
	last := m.batches[len(m.batches)-1][0].Offset
	m.truncate(t, l, last)
	m.check(t, l, "at a batch boundary")
	m.append(t, l, 3, 1)
	m.check(t, l, "appended after truncation")

	// Into an earlier segment, inside a batch.
	bases := segmentBases(l)
	var off int64 = -1
	for _, b := range m.batches {
		if b[0].Offset > bases[1] && b[0].Offset < bases[2] && len(b) > 1 {
			off = b[0].Offset + 1
			break
		}
	}
	if off < 0 {
		t.Fatal("no batch of several records in the second segment")
	}
	m.truncate(t, l, off)
	m.check(t, l, "inside a batch of an earlier segment")
	if got := segmentBases(l); len(got) != 2 {
		t.Fatalf("segments %v after truncation to %d, want 2", got, off)
	}
	// The segment holding off is the active one: appends go there and roll on from it.
	for i := range 15 {
		m.append(t, l, 1+i%4)
	}
	m.check(t, l, "appended after truncating into an earlier segment")

	// Exactly at the start of a segment: it stays, empty, as the active one.
	bases = segmentBases(l)
	if len(bases) < 3 {
		t.Fatalf("segments %v, want three or more", bases)
	}
	m.truncate(t, l, bases[2])
	m.check(t, l, "at a segment's start")
	if got := segmentBases(l); len(got) != 3 {
		t.Fatalf("segments %v after truncation to %d, want 3", got, bases[2])
	}
	m.append(t, l, 2)
	m.check(t, l, "appended to the emptied segment")

	// The state survives a close and reopen.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	m.check(t, l, "reopened")
	m.append(t, l, 1, 5)
	m.check(t, l, "appended after reopen")

	// Down to StartOffset: an empty log.
	m.truncate(t, l, 0)
	m.check(t, l, "to the start")
	if got := segmentBases(l); len(got) != 1 || got[0] != 0 {
		t.Fatalf("segments %v of the emptied log", got)
	}
	if err := l.Truncate(0); err != nil {
		t.Fatalf("Truncate(0) of an empty log: %v", err)
	}
	m.append(t, l, 3)
	m.check(t, l, "appended to the emptied log")
}

// testTruncateFromStart truncates a log whose start was moved by DropBefore: below the start is
// an error, and truncating to the start keeps it.
func testTruncateFromStart(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 512, IndexBytes: 64})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	for i := range 30 {
		m.append(t, l, 1+i%3)
	}
	bases := segmentBases(l)
	start, err := l.DropBefore(bases[2])
	if err != nil || start != bases[2] {
		t.Fatalf("DropBefore(%d) = %d, %v", bases[2], start, err)
	}
	m.start = start
	kept := m.batches[:0]
	for _, b := range m.batches {
		if b[0].Offset >= start {
			kept = append(kept, b)
		}
	}
	m.batches = kept
	m.check(t, l, "after DropBefore")
	if err := l.Truncate(start - 1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Truncate below the start: %v, want ErrOutOfRange", err)
	}
	m.truncate(t, l, start+1)
	m.check(t, l, "one record left")
	m.truncate(t, l, start)
	m.check(t, l, "to the start")
	if l.Size() != 0 {
		t.Fatalf("size %d of an emptied log", l.Size())
	}
	m.append(t, l, 2, 4)
	m.check(t, l, "appended at the start")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	m.check(t, l, "reopened")
}

// testTruncateConcurrent truncates while appenders and readers run: every call succeeds (or a
// read past a moved end is ErrOutOfRange), no read returns a broken or misplaced record, no
// appender hangs (under SyncAlways some wait for an fsync of data a Truncate drops), and the
// final log reads back whole, also after a reopen.
func testTruncateConcurrent(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 2048, IndexBytes: 128})
	l := mustOpen(t, s, "l")
	const appenders, appends, truncates = 3, 200, 150
	// A record is self-describing, so a reader can tell a good one from anything else.
	mk := func(w, j, k int) Record {
		id := fmt.Sprintf("w%d-%d-%d", w, j, k)
		return Record{ID: id, Data: []byte(id + "-data")}
	}
	good := func(r Record) bool { return string(r.Data) == r.ID+"-data" }

	var writers, others sync.WaitGroup
	stop := make(chan struct{})
	for w := range appenders {
		writers.Go(func() {
			for j := range appends {
				rs := make([]Record, 1+j%4)
				for k := range rs {
					rs[k] = mk(w, j, k)
				}
				if _, err := l.Append(rs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for r := range 2 {
		others.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Read near the end, where the truncations are; the second reader reads what is
				// written (fsynced or not), as a leader serving its followers.
				end, read := l.EndOffset(), l.Read
				if r == 1 {
					end, read = l.WrittenEnd(), l.ReadWritten
				}
				from := end - rng.Int64N(min(end, 40)+1)
				got, err := read(from, 20, 0)
				if err != nil {
					if !errors.Is(err, ErrOutOfRange) {
						t.Error(err)
						return
					}
					continue
				}
				for i, rec := range got {
					if rec.Offset != from+int64(i) || !good(rec) {
						t.Errorf("Read(%d): record %d is %+v", from, i, rec)
						return
					}
				}
			}
		})
	}
	others.Go(func() {
		rng := rand.New(rand.NewPCG(7, 7))
		for i := range truncates {
			end := l.EndOffset()
			if i%2 == 1 { // up to the written end: may drop, or keep, records awaiting an fsync
				end = l.WrittenEnd()
			}
			off := end - rng.Int64N(min(end, 30)+1)
			if err := l.Truncate(off); err != nil {
				t.Errorf("Truncate(%d) with end %d: %v", off, end, err)
				return
			}
			if _, err := l.OffsetForTime(0); err != nil {
				t.Error(err)
				return
			}
		}
	})
	writers.Wait()
	close(stop)
	others.Wait()

	end := l.EndOffset()
	if w := l.WrittenEnd(); w != end {
		t.Fatalf("at rest: WrittenEnd %d, EndOffset %d", w, end)
	}
	got := mustRead(t, l, 0, 0, 0)
	if int64(len(got)) != end {
		t.Fatalf("read %d records, end %d", len(got), end)
	}
	for i, r := range got {
		if r.Offset != int64(i) || !good(r) {
			t.Fatalf("record %d is %+v", i, r)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	checkRecords(t, "reopened", mustRead(t, l, 0, 0, 0), got)
}
