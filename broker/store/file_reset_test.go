package store

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func (truncLog) Reset(int64) error { return nil }

// resetJournals lists a log folder's reset journals.
func resetJournals(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+resetSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkResetFiles checks that dir holds exactly one segment, the empty <off>.log, and no index
// file or journal.
func checkResetFiles(t testing.TB, dir string, off int64) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != segmentName(off, logSuffix) {
		t.Fatalf("files %v after a reset to %d", names, off)
	}
	if fi, err := os.Stat(filepath.Join(dir, names[0])); err != nil || fi.Size() != 0 {
		t.Fatalf("new segment: %v, %v", fi, err)
	}
}

// TestFileResetFiles checks the files a reset leaves and the in-memory sync state, and that
// reopening finds the reset log.
func TestFileResetFiles(t *testing.T) {
	for _, p := range []SyncPolicy{SyncAlways, SyncInterval, SyncNever} {
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
			bases := segmentBases(l)
			if len(bases) < 4 {
				t.Fatalf("segments %v, want several", bases)
			}
			for _, off := range []int64{bases[1] + 3, bases[1] + 3, m.end() + 50, 7} {
				m.reset(t, l, off)
				m.checkReset(t, l, "reset")
				checkResetFiles(t, dir, off)
				fl := l.(*fileLog)
				fl.mu.RLock()
				unsynced, dirDirty, failed := len(fl.unsynced), fl.dirDirty, fl.failed
				fl.mu.RUnlock()
				fl.smu.Lock()
				synced, syncing := fl.synced, fl.syncing
				fl.smu.Unlock()
				if unsynced != 0 || dirDirty || failed != nil || synced != off || fl.durable.Load() != off || syncing {
					t.Fatalf("after reset to %d: unsynced %d dirDirty %v failed %v synced %d durable %d syncing %v",
						off, unsynced, dirDirty, failed, synced, fl.durable.Load(), syncing)
				}
				for i := range 20 {
					m.append(t, l, 1+i%5)
				}
				m.check(t, l, "appended after reset")
			}
			m.reset(t, l, 123)
			closeStore(t, s)
			checkResetFiles(t, dir, 123)
			s = newFileStore(t, root, opts)
			l = mustOpen(t, s, "p/0")
			m.checkReset(t, l, "reopened")
			m.append(t, l, 4, 4, 4)
			m.check(t, l, "appended after reopen")
		})
	}
}

// TestFileResetCrash lays out on disk every state a crash can leave in the middle of a reset,
// for offsets beyond, inside, at the base of a segment, at and below the start of the old log,
// and checks that opening the log yields the old log (no valid journal) or the reset one (valid
// journal), with no journal left and appends continuing at the end.
func TestFileResetCrash(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "p", "0")
	opts := Options{Sync: SyncNever, SegmentBytes: 1200, IndexBytes: 100}
	s := newFileStore(t, root, opts)
	l := mustOpen(t, s, "p/0")
	old := &logModel{}
	for i := range 50 {
		old.append(t, l, 1+i%5)
	}
	// Move the start, so that there is room below it.
	first := segmentBases(l)[1]
	if start, err := l.DropBefore(first); err != nil || start != first {
		t.Fatalf("DropBefore(%d) = %d, %v", first, start, err)
	}
	old.start = first
	kept := old.batches[:0]
	for _, b := range old.batches {
		if b[0].Offset >= first {
			kept = append(kept, b)
		}
	}
	old.batches = kept
	old.check(t, l, "old log")
	bases := segmentBases(l)
	if len(bases) < 4 {
		t.Fatalf("segments %v, want several", bases)
	}
	closeStore(t, s)

	removeOldest := func(d string, n int, withIndex bool) {
		for _, b := range bases[:n] {
			_ = os.Remove(filepath.Join(d, segmentName(b, logSuffix)))
			if withIndex {
				_ = os.Remove(filepath.Join(d, segmentName(b, indexSuffix)))
			}
		}
	}
	offs := map[string]int64{
		"beyond":     old.end() + 100,
		"at the end": old.end(),
		"inside":     bases[1] + 2,
		"at a base":  bases[2],
		"at start":   bases[0],
		"below":      bases[0] / 2,
		"zero":       0,
	}
	for where, off := range offs {
		journal := encodeResetJournal(off)
		writeJ := func(d string, b []byte) {
			if err := os.WriteFile(filepath.Join(d, segmentName(off, resetSuffix)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		badCRC := append([]byte(nil), journal...)
		badCRC[len(badCRC)-1] ^= 1
		create := func(d string) {
			if err := os.WriteFile(filepath.Join(d, segmentName(off, logSuffix)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name  string
			crash func(d string)
			reset bool
		}{
			{"empty journal", func(d string) { writeJ(d, nil) }, false},
			{"torn journal", func(d string) { writeJ(d, journal[:len(journal)-1]) }, false},
			{"bad crc", func(d string) { writeJ(d, badCRC) }, false},
			{"journal of another offset", func(d string) {
				os.WriteFile(filepath.Join(d, segmentName(off+1, resetSuffix)), journal, 0o644)
			}, false},
			{"journal written", func(d string) { writeJ(d, journal) }, true},
			{"oldest segment deleted", func(d string) { writeJ(d, journal); removeOldest(d, 1, true) }, true},
			{"its index left", func(d string) { writeJ(d, journal); removeOldest(d, 1, false) }, true},
			{"all but the last deleted", func(d string) { writeJ(d, journal); removeOldest(d, len(bases)-1, true) }, true},
			{"all deleted", func(d string) { writeJ(d, journal); removeOldest(d, len(bases), true) }, true},
			{"new segment created", func(d string) { writeJ(d, journal); removeOldest(d, len(bases), true); create(d) }, true},
			{"with a truncation journal", func(d string) {
				// A reset supersedes it, even one that would write a batch into the new segment.
				writeJ(d, journal)
				removeOldest(d, len(bases), true)
				create(d)
				tj := encodeJournal(0, seal(off, recs(0, 2)))
				os.WriteFile(filepath.Join(d, segmentName(off, truncSuffix)), tj, 0o644)
			}, true},
		}
		for _, tc := range tests {
			t.Run(where+"/"+tc.name, func(t *testing.T) {
				d := copyDir(t, dir)
				tc.crash(d)
				m := *old
				if tc.reset {
					m.start, m.batches = off, nil
				}
				m.batches = append([][]Record(nil), m.batches...)
				r := filepath.Dir(filepath.Dir(d))
				s := newFileStore(t, r, opts)
				l := mustOpen(t, s, "p/0")
				if tc.reset {
					m.checkReset(t, l, "recovered")
					checkResetFiles(t, d, off)
				} else {
					m.check(t, l, "recovered")
				}
				if j := append(resetJournals(t, d), journals(t, d)...); len(j) != 0 {
					t.Fatalf("journal left: %v", j)
				}
				m.append(t, l, 3, 2)
				closeStore(t, s)
				s = newFileStore(t, r, opts)
				m.check(t, mustOpen(t, s, "p/0"), "reopened")
			})
		}
	}
}

// TestFileResetWaiters resets, under SyncAlways, a log whose appenders still wait for their
// fsync: everyone returns, the log is the reset one, and later appends are fsynced and become
// visible. Which of a waiter and the reset gets the sync role first varies from run to run.
func TestFileResetWaiters(t *testing.T) {
	for i := range 30 {
		off := []int64{3, 8, 100}[i%3] // inside, between the waiters' batches, beyond
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
		done := make(chan error, 1)
		go func() { done <- l.Reset(off) }()
		time.Sleep(5 * time.Millisecond) // let it queue for the sync role
		close(release)
		wg.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		m.reset(t, truncLog{}, off)
		m.checkReset(t, l, "reset")
		m.append(t, l, 2)
		m.check(t, l, "appended")
		closeStore(t, s)
	}
}

// TestFileResetLocking checks the locking protocol: Reset waits for reads doing their unlocked
// I/O, and retention deletes its files under ioMu too (shared), so that a Reset to the base of
// a segment being dropped cannot see its new file deleted by the late deletion.
func TestFileResetLocking(t *testing.T) {
	s := newFileStore(t, t.TempDir(), Options{Sync: SyncNever, SegmentBytes: 200})
	l := mustOpen(t, s, "l")
	m := &logModel{}
	for range 10 {
		m.append(t, l, 2)
	}
	fl := l.(*fileLog)

	fl.ioMu.RLock() // a read in the middle of its I/O
	done := make(chan error, 1)
	go func() { done <- l.Reset(4) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Reset ran under a read: %v", err)
	default:
	}
	if l.EndOffset() != m.end() {
		t.Fatalf("end %d while Reset waits", l.EndOffset())
	}
	fl.ioMu.RUnlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m.reset(t, truncLog{}, 4)
	m.checkReset(t, l, "reset")

	for range 10 {
		m.append(t, l, 2)
	}
	fl.ioMu.Lock() // a Reset in progress
	dropped := make(chan error, 1)
	go func() { _, err := l.DropBefore(m.end()); dropped <- err }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-dropped:
		t.Fatalf("retention ran under a Reset: %v", err)
	default:
	}
	fl.ioMu.Unlock()
	if err := <-dropped; err != nil {
		t.Fatal(err)
	}
}

// TestFileRemoveResetJournal checks that Remove deletes a reset journal left by a failed reset,
// so that the log's folder goes.
func TestFileRemoveResetJournal(t *testing.T) {
	root := t.TempDir()
	s := newFileStore(t, root, Options{})
	l := mustOpen(t, s, "p/0")
	appendBatches(t, l, 2)
	dir := filepath.Join(root, "p", "0")
	if err := os.WriteFile(filepath.Join(dir, segmentName(9, resetSuffix)), []byte("torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("p/0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("log folder after Remove: %v", err)
	}
}
