package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WrittenEnd, ReadWritten and Options.OnWrite: conformance cases (TestConformance runs them
// against every implementation) and file-store cases.

// syncAlways reports whether l makes readers wait for fsyncs (a file log under SyncAlways).
func syncAlways(l Log) bool {
	fl, ok := l.(*fileLog)
	return ok && fl.opts.Sync == SyncAlways
}

// writeHook is an Options.OnWrite that counts its calls and, while hold is set, blocks each
// caller until release is closed (after reporting it on entered): its Append has written its
// batch and not yet waited for an fsync, and nothing else fsyncs, so the batch stays written
// but not durable for as long as the test likes.
type writeHook struct {
	calls   atomic.Int32
	hold    atomic.Bool
	entered chan struct{}
	release chan struct{}
	inside  atomic.Pointer[func()] // run at each call, if set (it may read the log)
}

func newWriteHook() *writeHook {
	return &writeHook{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (h *writeHook) onWrite() {
	h.calls.Add(1)
	if f := h.inside.Load(); f != nil {
		(*f)()
	}
	if h.hold.Load() {
		h.entered <- struct{}{}
		<-h.release
	}
}

// holdNext makes the next appends block in OnWrite until the returned release is called.
func (h *writeHook) holdNext() (release func()) {
	h.release = make(chan struct{})
	h.hold.Store(true)
	ch := h.release
	return func() {
		h.hold.Store(false)
		close(ch)
	}
}

// appendAsync runs Append in a goroutine; the result comes on the channel.
func appendAsync(l Log, rs []Record) <-chan error {
	done := make(chan error, 1)
	go func() {
		base, err := l.Append(rs)
		if err == nil && (len(rs) == 0 || rs[0].Offset != base) {
			err = fmt.Errorf("Append returned %d, records got %d", base, rs[0].Offset)
		}
		done <- err
	}()
	return done
}

// testOnWrite checks when OnWrite is called: once per Append that wrote a batch (not for an
// empty or refused one), before the Append returns, with the batch readable by ReadWritten and,
// under SyncAlways, not yet fsynced (EndOffset still before it); the callee may read the log.
func testOnWrite(t *testing.T, im impl) {
	h := newWriteHook()
	s := im.open(t, Options{SegmentBytes: 1024, IndexBytes: 100, OnWrite: h.onWrite})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	for i, size := range []int{1, 3, 2, 5, 1, 4, 2, 3, 1, 6, 2, 2} {
		base, want := m.end(), recs(m.n, size)
		for j := range want {
			want[j].Offset = base + int64(j)
		}
		var inCall int
		check := func() {
			inCall++
			if w := l.WrittenEnd(); w != base+int64(size) {
				t.Errorf("append %d: WrittenEnd %d in OnWrite, want %d", i, w, base+int64(size))
			}
			got, err := l.ReadWritten(base, 0, 0)
			if err != nil {
				t.Errorf("append %d: ReadWritten(%d) in OnWrite: %v", i, base, err)
			} else if len(got) != size || !sameRecord(got[0], want[0]) || !sameRecord(got[size-1], want[size-1]) {
				t.Errorf("append %d: ReadWritten(%d) in OnWrite read %v", i, base, offsets(got))
			}
			e := l.EndOffset()
			if syncAlways(l) && e != base {
				t.Errorf("append %d: EndOffset %d in OnWrite, want %d (not fsynced yet)", i, e, base)
			} else if !syncAlways(l) && e != base+int64(size) {
				t.Errorf("append %d: EndOffset %d in OnWrite, want %d", i, e, base+int64(size))
			}
		}
		h.inside.Store(&check)
		m.append(t, l, size)
		if inCall != 1 || h.calls.Load() != int32(i+1) {
			t.Fatalf("append %d: OnWrite called %d times for it, %d in all", i, inCall, h.calls.Load())
		}
	}
	h.inside.Store(nil)
	m.check(t, l, "appended")
	n := h.calls.Load()
	if _, err := l.Append(nil); err != nil {
		t.Fatal(err)
	}
	big := Record{Data: make([]byte, 2000)}
	if _, err := l.Append([]Record{big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized append: %v", err)
	}
	if h.calls.Load() != n {
		t.Fatalf("OnWrite called for an empty or refused append")
	}
}

// testWrittenPending holds appends between their write and their fsync (in OnWrite): under
// SyncAlways, WrittenEnd and ReadWritten include them while EndOffset and Read do not; under the
// other policies, and in memory, both include them at once. Truncate and Reset drop them like
// any other records (and, under SyncAlways, Truncate between the durable and the written end
// fsyncs what it keeps); their appenders return without error.
func testWrittenPending(t *testing.T, im impl) {
	h := newWriteHook()
	s := im.open(t, Options{SegmentBytes: 1024, IndexBytes: 100, OnWrite: h.onWrite})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	m.append(t, l, 2, 3, 1, 4)
	always := syncAlways(l)

	// pend appends size records (seeds continue the model's) and waits until they are written.
	pend := func(size int) (rs []Record, done <-chan error, release func()) {
		t.Helper()
		release = h.holdNext()
		rs = recs(m.n, size)
		m.n += size
		done = appendAsync(l, rs)
		<-h.entered
		return rs, done, release
	}
	wait := func(done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Append hangs")
		}
	}
	readWritten := func(from int64, max int) []Record {
		t.Helper()
		got, err := l.ReadWritten(from, max, 0)
		if err != nil {
			t.Fatalf("ReadWritten(%d): %v", from, err)
		}
		return got
	}

	// 1. Written, not fsynced: visible to ReadWritten only (under SyncAlways).
	end := m.end()
	rs, done, release := pend(5)
	if w := l.WrittenEnd(); w != end+5 {
		t.Fatalf("WrittenEnd %d, want %d", w, end+5)
	}
	wantEnd, wantRead := end+5, 5
	if always {
		wantEnd, wantRead = end, 0
	}
	if e := l.EndOffset(); e != wantEnd {
		t.Fatalf("EndOffset %d with an fsync pending, want %d", e, wantEnd)
	}
	if got := mustRead(t, l, end, 0, 0); len(got) != wantRead {
		t.Fatalf("Read(%d) returned %v, want %d records", end, offsets(got), wantRead)
	}
	checkRecords(t, "ReadWritten pending", readWritten(end, 0), rs)
	checkRecords(t, "ReadWritten whole", readWritten(m.start, 0), append(m.records(), rs...))
	checkRecords(t, "ReadWritten limited", readWritten(end+1, 2), rs[1:3])
	if got := readWritten(end+5, 0); len(got) != 0 {
		t.Fatalf("ReadWritten(WrittenEnd) = %v", offsets(got))
	}
	if _, err := l.ReadWritten(end+6, 0, 0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("ReadWritten past WrittenEnd: %v", err)
	}
	if e, w := l.EndOffset(), l.WrittenEnd(); e > w {
		t.Fatalf("EndOffset %d > WrittenEnd %d", e, w)
	}

	// 2. Truncate inside the pending batch (past EndOffset under SyncAlways): the kept part is
	// durable when Truncate returns.
	if err := l.Truncate(end + 2); err != nil {
		t.Fatalf("Truncate(%d) with WrittenEnd %d: %v", end+2, end+5, err)
	}
	if e, w := l.EndOffset(), l.WrittenEnd(); e != end+2 || w != end+2 {
		t.Fatalf("after Truncate(%d): EndOffset %d WrittenEnd %d", end+2, e, w)
	}
	release()
	wait(done)
	m.batches = append(m.batches, rs[:2])
	m.check(t, l, "truncated inside a pending batch")

	// 3. Truncate at the end before a pending batch drops it whole (under SyncAlways that is
	// EndOffset: Truncate(EndOffset) is no no-op while an fsync is pending).
	end = m.end()
	_, done, release = pend(3)
	if always && l.EndOffset() != end {
		t.Fatalf("EndOffset %d with an fsync pending, want %d", l.EndOffset(), end)
	}
	if err := l.Truncate(end); err != nil {
		t.Fatal(err)
	}
	if w := l.WrittenEnd(); w != end {
		t.Fatalf("after Truncate(EndOffset %d): WrittenEnd %d", end, w)
	}
	release()
	wait(done)
	m.check(t, l, "pending batch truncated")
	if err := l.Truncate(m.end() + 1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Truncate past WrittenEnd: %v", err)
	}

	// 4. Truncate at WrittenEnd is a no-op: the pending batch stays and becomes durable.
	rs, done, release = pend(2)
	if err := l.Truncate(l.WrittenEnd()); err != nil {
		t.Fatal(err)
	}
	release()
	wait(done)
	m.batches = append(m.batches, rs)
	m.check(t, l, "no-op truncation")

	// 5. Reset drops pending batches too.
	_, done, release = pend(4)
	off := m.end() + 10
	if err := l.Reset(off); err != nil {
		t.Fatal(err)
	}
	if e, w := l.EndOffset(), l.WrittenEnd(); e != off || w != off {
		t.Fatalf("after Reset(%d): EndOffset %d WrittenEnd %d", off, e, w)
	}
	release()
	wait(done)
	m.start, m.batches = off, nil
	m.checkReset(t, l, "reset")
	m.append(t, l, 2, 1)
	m.check(t, l, "appended after the reset")

	// 6. Several appenders pending at once: all written, none durable (under SyncAlways).
	end = m.end()
	release = h.holdNext()
	var dones []<-chan error
	for i := range 3 {
		dones = append(dones, appendAsync(l, recs(1000+10*i, 2)))
		<-h.entered
	}
	if w := l.WrittenEnd(); w != end+6 {
		t.Fatalf("WrittenEnd %d with three pending appends, want %d", w, end+6)
	}
	if got := readWritten(end, 0); len(got) != 6 {
		t.Fatalf("ReadWritten(%d) read %v, want 6 records", end, offsets(got))
	}
	if always && l.EndOffset() != end {
		t.Fatalf("EndOffset %d with three pending appends, want %d", l.EndOffset(), end)
	}
	release()
	for _, d := range dones {
		wait(d)
	}
	if e, w := l.EndOffset(), l.WrittenEnd(); e != end+6 || w != end+6 {
		t.Fatalf("after the appends: EndOffset %d WrittenEnd %d, want %d", e, w, end+6)
	}
}

// testReadWrittenConcurrent runs appenders against ReadWritten readers: a follower that tails
// the log with ReadWritten, waking on OnWrite (as a long poll would) and must see every record,
// in order and intact, without stalling; and random readers near the written end. EndOffset
// never passes WrittenEnd and, at rest, equals it.
func testReadWrittenConcurrent(t *testing.T, im impl) {
	wake := make(chan struct{}, 1)
	var writes atomic.Int64
	opts := Options{SegmentBytes: 4096, IndexBytes: 256, OnWrite: func() {
		writes.Add(1)
		select {
		case wake <- struct{}{}:
		default:
		}
	}}
	l := mustOpen(t, im.open(t, opts), "l")
	const appenders, appends = 4, 150
	mk := func(w, j, k int) Record {
		id := fmt.Sprintf("w%d-%d-%d", w, j, k)
		return Record{ID: id, Data: []byte(id + "-data")}
	}
	good := func(r Record) bool { return string(r.Data) == r.ID+"-data" }
	total := int64(0)
	for j := range appends {
		total += int64(appenders * (1 + j%3))
	}

	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for w := range appenders {
		writers.Go(func() {
			for j := range appends {
				rs := make([]Record, 1+j%3)
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
	readers.Go(func() { // the follower
		seen := map[string]bool{}
		var next int64
		for next < total {
			got, err := l.ReadWritten(next, 50, 4096)
			if err != nil {
				t.Errorf("ReadWritten(%d): %v", next, err)
				return
			}
			for _, r := range got {
				if r.Offset != next || !good(r) || seen[r.ID] {
					t.Errorf("ReadWritten: record %+v at %d", r, next)
					return
				}
				seen[r.ID] = true
				next++
			}
			if len(got) == 0 {
				select {
				case <-wake:
				case <-time.After(10 * time.Second):
					t.Errorf("follower stalled at %d (WrittenEnd %d)", next, l.WrittenEnd())
					return
				}
			}
		}
	})
	for r := range 2 {
		readers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 3))
			for {
				select {
				case <-stop:
					return
				default:
				}
				e := l.EndOffset()
				w := l.WrittenEnd()
				if e > w {
					t.Errorf("EndOffset %d > WrittenEnd %d", e, w)
					return
				}
				from := w - rng.Int64N(min(w, 30)+1)
				got, err := l.ReadWritten(from, 20, 0)
				if err != nil {
					t.Errorf("ReadWritten(%d): %v", from, err)
					return
				}
				for i, rec := range got {
					if rec.Offset != from+int64(i) || !good(rec) {
						t.Errorf("ReadWritten(%d): record %d is %+v", from, i, rec)
						return
					}
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	if t.Failed() {
		return
	}
	if e, w := l.EndOffset(), l.WrittenEnd(); e != total || w != total {
		t.Fatalf("EndOffset %d WrittenEnd %d, want %d", e, w, total)
	}
	if n := writes.Load(); n != appenders*appends {
		t.Fatalf("OnWrite called %d times for %d appends", n, appenders*appends)
	}
}

// TestFileTruncateWrittenWaiters truncates, under SyncAlways, between the durable and the written
// end while appenders wait for their fsync (the first one's is stuck): whichever of the next
// fsync round and the Truncate runs first, the records kept are durable when everyone has
// returned (EndOffset is the truncation point), and the log reads back whole after a reopen.
func TestFileTruncateWrittenWaiters(t *testing.T) {
	for i := range 20 {
		var syncs atomic.Int32
		entered, release := make(chan struct{}), make(chan struct{})
		opts := Options{Sync: SyncAlways, OnSync: func(time.Duration) {
			if syncs.Add(1) == 4 { // the fsync of the append after the three below
				close(entered)
				<-release
			}
		}}
		dir := t.TempDir()
		s := newFileStore(t, dir, opts)
		l := mustOpen(t, s, "l")
		m := &logModel{}
		m.append(t, l, 2, 2, 2)
		fl := l.(*fileLog)

		a, b := recs(100, 1), recs(101, 3)
		var wg sync.WaitGroup
		wg.Go(func() { mustAppend(t, l, a) }) // offset 6; leads an fsync, which gets stuck
		<-entered
		wg.Go(func() { mustAppend(t, l, b) }) // offsets 7-9: written, waits for the next round
		for l.WrittenEnd() < 10 {
			time.Sleep(time.Millisecond)
		}
		if l.EndOffset() != 6 {
			t.Fatalf("EndOffset %d with the fsync stuck", l.EndOffset())
		}
		off := int64(8 + i%2) // inside b's batch, or at its last record
		truncated := make(chan error, 1)
		go func() { truncated <- l.Truncate(off) }()
		time.Sleep(time.Duration(i%3) * time.Millisecond) // vary who takes the sync role first
		close(release)
		wg.Wait()
		if err := <-truncated; err != nil {
			t.Fatal(err)
		}
		fl.smu.Lock()
		synced := fl.synced
		fl.smu.Unlock()
		if synced != off || l.EndOffset() != off || l.WrittenEnd() != off {
			t.Fatalf("Truncate(%d): synced %d EndOffset %d WrittenEnd %d", off, synced, l.EndOffset(), l.WrittenEnd())
		}
		m.batches = append(m.batches, a, b[:off-7])
		m.n = 104
		m.check(t, l, "truncated")
		m.append(t, l, 2)
		m.check(t, l, "appended")
		closeStore(t, s)
		s = newFileStore(t, dir, opts)
		m.check(t, mustOpen(t, s, "l"), "reopened")
		closeStore(t, s)
	}
}
