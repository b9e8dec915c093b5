package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Batch layout (see doc.go for the full description). All fixed-width fields are big-endian.
const (
	batchMagic      = 0x48524c42 // "HRLB": Herald Record Log Batch
	batchVersion    = 1
	batchHeaderSize = 41
	// Field positions inside the header.
	offMagic   = 0
	offVersion = 4
	offLength  = 5
	offCRC     = 9
	offBase    = 13 // also where the CRC-covered region starts
	offCount   = 21
	offFirstTs = 25
	offMaxTs   = 33
	// minRecordSize is the smallest encoding of one record: offset delta, timestamp delta, four
	// string lengths, attribute count and data length, one byte each. It bounds the record count a
	// header may claim, so a decoder never allocates more than the input can hold.
	minRecordSize = 8
)

// castagnoli is the CRC32C table; crc32 uses the SSE4.2/ARMv8 instructions for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// corruptf returns an error wrapping ErrCorrupt, so callers can test with errors.Is.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// batchHeader is the decoded fixed part of a batch.
type batchHeader struct {
	length  int    // whole batch, header included
	crc     uint32 // CRC32C of bytes [offBase, length)
	base    int64  // offset of the first record
	count   int    // number of records, >= 1
	firstTs int64  // timestamp of the first record; record timestamps are deltas from it
	maxTs   int64  // largest record timestamp
}

// end is the offset just past the batch's last record.
func (h batchHeader) end() int64 { return h.base + int64(h.count) }

// parseHeader decodes and sanity-checks the header at the start of b. It does not check the CRC:
// scans that only need to skip batches (index rebuild, OffsetForTime) avoid reading bodies.
func parseHeader(b []byte) (batchHeader, error) {
	var h batchHeader
	if len(b) < batchHeaderSize {
		return h, corruptf("short batch header (%d bytes)", len(b))
	}
	if m := binary.BigEndian.Uint32(b[offMagic:]); m != batchMagic {
		return h, corruptf("bad batch magic %#08x", m)
	}
	if v := b[offVersion]; v != batchVersion {
		return h, corruptf("unsupported batch version %d", v)
	}
	length := binary.BigEndian.Uint32(b[offLength:])
	count := binary.BigEndian.Uint32(b[offCount:])
	if length < batchHeaderSize+minRecordSize || uint64(length) > math.MaxInt {
		return h, corruptf("bad batch length %d", length)
	}
	if count == 0 || uint64(count) > uint64(length-batchHeaderSize)/minRecordSize {
		return h, corruptf("bad record count %d for a %d-byte batch", count, length)
	}
	base := int64(binary.BigEndian.Uint64(b[offBase:]))
	if base < 0 || base > math.MaxInt64-int64(count) {
		return h, corruptf("bad base offset %d", base)
	}
	h = batchHeader{
		length:  int(length),
		crc:     binary.BigEndian.Uint32(b[offCRC:]),
		base:    base,
		count:   int(count),
		firstTs: int64(binary.BigEndian.Uint64(b[offFirstTs:])),
		maxTs:   int64(binary.BigEndian.Uint64(b[offMaxTs:])),
	}
	return h, nil
}

// zeroHeader is appended as a placeholder and filled in once the records are encoded.
var zeroHeader [batchHeaderSize]byte

// encodeBatch appends the encoding of recs (at least one) to dst with base offset 0 and no CRC;
// sealBatch fills both in. The split lets Append encode outside the log's lock and take the lock
// only to assign the offset, checksum and write.
func encodeBatch(dst []byte, recs []Record) []byte {
	start := len(dst)
	dst = append(dst, zeroHeader[:]...)
	first := recs[0].Timestamp
	maxTs := first
	for i := range recs {
		r := &recs[i]
		if r.Timestamp > maxTs {
			maxTs = r.Timestamp
		}
		dst = binary.AppendUvarint(dst, uint64(i))
		// Wrapping subtraction: firstTs + delta restores the value for any pair of int64s.
		dst = binary.AppendVarint(dst, r.Timestamp-first)
		dst = appendString(dst, r.ID)
		dst = appendString(dst, r.Key)
		dst = appendString(dst, r.OrderingKey)
		dst = appendString(dst, r.Tag)
		dst = binary.AppendUvarint(dst, uint64(len(r.Attributes)))
		for k, v := range r.Attributes {
			dst = appendString(dst, k)
			dst = appendString(dst, v)
		}
		dst = binary.AppendUvarint(dst, uint64(len(r.Data)))
		dst = append(dst, r.Data...)
	}
	h := dst[start:]
	binary.BigEndian.PutUint32(h[offMagic:], batchMagic)
	h[offVersion] = batchVersion
	binary.BigEndian.PutUint32(h[offLength:], uint32(len(h))) // callers reject > SegmentBytes <= MaxUint32
	binary.BigEndian.PutUint32(h[offCount:], uint32(len(recs)))
	binary.BigEndian.PutUint64(h[offFirstTs:], uint64(first))
	binary.BigEndian.PutUint64(h[offMaxTs:], uint64(maxTs))
	return dst
}

// sealBatch sets the base offset of the encoded batch b and computes its CRC.
func sealBatch(b []byte, base int64) {
	binary.BigEndian.PutUint64(b[offBase:], uint64(base))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offBase:], castagnoli))
}

// cutBatch returns the batch at the start of b (verified first) re-encoded with only its
// records below off, which must fall strictly inside it: same base offset, and the same
// timestamps and fields for the records kept (Truncate of a batch that straddles off).
func cutBatch(b []byte, off int64) ([]byte, error) {
	h, recs, err := decodeBatch(b, 0, nil, nil)
	if err != nil {
		return nil, err
	}
	if off <= h.base || off >= h.end() {
		return nil, fmt.Errorf("store: offset %d is not inside the batch [%d, %d)", off, h.base, h.end())
	}
	nb := encodeBatch(nil, recs[:off-h.base])
	sealBatch(nb, h.base)
	return nb, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// batchMaxTs returns the max timestamp field of an encoded batch.
func batchMaxTs(b []byte) int64 { return int64(binary.BigEndian.Uint64(b[offMaxTs:])) }

// encPool recycles encode buffers so a steady stream of appends allocates nothing per batch.
var encPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledBuf keeps one huge batch from pinning a huge buffer in the pool forever.
const maxPooledBuf = 4 << 20

func getEncBuf() *[]byte { return encPool.Get().(*[]byte) }

func putEncBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		encPool.Put(b)
	}
}

// stampTimes sets zero timestamps to now, reading the clock once per batch.
func stampTimes(recs []Record) {
	var now int64
	for i := range recs {
		if recs[i].Timestamp == 0 {
			if now == 0 {
				now = time.Now().UnixNano()
			}
			recs[i].Timestamp = now
		}
	}
}

// cursor reads varints and length-prefixed spans from a batch. After the first error every call
// is a no-op that returns zero values, so callers check ok once per record instead of per field;
// p never exceeds len(b), so no slicing can panic.
type cursor struct {
	b   []byte
	p   int
	bad bool
}

func (c *cursor) uvarint() uint64 {
	v, n := binary.Uvarint(c.b[c.p:])
	if n <= 0 {
		c.bad = true
		return 0
	}
	c.p += n
	return v
}

func (c *cursor) varint() int64 {
	v, n := binary.Varint(c.b[c.p:])
	if n <= 0 {
		c.bad = true
		return 0
	}
	c.p += n
	return v
}

// span reads a uvarint length and skips that many bytes, returning their bounds. A length beyond
// the remaining input is an error, which is what keeps every allocation bounded by the input.
type span struct{ lo, hi int }

func (c *cursor) span() span {
	n := c.uvarint()
	if n > uint64(len(c.b)-c.p) {
		c.bad = true
		return span{c.p, c.p}
	}
	s := span{c.p, c.p + int(n)}
	c.p = s.hi
	return s
}

func (s span) len() int { return s.hi - s.lo }

// rawRecord is one record's field bounds inside a batch, before any allocation.
type rawRecord struct {
	ts                   int64
	id, key, ordKey, tag span
	data                 span
	attrStart, attrCount int // position of the first attribute pair, and the pair count
	attrBytes            int // bytes of attribute keys and values
}

// nextRecord parses record i at the cursor, checking its structure. Attribute pairs are skipped
// here (their position is kept) because most callers only need their size.
func nextRecord(c *cursor, h *batchHeader, i int) (rawRecord, bool) {
	var r rawRecord
	if c.uvarint() != uint64(i) {
		return r, false
	}
	d := c.varint()
	if i == 0 && d != 0 {
		return r, false // firstTs is the first record's timestamp by definition
	}
	r.ts = h.firstTs + d
	r.id, r.key, r.ordKey, r.tag = c.span(), c.span(), c.span(), c.span()
	n := c.uvarint()
	if c.bad || n > uint64(len(c.b)-c.p)/2 { // each pair takes at least two bytes
		return r, false
	}
	r.attrStart, r.attrCount = c.p, int(n)
	for range r.attrCount {
		k, v := c.span(), c.span()
		r.attrBytes += k.len() + v.len()
	}
	r.data = c.span()
	return r, !c.bad
}

// strBytes is how many bytes of strings the record holds (what the string arena needs).
func (r *rawRecord) strBytes() int {
	return r.id.len() + r.key.len() + r.ordKey.len() + r.tag.len() + r.attrBytes
}

// readLimits is the record and byte budget of one Read across the batches it decodes, and the
// string arena they share.
type readLimits struct {
	max, maxBytes int // 0 or less: no limit
	n, bytes      int // records and data bytes taken so far
	// arena holds the strings of every record the Read returns, so a Read of many small batches
	// allocates a few growing buffers rather than one per batch or per field. Strings already
	// taken from it stay valid as it grows: a Builder never changes bytes it has handed out.
	arena strings.Builder
}

// admit reports whether one more record with dataLen bytes of Data fits, and takes it if so. The
// first record of a Read always fits the byte budget, so an oversized record cannot stall a reader.
func (l *readLimits) admit(dataLen int) bool {
	if l.max > 0 && l.n >= l.max {
		return false
	}
	if l.maxBytes > 0 && l.n > 0 && l.bytes+dataLen > l.maxBytes {
		return false
	}
	l.n++
	l.bytes += dataLen
	return true
}

// full reports that no further record can be admitted whatever its size.
func (l *readLimits) full() bool { return l.max > 0 && l.n >= l.max }

// checkBatch verifies the CRC and the structure of the single batch at the start of b without
// allocating, and returns its header. Recovery uses it to decide where a log's valid data ends.
func checkBatch(b []byte) (batchHeader, error) {
	h, _, err := decodeBatch(b, math.MaxInt64, nil, nil)
	return h, err
}

// decodeBatch verifies the batch at the start of b (CRC and full structure: a batch is only ever
// served whole-checked) and appends to dst its records with Offset >= from that lim admits.
// Records are decoded as follows, to keep allocations per Read rather than per record:
//   - Data aliases b (capacity-capped, so appending to it cannot clobber a neighbour); callers
//     pass a buffer they own and never reuse.
//   - All strings come from lim's arena: a first pass validates everything and copies the
//     strings of the records to return into it, a second pass slices them out.
//
// It returns the header and the records; the records-so-far are returned with a nil error when
// lim stops the read. A nil lim admits everything.
func decodeBatch(b []byte, from int64, lim *readLimits, dst []Record) (batchHeader, []Record, error) {
	h, err := parseHeader(b)
	if err != nil {
		return h, dst, err
	}
	if len(b) < h.length {
		return h, dst, corruptf("truncated batch: %d of %d bytes", len(b), h.length)
	}
	b = b[:h.length]
	if got := crc32.Checksum(b[offBase:], castagnoli); got != h.crc {
		return h, dst, corruptf("batch at offset %d: crc %#08x, want %#08x", h.base, got, h.crc)
	}
	if lim == nil {
		lim = &readLimits{}
	}

	// Pass 1: validate every record; pick the records to return and copy their strings.
	arena := &lim.arena
	arenaStart := arena.Len()
	var (
		c           = cursor{b: b, p: batchHeaderSize}
		first, last = -1, -1 // records [first, last) are returned
		firstPos    int
		maxTs       = int64(math.MinInt64)
		stopped     bool
	)
	for i := 0; i < h.count; i++ {
		pos := c.p
		r, ok := nextRecord(&c, &h, i)
		if !ok {
			return h, dst, corruptf("batch at offset %d: bad record %d", h.base, i)
		}
		maxTs = max(maxTs, r.ts)
		if stopped || h.base+int64(i) < from {
			continue
		}
		if !lim.admit(r.data.len()) {
			stopped = true
			continue
		}
		if first < 0 {
			first, firstPos = i, pos
		}
		last = i + 1
		if n := r.strBytes(); n > 0 {
			arena.Grow(n)
			arena.Write(b[r.id.lo:r.id.hi])
			arena.Write(b[r.key.lo:r.key.hi])
			arena.Write(b[r.ordKey.lo:r.ordKey.hi])
			arena.Write(b[r.tag.lo:r.tag.hi])
			ac := cursor{b: b, p: r.attrStart}
			for range r.attrCount {
				k, v := ac.span(), ac.span()
				arena.Write(b[k.lo:k.hi])
				arena.Write(b[v.lo:v.hi])
			}
		}
	}
	if c.p != len(b) {
		return h, dst, corruptf("batch at offset %d: %d trailing bytes", h.base, len(b)-c.p)
	}
	if maxTs != h.maxTs {
		return h, dst, corruptf("batch at offset %d: max timestamp %d, records say %d", h.base, h.maxTs, maxTs)
	}
	if first < 0 {
		return h, dst, nil
	}

	// Pass 2: build the records. The structure is known good, so nothing here can fail.
	dst = slices.Grow(dst, last-first) // bounded: count <= len(b)/minRecordSize
	s := arena.String()
	p := arenaStart // from here the arena holds the returned records' strings, in field order
	str := func(n int) string {
		v := s[p : p+n]
		p += n
		return v
	}
	c = cursor{b: b, p: firstPos}
	for i := first; i < last; i++ {
		r, _ := nextRecord(&c, &h, i)
		rec := Record{
			Offset:      h.base + int64(i),
			Timestamp:   r.ts,
			ID:          str(r.id.len()),
			Key:         str(r.key.len()),
			OrderingKey: str(r.ordKey.len()),
			Tag:         str(r.tag.len()),
			Data:        b[r.data.lo:r.data.hi:r.data.hi],
		}
		if r.attrCount > 0 {
			rec.Attributes = make(map[string]string, r.attrCount)
			ac := cursor{b: b, p: r.attrStart}
			for range r.attrCount {
				k, v := ac.span(), ac.span()
				rec.Attributes[str(k.len())] = str(v.len())
			}
		}
		dst = append(dst, rec)
	}
	return h, dst, nil
}
