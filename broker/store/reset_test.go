package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Reset cases of the conformance suite (TestConformance runs them against every
// implementation).

// reset resets l to off and expects it to succeed.
func (m *logModel) reset(t testing.TB, l Log, off int64) {
	t.Helper()
	if err := l.Reset(off); err != nil {
		t.Fatalf("Reset(%d): %v", off, err)
	}
	m.start, m.batches = off, nil
}

// checkReset checks a log that was just reset to off: m.check, plus the edges of the empty range
// and the single empty segment.
func (m *logModel) checkReset(t testing.TB, l Log, what string) {
	t.Helper()
	m.check(t, l, what)
	off := m.start
	if off > 0 {
		if _, err := l.Read(off-1, 0, 0); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("%s: Read(%d) below the reset start: %v, want ErrOutOfRange", what, off-1, err)
		}
	}
	if got, err := l.OffsetForTime(0); err != nil || got != off {
		t.Fatalf("%s: OffsetForTime(0) = %d, %v, want %d", what, got, err, off)
	}
	if got := segmentBases(l); len(got) != 1 || got[0] != off {
		t.Fatalf("%s: segments %v, want one at %d", what, got, off)
	}
	if l.Size() != 0 {
		t.Fatalf("%s: size %d", what, l.Size())
	}
}

func testReset(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 1024, IndexBytes: 100})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	fill := func(what string) {
		t.Helper()
		for i := range 30 {
			m.append(t, l, 1+i%4)
		}
		m.check(t, l, what)
		if n := len(segmentBases(l)); n < 4 {
			t.Fatalf("%s: %d segments, want several", what, n)
		}
	}
	fill("before")

	// A bad offset changes nothing.
	for _, off := range []int64{-1, -1000} {
		if err := l.Reset(off); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Reset(%d): %v, want ErrOutOfRange", off, err)
		}
	}
	m.check(t, l, "after bad resets")

	// Beyond the end.
	off := l.EndOffset() + 1000
	m.reset(t, l, off)
	m.checkReset(t, l, "beyond the end")
	m.append(t, l, 3, 1)
	m.check(t, l, "appended after reset beyond the end")
	fill("refilled")

	// Inside the range, inside a batch of a middle segment.
	bases := segmentBases(l)
	off = -1
	for _, b := range m.batches {
		if b[0].Offset > bases[1] && b[0].Offset < bases[2] && len(b) > 1 {
			off = b[0].Offset + 1
			break
		}
	}
	if off < 0 {
		t.Fatal("no batch of several records in the second segment")
	}
	m.reset(t, l, off)
	m.checkReset(t, l, "inside the range")
	m.append(t, l, 2)
	m.check(t, l, "appended after reset inside the range")
	fill("refilled again")

	// Exactly at the base of an existing segment (in the file store, the new segment's name is
	// an old one's), then at the start, then at the end.
	bases = segmentBases(l)
	m.reset(t, l, bases[2])
	m.checkReset(t, l, "at a segment's base")
	fill("refilled at a segment's base")
	m.reset(t, l, l.StartOffset())
	m.checkReset(t, l, "at the start")
	fill("refilled at the start")
	m.reset(t, l, l.EndOffset())
	m.checkReset(t, l, "at the end")
	fill("refilled at the end")

	// Below the start (moved there by DropBefore, so that segments were dropped first).
	bases = segmentBases(l)
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
	m.reset(t, l, bases[1]) // below the start, and the name of a dropped segment
	m.checkReset(t, l, "below the start, at a dropped segment's base")
	m.reset(t, l, bases[0]+1) // below that
	m.checkReset(t, l, "below the start")
	m.append(t, l, 4, 2)
	m.check(t, l, "appended after reset below the start")

	// Retention works on the reset log, and Truncate too.
	fill("refilled below the start")
	bases = segmentBases(l)
	if start, err := l.DropBefore(bases[1]); err != nil || start != bases[1] {
		t.Fatalf("DropBefore(%d) after reset = %d, %v", bases[1], start, err)
	}
	m.start = bases[1]
	kept = m.batches[:0]
	for _, b := range m.batches {
		if b[0].Offset >= m.start {
			kept = append(kept, b)
		}
	}
	m.batches = kept
	m.check(t, l, "DropBefore after reset")
	m.truncate(t, l, m.batches[len(m.batches)-1][0].Offset+1)
	m.check(t, l, "Truncate after reset")

	// The state survives a close and reopen, empty and not.
	m.reset(t, l, 5000)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	m.checkReset(t, l, "reopened empty")
	m.append(t, l, 1, 5)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	m.check(t, l, "reopened")
	m.append(t, l, 2)
	m.check(t, l, "appended after reopen")

	// Back to 0.
	m.reset(t, l, 0)
	m.checkReset(t, l, "to 0")
	m.append(t, l, 3)
	m.check(t, l, "appended after reset to 0")

	// A new, empty log reset to 0 (a no-op in effect), then to 0 again, and appended to.
	e := mustOpen(t, s, "empty")
	me := &logModel{n: m.n}
	me.reset(t, e, 0)
	me.checkReset(t, e, "new log reset to 0")
	me.reset(t, e, 0)
	me.checkReset(t, e, "new log reset to 0 twice")
	me.append(t, e, 2, 2)
	me.check(t, e, "new log appended after reset")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = mustOpen(t, s, "empty")
	me.check(t, e, "new log reopened")

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Reset(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Reset of a closed log: %v, want ErrClosed", err)
	}
}

// testResetConcurrent resets (and truncates, and drops segments) while appenders and readers
// run: every call succeeds (or a read of a moved range is ErrOutOfRange), no read returns a
// broken or misplaced record, no appender hangs (under SyncAlways some wait for an fsync of
// data a Reset drops), and the final log reads back whole, also after a reopen.
func testResetConcurrent(t *testing.T, im impl) {
	s := im.open(t, Options{SegmentBytes: 2048, IndexBytes: 128})
	l := mustOpen(t, s, "l")
	const appenders, appends, resets = 3, 200, 100
	mk := func(w, j, k int) Record {
		id := fmt.Sprintf("w%d-%d-%d", w, j, k)
		return Record{ID: id, Data: []byte(id + "-data")}
	}
	good := func(r Record) bool { return string(r.Data) == r.ID+"-data" }

	var writers, others sync.WaitGroup
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for w := range appenders {
		writers.Go(func() {
			for j := range appends {
				rs := make([]Record, 1+j%4)
				for k := range rs {
					rs[k] = mk(w, j, k)
				}
				base, err := l.Append(rs)
				if err != nil {
					t.Error(err)
					return
				}
				for k, r := range rs {
					if r.Offset != base+int64(k) {
						t.Errorf("record %d of a batch at %d has offset %d", k, base, r.Offset)
						return
					}
				}
			}
		})
	}
	for r := range 2 {
		others.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for !stopped() {
				start, end, read := l.StartOffset(), l.EndOffset(), l.Read
				if r == 1 { // what is written, fsynced or not
					end, read = l.WrittenEnd(), l.ReadWritten
				}
				from := start + rng.Int64N(max(end-start, 0)+1)
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
				if _, err := l.OffsetForTime(time.Now().UnixNano() - int64(time.Millisecond)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	others.Go(func() { // retention, racing with Resets to the bases of the segments it drops
		for !stopped() {
			if _, err := l.DropBefore(l.EndOffset()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	others.Go(func() {
		rng := rand.New(rand.NewPCG(7, 7))
		for i := range resets {
			start, end := l.StartOffset(), l.EndOffset()
			span := max(end-start, 0) // the two reads may straddle a move
			var err error
			switch i % 5 {
			case 0: // beyond the end
				err = l.Reset(end + rng.Int64N(50))
			case 1: // inside the range
				err = l.Reset(start + rng.Int64N(span+1))
			case 2: // below the start
				err = l.Reset(start - rng.Int64N(min(start, 30)+1))
			case 3: // at the base of a segment, maybe one retention is dropping
				bases := segmentBases(l)
				err = l.Reset(bases[rng.IntN(len(bases))])
			case 4: // a truncation in between, maybe of records awaiting an fsync
				w := l.WrittenEnd()
				err = l.Truncate(w - rng.Int64N(min(max(w-start, 0), 10)+1))
				if errors.Is(err, ErrOutOfRange) { // the start moved meanwhile
					err = nil
				}
			}
			if err != nil {
				t.Errorf("step %d (start %d, end %d): %v", i, start, end, err)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
	writers.Wait()
	close(stop)
	others.Wait()

	start, end := l.StartOffset(), l.EndOffset()
	if w := l.WrittenEnd(); w != end {
		t.Fatalf("at rest: WrittenEnd %d, EndOffset %d", w, end)
	}
	got := mustRead(t, l, start, 0, 0)
	if int64(len(got)) != end-start {
		t.Fatalf("read %d records from %d, end %d", len(got), start, end)
	}
	for i, r := range got {
		if r.Offset != start+int64(i) || !good(r) {
			t.Fatalf("record %d is %+v", i, r)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, s, "l")
	if l.StartOffset() != start || l.EndOffset() != end {
		t.Fatalf("reopened: start %d end %d, want %d %d", l.StartOffset(), l.EndOffset(), start, end)
	}
	checkRecords(t, "reopened", mustRead(t, l, start, 0, 0), got)
}
