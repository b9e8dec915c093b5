package store

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

const (
	logSuffix   = ".log"
	indexSuffix = ".index"
	// baseDigits is the width of the zero-padded base offset in segment file names, enough for
	// any int64, so names sort like offsets.
	baseDigits = 20
	// scanChunk is how much a scan reads per syscall: large enough to amortise the syscall over
	// many small batches, small enough to be a cheap allocation.
	scanChunk = 64 << 10
	// recoverChunk is the read size of recovery scans, which reuse one buffer.
	recoverChunk = 1 << 20
)

// segmentName returns the file name of the segment starting at base, with suffix.
func segmentName(base int64, suffix string) string {
	return fmt.Sprintf("%0*d%s", baseDigits, base, suffix)
}

// parseSegmentName returns the base offset of a segment file name such as
// "00000000000000000042.log".
func parseSegmentName(name, suffix string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, suffix)
	if !ok || len(digits) != baseDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	base, err := strconv.ParseInt(digits, 10, 64)
	return base, err == nil
}

// segment is one file of a log. Its mutable fields are guarded by the owning fileLog's mu; only
// the active (last) segment changes.
type segment struct {
	base  int64
	path  string   // the .log file
	f     *os.File // open for the log's lifetime (read-write for the active segment)
	size  int64    // bytes of valid batches
	maxTs int64    // largest record timestamp (math.MinInt64 when empty)
	// index is append-only: a reader may keep a copy of the slice header after unlocking.
	index       []indexEntry
	lastIndexed int64 // position of the last index entry, 0 when none

	// removed is set (under the log's mu) before retention closes f, so a reader or fsync that
	// races with it can tell "dropped by retention" from a real I/O error.
	removed atomic.Bool
}

func (s *segment) indexPath() string {
	return strings.TrimSuffix(s.path, logSuffix) + indexSuffix
}

// noteBatch records a batch of header h written at pos: the index rule and max timestamp. Append
// and recovery both use it, so a rebuilt index equals the one built while appending.
func (s *segment) noteBatch(h batchHeader, pos int64, indexBytes int) {
	if pos-s.lastIndexed >= int64(indexBytes) {
		s.index = append(s.index, indexEntry{rel: uint32(h.base - s.base), pos: uint32(pos), ts: s.maxTs})
		s.lastIndexed = pos
	}
	s.maxTs = max(s.maxTs, h.maxTs)
	s.size = pos + int64(h.length)
}

// scanner walks the batches of one segment file between two positions, reading in chunks.
type scanner struct {
	r      io.ReaderAt
	at     int64 // position of the next batch
	limit  int64 // end of the readable data
	chunk  int
	fresh  bool // allocate a new buffer on every refill (the caller keeps slices of old ones)
	buf    []byte
	bufPos int64 // file position of buf[0]
	cur    batchHeader
	curPos int64
}

// next parses the header of the next batch and returns it with its position; io.EOF at the
// limit. A batch that does not fit before the limit is an error wrapping ErrCorrupt (a torn
// write, when the limit is the file size).
func (s *scanner) next() (batchHeader, int64, error) {
	if s.at >= s.limit {
		return batchHeader{}, s.at, io.EOF
	}
	hb, err := s.window(s.at, batchHeaderSize)
	if err != nil {
		return batchHeader{}, s.at, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return h, s.at, fmt.Errorf("at byte %d: %w", s.at, err)
	}
	if int64(h.length) > s.limit-s.at {
		return h, s.at, corruptf("batch at byte %d: %d bytes, only %d left", s.at, h.length, s.limit-s.at)
	}
	s.cur, s.curPos = h, s.at
	s.at += int64(h.length)
	return h, s.curPos, nil
}

// body returns the whole batch whose header next returned last.
func (s *scanner) body() ([]byte, error) { return s.window(s.curPos, s.cur.length) }

// window returns the n bytes at pos, refilling the buffer (at least a chunk) when needed.
func (s *scanner) window(pos int64, n int) ([]byte, error) {
	if pos >= s.bufPos && pos+int64(n) <= s.bufPos+int64(len(s.buf)) {
		off := pos - s.bufPos
		return s.buf[off : off+int64(n)], nil
	}
	if s.limit-pos < int64(n) {
		return nil, corruptf("torn batch at byte %d: %d of %d bytes", pos, s.limit-pos, n)
	}
	size := int64(max(n, s.chunk))
	size = min(size, s.limit-pos)
	if s.fresh || int64(cap(s.buf)) < size {
		s.buf = make([]byte, size)
	} else {
		s.buf = s.buf[:size]
	}
	s.bufPos = pos
	if _, err := s.r.ReadAt(s.buf, pos); err != nil {
		s.buf = s.buf[:0]
		if errors.Is(err, io.EOF) { // the file is shorter than the log believes
			return nil, corruptf("short segment at byte %d", pos)
		}
		return nil, err
	}
	return s.buf[:n], nil
}

// scanResult is what scanning a segment from its start learned.
type scanResult struct {
	size  int64 // end of the last good batch
	next  int64 // offset after the last good batch
	maxTs int64
	index []indexEntry
	last  int64 // position of the last index entry
}

// scanSegment walks the segment at base from its first byte to size, rebuilding the sparse
// index. With verify, every batch's CRC and structure is checked too (recovery of the active
// segment); without, only headers are read (index rebuild of a closed segment). It stops at the
// first bad or out-of-sequence batch and returns the error that stopped it (nil at a clean end);
// the result always describes the good prefix.
func scanSegment(r io.ReaderAt, base, size int64, indexBytes int, verify bool) (scanResult, error) {
	seg := segment{base: base, maxTs: math.MinInt64}
	sc := scanner{r: r, limit: size, chunk: recoverChunk}
	next := base
	for {
		h, pos, err := sc.next()
		if err == io.EOF {
			err = nil
			break
		}
		if err == nil && h.base != next {
			err = corruptf("batch at byte %d has offset %d, want %d", pos, h.base, next)
		}
		if err == nil && verify {
			var b []byte
			if b, err = sc.body(); err == nil {
				_, err = checkBatch(b)
			}
		}
		if err != nil {
			return scanResult{size: seg.size, next: next, maxTs: seg.maxTs, index: seg.index, last: seg.lastIndexed}, err
		}
		seg.noteBatch(h, pos, indexBytes)
		next = h.end()
	}
	return scanResult{size: seg.size, next: next, maxTs: seg.maxTs, index: seg.index, last: seg.lastIndexed}, nil
}

// createSegment creates an empty segment file in dir starting at base.
func createSegment(dir string, base int64) (*segment, error) {
	path := filepath.Join(dir, segmentName(base, logSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	return &segment{base: base, path: path, f: f, maxTs: math.MinInt64}, nil
}

// writeIndex stores the index of a closed segment. It is not fsynced: the file carries its own
// CRC and is validated on open, so a torn or lost index only costs a rescan. A failed write is
// ignored for the same reason (a half-written file is removed so it is not even tried).
func (s *segment) writeIndex() {
	if err := os.WriteFile(s.indexPath(), encodeIndex(s.index), 0o644); err != nil {
		_ = os.Remove(s.indexPath())
	}
}

// openClosedSegment opens a segment that is not the last of its log. Its end offset is the next
// segment's base, so only the index and the max timestamp are needed: the index comes from its
// file when valid (else from a header scan, and is rewritten), the max timestamp from a scan of
// the batches after the last index entry.
func openClosedSegment(path string, base, nextBase int64, indexBytes int) (*segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &segment{base: base, path: path, f: f, size: fi.Size(), maxTs: math.MinInt64}
	if b, err := os.ReadFile(s.indexPath()); err == nil {
		if entries, err := decodeIndex(b, s.size, nextBase-base); err == nil && s.tailMaxTs(entries, nextBase) {
			return s, nil
		}
	}
	// Index missing or unusable: rebuild from the headers (a bad batch stops the scan; Read
	// reports it when it gets there).
	res, _ := scanSegment(f, base, s.size, indexBytes, false)
	s.index, s.lastIndexed, s.maxTs = res.index, res.last, res.maxTs
	s.writeIndex()
	return s, nil
}

// tailMaxTs installs entries as s's index if the batch at the last entry is where the entry
// says, and computes the max timestamp from that entry and the batches after it. It reports
// false when the index does not match the segment, which is then rescanned.
func (s *segment) tailMaxTs(entries []indexEntry, nextBase int64) bool {
	var from int64
	maxTs := int64(math.MinInt64)
	want := s.base
	if n := len(entries); n > 0 {
		e := entries[n-1]
		from, maxTs, want = int64(e.pos), e.ts, s.base+int64(e.rel)
	}
	sc := scanner{r: s.f, at: from, limit: s.size, chunk: scanChunk}
	for first := true; ; first = false {
		h, _, err := sc.next()
		if err == io.EOF {
			break
		}
		if err != nil || h.base != want {
			if first {
				return false // the indexed batch itself is not there: the index is stale
			}
			break // a bad batch further on is for Read to report
		}
		maxTs = max(maxTs, h.maxTs)
		want = h.end()
	}
	if want > nextBase {
		return false
	}
	s.index, s.maxTs = entries, maxTs
	if n := len(entries); n > 0 {
		s.lastIndexed = int64(entries[n-1].pos)
	}
	return true
}

// recoverActiveSegment opens the last segment of a log, verifies every batch and truncates the
// file at the first torn, corrupt or out-of-sequence one, so a crash mid-write never serves
// garbage and appends continue right after the last good batch. The index is always rebuilt by
// this scan (an index file left from an earlier run may point past the truncation).
func recoverActiveSegment(path string, base int64, indexBytes int) (*segment, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	res, scanErr := scanSegment(f, base, fi.Size(), indexBytes, true)
	if scanErr != nil && !errors.Is(scanErr, ErrCorrupt) {
		f.Close() // an I/O error: truncating on it could destroy good data
		return nil, 0, scanErr
	}
	if res.size < fi.Size() {
		// Make the truncation durable before anything is appended after it, so a later crash
		// cannot resurrect the old tail behind new data.
		if err := f.Truncate(res.size); err != nil {
			f.Close()
			return nil, 0, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, 0, err
		}
	}
	s := &segment{base: base, path: path, f: f, size: res.size, maxTs: res.maxTs, index: res.index, lastIndexed: res.last}
	// The index of the active segment lives in memory; a file left from an earlier run is stale.
	_ = os.Remove(s.indexPath())
	return s, res.next, nil
}
