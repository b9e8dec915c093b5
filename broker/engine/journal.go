package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/store"
)

// A journal persists a cursorSet: which offsets of a set of logs are done (acked, skipped,
// dead-lettered, or — for the delay queue — moved to their topic). Two files in one folder:
//
//   - done.wal: appended frames [u32 length][u32 CRC32C of payload][payload]; a payload is a
//     list of done ranges: uvarint count, then per range uvarint partition, uvarint first
//     offset, uvarint length. Replaying a range twice is harmless (done is a set), which is what
//     makes compaction crash-safe without sequence numbers.
//   - done.snap: the whole state: magic "HJSN", version byte 1, u32 CRC32C of the rest, uvarint
//     partition count, then per partition uvarint partition, uvarint floor, uvarint next, uvarint
//     number of pending offsets, and each pending offset as a uvarint delta from the previous
//     (from floor for the first). Offsets below floor are done; in [floor, next) the listed ones
//     are pending and the others done; next and beyond were never delivered.
//
// A nil *journal is the in-memory broker's: every method is a no-op.
//
// Compaction writes done.snap atomically (temp file, fsync, rename) and then truncates done.wal.
// Recovery reads done.snap, replays done.wal, and truncates a torn or corrupt wal tail.
type journal struct {
	dir    string
	policy store.SyncPolicy
	onSync func(time.Duration)

	mu      sync.Mutex // guards f, written
	f       *os.File
	written int64 // bytes written to done.wal
	buf     []byte

	smu     sync.Mutex // guards synced, syncing
	scond   *sync.Cond
	synced  int64 // done.wal is durable up to here
	syncing bool
	gen     uint64 // bumped by truncate so waiters on an old file return
}

const (
	walName          = "done.wal"
	snapName         = "done.snap"
	snapMagic        = "HJSN"
	snapVersion      = 1
	journalCompactAt = 8 << 20 // compact when done.wal grows past this
	maxFrameBytes    = 64 << 20
)

var (
	errJournalCorrupt = errors.New("engine: journal crc mismatch")
	crcTable          = crc32.MakeTable(crc32.Castagnoli)
)

// doneRange is a run of done offsets [from, from+n) in one partition.
type doneRange struct {
	partition int
	from      int64
	n         int64
}

// openJournal opens (creating) the journal in dir and returns the recovered state.
func openJournal(dir string, policy store.SyncPolicy, onSync func(time.Duration)) (*journal, *cursorSnapshot, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	snap, err := readSnapshot(filepath.Join(dir, snapName))
	if err != nil {
		return nil, nil, err
	}
	walPath := filepath.Join(dir, walName)
	f, err := os.OpenFile(walPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, err
	}
	good, err := replayWAL(f, snap)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	// Drop a torn or corrupt tail so new frames follow the last good one.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	j := &journal{dir: dir, policy: policy, onSync: onSync, f: f, written: good, synced: good}
	j.scond = sync.NewCond(&j.smu)
	return j, snap, nil
}

// replayWAL applies every intact frame to snap and returns the length of the intact prefix.
func replayWAL(f *os.File, snap *cursorSnapshot) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(f, 1<<16)
	var good int64
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return good, nil // EOF or torn header
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		if n > maxFrameBytes {
			return good, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return good, nil
		}
		if crc32.Checksum(payload, crcTable) != sum {
			return good, nil
		}
		ranges, err := decodeRanges(payload)
		if err != nil {
			return good, nil
		}
		for _, rg := range ranges {
			snap.applyDone(rg)
		}
		good += 8 + int64(n)
	}
}

// write appends ranges as one frame (no fsync) and returns the position to pass to durable.
// Callers write under their own lock, so frames follow state changes in order, and wait for
// durability after releasing it.
func (j *journal) write(ranges []doneRange) (int64, error) {
	if j == nil || len(ranges) == 0 {
		return 0, nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return 0, errors.New("engine: journal closed")
	}
	payload := encodeRanges(j.buf[:0], ranges)
	j.buf = payload[:0]
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(payload, crcTable))
	frame := append(hdr[:], payload...)
	if _, err := j.f.Write(frame); err != nil {
		return 0, err
	}
	j.written += int64(len(frame))
	return j.written, nil
}

// durable returns once everything written up to pos is durable under the journal's policy
// (group commit: concurrent callers share one fsync).
func (j *journal) durable(pos int64) error {
	if j == nil || pos == 0 || j.policy != store.SyncAlways {
		return nil
	}
	return j.syncTo(pos)
}

// syncTo returns once done.wal is fsync'd at least up to pos. One fsync runs at a time; callers
// that arrive during it wait and are usually covered by the next one.
func (j *journal) syncTo(pos int64) error {
	j.smu.Lock()
	defer j.smu.Unlock()
	gen := j.gen
	for j.synced < pos && j.gen == gen {
		if j.syncing {
			j.scond.Wait()
			continue
		}
		j.syncing = true
		j.smu.Unlock()
		j.mu.Lock()
		target, f := j.written, j.f
		j.mu.Unlock()
		start := time.Now()
		var err error
		if f != nil {
			err = f.Sync()
		}
		if j.onSync != nil {
			j.onSync(time.Since(start))
		}
		j.smu.Lock()
		j.syncing = false
		if err == nil && target > j.synced {
			j.synced = target
		}
		j.scond.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}

// flushIfDirty fsyncs done.wal when it has unsynced frames (interval policy, and Close).
func (j *journal) flushIfDirty() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	pos := j.written
	j.mu.Unlock()
	return j.syncTo(pos)
}

// size is the current length of done.wal.
func (j *journal) size() int64 {
	if j == nil {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.written
}

// compact writes snap as done.snap and empties done.wal. The caller holds whatever lock keeps
// snap consistent with the frames appended so far.
func (j *journal) compact(snap *cursorSnapshot) error {
	if j == nil {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(j.dir, snapName), snap.encode()); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.f.Truncate(0); err != nil {
		return err
	}
	if _, err := j.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	j.smu.Lock()
	j.written, j.synced = 0, 0
	j.gen++
	j.scond.Broadcast()
	j.smu.Unlock()
	return nil
}

func (j *journal) close() error {
	if j == nil {
		return nil
	}
	err := j.flushIfDirty()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f != nil {
		if cerr := j.f.Close(); err == nil {
			err = cerr
		}
		j.f = nil
	}
	return err
}

func encodeRanges(b []byte, ranges []doneRange) []byte {
	b = binary.AppendUvarint(b, uint64(len(ranges)))
	for _, r := range ranges {
		b = binary.AppendUvarint(b, uint64(r.partition))
		b = binary.AppendUvarint(b, uint64(r.from))
		b = binary.AppendUvarint(b, uint64(r.n))
	}
	return b
}

func decodeRanges(b []byte) ([]doneRange, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(b)) {
		return nil, errJournalCorrupt
	}
	out := make([]doneRange, 0, n)
	for i := uint64(0); i < n; i++ {
		p, from, cnt := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil || p > 1<<20 || from > 1<<62 || cnt > 1<<62 {
			return nil, errJournalCorrupt
		}
		out = append(out, doneRange{partition: int(p), from: int64(from), n: int64(cnt)})
	}
	if len(d.b) != 0 {
		return nil, errJournalCorrupt
	}
	return out, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errJournalCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

// cursorSnapshot is the persisted form of a cursor set (see journal).
type cursorSnapshot struct {
	parts map[int]*snapPart
}

type snapPart struct {
	floor, next int64
	pending     map[int64]struct{}
}

func newSnapshot() *cursorSnapshot { return &cursorSnapshot{parts: map[int]*snapPart{}} }

func (s *cursorSnapshot) part(p int) *snapPart {
	sp := s.parts[p]
	if sp == nil {
		sp = &snapPart{pending: map[int64]struct{}{}}
		s.parts[p] = sp
	}
	return sp
}

// applyDone marks a range done: below next it clears pending offsets; beyond next the skipped
// offsets in between were delivered and not yet done, so they become pending.
func (s *cursorSnapshot) applyDone(r doneRange) {
	sp := s.part(r.partition)
	end := r.from + r.n
	if r.from > sp.next {
		for o := sp.next; o < r.from; o++ {
			sp.pending[o] = struct{}{}
		}
	}
	for o := r.from; o < end && o < sp.next; o++ {
		delete(sp.pending, o)
	}
	if end > sp.next {
		sp.next = end
	}
	for sp.floor < sp.next {
		if _, p := sp.pending[sp.floor]; p {
			break
		}
		sp.floor++
	}
}

func (s *cursorSnapshot) encode() []byte {
	b := []byte(snapMagic)
	b = append(b, snapVersion, 0, 0, 0, 0)
	keys := make([]int, 0, len(s.parts))
	for p := range s.parts {
		keys = append(keys, p)
	}
	sort.Ints(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, p := range keys {
		sp := s.parts[p]
		b = binary.AppendUvarint(b, uint64(p))
		b = binary.AppendUvarint(b, uint64(sp.floor))
		b = binary.AppendUvarint(b, uint64(sp.next))
		pend := make([]int64, 0, len(sp.pending))
		for o := range sp.pending {
			pend = append(pend, o)
		}
		sort.Slice(pend, func(i, k int) bool { return pend[i] < pend[k] })
		b = binary.AppendUvarint(b, uint64(len(pend)))
		prev := sp.floor
		for _, o := range pend {
			b = binary.AppendUvarint(b, uint64(o-prev))
			prev = o
		}
	}
	binary.LittleEndian.PutUint32(b[5:9], crc32.Checksum(b[9:], crcTable))
	return b
}

func readSnapshot(path string) (*cursorSnapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newSnapshot(), nil
	}
	if err != nil {
		return nil, err
	}
	return decodeSnapshot(b)
}

func decodeSnapshot(b []byte) (*cursorSnapshot, error) {
	if len(b) < 9 || string(b[:4]) != snapMagic {
		return nil, fmt.Errorf("%w: bad snapshot header", errJournalCorrupt)
	}
	if b[4] != snapVersion {
		return nil, fmt.Errorf("engine: journal snapshot version %d not supported", b[4])
	}
	if crc32.Checksum(b[9:], crcTable) != binary.LittleEndian.Uint32(b[5:9]) {
		return nil, errJournalCorrupt
	}
	d := decoder{b: b[9:]}
	s := newSnapshot()
	n := d.uvarint()
	for i := uint64(0); i < n && d.err == nil; i++ {
		p, floor, next, np := d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil || p > 1<<20 || np > uint64(len(d.b)) || floor > next {
			return nil, errJournalCorrupt
		}
		sp := s.part(int(p))
		sp.floor, sp.next = int64(floor), int64(next)
		prev := sp.floor
		for k := uint64(0); k < np; k++ {
			prev += int64(d.uvarint())
			sp.pending[prev] = struct{}{}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}
