package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// truncSuffix names the journal of a Truncate in progress: <base>.truncate, base being the
// segment that is cut. See doc.go for the format and the protocol.
const truncSuffix = ".truncate"

// Journal layout: a 20-byte header, then the kept part of the cut batch (nothing at a batch
// boundary).
const (
	journalMagic      = 0x48524c54 // "HRLT"
	journalVersion    = 1
	journalHeaderSize = 20
)

// checkTruncate reports an offset outside [start, end].
func checkTruncate(off, start, end int64) error {
	if off < start || off > end {
		return fmt.Errorf("%w: truncate to %d, not in [%d, %d]", ErrOutOfRange, off, start, end)
	}
	return nil
}

// Truncate implements Log. It excludes readers, sync rounds and appenders for its whole run (it
// is rare: a replica whose log diverged). off may be up to the written end: under SyncAlways,
// when off is past the durable end, a sync round first fsyncs everything written, so that the
// appenders of the records kept (released with the others) find them durable. Then it cuts the
// log in this order:
//
//  1. Unless the cut is a plain file truncation of the active segment at a batch boundary, a
//     journal naming the segment to keep, the cut position and the kept part of a straddling
//     batch is written and fsynced (with the folder). From then on a crash is repaired by
//     finishTruncate on open, which redoes the steps below, so recovery yields the old log
//     (journal absent or torn) or the truncated one (journal valid), never something between.
//  2. The later segments are deleted, newest first.
//  3. The segment holding off, now the active one, is truncated at the batch holding off and
//     the kept part of that batch is written back as a new batch.
//  4. That file and the folder are fsynced, then the journal is deleted and the folder fsynced
//     again: the journal never outlives the truncation, so it cannot cut later appends.
//
// An I/O error during steps 1-4 is sticky, like a failed append: the log refuses appends until
// it is reopened, and reopening completes the truncation if its journal made it to disk.
func (l *fileLog) Truncate(off int64) error {
	// A no-op or a bad offset is answered without stopping readers and appenders. The bound is
	// the written end: records not fsynced yet (under SyncAlways) can be dropped too.
	l.mu.RLock()
	closed, start, end := l.closed, l.segs[0].base, l.next
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := checkTruncate(off, start, end); err != nil || off == end {
		return err
	}

	l.ioMu.Lock()
	defer l.ioMu.Unlock()
	l.smu.Lock()
	for l.syncing {
		l.scond.Wait()
	}
	l.syncing = true // the sync role, as Close takes it: no fsync runs on a file being cut
	pending := l.opts.Sync == SyncAlways && off > l.synced
	l.smu.Unlock()
	if pending {
		// Records below off are written but not fsynced. Their appenders are released below
		// (truncs changes) and must not return before their data is durable, so fsync
		// everything written first: afterwards the durable end is at least off, as when off
		// <= EndOffset. A failure is sticky and makes truncate return it.
		l.mu.RLock()
		skip := l.closed || l.failed != nil
		l.mu.RUnlock()
		if !skip {
			target, err := l.syncRound()
			l.smu.Lock()
			l.finishRound(target, err) // we keep the sync role
			l.smu.Unlock()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	next, failed := l.next, l.failed
	err := l.truncate(off)

	// Hand the sync role back. Everything below the new end that was fsynced still is (and
	// under SyncAlways that is everything below off: off <= the durable end, if need be after
	// the fsync above). Appenders waiting for data that is gone are released by the changed
	// truncs.
	l.smu.Lock()
	l.syncing = false
	if l.next < next {
		l.truncs++
	}
	l.synced = min(l.synced, l.next)
	l.durable.Store(l.synced)
	if l.failed != failed && l.syncErr == nil {
		l.syncErr = l.failed
	}
	l.scond.Broadcast()
	l.smu.Unlock()
	return err
}

// truncate does the work of Truncate (ioMu, the sync role and mu held).
func (l *fileLog) truncate(off int64) error {
	if l.closed {
		return ErrClosed
	}
	if l.failed != nil {
		return l.failed
	}
	end := l.next
	if err := checkTruncate(off, l.segs[0].base, end); err != nil || off == end {
		return err
	}
	j := l.findSeg(off)
	seg, later := l.segs[j], l.segs[j+1:]
	wrap := func(err error) error { return fmt.Errorf("store: truncate %s to %d: %w", l.dir, off, err) }
	cut, err := planCut(seg, off)
	if err != nil {
		return wrap(err)
	}
	if len(later) > 0 {
		// seg becomes the active segment: reopen it for writing, as recovery would.
		f, err := os.OpenFile(seg.path, os.O_RDWR, 0)
		if err != nil {
			return wrap(err)
		}
		old := seg.f
		seg.f = f
		old.Close()
	}
	if err := l.applyCut(seg, later, cut, off); err != nil {
		l.failed = wrap(err)
		return l.failed
	}
	return nil
}

// cutPlan is where a segment is cut.
type cutPlan struct {
	pos   int64  // byte position of the batch holding the offset: the file is truncated here
	base  int64  // that batch's base offset
	maxTs int64  // largest timestamp of the batches before pos
	nIdx  int    // index entries before pos (kept)
	batch []byte // the batch's records below the offset, re-encoded; nil at a batch boundary
}

// planCut finds where to cut segment s so that it ends just before offset off (> s's end is
// not allowed). It only reads: the index leads to a batch at or before off, headers from there
// to the batch holding off, and that batch, when off falls inside it, is read and verified.
func planCut(s *segment, off int64) (cutPlan, error) {
	p := cutPlan{maxTs: math.MinInt64}
	i := sort.Search(len(s.index), func(i int) bool { return int64(s.index[i].rel) > off-s.base })
	var at int64
	if i > 0 {
		at, p.maxTs = int64(s.index[i-1].pos), s.index[i-1].ts
	}
	sc := scanner{r: s.f, at: at, limit: s.size, chunk: scanChunk}
	for {
		h, pos, err := sc.next()
		if err == io.EOF {
			return p, corruptf("%s: offset %d not found", s.path, off)
		}
		if err != nil {
			return p, fmt.Errorf("%s: %w", s.path, err)
		}
		if h.end() <= off {
			p.maxTs = max(p.maxTs, h.maxTs)
			continue
		}
		if h.base > off {
			return p, corruptf("%s: batch at byte %d has offset %d, want at most %d", s.path, pos, h.base, off)
		}
		p.pos, p.base = pos, h.base
		p.nIdx = sort.Search(len(s.index), func(i int) bool { return int64(s.index[i].pos) >= pos })
		if h.base < off {
			b, err := sc.body()
			if err == nil {
				p.batch, err = cutBatch(b, off)
			}
			if err != nil {
				return p, fmt.Errorf("%s: %w", s.path, err)
			}
		}
		return p, nil
	}
}

// applyCut carries out the plan on disk and in memory (see Truncate): later are the segments
// after s, to delete. The in-memory state follows the disk step by step, so after an error it
// still describes what is on disk as far as it is known.
func (l *fileLog) applyCut(s *segment, later []*segment, p cutPlan, off int64) error {
	journal := filepath.Join(l.dir, segmentName(s.base, truncSuffix))
	useJournal := len(later) > 0 || p.batch != nil // else one ftruncate is the whole change
	if useJournal {
		if err := writeJournal(journal, p.pos, p.batch); err != nil {
			return err
		}
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	for i := len(later) - 1; i >= 0; i-- {
		t := later[i]
		for _, path := range []string{t.indexPath(), t.path} {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		t.removed.Store(true)
		t.f.Close()
		l.segs = slices.Clone(l.segs[:len(l.segs)-1])
		l.next = t.base
		l.dropUnsynced(t)
	}
	if len(later) > 0 {
		_ = os.Remove(s.indexPath()) // s is active now: its index lives in memory
	}

	if err := s.f.Truncate(p.pos); err != nil {
		l.resize()
		return err
	}
	s.index = slices.Clone(s.index[:p.nIdx]) // a copy: readers may hold the old slice
	s.lastIndexed = 0
	if p.nIdx > 0 {
		s.lastIndexed = int64(s.index[p.nIdx-1].pos)
	}
	s.maxTs, s.size = p.maxTs, p.pos
	l.next = p.base
	if p.batch != nil {
		if _, err := s.f.WriteAt(p.batch, p.pos); err != nil {
			l.resize()
			return err
		}
		s.noteBatch(batchHeader{base: p.base, length: len(p.batch), maxTs: batchMaxTs(p.batch)}, p.pos, l.opts.IndexBytes)
		l.next = off
	}
	l.resize()
	if err := l.fsync(s); err != nil {
		return err
	}
	l.dropUnsynced(s) // fsynced just now
	if useJournal {
		if err := syncDir(l.dir); err != nil { // the deletions, before the journal goes
			return err
		}
		if err := os.Remove(journal); err != nil {
			return err
		}
		return syncDir(l.dir)
	}
	return nil
}

// resize recomputes the log's size from its segments (mu held).
func (l *fileLog) resize() {
	l.bytes = 0
	for _, s := range l.segs {
		l.bytes += s.size
	}
}

// dropUnsynced takes s off the list of segments awaiting an fsync (mu held).
func (l *fileLog) dropUnsynced(s *segment) {
	l.unsynced = slices.DeleteFunc(slices.Clone(l.unsynced), func(u *segment) bool { return u == s })
}

// encodeJournal returns the journal of a cut at pos that writes batch (nil: none) back there.
func encodeJournal(pos int64, batch []byte) []byte {
	b := make([]byte, journalHeaderSize, journalHeaderSize+len(batch))
	binary.BigEndian.PutUint32(b[0:], journalMagic)
	b[4] = journalVersion
	binary.BigEndian.PutUint64(b[12:], uint64(pos))
	b = append(b, batch...)
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[12:], castagnoli))
	return b
}

// decodeJournal parses a journal file, rejecting anything torn or inconsistent.
func decodeJournal(b []byte) (pos int64, batch []byte, ok bool) {
	if len(b) < journalHeaderSize || binary.BigEndian.Uint32(b[0:]) != journalMagic || b[4] != journalVersion ||
		binary.BigEndian.Uint32(b[8:]) != crc32.Checksum(b[12:], castagnoli) {
		return 0, nil, false
	}
	pos = int64(binary.BigEndian.Uint64(b[12:]))
	if pos < 0 || pos > maxSegmentBytes {
		return 0, nil, false
	}
	batch = b[journalHeaderSize:]
	if len(batch) == 0 {
		return pos, nil, true
	}
	if h, err := checkBatch(batch); err != nil || h.length != len(batch) {
		return 0, nil, false
	}
	return pos, batch, true
}

// writeJournal creates (or replaces) the journal file at path and fsyncs it.
func writeJournal(path string, pos int64, batch []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(encodeJournal(pos, batch))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// finishTruncate completes, before a log is opened, a Truncate that a crash or an I/O error
// interrupted: entries list the log folder. A valid journal is redone (later segments deleted,
// the cut and the write-back repeated: all idempotent); a torn one was written before any file
// was touched and is only deleted. It reports whether it found a journal.
func finishTruncate(dir string, entries []os.DirEntry) (bool, error) {
	var bases, journals []int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if base, ok := parseSegmentName(e.Name(), logSuffix); ok {
			bases = append(bases, base)
		}
		if base, ok := parseSegmentName(e.Name(), truncSuffix); ok {
			journals = append(journals, base)
		}
	}
	if len(journals) == 0 {
		return false, nil
	}
	slices.Sort(bases)
	for _, base := range journals {
		path := filepath.Join(dir, segmentName(base, truncSuffix))
		b, err := os.ReadFile(path)
		if err != nil {
			return true, err
		}
		if pos, batch, ok := decodeJournal(b); ok && slices.Contains(bases, base) {
			if bases, err = redoTruncate(dir, bases, base, pos, batch); err != nil {
				return true, fmt.Errorf("store: finish truncation of %s: %w", dir, err)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return true, err
		}
	}
	return true, syncDir(dir)
}

// redoTruncate repeats the file steps of a journaled Truncate of the segment at base (one of
// bases, sorted), and returns the bases left.
func redoTruncate(dir string, bases []int64, base, pos int64, batch []byte) ([]int64, error) {
	n := len(bases)
	for ; bases[n-1] > base; n-- { // newest first
		for _, suffix := range []string{indexSuffix, logSuffix} {
			if err := os.Remove(filepath.Join(dir, segmentName(bases[n-1], suffix))); err != nil && !errors.Is(err, os.ErrNotExist) {
				return bases, err
			}
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, segmentName(base, logSuffix)), os.O_RDWR, 0)
	if err != nil {
		return bases, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return bases, err
	}
	// The file is at least pos long at every step of a truncation; a shorter one was damaged
	// otherwise, and is left to the recovery scan.
	if fi.Size() >= pos {
		if err := f.Truncate(pos); err != nil {
			return bases, err
		}
		if _, err := f.WriteAt(batch, pos); err != nil {
			return bases, err
		}
	}
	if err := f.Sync(); err != nil {
		return bases, err
	}
	return bases[:n], syncDir(dir)
}
