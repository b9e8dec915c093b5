// Package store keeps the broker's partition logs: append-only sequences of records with
// consecutive offsets, stored as record batches in segment files (NewFileStore) or in memory
// (NewMemoryStore, same semantics, for tests and ephemeral brokers).
//
// # Semantics
//
//   - One Append is one batch: its records get consecutive offsets, are written with one write
//     call and are either all recovered after a crash or none. Zero timestamps are set to the
//     append time (one clock read per batch) and written back, like the offsets.
//   - Read serves only whole, CRC-checked batches, in offset order. Limits: max records (0 or
//     less: none) and, after the first record, maxBytes of record Data (0 or less: none); a first
//     record larger than maxBytes is still returned so a reader never stalls. Below StartOffset
//     or above EndOffset is ErrOutOfRange (except, under SyncAlways, offsets up to WrittenEnd,
//     those of appends still waiting for their fsync, which read as empty); at EndOffset, no
//     records and no error. When a problem (ErrCorrupt, a segment dropped by retention
//     meanwhile) is met after some records were collected, those are returned without error and
//     the next Read, starting at the problem, reports it. Returned records own their memory (Data slices share one read buffer per
//     Read, capped so appending to one cannot overwrite another).
//   - Under SyncAlways, readers see a batch only once it is fsynced: EndOffset, Read and
//     OffsetForTime stop at the durable end. A consumer can therefore never act on a record that
//     a power loss could take back and whose offset could then go to a different message.
//     Under the other policies everything written is visible at once.
//   - WrittenEnd and ReadWritten are the exception, for replication: they cover every batch
//     written, fsynced or not (ReadWritten is Read with WrittenEnd for EndOffset: at
//     WrittenEnd no records, past it ErrOutOfRange). A leader serves its followers with them,
//     so that their copy and fsync overlap its own fsync; it counts a record as committed only
//     once its own fsync is done, and never serves consumers from them, as such records may
//     still be lost to a power loss or dropped by Truncate or Reset. WrittenEnd >= EndOffset
//     always, equal unless the policy is SyncAlways and an fsync is pending (the memory store
//     has no fsync: equal always).
//   - Options.OnWrite, if set, is called once by each Append that wrote a batch (not by an
//     empty or refused one), once ReadWritten can see the batch and before the Append waits
//     for its fsync, with no lock of the log held (it may read the log): a follower's long poll
//     can be woken by it while the fsync runs. It is store-wide and runs on the appender's
//     goroutine, so it should only signal.
//   - After an fsync or write failure that cannot be undone the log refuses appends (the error
//     is sticky); reopening it recovers from what is on disk.
//   - Truncate(off) drops the records at offset >= off, fsynced or not (a replica whose log
//     diverged from its leader's), so EndOffset and WrittenEnd become off and appends continue
//     from there; off outside [StartOffset, WrittenEnd] is ErrOutOfRange, off == WrittenEnd a
//     no-op. A batch straddling
//     off is rewritten with its records below off (same offsets, timestamps and fields).
//     Truncating to StartOffset leaves an empty log that keeps its StartOffset. See
//     "Truncation" below for how it is made durable and crash-safe.
//   - Reset(off) empties the log and restarts it at off (a replica whose leader no longer has
//     the records it would fetch next): StartOffset and EndOffset become off, which may be
//     below, inside or beyond the old range (negative is ErrOutOfRange), and appends continue
//     from there. See "Reset" below.
//
// # Files
//
// A store folder holds one folder per log, named by the log name ("topics/orders/0" is
// <dir>/topics/orders/0/). A log folder holds its segments, each a pair of files named by the
// segment's base offset (the offset of its first record) as 20 decimal digits, zero padded, so
// names sort by offset:
//
//	00000000000000000000.log    records 0 … 41999
//	00000000000000000000.index  its sparse index
//	00000000000000042000.log    records 42000 …  (the active segment: appends go here)
//
// While a Truncate runs (or after a crash in the middle of one), a journal
// <base>.truncate may sit beside them (see "Truncation"); likewise <off>.reset for a Reset
// (see "Reset").
//
// A .log file is a sequence of batches with nothing between them. Appends go to the last
// (active) segment; a new one is started when a batch would take the active segment past
// Options.SegmentBytes (a single batch larger than that is ErrTooLarge), so positions always fit
// in 32 bits. Retention deletes whole segments from the front, never the active one, so the
// first segment's base offset is the log's StartOffset. A Reset replaces all segments with one
// empty segment named for its offset.
//
// # Batch format (version 1)
//
// Fixed-width integers are big-endian. uvarint and varint are encoding/binary's unsigned and
// zig-zag signed varints; a "string" is a uvarint byte length followed by the bytes.
//
//	offset  size  field
//	0       4     magic       0x48524C42 ("HRLB")
//	4       1     version     1
//	5       4     length      bytes in the whole batch, this header included
//	9       4     crc         CRC32C (Castagnoli) of bytes [13, length)
//	13      8     baseOffset  offset of the first record
//	21      4     count       number of records, >= 1
//	25      8     firstTs     timestamp of the first record (Unix nanoseconds)
//	33      8     maxTs       largest timestamp in the batch
//	41      …     count records
//
// Each record:
//
//	uvarint  offsetDelta  record offset - baseOffset; must be the record's index (0, 1, …)
//	varint   tsDelta      timestamp - firstTs (two's-complement wrapping); 0 for the first
//	string   ID
//	string   Key
//	string   OrderingKey
//	string   Tag
//	uvarint  attribute count, then that many (string key, string value) pairs
//	string   Data         (uvarint length + bytes)
//
// A batch is valid only if the magic, version and CRC match, count <= (length-41)/8 (8 bytes is
// the smallest record), every length fits in what remains, the records end exactly at length,
// the offset deltas are 0…count-1 and maxTs is the largest record timestamp. Anything else is
// an error wrapping ErrCorrupt. Decoding allocates only in proportion to the input (a header
// cannot make it allocate more) and never panics on arbitrary input.
//
// # Index format
//
// A sparse index maps offsets to file positions, so a Read seeks instead of scanning its
// segment. While appending, an entry is added for a batch that starts at least
// Options.IndexBytes after the previous entry (the segment's first batch, at position 0, needs
// none). The file:
//
//	offset  size  field
//	0       4     magic    0x48524C58 ("HRLX")
//	4       1     version  1
//	5       3     zero
//	8       4     count    number of entries
//	12      4     crc      CRC32C of the entries
//	16      16×n  entries:
//	                uint32 rel  batch base offset - segment base offset
//	                uint32 pos  batch position in the .log file
//	                int64  ts   largest timestamp of all batches before pos (min int64 if none)
//
// rel and pos strictly increase, and ts never decreases, so a lookup by offset or by time is a
// binary search followed by a scan of at most about IndexBytes. Reads and OffsetForTime of the
// active segment use its in-memory index.
//
// An index file is written once, when its segment is closed by a roll, and never fsynced: it is
// a cache. An index that is missing or fails its checks (size, CRC, ordering, positions inside
// the segment, offsets before the next segment, the last entry pointing at a batch with that
// offset) is rebuilt from the batch headers and rewritten.
//
// # Durability and recovery
//
// SyncAlways: Append returns after an fsync covering its batch. Concurrent appenders share
// fsyncs (group commit): one of them fsyncs everything written so far while the others wait;
// appenders covered by that fsync return without one of their own. SyncInterval: Append returns
// after the write; a store-wide flusher fsyncs logs with new data every Options.SyncInterval.
// SyncNever: Close is the only fsync. Every policy fsyncs on Close. fsyncs never hold the lock
// that appends and reads take, and Options.OnSync gets each one's duration. Between its write
// and its wait for an fsync, an Append calls Options.OnWrite (unlocked).
//
// Opening a log recovers it:
//
//  1. The last segment is read from the start and every batch checked (header, CRC, structure,
//     and offsets following on from the segment's base). The file is truncated, and the
//     truncation fsynced, at the first batch that is torn (runs past the end of the file),
//     corrupt or out of sequence, so nothing after it is ever served and new appends continue
//     from the last good batch. Its index is rebuilt by this scan (never read from a file, so an
//     entry pointing past the truncation cannot survive) and any stale .index file removed.
//  2. Other segments are trusted for their extent (a segment ends where the next begins); their
//     index files are validated as above and their max timestamps (for retention and
//     OffsetForTime) come from the last index entry and the batches after it.
//  3. Damage elsewhere is found by Read, which checks the CRC of every batch it returns and that
//     offsets follow on without gaps, and reports ErrCorrupt rather than serve bad data.
//
// Before step 1, a reset journal and then a truncation journal left by a crash are dealt with
// (see below).
//
// Note that recovery truncates at the first bad batch of the last segment even when good
// batches follow it (bit rot rather than a torn write): those are lost with it, as in Kafka.
//
// # Truncation
//
// Truncate deletes every segment after the one holding off, cuts that one at the batch holding
// off and, when off falls inside that batch, writes back the batch's records below off as a new
// batch (re-encoded, same base offset) at the same position. The segment becomes the active one
// (a closed segment is reopened for writing and its .index file deleted; its index lives in
// memory, without the entries at or after the cut). Whatever the SyncPolicy, the file and the
// folder are fsynced before Truncate returns. Under SyncAlways the records below off are made
// durable first: when off is past the durable end (it may be up to the written end), Truncate
// runs a sync round of everything written before it cuts. So afterwards the durable end is off;
// appenders still waiting for an fsync are released (their Append returns as if it had
// completed just before the Truncate: their records below off are durable, the others gone),
// and later appends fsync as usual. Truncate excludes readers, fsyncs and appenders while it runs.
//
// A plain cut of the active segment at a batch boundary is one ftruncate, atomic by itself.
// Any other truncation (segments to delete, or a batch to rewrite) is journaled first, so a
// crash leaves the old log or the truncated one, never a mix: before any segment file is
// touched, a journal <base>.truncate is written and fsynced (with the folder), base being the
// segment that is cut:
//
//	offset  size  field
//	0       4     magic    0x48524C54 ("HRLT")
//	4       1     version  1
//	5       3     zero
//	8       4     crc      CRC32C of bytes [12, end)
//	12      8     pos      byte position of the cut in the segment
//	20      …     the rewritten batch (nothing when the cut is at a batch boundary)
//
// The segments after base are then deleted (newest first), the segment truncated at pos and the
// batch written there, the segment and the folder fsynced, and only then the journal deleted
// (and the folder fsynced again, so a journal can never come back to cut later appends).
// Opening a log first looks for a journal: a valid one whose segment exists is redone (delete
// the later segments, truncate at pos, write the batch, fsync: every step is idempotent) and
// then deleted; a torn or stale one was never acted on and is only deleted. An I/O error in the
// middle of a Truncate is sticky like a failed append, and reopening the log completes the
// truncation if its journal reached the disk.
//
// # Reset
//
// Reset(off) deletes every segment and starts an empty one named for off. Creating the new
// segment first and then deleting the old ones would not be crash-safe on its own: in between,
// the folder holds segments with a hole between them (or, when off is the base of an old
// segment, two files with one name), which recovery cannot tell from damage. So Reset is
// journaled too; it excludes readers, fsyncs and appenders while it runs and, whatever the
// SyncPolicy, runs the steps below. The journal <off>.reset is:
//
//	offset  size  field
//	0       4     magic    0x48524C52 ("HRLR")
//	4       1     version  1
//	5       3     zero
//	8       4     crc      CRC32C of bytes [12, 20)
//	12      8     off      the offset the log restarts at (the same as in the file name)
//
// The steps:
//
//  1. write and fsync the journal, then fsync the folder;
//  2. delete every segment's .log and .index files, oldest first;
//  3. create the empty segment <off>.log, fsync it and the folder;
//  4. delete the journal and fsync the folder again (so a journal can never come back to wipe
//     later appends).
//
// Opening a log looks for a reset journal before anything else. A valid one is redone: every
// .log, .index and .truncate file of the folder is deleted (a reset supersedes an older
// truncation), <off>.log created empty (or emptied, if it is there already) and fsynced with the
// folder, and the journal deleted; a torn one (or one whose offset does not match its name) was
// never acted on and is only deleted. Recovery thus finds the old log or the reset one. After a
// Reset the durable end is off (EndOffset and WrittenEnd are off at once); appenders still
// waiting for an fsync of records it dropped are released as after a Truncate. An I/O error in
// the middle of a Reset is sticky, and reopening the log completes the reset if its journal
// reached the disk.
package store
