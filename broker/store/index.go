package store

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"sort"
)

// Index file layout (see doc.go): a 16-byte header, then 16-byte entries.
const (
	indexMagic      = 0x48524c58 // "HRLX"
	indexVersion    = 1
	indexHeaderSize = 16
	indexEntrySize  = 16
)

// indexEntry locates one batch in its segment. Entries are sparse (one per Options.IndexBytes of
// records) and strictly increasing in both rel and pos.
type indexEntry struct {
	rel uint32 // the batch's base offset minus the segment's base offset
	pos uint32 // byte position of the batch in the segment file
	// ts is the largest timestamp of every batch before pos (math.MinInt64 when none). It never
	// decreases along the index, so OffsetForTime can binary-search it: every batch before an
	// entry with ts < t is too old to hold the answer.
	ts int64
}

// errBadIndex means an index file is unusable; the segment is scanned instead. It is internal:
// the index is a cache, never a reason to fail.
var errBadIndex = errors.New("store: bad index file")

// encodeIndex returns the index file contents for entries.
func encodeIndex(entries []indexEntry) []byte {
	b := make([]byte, indexHeaderSize+len(entries)*indexEntrySize)
	body := b[indexHeaderSize:]
	for i, e := range entries {
		p := body[i*indexEntrySize:]
		binary.BigEndian.PutUint32(p[0:], e.rel)
		binary.BigEndian.PutUint32(p[4:], e.pos)
		binary.BigEndian.PutUint64(p[8:], uint64(e.ts))
	}
	binary.BigEndian.PutUint32(b[0:], indexMagic)
	b[4] = indexVersion
	binary.BigEndian.PutUint32(b[8:], uint32(len(entries)))
	binary.BigEndian.PutUint32(b[12:], crc32.Checksum(body, castagnoli))
	return b
}

// decodeIndex parses an index file of a segment with size bytes holding offsets below
// base+maxRel, rejecting anything torn, stale or inconsistent: the index files are written
// without fsync, so after a power loss they may hold anything.
func decodeIndex(b []byte, size int64, maxRel int64) ([]indexEntry, error) {
	if len(b) < indexHeaderSize || binary.BigEndian.Uint32(b[0:]) != indexMagic || b[4] != indexVersion {
		return nil, errBadIndex
	}
	n := binary.BigEndian.Uint32(b[8:])
	body := b[indexHeaderSize:]
	if uint64(len(body)) != uint64(n)*indexEntrySize || crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[12:]) {
		return nil, errBadIndex
	}
	entries := make([]indexEntry, n)
	prev := indexEntry{ts: math.MinInt64}
	for i := range entries {
		p := body[i*indexEntrySize:]
		e := indexEntry{
			rel: binary.BigEndian.Uint32(p[0:]),
			pos: binary.BigEndian.Uint32(p[4:]),
			ts:  int64(binary.BigEndian.Uint64(p[8:])),
		}
		if e.pos == 0 || int64(e.pos) >= size || int64(e.rel) >= maxRel ||
			(i > 0 && (e.rel <= prev.rel || e.pos <= prev.pos)) || e.ts < prev.ts {
			return nil, errBadIndex
		}
		entries[i], prev = e, e
	}
	return entries, nil
}

// lookupOffset returns the position of the last indexed batch starting at or before rel (0 when
// none): scanning from there reaches rel within about IndexBytes.
func lookupOffset(entries []indexEntry, rel int64) int64 {
	i := sort.Search(len(entries), func(i int) bool { return int64(entries[i].rel) > rel })
	if i == 0 {
		return 0
	}
	return int64(entries[i-1].pos)
}

// lookupTime returns the position of the last indexed batch before which every batch is older
// than t (0 when none): the first record with timestamp >= t lies at or after it.
func lookupTime(entries []indexEntry, t int64) int64 {
	i := sort.Search(len(entries), func(i int) bool { return entries[i].ts >= t })
	if i == 0 {
		return 0
	}
	return int64(entries[i-1].pos)
}
