package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

var (
	_ Store = (*fileStore)(nil)
	_ Log   = (*fileLog)(nil)
)

// fileStore is the Store of NewFileStore: one folder per log under dir.
type fileStore struct {
	dir  string
	opts Options

	mu     sync.Mutex
	logs   map[string]*fileLog
	closed bool

	stop chan struct{} // closes the SyncInterval flusher
	done chan struct{}
}

// NewFileStore returns a Store keeping each log in the folder dir/<name>/ (see the package doc
// for the format). Logs are opened, and recovered, on first Open.
func NewFileStore(dir string, opts Options) (Store, error) {
	opts = opts.withDefaults()
	switch opts.Sync {
	case SyncAlways, SyncInterval, SyncNever:
	default:
		return nil, fmt.Errorf("store: unknown sync policy %d", int(opts.Sync))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &fileStore{dir: filepath.Clean(dir), opts: opts, logs: map[string]*fileLog{}}
	if opts.Sync == SyncInterval {
		// One flusher per store rather than per log: thousands of partitions should not mean
		// thousands of tickers.
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.flushLoop()
	}
	return s, nil
}

func (s *fileStore) flushLoop() {
	defer close(s.done)
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		logs := make([]*fileLog, 0, len(s.logs))
		for _, l := range s.logs {
			logs = append(logs, l)
		}
		s.mu.Unlock()
		for _, l := range logs {
			l.flush()
		}
	}
}

func (s *fileStore) logDir(name string) string { return filepath.Join(s.dir, filepath.FromSlash(name)) }

// Open implements Store. A log closed with Log.Close is reopened (and recovered) from disk.
func (s *fileStore) Open(name string) (Log, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if l := s.logs[name]; l != nil && !l.isClosed() {
		return l, nil
	}
	l, err := openFileLog(s.logDir(name), s.dir, s.opts)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", name, err)
	}
	s.logs[name] = l
	return l, nil
}

// Remove implements Store. Only the log's own files are deleted; its folder goes when it is then
// empty (a log "a" may share its folder with the folder of a log "a/b"), and so do emptied
// parent folders up to the store's.
func (s *fileStore) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if l := s.logs[name]; l != nil {
		delete(s.logs, name)
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			return err
		}
	}
	dir := s.logDir(name)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		_, isLog := parseSegmentName(e.Name(), logSuffix)
		_, isIndex := parseSegmentName(e.Name(), indexSuffix)
		_, isJournal := parseSegmentName(e.Name(), truncSuffix)
		_, isReset := parseSegmentName(e.Name(), resetSuffix)
		if isLog || isIndex || isJournal || isReset {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	// Prune empty folders; os.Remove fails on a non-empty one, which ends the walk.
	for d := dir; d != s.dir && len(d) > len(s.dir); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

// Close implements Store.
func (s *fileStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	logs := s.logs
	s.logs = nil
	s.mu.Unlock()
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	var errs []error
	for _, l := range logs {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fileLog is a Log in a folder of segment files.
//
// Locking: mu guards the segment list and the append state. Append holds it (exclusively) only
// while it writes; Read and the other readers hold it (shared) only to take a snapshot, then do
// their I/O unlocked. fsyncs never run under mu: smu and scond coordinate them (group commit).
// Truncate and Reset, which rewrite or delete files in place, hold ioMu (exclusively), the sync
// role and mu, in that order, for their whole run; readers hold ioMu shared around their
// unlocked I/O, and so does retention around its unlocked file deletions.
type fileLog struct {
	dir  string
	opts Options

	ioMu sync.RWMutex

	mu       sync.RWMutex
	segs     []*segment // oldest first; the last one is active. Replaced, never edited in place.
	next     int64      // offset of the next record
	bytes    int64      // sum of segment sizes
	closed   bool
	failed   error      // sticky write or fsync failure: the log must be reopened to recover
	unsynced []*segment // rolled segments whose data is not yet fsynced
	dirDirty bool       // a segment file was created since the last fsync
	// truncs counts the Truncates and Resets that dropped records. Written with both mu and smu
	// held, read under either: an appender notes it with its batch's end, and stops waiting for
	// an fsync once it changed (its batch is gone, and new data reuses its offsets).
	truncs int64

	// durable is the offset below which data is fsynced. Under SyncAlways it is also the end of
	// what readers see, so nothing a crash could take back is ever served.
	durable atomic.Int64

	smu     sync.Mutex
	scond   *sync.Cond
	syncing bool  // a leader is fsyncing
	synced  int64 // offset below which data is fsynced (durable, guarded by smu)
	syncErr error // sticky: once an fsync failed, waiters cannot be told their data is safe
}

// openFileLog opens or creates the log in dir, recovering the active segment. root is the
// store's folder, fsynced up to when the log's folder is new.
func openFileLog(dir, root string, opts Options) (*fileLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []int64
	for _, e := range entries {
		if base, ok := parseSegmentName(e.Name(), logSuffix); ok && e.Type().IsRegular() {
			bases = append(bases, base)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	// A reset first: it supersedes any truncation journal, which it deletes.
	if changed, err := finishReset(dir, entries); err != nil {
		return nil, err
	} else if changed {
		return openFileLog(dir, root, opts)
	}
	if changed, err := finishTruncate(dir, entries); err != nil {
		return nil, err
	} else if changed { // segments may be gone: list again
		return openFileLog(dir, root, opts)
	}

	l := &fileLog{dir: dir, opts: opts}
	l.scond = sync.NewCond(&l.smu)
	fail := func(err error) (*fileLog, error) {
		for _, s := range l.segs {
			s.f.Close()
		}
		return nil, err
	}
	if len(bases) == 0 {
		s, err := createSegment(dir, 0)
		if err != nil {
			return fail(err)
		}
		l.segs = []*segment{s}
		if opts.Sync != SyncNever {
			// Make the new file and folders durable now; later segment files are covered by
			// dirDirty.
			if err := syncDirs(dir, root); err != nil {
				return fail(err)
			}
		}
	} else {
		for i, base := range bases[:len(bases)-1] {
			s, err := openClosedSegment(filepath.Join(dir, segmentName(base, logSuffix)), base, bases[i+1], opts.IndexBytes)
			if err != nil {
				return fail(err)
			}
			l.segs = append(l.segs, s)
		}
		last := bases[len(bases)-1]
		s, next, err := recoverActiveSegment(filepath.Join(dir, segmentName(last, logSuffix)), last, opts.IndexBytes)
		if err != nil {
			return fail(err)
		}
		l.segs = append(l.segs, s)
		l.next = next
		// Index files of segments dropped by an interrupted retention run.
		for _, e := range entries {
			if base, ok := parseSegmentName(e.Name(), indexSuffix); ok && base < bases[0] && e.Type().IsRegular() {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, s := range l.segs {
		l.bytes += s.size
	}
	l.synced = l.next
	l.durable.Store(l.next)
	return l, nil
}

// syncDirs fsyncs dir and its parents up to and including root, so a new log's folder survives
// a power loss.
func syncDirs(dir, root string) error {
	for d := dir; ; d = filepath.Dir(d) {
		if err := syncDir(d); err != nil {
			return err
		}
		if d == root || len(d) <= len(root) || d == filepath.Dir(d) {
			return nil
		}
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (l *fileLog) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

func (l *fileLog) active() *segment { return l.segs[len(l.segs)-1] }

// visibleEnd is the end of what readers see (mu held): under SyncAlways only fsynced data, so a
// consumer never acts on a record that a power loss could take back and hand to a different
// message; otherwise everything written. WrittenEnd and ReadWritten use l.next instead.
func (l *fileLog) visibleEnd() int64 {
	if l.opts.Sync == SyncAlways {
		return l.durable.Load()
	}
	return l.next
}

// findSeg returns the index of the segment holding offset off (mu held), -1 below the first.
func (l *fileLog) findSeg(off int64) int {
	return sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > off }) - 1
}

// Append implements Log. The batch is encoded outside the lock into a pooled buffer; under the
// lock it only gets its offset and CRC and is written with one pwrite. Then, with no lock held,
// Options.OnWrite is called, and under SyncAlways the call waits for an fsync that covers the
// batch, shared with concurrent appenders (see syncTo).
func (l *fileLog) Append(recs []Record) (int64, error) {
	if len(recs) == 0 {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.closed {
			return 0, ErrClosed
		}
		return l.visibleEnd(), nil
	}
	stampTimes(recs)
	bp := getEncBuf()
	defer putEncBuf(bp)
	b := encodeBatch((*bp)[:0], recs)
	*bp = b
	if int64(len(b)) > l.opts.SegmentBytes {
		return 0, tooLarge(len(b), l.opts.SegmentBytes)
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	if l.failed != nil {
		l.mu.Unlock()
		return 0, l.failed
	}
	base := l.next
	sealBatch(b, base)
	seg := l.active()
	if seg.size > 0 && seg.size+int64(len(b)) > l.opts.SegmentBytes {
		if err := l.roll(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		seg = l.active()
	}
	pos := seg.size
	if _, err := seg.f.WriteAt(b, pos); err != nil {
		// Cut off whatever part landed, so the next batch follows the last good one. If even
		// that fails, the file's tail is unknown: refuse further appends (reopen recovers).
		if terr := seg.f.Truncate(pos); terr != nil {
			l.failed = fmt.Errorf("store: %s: write failed and could not be undone: %w", seg.path, terr)
		}
		l.mu.Unlock()
		return 0, fmt.Errorf("store: append to %s: %w", seg.path, err)
	}
	seg.noteBatch(batchHeader{base: base, length: len(b), maxTs: batchMaxTs(b)}, pos, l.opts.IndexBytes)
	l.bytes += int64(len(b))
	l.next += int64(len(recs))
	end, truncs := l.next, l.truncs
	l.mu.Unlock()

	for i := range recs {
		recs[i].Offset = base + int64(i)
	}
	if l.opts.OnWrite != nil {
		l.opts.OnWrite() // no lock held: the callee may read the log (ReadWritten sees the batch)
	}
	if l.opts.Sync == SyncAlways {
		if err := l.syncTo(end, truncs); err != nil {
			return base, err
		}
	}
	return base, nil
}

// roll closes the active segment for writing and starts a new one at l.next (mu held). The old
// segment's index is written out; its data is fsynced by the next sync round, not here, so the
// roll does not stall appends and reads behind an fsync.
func (l *fileLog) roll() error {
	old := l.active()
	s, err := createSegment(l.dir, l.next)
	if err != nil {
		return fmt.Errorf("store: roll segment: %w", err)
	}
	old.writeIndex()
	l.segs = append(l.segs, s)
	// Under SyncNever the list is only drained by Close; it holds pointers, not extra files.
	l.unsynced = append(l.unsynced, old)
	l.dirDirty = true
	return nil
}

// syncTo returns once everything below offset end is fsynced (group commit). The first caller to
// find no fsync running becomes the leader: it fsyncs everything written so far, for itself and
// for every appender that wrote before it started, while later callers wait on scond. When the
// leader is done, waiters it covered return without an fsync of their own; one of the others
// leads the next round. So there is at most one fsync at a time and, under load, one per round
// rather than one per append. truncs is l.truncs when end was read: once a Truncate or Reset
// dropped records since, the data below end may be gone, and the wait is over.
func (l *fileLog) syncTo(end, truncs int64) error {
	l.smu.Lock()
	defer l.smu.Unlock()
	for l.synced < end {
		if l.syncErr != nil {
			return l.syncErr
		}
		if l.truncs != truncs {
			return nil
		}
		if l.syncing {
			l.scond.Wait()
			continue
		}
		l.syncing = true
		l.smu.Unlock()
		target, err := l.syncRound()
		l.smu.Lock()
		l.syncing = false
		l.finishRound(target, err)
	}
	return nil
}

// finishRound publishes the outcome of a sync round (smu held).
func (l *fileLog) finishRound(target int64, err error) {
	if err != nil {
		l.syncErr = err
	} else if target > l.synced {
		l.synced = target
		l.durable.Store(target)
	}
	l.scond.Broadcast()
}

// syncRound fsyncs every file holding data written so far and returns the offset it covers. The
// caller holds the sync role (syncing), so it runs alone.
func (l *fileLog) syncRound() (int64, error) {
	l.mu.Lock()
	target := l.next
	files := l.unsynced
	l.unsynced = nil
	active := l.active()
	dirDirty := l.dirDirty
	l.dirDirty = false
	l.mu.Unlock()

	err := func() error {
		for _, s := range files {
			if err := l.fsync(s); err != nil {
				return err
			}
		}
		if err := l.fsync(active); err != nil {
			return err
		}
		if dirDirty {
			return syncDir(l.dir)
		}
		return nil
	}()
	if err != nil {
		err = fmt.Errorf("store: fsync %s: %w", l.dir, err)
		l.mu.Lock()
		if l.failed == nil {
			l.failed = err
		}
		l.mu.Unlock()
		return 0, err
	}
	return target, nil
}

// fsync syncs one segment file and reports the duration. A segment dropped by retention in the
// meantime needs no sync.
func (l *fileLog) fsync(s *segment) error {
	if s.removed.Load() {
		return nil
	}
	start := time.Now()
	err := s.f.Sync()
	if l.opts.OnSync != nil {
		l.opts.OnSync(time.Since(start))
	}
	if err != nil && s.removed.Load() {
		return nil
	}
	return err
}

// flush fsyncs the log if it has unsynced data (the SyncInterval flusher).
func (l *fileLog) flush() {
	l.mu.RLock()
	closed, end, truncs := l.closed, l.next, l.truncs
	l.mu.RUnlock()
	if closed {
		return
	}
	l.smu.Lock()
	dirty := l.synced < end
	l.smu.Unlock()
	if dirty {
		_ = l.syncTo(end, truncs) // a failure is sticky and surfaces on the next Append
	}
}

// Read implements Log. It works segment by segment: a short locked snapshot (segment, readable
// size, index), then unlocked reads of 64 KiB chunks. Every returned batch is CRC-checked. If a
// problem (corruption, a gap, a segment dropped by retention meanwhile) is met after some
// records were collected, those are returned without error; the next Read, starting at the bad
// spot, reports it.
func (l *fileLog) Read(from int64, max int, maxBytes int) ([]Record, error) {
	return l.read(from, max, maxBytes, false)
}

// ReadWritten implements Log: Read up to everything written, fsynced or not (the page cache
// serves what is not on disk yet).
func (l *fileLog) ReadWritten(from int64, max int, maxBytes int) ([]Record, error) {
	return l.read(from, max, maxBytes, true)
}

// read is Read, bounded by the written end when written is set and by visibleEnd otherwise.
func (l *fileLog) read(from int64, max int, maxBytes int, written bool) ([]Record, error) {
	l.ioMu.RLock()
	defer l.ioMu.RUnlock()
	var (
		out     []Record
		lim     = &readLimits{max: max, maxBytes: maxBytes}
		expect  = from // next offset wanted
		prevSeg *segment
	)
	fail := func(err error) ([]Record, error) {
		if len(out) > 0 {
			return out, nil
		}
		return nil, err
	}
	for {
		l.mu.RLock()
		if l.closed {
			l.mu.RUnlock()
			return fail(ErrClosed)
		}
		hw := l.visibleEnd()
		if written {
			hw = l.next
		}
		if start, next := l.segs[0].base, l.next; prevSeg == nil && (from < start || from > next) {
			l.mu.RUnlock()
			return nil, fmt.Errorf("%w: %d not in [%d, %d]", ErrOutOfRange, from, start, next)
		}
		if expect >= hw {
			l.mu.RUnlock()
			return out, nil
		}
		i := l.findSeg(expect)
		if i < 0 { // retention dropped it since the last segment
			l.mu.RUnlock()
			return fail(ErrOutOfRange)
		}
		seg, limit, index := l.segs[i], l.segs[i].size, l.segs[i].index
		l.mu.RUnlock()
		if seg == prevSeg {
			// The previous segment ended before the offset we need, and no segment starts there.
			return fail(corruptf("%s: offsets from %d missing", seg.path, expect))
		}
		prevSeg = seg

		var pos int64
		if expect > seg.base {
			pos = lookupOffset(index, expect-seg.base)
		}
		var done bool
		var err error
		if out == nil && max > 0 {
			out = make([]Record, 0, min(int64(max), 1024, hw-expect)) // never room for more than there is
		}
		out, expect, done, err = l.readSegment(seg, pos, limit, hw, expect, lim, out)
		if err != nil {
			if seg.removed.Load() {
				err = fmt.Errorf("%w: %d dropped by retention", ErrOutOfRange, expect)
			} else if l.isClosed() {
				err = ErrClosed
			}
			return fail(err)
		}
		if done || expect >= hw {
			// Done, or at the end of what was visible when this segment was snapshotted: stop
			// rather than chase concurrent appends (the caller reads again for those).
			return out, nil
		}
	}
}

// readSegment reads batches of seg from pos up to limit, appending the records at offsets >=
// expect that lim admits. It returns the next offset wanted and whether the Read is complete.
func (l *fileLog) readSegment(seg *segment, pos, limit, hw, expect int64, lim *readLimits, out []Record) ([]Record, int64, bool, error) {
	sc := scanner{r: seg.f, at: pos, limit: limit, chunk: scanChunk, fresh: true}
	started := len(out) > 0 || expect == seg.base
	for {
		h, at, err := sc.next()
		if err == io.EOF {
			return out, expect, false, nil
		}
		if err != nil {
			return out, expect, false, fmt.Errorf("%s: %w", seg.path, err)
		}
		if h.base >= hw {
			return out, expect, true, nil
		}
		switch {
		case h.base > expect:
			return out, expect, false, corruptf("%s: batch at byte %d has offset %d, want %d", seg.path, at, h.base, expect)
		case h.end() <= expect: // before the wanted offset: skip it unread
			if started {
				return out, expect, false, corruptf("%s: batch at byte %d has offset %d, want %d", seg.path, at, h.base, expect)
			}
			continue
		}
		b, err := sc.body()
		if err != nil {
			return out, expect, false, fmt.Errorf("%s: %w", seg.path, err)
		}
		n := len(out)
		if _, out, err = decodeBatch(b, expect, lim, out); err != nil {
			return out[:n], expect, false, fmt.Errorf("%s: %w", seg.path, err)
		}
		started = true
		if len(out) > n {
			expect = out[len(out)-1].Offset + 1
		}
		if expect < h.end() || lim.full() {
			return out, expect, true, nil // the limits stopped the read inside this batch
		}
	}
}

// StartOffset implements Log.
func (l *fileLog) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[0].base
}

// EndOffset implements Log. Under SyncAlways it is the end of the fsynced data, the same bound
// Read serves up to, so the two never disagree; an Append in flight is not counted until it
// returns.
func (l *fileLog) EndOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.visibleEnd()
}

// WrittenEnd implements Log: the offset after the last record written. It differs from
// EndOffset only under SyncAlways, while appended data waits for its fsync.
func (l *fileLog) WrittenEnd() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.next
}

// Size implements Log: the bytes of the segment files (indexes excluded).
func (l *fileLog) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.bytes
}

// OffsetForTime implements Log. Segments whose max timestamp is below t are skipped whole; in
// the first other one the index's running max timestamp gives a starting point, batch headers
// lead to the first batch with a max timestamp >= t, and that batch is decoded (and verified).
func (l *fileLog) OffsetForTime(t int64) (int64, error) {
	l.ioMu.RLock()
	defer l.ioMu.RUnlock()
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return 0, ErrClosed
	}
	hw := l.visibleEnd()
	var (
		seg   *segment
		limit int64
		index []indexEntry
	)
	for _, s := range l.segs {
		if s.maxTs >= t {
			seg, limit, index = s, s.size, s.index
			break
		}
	}
	l.mu.RUnlock()
	if seg == nil {
		return hw, nil
	}
	sc := scanner{r: seg.f, at: lookupTime(index, t), limit: limit, chunk: scanChunk}
	for {
		h, _, err := sc.next()
		if err == io.EOF {
			return hw, nil
		}
		if err == nil && h.base >= hw {
			return hw, nil
		}
		if err == nil && h.maxTs >= t {
			var b []byte
			if b, err = sc.body(); err == nil {
				var recs []Record
				if _, recs, err = decodeBatch(b, 0, nil, nil); err == nil {
					for _, r := range recs {
						if r.Timestamp >= t {
							return r.Offset, nil
						}
					}
				}
			}
		}
		if err != nil {
			if seg.removed.Load() {
				return l.StartOffset(), nil // dropped meanwhile: the answer is the new start
			}
			if l.isClosed() {
				return 0, ErrClosed
			}
			return 0, fmt.Errorf("%s: %w", seg.path, err)
		}
	}
}

// Close implements Log: it fsyncs everything not yet fsynced (under every policy) and closes the
// files. Appends waiting for an fsync are released by it.
func (l *fileLog) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.mu.Unlock()

	// Take the sync role, so no leader is fsyncing while the files close.
	l.smu.Lock()
	for l.syncing {
		l.scond.Wait()
	}
	l.syncing = true
	l.smu.Unlock()

	target, err := l.syncRound()
	errs := []error{err}
	l.mu.Lock()
	for _, s := range l.segs {
		if s.removed.Load() { // closed already (a Reset that failed half-way)
			continue
		}
		if cerr := s.f.Close(); cerr != nil {
			errs = append(errs, cerr)
		}
	}
	l.mu.Unlock()

	l.smu.Lock()
	l.syncing = false
	l.finishRound(target, err)
	l.smu.Unlock()
	return errors.Join(errs...)
}
