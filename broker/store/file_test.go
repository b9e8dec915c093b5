package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newFileStore(t testing.TB, dir string, opts Options) Store {
	t.Helper()
	s, err := NewFileStore(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func closeStore(t testing.TB, s Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// segmentFiles lists a log folder's .log files, oldest first.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+logSuffix))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// batchLog is a file log written batch by batch, remembering where each batch ends.
type batchLog struct {
	dir     string     // the log's folder
	batches [][]Record // records of each batch, with offsets
	ends    []int64    // file position after each batch (all in one segment)
}

func (b *batchLog) records(n int) []Record {
	var out []Record
	for _, bs := range b.batches[:n] {
		out = append(out, bs...)
	}
	return out
}

// writeBatchLog appends batches of varied sizes to one segment of a new log and closes it.
func writeBatchLog(t testing.TB, opts Options, sizes []int) batchLog {
	t.Helper()
	root := t.TempDir()
	s := newFileStore(t, root, opts)
	l := mustOpen(t, s, "p/0")
	bl := batchLog{dir: filepath.Join(root, "p", "0")}
	n := 0
	for _, size := range sizes {
		rs := recs(n, size)
		mustAppend(t, l, rs)
		bl.batches = append(bl.batches, rs)
		bl.ends = append(bl.ends, l.Size())
		n += size
	}
	closeStore(t, s)
	if len(segmentFiles(t, bl.dir)) != 1 {
		t.Fatal("want one segment")
	}
	return bl
}

// reopenDamaged writes seg as the only segment of a fresh log folder and opens it.
func reopenDamaged(t testing.TB, seg []byte, opts Options) (Store, Log, string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "p", "0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, segmentName(0, logSuffix))
	if err := os.WriteFile(path, seg, 0o644); err != nil {
		t.Fatal(err)
	}
	s := newFileStore(t, root, opts)
	return s, mustOpen(t, s, "p/0"), path
}

// checkRecovered checks a log recovered to exactly the first good batches of bl: every one of
// them is served, the index is consistent, and appends continue at the right offset and survive
// another reopen.
func checkRecovered(t testing.TB, s Store, l Log, bl batchLog, good int, path string) {
	t.Helper()
	want := bl.records(good)
	end := int64(len(want))
	if l.EndOffset() != end {
		t.Fatalf("end offset %d, want %d", l.EndOffset(), end)
	}
	var size int64
	if good > 0 {
		size = bl.ends[good-1]
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != size || l.Size() != size {
		t.Fatalf("segment truncated to %v (log size %d), want %d", fi.Size(), l.Size(), size)
	}
	checkRecords(t, "recovered", mustRead(t, l, 0, 0, 0), want)
	for _, e := range l.(*fileLog).active().index {
		if int64(e.pos) >= size {
			t.Fatalf("index entry %+v points past the end %d", e, size)
		}
	}
	extra := []Record{{ID: "after-recovery", Data: []byte("x")}}
	if base := mustAppend(t, l, extra); base != end {
		t.Fatalf("append after recovery at %d, want %d", base, end)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, s, "p/0")
	checkRecords(t, "after append and reopen", mustRead(t, l2, 0, 0, 0), append(want, extra...))
}

// TestFileTornTail cuts the last segment at many points (every byte of the last two batches,
// and a sample before) as a crash mid-write would: reopening serves every batch before the cut
// and nothing of the cut one.
func TestFileTornTail(t *testing.T) {
	opts := Options{Sync: SyncNever, IndexBytes: 200}
	bl := writeBatchLog(t, opts, []int{1, 4, 2, 7, 1, 3, 5, 1, 2, 6, 1, 3})
	orig, err := os.ReadFile(segmentFiles(t, bl.dir)[0])
	if err != nil {
		t.Fatal(err)
	}
	var cuts []int64
	n := len(bl.ends)
	for c := bl.ends[n-3]; c < bl.ends[n-1]; c++ {
		cuts = append(cuts, c)
	}
	for c := int64(0); c < bl.ends[n-3]; c += 23 {
		cuts = append(cuts, c)
	}
	for _, cut := range cuts {
		good := sort.Search(n, func(i int) bool { return bl.ends[i] > cut })
		t.Run(fmt.Sprint("cut", cut), func(t *testing.T) {
			s, l, path := reopenDamaged(t, orig[:cut], opts)
			checkRecovered(t, s, l, bl, good, path)
		})
	}
	t.Run("garbage-after-tail", func(t *testing.T) {
		damaged := append(append([]byte(nil), orig...), "\x48\x52\x4c\x42\x01garbage that looks like a header"...)
		s, l, path := reopenDamaged(t, damaged, opts)
		checkRecovered(t, s, l, bl, n, path)
	})
	t.Run("zeros-after-tail", func(t *testing.T) { // a file extended without its data
		damaged := append(append([]byte(nil), orig...), make([]byte, 4096)...)
		s, l, path := reopenDamaged(t, damaged, opts)
		checkRecovered(t, s, l, bl, n, path)
	})
}

// TestFileCorruptTail flips bytes of the last segment: recovery truncates at the damaged batch,
// whether it is the last one or (bit rot) one in the middle.
func TestFileCorruptTail(t *testing.T) {
	opts := Options{Sync: SyncNever, IndexBytes: 128}
	bl := writeBatchLog(t, opts, []int{3, 1, 5, 2, 4, 1})
	orig, err := os.ReadFile(segmentFiles(t, bl.dir)[0])
	if err != nil {
		t.Fatal(err)
	}
	n := len(bl.ends)
	var positions []int64
	for p := bl.ends[n-2]; p < bl.ends[n-1]; p++ { // every byte of the last batch
		positions = append(positions, p)
	}
	for p := int64(0); p < bl.ends[n-2]; p += 17 { // a sample of earlier batches
		positions = append(positions, p)
	}
	for _, p := range positions {
		good := sort.Search(n, func(i int) bool { return bl.ends[i] > p })
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			t.Run(fmt.Sprintf("byte%d^%#x", p, flip), func(t *testing.T) {
				damaged := append([]byte(nil), orig...)
				damaged[p] ^= flip
				s, l, path := reopenDamaged(t, damaged, opts)
				checkRecovered(t, s, l, bl, good, path)
			})
		}
	}
}

// TestFileCorruptMiddle damages a batch that recovery does not check (a closed segment, or the
// active segment while open): Read reports ErrCorrupt instead of serving it, still serves the
// batches around it, and a whole-log Read stops before it.
func TestFileCorruptMiddle(t *testing.T) {
	for _, closed := range []bool{true, false} {
		t.Run(fmt.Sprint("closed-segment=", closed), func(t *testing.T) {
			root := t.TempDir()
			opts := Options{SegmentBytes: 1 << 10, IndexBytes: 64}
			if !closed {
				opts.SegmentBytes = 0
			}
			s := newFileStore(t, root, opts)
			l := mustOpen(t, s, "l")
			var all []Record
			var target []Record // the batch to damage
			for i := range 30 {
				rs := appendBatches(t, l, 1+i%4)
				all = append(all, rs...)
				if i == 10 {
					target = rs
				}
			}
			fl := l.(*fileLog)
			seg := fl.segs[fl.findSeg(target[0].Offset)]
			if closed == (seg == fl.active()) {
				t.Fatal("test setup: wrong segment")
			}
			if closed {
				closeStore(t, s)
			}
			// Find the batch in its file and flip a byte of its last record's data.
			b, err := os.ReadFile(seg.path)
			if err != nil {
				t.Fatal(err)
			}
			var pos int64
			for {
				h, err := parseHeader(b[pos:])
				if err != nil {
					t.Fatal(err)
				}
				if h.base == target[0].Offset {
					b[pos+int64(h.length)-1] ^= 0x55
					break
				}
				pos += int64(h.length)
			}
			if err := os.WriteFile(seg.path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if closed {
				s = newFileStore(t, root, opts)
				l = mustOpen(t, s, "l")
			}
			first, last := target[0].Offset, target[len(target)-1].Offset
			for off := first; off <= last; off++ {
				if got, err := l.Read(off, 0, 0); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Read(%d) of the damaged batch: %d records, %v; want ErrCorrupt", off, len(got), err)
				}
			}
			checkRecords(t, "before the damage", mustRead(t, l, 0, 0, 0), all[:first])
			checkRecords(t, "after the damage", mustRead(t, l, last+1, 0, 0), all[last+1:])
			if l.EndOffset() != int64(len(all)) {
				t.Fatalf("end %d, want %d", l.EndOffset(), len(all))
			}
		})
	}
}

// TestFileReopenStore closes and reopens the whole store: segments, indexes (loaded from their
// files for closed segments, rebuilt for the active one), retention and timestamps survive.
func TestFileReopenStore(t *testing.T) {
	root := t.TempDir()
	opts := Options{SegmentBytes: 1500, IndexBytes: 100}
	s := newFileStore(t, root, opts)
	l := mustOpen(t, s, "topics/x/0")
	var all []Record
	for i := range 80 {
		all = append(all, appendBatches(t, l, 1+i%5)...)
	}
	start, err := l.EnforceRetention(time.Now(), 0, 6000)
	if err != nil || start == 0 {
		t.Fatalf("retention: %d %v", start, err)
	}
	fl := l.(*fileLog)
	type segState struct {
		Base, Size, MaxTs int64
		Index             []indexEntry
	}
	state := func(l *fileLog) []segState {
		var out []segState
		for _, s := range l.segs {
			out = append(out, segState{s.base, s.size, s.maxTs, s.index})
		}
		return out
	}
	before, end, size := state(fl), l.EndOffset(), l.Size()
	if len(before) < 3 {
		t.Fatalf("%d segments, want several", len(before))
	}
	closeStore(t, s)

	check := func(t *testing.T) {
		s := newFileStore(t, root, opts)
		l := mustOpen(t, s, "topics/x/0")
		if got := state(l.(*fileLog)); !reflect.DeepEqual(got, before) {
			t.Fatalf("segments after reopen:\n got %+v\nwant %+v", got, before)
		}
		if l.StartOffset() != start || l.EndOffset() != end || l.Size() != size {
			t.Fatalf("start %d end %d size %d, want %d %d %d", l.StartOffset(), l.EndOffset(), l.Size(), start, end, size)
		}
		checkRecords(t, "after reopen", mustRead(t, l, start, 0, 0), all[start:])
		for off := start; off < end; off += 7 {
			checkRecords(t, fmt.Sprint("Read ", off), mustRead(t, l, off, 3, 0), all[off:min(off+3, end)])
			if got, err := l.OffsetForTime(all[off].Timestamp); err != nil || got != off {
				t.Fatalf("OffsetForTime(ts of %d) = %d, %v", off, got, err)
			}
		}
		closeStore(t, s)
	}
	t.Run("clean", check)
	// Index files are a cache: missing, torn, garbage or stale ones are rebuilt to the same.
	idx := func(i int) string {
		return filepath.Join(root, "topics", "x", "0", segmentName(before[i].Base, indexSuffix))
	}
	damage := []struct {
		name string
		fn   func() error
	}{
		{"missing", func() error { return os.Remove(idx(0)) }},
		{"torn", func() error { return os.Truncate(idx(1), 20) }},
		{"garbage", func() error { return os.WriteFile(idx(0), []byte("not an index at all......"), 0o644) }},
		{"past-end", func() error {
			// A well-formed index whose entry points past the segment's end.
			return os.WriteFile(idx(1), encodeIndex([]indexEntry{{rel: 1, pos: uint32(before[1].Size + 10)}}), 0o644)
		}},
		{"wrong-entry", func() error {
			// Well-formed and in range, but not where a batch starts.
			return os.WriteFile(idx(0), encodeIndex([]indexEntry{{rel: 1, pos: 7}}), 0o644)
		}},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			if err := d.fn(); err != nil {
				t.Fatal(err)
			}
			check(t)
		})
	}
	t.Run("stale-active-index", func(t *testing.T) {
		// An index file next to the active segment (from an earlier run) is never trusted.
		last := len(before) - 1
		bad := encodeIndex([]indexEntry{{rel: 1, pos: 1}, {rel: 1 << 30, pos: 1 << 30}})
		if err := os.WriteFile(idx(last), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		check(t)
		if _, err := os.Stat(idx(last)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stale index of the active segment kept: %v", err)
		}
	})
}

func TestFileNames(t *testing.T) {
	root := t.TempDir()
	s := newFileStore(t, root, Options{SegmentBytes: 512})
	l := mustOpen(t, s, "a/b")
	appendBatches(t, l, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
	var names []string
	for _, p := range segmentFiles(t, filepath.Join(root, "a", "b")) {
		names = append(names, filepath.Base(p))
	}
	if len(names) < 2 || names[0] != "00000000000000000000.log" {
		t.Fatalf("segment files %v", names)
	}
	for i, name := range names {
		base, ok := parseSegmentName(name, logSuffix)
		if !ok || base != l.(*fileLog).segs[i].base {
			t.Fatalf("file %s: base %d %v", name, base, ok)
		}
		if i < len(names)-1 { // closed segments have an index file
			if _, err := os.Stat(filepath.Join(root, "a", "b", segmentName(base, indexSuffix))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Remove("a/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty folders left after Remove: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("store folder removed: %v", err)
	}
}

// TestFileGroupCommit makes appenders pile up behind a slow fsync: they must all be covered by
// one more fsync, not one each, and none may be visible to readers before it.
func TestFileGroupCommit(t *testing.T) {
	const appenders = 10
	var syncs atomic.Int32
	entered, release := make(chan struct{}), make(chan struct{})
	opts := Options{Sync: SyncAlways, OnSync: func(time.Duration) {
		if syncs.Add(1) == 1 {
			close(entered)
			<-release
		}
	}}
	s := newFileStore(t, t.TempDir(), opts)
	l := mustOpen(t, s, "l")
	fl := l.(*fileLog)
	written := func() int64 { fl.mu.RLock(); defer fl.mu.RUnlock(); return fl.next }

	var wg sync.WaitGroup
	wg.Go(func() { mustAppend(t, l, recs(0, 1)) })
	<-entered // the first append leads an fsync, which is now stuck
	for range appenders - 1 {
		wg.Go(func() { mustAppend(t, l, recs(0, 1)) })
	}
	for written() < appenders {
		time.Sleep(time.Millisecond)
	}
	if l.EndOffset() != 0 {
		t.Fatalf("EndOffset %d before any fsync finished, want 0", l.EndOffset())
	}
	if got := mustRead(t, l, 0, 0, 0); len(got) != 0 {
		t.Fatalf("read %d records before they were fsynced", len(got))
	}
	close(release)
	wg.Wait()
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d fsyncs for %d appends, want 2 (one stuck, one for the rest)", n, appenders)
	}
	if l.EndOffset() != appenders || len(mustRead(t, l, 0, 0, 0)) != appenders {
		t.Fatalf("end %d after all appends", l.EndOffset())
	}
}

// TestFileSyncPolicies checks when each policy fsyncs.
func TestFileSyncPolicies(t *testing.T) {
	tests := []struct {
		policy SyncPolicy
		// before: fsyncs expected right after one append; eventually: whether the background
		// flusher must fsync without a Close.
		before     int32
		eventually bool
	}{
		{SyncAlways, 1, false}, // each Append fsyncs; there is no flusher
		{SyncInterval, 0, true},
		{SyncNever, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.policy.String(), func(t *testing.T) {
			var syncs atomic.Int32
			gate := make(chan struct{})
			opts := Options{Sync: tc.policy, SyncInterval: 20 * time.Millisecond, OnSync: func(d time.Duration) {
				if d < 0 {
					t.Error("negative fsync duration")
				}
				<-gate // holds the flusher off until the append has been checked
				syncs.Add(1)
			}}
			if tc.policy == SyncAlways {
				close(gate)
			}
			s := newFileStore(t, t.TempDir(), opts)
			l := mustOpen(t, s, "l")
			mustAppend(t, l, recs(0, 1))
			if n := syncs.Load(); n != tc.before {
				t.Fatalf("%d fsyncs after one append, want %d", n, tc.before)
			}
			if tc.policy != SyncAlways {
				close(gate)
			}
			deadline := time.Now().Add(2 * time.Second)
			for syncs.Load() == tc.before && time.Now().Before(deadline) && tc.eventually {
				time.Sleep(5 * time.Millisecond)
			}
			if tc.eventually != (syncs.Load() > tc.before) {
				t.Fatalf("%d fsyncs without Close", syncs.Load())
			}
			if tc.policy == SyncNever {
				time.Sleep(50 * time.Millisecond)
				if syncs.Load() != 0 {
					t.Fatal("SyncNever fsynced before Close")
				}
			}
			n := syncs.Load()
			mustAppend(t, l, recs(1, 1))
			closeStore(t, s)
			if syncs.Load() <= n {
				t.Fatal("Close did not fsync")
			}
		})
	}
}

// TestFileBadOptions checks that an unknown policy is refused rather than silently not syncing.
func TestFileBadOptions(t *testing.T) {
	if _, err := NewFileStore(t.TempDir(), Options{Sync: SyncPolicy(9)}); err == nil {
		t.Fatal("unknown sync policy accepted")
	}
}

// TestFileRetentionWhileReading drops segments under readers: they get records or
// ErrOutOfRange, never anything else.
func TestFileRetentionWhileReading(t *testing.T) {
	s := newFileStore(t, t.TempDir(), Options{Sync: SyncNever, SegmentBytes: 1024, IndexBytes: 128})
	l := mustOpen(t, s, "l")
	var all []Record
	for i := range 200 {
		all = append(all, appendBatches(t, l, 1+i%3)...)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				from := l.StartOffset()
				got, err := l.Read(from, 0, 0)
				if err != nil && !errors.Is(err, ErrOutOfRange) {
					t.Error(err)
					return
				}
				for i, r := range got {
					if !sameRecord(r, all[from+int64(i)]) {
						t.Errorf("offset %d: bad record", r.Offset)
						return
					}
				}
			}
		})
	}
	for maxBytes := l.Size(); maxBytes > 0; maxBytes -= 500 {
		if _, err := l.EnforceRetention(time.Now(), 0, maxBytes); err != nil {
			t.Error(err)
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}
