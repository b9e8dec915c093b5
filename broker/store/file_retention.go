package store

import (
	"errors"
	"math"
	"os"
	"time"
)

// EnforceRetention implements Log. Only a prefix of segments is dropped (a log has no holes);
// the files are deleted after the lock is released (but under ioMu, shared: a Reset must not
// create a segment that a deletion still pending here would then remove). A reader still on a
// dropped segment gets ErrOutOfRange, as if it had come a moment later.
func (l *fileLog) EnforceRetention(now time.Time, maxAge time.Duration, maxBytes int64) (int64, error) {
	cutoff := int64(math.MinInt64)
	if maxAge > 0 {
		cutoff = now.Add(-maxAge).UnixNano()
	}
	return l.dropOldest(func(s *segment, _ int64) bool {
		return s.maxTs < cutoff || (maxBytes > 0 && l.bytes > maxBytes)
	})
}

// DropBefore implements Log.
func (l *fileLog) DropBefore(offset int64) (int64, error) {
	return l.dropOldest(func(_ *segment, end int64) bool { return end <= offset })
}

// dropOldest removes the oldest segments, never the active one, while drop holds for the oldest
// left (given its segment and the offset after its last record; called with l.mu held), and
// returns the new start offset.
func (l *fileLog) dropOldest(drop func(s *segment, end int64) bool) (int64, error) {
	l.ioMu.RLock()
	defer l.ioMu.RUnlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	n := 0
	for n < len(l.segs)-1 {
		s := l.segs[n]
		if !drop(s, l.segs[n+1].base) {
			break
		}
		l.bytes -= s.size
		s.removed.Store(true)
		n++
	}
	dropped := l.segs[:n]
	if n > 0 {
		l.segs = append([]*segment(nil), l.segs[n:]...)
		kept := l.unsynced[:0:0]
		for _, s := range l.unsynced {
			if !s.removed.Load() {
				kept = append(kept, s)
			}
		}
		l.unsynced = kept
	}
	start := l.segs[0].base
	l.mu.Unlock()

	var errs []error
	for _, s := range dropped {
		s.f.Close()
		for _, p := range []string{s.path, s.indexPath()} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return start, errors.Join(errs...)
}
