package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// journals lists a log folder's truncation journals.
func journals(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+truncSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFileTruncateReopen checks the files a truncation leaves, and that reopening finds exactly
// the state Truncate left in memory (the recovery scan rebuilds the index Truncate fixed up).
func TestFileTruncateReopen(t *testing.T) {
	for _, p := range []SyncPolicy{SyncAlways, SyncNever} {
		t.Run(p.String(), func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "p", "0")
			opts := Options{Sync: p, SegmentBytes: 1500, IndexBytes: 100}
			s := newFileStore(t, root, opts)
			l := mustOpen(t, s, "p/0")
			m := &logModel{}
			for i := range 60 {
				m.append(t, l, 1+i%5)
			}
			fl := l.(*fileLog)
			bases := segmentBases(l)
			if len(bases) < 4 {
				t.Fatalf("segments %v, want several", bases)
			}
			// Inside a batch in the middle of the second segment.
			var off int64 = -1
			for _, b := range m.batches {
				if b[0].Offset > (bases[1]+bases[2])/2 && b[0].Offset < bases[2] && len(b) > 2 {
					off = b[0].Offset + 2
					break
				}
			}
			if off < 0 {
				t.Fatal("no batch to cut in the second segment")
			}
			m.truncate(t, l, off)
			m.check(t, l, "truncated")
			files := segmentFiles(t, dir)
			if len(files) != 2 || filepath.Base(files[1]) != segmentName(bases[1], logSuffix) {
				t.Fatalf("segment files %v", files)
			}
			if j := journals(t, dir); len(j) != 0 {
				t.Fatalf("journal left: %v", j)
			}
			if _, err := os.Stat(filepath.Join(dir, segmentName(bases[1], indexSuffix))); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("index file of the new active segment: %v", err)
			}
			fl.mu.RLock()
			a := *fl.active()
			fl.mu.RUnlock()
			if fi, err := os.Stat(a.path); err != nil || fi.Size() != a.size {
				t.Fatalf("segment file %v, want %d bytes", fi.Size(), a.size)
			}

			closeStore(t, s)
			s = newFileStore(t, root, opts)
			l = mustOpen(t, s, "p/0")
			m.check(t, l, "reopened")
			b := l.(*fileLog).active()
			if b.size != a.size || b.maxTs != a.maxTs || b.lastIndexed != a.lastIndexed || !reflect.DeepEqual(b.index, a.index) {
				t.Fatalf("recovered active segment differs from the truncated one:\n got size %d maxTs %d last %d index %v\nwant size %d maxTs %d last %d index %v",
					b.size, b.maxTs, b.lastIndexed, b.index, a.size, a.maxTs, a.lastIndexed, a.index)
			}
			m.append(t, l, 4, 4, 4)
			m.check(t, l, "appended after reopen")
		})
	}
}

// copyDir copies the regular files of src into a new folder.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "p", "0")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestFileTruncateCrash lays out on disk every state a crash can leave in the middle of a
// journaled truncation, and checks that opening the log yields the old log (torn journal) or
// the truncated one (valid journal), with no journal left and appends continuing at the end.
func TestFileTruncateCrash(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "p", "0")
	opts := Options{Sync: SyncNever, SegmentBytes: 1200, IndexBytes: 100}
	s := newFileStore(t, root, opts)
	l := mustOpen(t, s, "p/0")
	old := &logModel{}
	for i := range 40 {
		old.append(t, l, 1+i%5)
	}
	bases := segmentBases(l)
	if len(bases) < 4 {
		t.Fatalf("segments %v, want several", bases)
	}
	// Cut inside a batch of the second segment: the plan is what Truncate would do.
	var off int64 = -1
	for _, b := range old.batches {
		if b[0].Offset > bases[1] && b[0].Offset < bases[2] && len(b) > 1 {
			off = b[0].Offset + 1
			break
		}
	}
	if off < 0 {
		t.Fatal("no batch to cut in the second segment")
	}
	fl := l.(*fileLog)
	fl.mu.RLock()
	plan, err := planCut(fl.segs[1], off)
	fl.mu.RUnlock()
	if err != nil || plan.batch == nil {
		t.Fatalf("planCut: %+v, %v", plan, err)
	}
	closeStore(t, s)
	cut := *old
	cut.batches = append([][]Record(nil), old.batches...)
	cut.n = old.n
	cut.truncate(t, truncLog{}, off)

	seg := filepath.Join(dir, segmentName(bases[1], logSuffix))
	journal := encodeJournal(plan.pos, plan.batch)
	writeJ := func(d string, b []byte) {
		if err := os.WriteFile(filepath.Join(d, segmentName(bases[1], truncSuffix)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removeLater := func(d string, n int) { // the n newest later segments
		for _, b := range bases[len(bases)-n:] {
			for _, suffix := range []string{logSuffix, indexSuffix} {
				_ = os.Remove(filepath.Join(d, segmentName(b, suffix)))
			}
		}
	}
	cutSeg := func(d string, batchBytes int) {
		f, err := os.OpenFile(filepath.Join(d, filepath.Base(seg)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(plan.pos); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(plan.batch[:batchBytes], plan.pos); err != nil {
			t.Fatal(err)
		}
	}
	later := len(bases) - 2
	tests := []struct {
		name      string
		crash     func(d string)
		truncated bool
	}{
		{"torn journal", func(d string) { writeJ(d, journal[:len(journal)-1]) }, false},
		{"journal header only", func(d string) { writeJ(d, journal[:journalHeaderSize]) }, false},
		{"empty journal", func(d string) { writeJ(d, nil) }, false},
		{"journal written", func(d string) { writeJ(d, journal) }, true},
		{"one segment deleted", func(d string) { writeJ(d, journal); removeLater(d, 1) }, true},
		{"segments deleted", func(d string) { writeJ(d, journal); removeLater(d, later) }, true},
		{"segment cut", func(d string) { writeJ(d, journal); removeLater(d, later); cutSeg(d, 0) }, true},
		{"batch half written", func(d string) { writeJ(d, journal); removeLater(d, later); cutSeg(d, len(plan.batch)/2) }, true},
		{"batch written", func(d string) { writeJ(d, journal); removeLater(d, later); cutSeg(d, len(plan.batch)) }, true},
		{"stale journal", func(d string) { // of a segment that is gone: never acted on
			os.WriteFile(filepath.Join(d, segmentName(bases[len(bases)-1]+1000, truncSuffix)), journal, 0o644)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t, dir)
			tc.crash(d)
			m := *old
			if tc.truncated {
				m = cut
			}
			m.batches = append([][]Record(nil), m.batches...)
			s := newFileStore(t, filepath.Dir(filepath.Dir(d)), opts)
			l := mustOpen(t, s, "p/0")
			m.check(t, l, "recovered")
			if j := journals(t, d); len(j) != 0 {
				t.Fatalf("journal left: %v", j)
			}
			m.append(t, l, 3, 2)
			closeStore(t, s)
			s = newFileStore(t, filepath.Dir(filepath.Dir(d)), opts)
			m.check(t, mustOpen(t, s, "p/0"), "reopened")
		})
	}
}

// truncLog lets logModel.truncate update a model without a log.
type truncLog struct{ Log }

func (truncLog) Truncate(int64) error { return nil }

// TestFileTruncateWaiters truncates, under SyncAlways, records whose appenders still wait for
// their fsync: everyone returns, the end is the truncation point, and later appends are fsynced
// and become visible. Which of the waiter and the truncation gets the sync role first varies
// from run to run; both orders must work.
func TestFileTruncateWaiters(t *testing.T) {
	for range 20 {
		var syncs atomic.Int32
		entered, release := make(chan struct{}), make(chan struct{})
		opts := Options{Sync: SyncAlways, OnSync: func(time.Duration) {
			if syncs.Add(1) == 4 { // the fsync of the append after the three below
				close(entered)
				<-release
			}
		}}
		s := newFileStore(t, t.TempDir(), opts)
		l := mustOpen(t, s, "l")
		m := &logModel{}
		m.append(t, l, 2, 2, 2)
		fl := l.(*fileLog)
		written := func() int64 { fl.mu.RLock(); defer fl.mu.RUnlock(); return fl.next }

		var wg sync.WaitGroup
		wg.Go(func() { mustAppend(t, l, recs(100, 1)) }) // leads an fsync, which gets stuck
		<-entered
		wg.Go(func() { mustAppend(t, l, recs(101, 3)) }) // waits for the next round
		for written() < 10 {
			time.Sleep(time.Millisecond)
		}
		truncated := make(chan error, 1)
		go func() { truncated <- l.Truncate(3) }()
		time.Sleep(5 * time.Millisecond) // let it queue for the sync role
		close(release)
		wg.Wait()
		if err := <-truncated; err != nil {
			t.Fatal(err)
		}
		m.truncate(t, truncLog{}, 3)
		m.check(t, l, "truncated")
		m.append(t, l, 2)
		m.check(t, l, "appended")
		closeStore(t, s)
	}
}

// TestFileTruncateWaitsForReaders checks the locking protocol: Truncate rewrites files in place,
// so it waits for reads doing their unlocked I/O (they hold ioMu shared) before it starts.
func TestFileTruncateWaitsForReaders(t *testing.T) {
	s := newFileStore(t, t.TempDir(), Options{Sync: SyncNever})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	m.append(t, l, 3, 3)
	fl := l.(*fileLog)
	fl.ioMu.RLock() // a read in the middle of its I/O
	done := make(chan error, 1)
	go func() { done <- l.Truncate(4) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Truncate ran under a read: %v", err)
	default:
	}
	if l.EndOffset() != 6 {
		t.Fatalf("end %d while Truncate waits", l.EndOffset())
	}
	fl.ioMu.RUnlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m.truncate(t, truncLog{}, 4)
	m.check(t, l, "truncated")
}
