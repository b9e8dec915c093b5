package store

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

var (
	_ Store = (*memStore)(nil)
	_ Log   = (*memLog)(nil)
)

// memStore is the Store of NewMemoryStore.
type memStore struct {
	opts Options

	mu     sync.Mutex
	logs   map[string]*memLog
	closed bool
}

// NewMemoryStore returns a Store that keeps logs in memory, for tests and ephemeral brokers. It
// behaves like the file store: logs hold encoded batches in segments that roll at
// Options.SegmentBytes, so offsets, Size, retention, limits and errors are the same. The sync
// options are ignored (everything appended is visible at once, as under SyncNever: WrittenEnd
// is EndOffset and ReadWritten is Read); Options.OnWrite is called as by the file store. Data survives Log.Close and a later Open of the same name, but not
// Store.Close or Remove.
func NewMemoryStore(opts Options) Store {
	return &memStore{opts: opts.withDefaults(), logs: map[string]*memLog{}}
}

// Open implements Store.
func (s *memStore) Open(name string) (Log, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	l := s.logs[name]
	switch {
	case l == nil:
		l = &memLog{opts: s.opts, segs: []*memSegment{{maxTs: math.MinInt64}}}
	case l.isClosed():
		l = l.reopen()
	default:
		return l, nil
	}
	s.logs[name] = l
	return l, nil
}

// Remove implements Store.
func (s *memStore) Remove(name string) error {
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
		_ = l.Close()
	}
	return nil
}

// Close implements Store.
func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	for _, l := range s.logs {
		_ = l.Close()
	}
	s.logs = nil
	return nil
}

// memBatch is one sealed batch.
type memBatch struct {
	base  int64
	count int
	maxTs int64
	b     []byte
}

func (b *memBatch) end() int64 { return b.base + int64(b.count) }

// memSegment mirrors a segment file: the unit of retention.
type memSegment struct {
	base    int64
	batches []memBatch
	size    int64
	maxTs   int64
}

// memLog is a Log in memory. One RWMutex guards everything; Read holds it shared for its whole
// duration, as there is no I/O to keep out of the lock.
type memLog struct {
	opts Options

	mu     sync.RWMutex
	segs   []*memSegment // oldest first; the last one is active
	next   int64
	bytes  int64
	closed bool
}

func (l *memLog) isClosed() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.closed
}

// reopen returns an open log over the data of the closed log l.
func (l *memLog) reopen() *memLog {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return &memLog{opts: l.opts, segs: append([]*memSegment(nil), l.segs...), next: l.next, bytes: l.bytes}
}

// Append implements Log.
func (l *memLog) Append(recs []Record) (int64, error) {
	if len(recs) == 0 {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.closed {
			return 0, ErrClosed
		}
		return l.next, nil
	}
	stampTimes(recs)
	bp := getEncBuf()
	defer putEncBuf(bp)
	*bp = encodeBatch((*bp)[:0], recs)
	if int64(len(*bp)) > l.opts.SegmentBytes {
		return 0, tooLarge(len(*bp), l.opts.SegmentBytes)
	}
	b := append([]byte(nil), *bp...) // exact size: the batch is kept

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	base := l.next
	sealBatch(b, base)
	seg := l.segs[len(l.segs)-1]
	if seg.size > 0 && seg.size+int64(len(b)) > l.opts.SegmentBytes {
		seg = &memSegment{base: base, maxTs: math.MinInt64}
		l.segs = append(l.segs, seg)
	}
	mb := memBatch{base: base, count: len(recs), maxTs: batchMaxTs(b), b: b}
	seg.batches = append(seg.batches, mb)
	seg.size += int64(len(b))
	seg.maxTs = max(seg.maxTs, mb.maxTs)
	l.bytes += int64(len(b))
	l.next += int64(len(recs))
	l.mu.Unlock()
	for i := range recs {
		recs[i].Offset = base + int64(i)
	}
	if l.opts.OnWrite != nil {
		l.opts.OnWrite() // unlocked: the callee may read the log
	}
	return base, nil
}

// Read implements Log. Each batch is copied before decoding, since decoded records alias the
// buffer they come from and the caller may modify them.
func (l *memLog) Read(from int64, max int, maxBytes int) ([]Record, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	if from < l.segs[0].base || from > l.next {
		return nil, fmt.Errorf("%w: %d not in [%d, %d]", ErrOutOfRange, from, l.segs[0].base, l.next)
	}
	var out []Record
	lim := &readLimits{max: max, maxBytes: maxBytes}
	want := from // next offset wanted
	si := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > from }) - 1
	for ; si < len(l.segs); si++ {
		batches := l.segs[si].batches
		bi := sort.Search(len(batches), func(i int) bool { return batches[i].end() > from })
		for ; bi < len(batches); bi++ {
			b := append([]byte(nil), batches[bi].b...)
			n := len(out)
			var err error
			if _, out, err = decodeBatch(b, want, lim, out); err != nil {
				if n > 0 {
					return out[:n], nil
				}
				return nil, err
			}
			if len(out) > n {
				want = out[len(out)-1].Offset + 1
			}
			if want < batches[bi].end() || lim.full() {
				return out, nil // the limits stopped the read inside this batch
			}
		}
	}
	return out, nil
}

// ReadWritten implements Log: the same as Read, as a memory log has nothing to fsync.
func (l *memLog) ReadWritten(from int64, max int, maxBytes int) ([]Record, error) {
	return l.Read(from, max, maxBytes)
}

// WrittenEnd implements Log: the same as EndOffset.
func (l *memLog) WrittenEnd() int64 { return l.EndOffset() }

// StartOffset implements Log.
func (l *memLog) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[0].base
}

// EndOffset implements Log.
func (l *memLog) EndOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.next
}

// Size implements Log: the bytes of the encoded batches, as they would be on disk.
func (l *memLog) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.bytes
}

// OffsetForTime implements Log.
func (l *memLog) OffsetForTime(t int64) (int64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return 0, ErrClosed
	}
	for _, s := range l.segs {
		if s.maxTs < t {
			continue
		}
		for _, mb := range s.batches {
			if mb.maxTs < t {
				continue
			}
			_, recs, err := decodeBatch(mb.b, 0, nil, nil)
			if err != nil {
				return 0, err
			}
			for _, r := range recs {
				if r.Timestamp >= t {
					return r.Offset, nil
				}
			}
		}
	}
	return l.next, nil
}

// EnforceRetention implements Log, with the same rules as the file store.
func (l *memLog) EnforceRetention(now time.Time, maxAge time.Duration, maxBytes int64) (int64, error) {
	cutoff := int64(math.MinInt64)
	if maxAge > 0 {
		cutoff = now.Add(-maxAge).UnixNano()
	}
	return l.dropOldest(func(s *memSegment, _ int64) bool {
		return s.maxTs < cutoff || (maxBytes > 0 && l.bytes > maxBytes)
	})
}

// DropBefore implements Log.
func (l *memLog) DropBefore(offset int64) (int64, error) {
	return l.dropOldest(func(_ *memSegment, end int64) bool { return end <= offset })
}

// dropOldest is fileLog.dropOldest for memory.
func (l *memLog) dropOldest(drop func(s *memSegment, end int64) bool) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	n := 0
	for n < len(l.segs)-1 {
		s := l.segs[n]
		if !drop(s, l.segs[n+1].base) {
			break
		}
		l.bytes -= s.size
		n++
	}
	if n > 0 {
		l.segs = append([]*memSegment(nil), l.segs[n:]...)
	}
	return l.segs[0].base, nil
}

// Truncate implements Log, with the same rules as the file store. The segment holding off is
// replaced by a copy (a closed log that a reopen copied from may still point at the old one).
func (l *memLog) Truncate(off int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if err := checkTruncate(off, l.segs[0].base, l.next); err != nil || off == l.next {
		return err
	}
	j := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > off }) - 1
	old := l.segs[j]
	i := sort.Search(len(old.batches), func(i int) bool { return old.batches[i].end() > off })
	seg := &memSegment{base: old.base, batches: slices.Clone(old.batches[:i]), maxTs: math.MinInt64}
	if mb := old.batches[i]; mb.base < off { // it straddles off: keep the records below
		b, err := cutBatch(mb.b, off)
		if err != nil {
			return fmt.Errorf("store: truncate to %d: %w", off, err)
		}
		seg.batches = append(seg.batches, memBatch{base: mb.base, count: int(off - mb.base), maxTs: batchMaxTs(b), b: b})
	}
	for _, mb := range seg.batches {
		seg.size += int64(len(mb.b))
		seg.maxTs = max(seg.maxTs, mb.maxTs)
	}
	l.segs = append(slices.Clone(l.segs[:j]), seg)
	l.bytes = 0
	for _, s := range l.segs {
		l.bytes += s.size
	}
	l.next = off
	return nil
}

// Reset implements Log, with the same rules as the file store: one empty segment at off.
func (l *memLog) Reset(off int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if err := checkReset(off); err != nil {
		return err
	}
	l.segs = []*memSegment{{base: off, maxTs: math.MinInt64}}
	l.next, l.bytes = off, 0
	return nil
}

// Close implements Log.
func (l *memLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	return nil
}
