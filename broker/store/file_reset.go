package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
)

// resetSuffix names the journal of a Reset in progress: <off>.reset, off being the offset the
// log restarts at. See doc.go for the format and the protocol.
const resetSuffix = ".reset"

// Reset journal layout: magic, version, 3 zero bytes, CRC32C of bytes [12, 20), off.
const (
	resetMagic   = 0x48524c52 // "HRLR"
	resetVersion = 1
	resetSize    = 20
)

// checkReset reports a negative offset.
func checkReset(off int64) error {
	if off < 0 {
		return fmt.Errorf("%w: reset to %d", ErrOutOfRange, off)
	}
	return nil
}

// Reset implements Log. Like Truncate it excludes readers, sync rounds and appenders for its
// whole run, then:
//
//  1. writes and fsyncs the journal <off>.reset (and the folder). From then on a crash is
//     repaired by finishReset on open, which redoes the steps below, so recovery yields the
//     old log (journal absent or torn) or the reset one (journal valid), never a mix.
//  2. deletes every segment (.log and .index), oldest first;
//  3. creates the empty segment <off>.log and fsyncs it and the folder;
//  4. deletes the journal and fsyncs the folder again, so that the journal cannot come back to
//     wipe later appends.
//
// Without the journal a crash between creating the new segment and deleting the old ones would
// leave a log with a hole (or a name clash, when off is the base of an old segment), which
// recovery cannot tell from damage. An I/O error during steps 1-4 is sticky, like a failed
// append: the log refuses appends until it is reopened, and reopening completes the reset if its
// journal made it to disk.
func (l *fileLog) Reset(off int64) error {
	l.mu.RLock()
	closed := l.closed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := checkReset(off); err != nil {
		return err
	}

	l.ioMu.Lock()
	defer l.ioMu.Unlock()
	l.smu.Lock()
	for l.syncing {
		l.scond.Wait()
	}
	l.syncing = true // the sync role: no fsync runs on a file being deleted
	l.smu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()

	failed := l.failed
	done, err := l.reset(off)

	// Hand the sync role back. After a reset the log is empty and everything below off counts
	// as fsynced; appenders still waiting for an fsync of dropped data are released by the
	// changed truncs (their Append returns as if it had completed just before the Reset).
	l.smu.Lock()
	l.syncing = false
	if done {
		l.truncs++
		l.synced = off
	} else {
		l.synced = min(l.synced, l.next)
	}
	l.durable.Store(l.synced)
	if l.failed != failed && l.syncErr == nil {
		l.syncErr = l.failed
	}
	l.scond.Broadcast()
	l.smu.Unlock()
	return err
}

// reset does the work of Reset (ioMu, the sync role and mu held) and reports whether the log
// is now the reset one. The in-memory state follows the disk: after an error, the segments
// whose files are gone are dropped (the last one stays in the list, marked removed, so that the
// list is never empty; readers of it get ErrOutOfRange).
func (l *fileLog) reset(off int64) (bool, error) {
	if l.closed {
		return false, ErrClosed
	}
	if l.failed != nil {
		return false, l.failed
	}
	wrap := func(err error) error {
		l.failed = fmt.Errorf("store: reset %s to %d: %w", l.dir, off, err)
		return l.failed
	}
	journal := filepath.Join(l.dir, segmentName(off, resetSuffix))
	if err := writeResetJournal(journal, off); err != nil {
		return false, wrap(err)
	}
	if err := syncDir(l.dir); err != nil {
		return false, wrap(err)
	}
	for len(l.segs) > 0 {
		s := l.segs[0]
		for _, path := range []string{s.indexPath(), s.path} {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return false, wrap(err)
			}
		}
		s.removed.Store(true)
		s.f.Close()
		l.dropUnsynced(s)
		if len(l.segs) == 1 {
			break // replaced below, once the new segment exists
		}
		l.segs = slices.Clone(l.segs[1:])
		l.resize()
	}
	s, err := createSegment(l.dir, off)
	if err != nil {
		return false, wrap(err)
	}
	l.segs = []*segment{s}
	l.next, l.bytes = off, 0
	l.unsynced = nil
	if err := l.fsync(s); err != nil {
		return true, wrap(err)
	}
	if err := syncDir(l.dir); err != nil {
		return true, wrap(err)
	}
	l.dirDirty = false
	if err := os.Remove(journal); err != nil {
		return true, wrap(err)
	}
	if err := syncDir(l.dir); err != nil {
		return true, wrap(err)
	}
	return true, nil
}

// encodeResetJournal returns the journal of a reset to off.
func encodeResetJournal(off int64) []byte {
	b := make([]byte, resetSize)
	binary.BigEndian.PutUint32(b[0:], resetMagic)
	b[4] = resetVersion
	binary.BigEndian.PutUint64(b[12:], uint64(off))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[12:], castagnoli))
	return b
}

// decodeResetJournal parses a reset journal, rejecting anything torn or inconsistent.
func decodeResetJournal(b []byte) (off int64, ok bool) {
	if len(b) != resetSize || binary.BigEndian.Uint32(b[0:]) != resetMagic || b[4] != resetVersion ||
		b[5] != 0 || b[6] != 0 || b[7] != 0 || binary.BigEndian.Uint32(b[8:]) != crc32.Checksum(b[12:], castagnoli) {
		return 0, false
	}
	off = int64(binary.BigEndian.Uint64(b[12:]))
	return off, off >= 0
}

// writeResetJournal creates (or replaces) the reset journal at path and fsyncs it.
func writeResetJournal(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(encodeResetJournal(off))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// finishReset completes, before a log is opened, a Reset that a crash or an I/O error
// interrupted: entries list the log folder. A valid journal (its offset matching its name) is
// redone: every segment, index and truncation journal is deleted and an empty segment created at
// its offset (a reset supersedes anything else in flight). A torn one was written before any
// file was touched and is only deleted. It reports whether it found a journal.
func finishReset(dir string, entries []os.DirEntry) (bool, error) {
	var journals []int64
	for _, e := range entries {
		if base, ok := parseSegmentName(e.Name(), resetSuffix); ok && e.Type().IsRegular() {
			journals = append(journals, base)
		}
	}
	if len(journals) == 0 {
		return false, nil
	}
	for _, base := range journals {
		path := filepath.Join(dir, segmentName(base, resetSuffix))
		b, err := os.ReadFile(path)
		if err != nil {
			return true, err
		}
		if off, ok := decodeResetJournal(b); ok && off == base {
			if err := redoReset(dir, off); err != nil {
				return true, fmt.Errorf("store: finish reset of %s: %w", dir, err)
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return true, err
		}
	}
	return true, syncDir(dir)
}

// redoReset repeats the file steps of a journaled Reset to off. Every step is idempotent.
func redoReset(dir string, off int64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		for _, suffix := range []string{logSuffix, indexSuffix, truncSuffix} {
			if _, ok := parseSegmentName(e.Name(), suffix); ok {
				if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, segmentName(off, logSuffix)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}
