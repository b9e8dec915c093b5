package store

import (
	"errors"
	"time"
)

// Sentinel errors. Callers compare with errors.Is.
var (
	// ErrCorrupt is returned when a record batch fails its CRC or structural checks.
	ErrCorrupt = errors.New("store: crc mismatch")
	// ErrOutOfRange is returned by Read (and ReadWritten) for an offset below the log start
	// (removed by retention) or past its end, by Truncate for an offset outside [StartOffset,
	// WrittenEnd], and by Reset for a negative offset.
	ErrOutOfRange = errors.New("store: offset out of range")
	// ErrClosed is returned by every method of a closed Log or Store.
	ErrClosed = errors.New("store: closed")
	// ErrTooLarge is returned by Append when one batch exceeds the segment size limit.
	ErrTooLarge = errors.New("store: batch too large")
	// ErrBadName is returned for a log name that is not a safe relative path.
	ErrBadName = errors.New("store: bad log name")
)

// SyncPolicy says when appended data is flushed to stable storage.
type SyncPolicy int

const (
	// SyncAlways: Append returns only after the data is fsync'd. Concurrent appends share one fsync
	// (group commit).
	SyncAlways SyncPolicy = iota
	// SyncInterval: Append returns after the write; a background flush fsyncs every SyncInterval.
	SyncInterval
	// SyncNever: the OS decides when to flush (data survives a process crash, not a power loss).
	SyncNever
)

// ParseSyncPolicy parses "always", "interval" or "never".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "always":
		return SyncAlways, nil
	case "interval":
		return SyncInterval, nil
	case "never":
		return SyncNever, nil
	}
	return 0, errors.New("store: fsync policy must be always, interval or never")
}

// String returns the policy's name as ParseSyncPolicy accepts it.
func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNever:
		return "never"
	}
	return "unknown"
}

// Options configure a Store. The zero value is valid: defaults are filled in by withDefaults.
type Options struct {
	Sync         SyncPolicy    // when appends are fsynced; the zero value is SyncAlways
	SyncInterval time.Duration // for SyncInterval; default 100ms
	SegmentBytes int64         // roll a segment when it reaches this size; default 64 MiB
	IndexBytes   int           // one sparse index entry per this many bytes of records; default 4 KiB
	// OnSync, if set, is called with the duration of every fsync (for the fsync latency metric).
	OnSync func(time.Duration)
	// OnWrite, if set, is called once by every Append that wrote its batch (not by an empty or
	// failed one), after the data is written to the file (or memory), so that ReadWritten sees
	// it, and before the Append waits for its fsync (under SyncAlways): a follower's long poll
	// can be woken while the leader's fsync runs. It is called with no lock of the log held, so
	// it may read the log; it runs on the appender's goroutine and delays its Append, so it
	// should be quick (signal, not work). It is shared by all logs of the store.
	OnWrite func()
}

// Record is one message in a partition log.
type Record struct {
	Offset      int64             // assigned by Append
	Timestamp   int64             // publish time, Unix nanoseconds; Append sets it to now when zero
	ID          string            // message ID, opaque to the store
	Key         string            // partitioning key, opaque to the store
	OrderingKey string            // ordering key, opaque to the store
	Tag         string            // filterable tag, opaque to the store
	Attributes  map[string]string // nil when there are none (an empty map reads back as nil)
	Data        []byte            // the body; reads back as a non-nil empty slice when empty
}

// Log is one append-only partition log. Offsets start at 0 and grow by one per record.
// All methods are safe for concurrent use.
type Log interface {
	// Append writes recs as one batch, assigns consecutive offsets (written back into recs) and
	// returns the first one. It returns once the batch is durable under the store's SyncPolicy.
	Append(recs []Record) (base int64, err error)
	// Read returns records with offsets >= from, in order: at most max records and, after the
	// first record, at most maxBytes of data. Reading at EndOffset returns no records and no error;
	// below StartOffset returns ErrOutOfRange.
	Read(from int64, max int, maxBytes int) ([]Record, error)
	// StartOffset is the first offset still stored; EndOffset the offset the next record gets
	// (under SyncAlways: the end of the fsynced records, the bound of Read).
	StartOffset() int64
	EndOffset() int64
	// WrittenEnd is the offset after the last record written, fsynced or not (equal to EndOffset
	// unless the policy is SyncAlways and an fsync is pending). WrittenEnd >= EndOffset.
	WrittenEnd() int64
	// ReadWritten is Read bounded by WrittenEnd instead of EndOffset: it may return records that
	// are not durable yet (for replication, never for consumers: a power loss may take them back,
	// and a Truncate or Reset may drop them). Reading at WrittenEnd returns no records and no
	// error; past it, or below StartOffset, ErrOutOfRange.
	ReadWritten(from int64, max int, maxBytes int) ([]Record, error)
	// Size is the number of bytes the log takes (on disk, or in memory).
	Size() int64
	// OffsetForTime returns the first offset whose record's Timestamp is >= t (Unix nanoseconds),
	// or EndOffset if there is none.
	OffsetForTime(t int64) (int64, error)
	// EnforceRetention drops whole segments whose newest record is older than now-maxAge
	// (maxAge 0: no age limit) and oldest segments while Size exceeds maxBytes (0: no limit).
	// The active segment is never dropped. It returns the new StartOffset.
	EnforceRetention(now time.Time, maxAge time.Duration, maxBytes int64) (int64, error)
	// DropBefore drops whole segments all of whose records are below offset (a consumer is done
	// with them: the delay queue). The active segment is never dropped. It returns the new
	// StartOffset.
	DropBefore(offset int64) (int64, error)
	// Truncate drops every record at offset >= off, so that EndOffset and WrittenEnd become off (a
	// replica whose log diverged from its leader's). off must be in [StartOffset, WrittenEnd],
	// else the error wraps ErrOutOfRange; off == WrittenEnd is a no-op, and off == StartOffset
	// leaves an empty log that keeps its StartOffset. Records not fsynced yet are dropped like the
	// others; under SyncAlways those below off are fsynced by Truncate. A batch that straddles off
	// is rewritten with only its records below off. The truncation is durable when Truncate
	// returns (whatever the SyncPolicy), and a crash in the middle of it leaves either the old or
	// the truncated log after recovery, never a mix that loses records below off. Readers and
	// appenders may run concurrently (they wait while it runs); appends after Truncate get offsets
	// from off. An Append still in flight whose records Truncate drops returns without error, as
	// if it had completed just before the Truncate.
	Truncate(off int64) error
	// Reset empties the log and makes off its next offset: StartOffset, EndOffset and WrittenEnd
	// become off (off may be below, inside or beyond the current range). A replica uses it when
	// its leader no longer has the records it would fetch next (retention removed them). Durable
	// when it returns; a crash during it leaves the old log or the reset one. off < 0 is an error
	// wrapping ErrOutOfRange. Readers and appenders may run concurrently (they wait while it
	// runs); appends after Reset get offsets from off. An Append still in flight returns without
	// error, as if it had completed just before the Reset.
	Reset(off int64) error
	// Close flushes and closes the log.
	Close() error
}

// Store holds named logs. Names are relative slash-separated paths such as "topics/orders/0".
type Store interface {
	// Open returns the log with this name, creating it when absent. Opening an open log returns
	// the same Log.
	Open(name string) (Log, error)
	// Remove closes and deletes the log with this name (and its folder); absent is not an error.
	Remove(name string) error
	// Close closes every open log.
	Close() error
}
