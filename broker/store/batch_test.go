package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"
)

// seal encodes recs as a batch at base.
func seal(base int64, recs []Record) []byte {
	b := encodeBatch(nil, recs)
	sealBatch(b, base)
	return b
}

func TestBatchRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		base int64
		recs []Record
	}{
		{"empty record", 0, []Record{{}}},
		{"one", 7, []Record{{Timestamp: 1, ID: "id", Key: "k", OrderingKey: "o", Tag: "t", Data: []byte("data")}}},
		{"attributes", 1 << 40, []Record{{Attributes: map[string]string{"a": "b", "": "", "ü": "∑"}}, {Attributes: map[string]string{}}}},
		{"timestamps", 3, []Record{{Timestamp: math.MaxInt64}, {Timestamp: math.MinInt64}, {Timestamp: 0}, {Timestamp: -1}}},
		{"binary data", 0, []Record{{Data: []byte{0, 0xff, 0x80}}, {Data: bytes.Repeat([]byte{1}, 70000)}}},
		{"many", 100, recs(0, 300)},
		{"max base", math.MaxInt64 - 2, recs(0, 2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := seal(tc.base, tc.recs)
			h, err := checkBatch(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.base != tc.base || h.count != len(tc.recs) || h.length != len(b) {
				t.Fatalf("header %+v", h)
			}
			want := make([]Record, len(tc.recs))
			for i, r := range tc.recs {
				r.Offset = tc.base + int64(i)
				want[i] = r
			}
			_, got, err := decodeBatch(b, 0, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, "decoded", got, want)
			// A batch followed by more bytes decodes the same (scans hand over longer buffers).
			_, got, err = decodeBatch(append(b, 1, 2, 3), tc.base+1, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, "from base+1", got, want[1:])
		})
	}
}

// TestBatchCorrupt checks every truncation and many single-byte changes of a batch: each must be
// an error wrapping ErrCorrupt, never a panic or a wrong record.
func TestBatchCorrupt(t *testing.T) {
	b := seal(5, recs(1, 9))
	for n := range len(b) {
		if _, _, err := decodeBatch(b[:n], 0, nil, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	for i := range b {
		for _, flip := range []byte{1, 0x40, 0xff} {
			c := append([]byte(nil), b...)
			c[i] ^= flip
			if _, _, err := decodeBatch(c, 0, nil, nil); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d ^ %#x: %v", i, flip, err)
			}
		}
	}
	// Structurally bad batches with a correct CRC: the structure checks must catch them too.
	restamp := func(b []byte) []byte {
		binary.BigEndian.PutUint32(b[offCRC:], crc32c(b[offBase:]))
		return b
	}
	bad := map[string][]byte{
		"count too high": restamp(func() []byte { c := seal(0, recs(0, 2)); binary.BigEndian.PutUint32(c[offCount:], 3); return c }()),
		"count too low":  restamp(func() []byte { c := seal(0, recs(0, 2)); binary.BigEndian.PutUint32(c[offCount:], 1); return c }()),
		"wrong max ts":   restamp(func() []byte { c := seal(0, recs(0, 2)); c[offMaxTs+7]++; return c }()),
		"wrong first ts": restamp(func() []byte { c := seal(0, recs(0, 2)); c[offFirstTs+7]++; return c }()),
		"negative base":  restamp(func() []byte { c := seal(0, recs(0, 2)); c[offBase] = 0x80; return c }()),
		"trailing bytes": restamp(func() []byte {
			c := append(seal(0, recs(0, 2)), 0)
			binary.BigEndian.PutUint32(c[offLength:], uint32(len(c)))
			return c
		}()),
		"huge attributes": restamp(hugeAttributes()),
	}
	for name, c := range bad {
		if _, _, err := decodeBatch(c, 0, nil, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// hugeAttributes is a batch whose one record claims 2^60 attributes.
func hugeAttributes() []byte {
	b := append([]byte(nil), zeroHeader[:]...)
	b = append(b, 0, 0, 0, 0, 0, 0)    // offset delta, ts delta, four empty strings
	b = binary.AppendUvarint(b, 1<<60) // attribute count
	b = append(b, make([]byte, 16)...) // some bytes to (not) hold them
	binary.BigEndian.PutUint32(b[offMagic:], batchMagic)
	b[offVersion] = batchVersion
	binary.BigEndian.PutUint32(b[offLength:], uint32(len(b)))
	binary.BigEndian.PutUint32(b[offCount:], 1)
	return b
}

func TestBatchLimits(t *testing.T) {
	rs := make([]Record, 6)
	for i := range rs {
		rs[i].Data = make([]byte, 10)
	}
	b := seal(100, rs)
	tests := []struct {
		from          int64
		max, maxBytes int
		want          int
	}{
		{0, 0, 0, 6}, {103, 0, 0, 3}, {106, 0, 0, 0}, {0, 2, 0, 2}, {0, 0, 25, 2}, {0, 0, 5, 1}, {104, 1, 1, 1},
	}
	for _, tc := range tests {
		lim := readLimits{max: tc.max, maxBytes: tc.maxBytes}
		_, got, err := decodeBatch(b, tc.from, &lim, nil)
		if err != nil || len(got) != tc.want {
			t.Errorf("from %d max %d maxBytes %d: %d records, %v; want %d", tc.from, tc.max, tc.maxBytes, len(got), err, tc.want)
		}
	}
}

// TestDecodeAllocs checks decoding costs a few allocations per batch, not several per record.
func TestDecodeAllocs(t *testing.T) {
	rs := recs(1, 100)
	for i := range rs {
		rs[i].Attributes = nil // one map per record with attributes is inherent
	}
	b := seal(0, rs)
	out := make([]Record, 0, 100)
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := decodeBatch(b, 0, nil, out[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to decode 100 records", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() { b = encodeBatch(b[:0], rs) })
	if allocs != 0 {
		t.Fatalf("%v allocations to encode into a big enough buffer", allocs)
	}
}

// recordsFrom builds records deterministically from fuzz input.
func recordsFrom(data []byte) []Record {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		v := int(data[0])
		data = data[1:]
		return v
	}
	take := func() string {
		n := min(next()%16, len(data))
		s := string(data[:n])
		data = data[n:]
		return s
	}
	rs := make([]Record, 1+next()%8)
	for i := range rs {
		r := &rs[i]
		r.Timestamp = int64(next()-128) << (next() % 64)
		r.ID, r.Key, r.OrderingKey, r.Tag = take(), take(), take(), take()
		if n := next() % 4; n > 0 {
			r.Attributes = map[string]string{}
			for range n {
				r.Attributes[take()] = take()
			}
		}
		r.Data = []byte(take())
	}
	return rs
}

// FuzzDecodeBatch feeds arbitrary bytes to the decoder (no panic; errors wrap ErrCorrupt; what
// decodes re-encodes to the same records) and round-trips batches built from the input.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(seal(0, recs(0, 3)))
	f.Add(seal(42, []Record{{ID: "x", Attributes: map[string]string{"k": "v"}, Data: []byte("hello")}}))
	f.Add(seal(1<<40, []Record{{Timestamp: math.MinInt64}, {Timestamp: math.MaxInt64}}))
	f.Add(hugeAttributes())
	f.Add([]byte{})
	f.Add(zeroHeader[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		h, got, err := decodeBatch(data, 0, nil, nil)
		if _, cerr := checkBatch(data); (err == nil) != (cerr == nil) {
			t.Fatalf("decodeBatch %v but checkBatch %v", err, cerr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
		} else {
			if len(got) != h.count || h.length > len(data) {
				t.Fatalf("%d records for header %+v", len(got), h)
			}
			_, again, err := decodeBatch(seal(h.base, got), 0, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, "re-encoded", again, got)
		}

		rs := recordsFrom(data)
		base := int64(len(data))
		b := seal(base, rs)
		_, got, err = decodeBatch(b, 0, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rs {
			rs[i].Offset = base + int64(i)
		}
		checkRecords(t, "round trip", got, rs)
		// A read starting inside the batch with a record limit gets the matching slice.
		from := len(data) % len(rs)
		lim := readLimits{max: 2}
		_, got, err = decodeBatch(b, base+int64(from), &lim, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, "partial", got, rs[from:min(from+2, len(rs))])
	})
}

// FuzzRecoverTail appends arbitrary bytes to a valid segment (optionally cut inside its last
// batch first) and runs recovery's scan over it: every batch before the damage must be kept,
// and what is kept must decode.
func FuzzRecoverTail(f *testing.F) {
	var seg []byte
	var ends []int
	next := int64(0)
	for _, n := range []int{2, 1, 4} {
		seg = append(seg, seal(next, recs(int(next), n))...)
		ends = append(ends, len(seg))
		next += int64(n)
	}
	f.Add([]byte{}, uint16(0))
	f.Add([]byte("garbage"), uint16(3))
	f.Add(seal(next, recs(0, 1)), uint16(0))      // a valid next batch is kept
	f.Add(seal(next, recs(0, 1))[:30], uint16(0)) // a torn one is not
	f.Add(make([]byte, 100), uint16(0))
	f.Fuzz(func(t *testing.T, tail []byte, cut uint16) {
		last := ends[len(ends)-1] - ends[len(ends)-2]
		keep := len(seg) - int(cut)%(last+1)
		data := append(append([]byte(nil), seg[:keep]...), tail...)
		good := 0 // batches wholly before the damage
		for good < len(ends) && ends[good] <= keep {
			good++
		}
		res, _ := scanSegment(bytes.NewReader(data), 0, int64(len(data)), 64, true)
		if want := int64(ends[good-1]); good > 0 && res.size < want {
			t.Fatalf("recovered %d bytes, want at least %d", res.size, want)
		}
		if res.size > int64(len(data)) {
			t.Fatalf("recovered %d of %d bytes", res.size, len(data))
		}
		// Everything kept decodes, in sequence, and matches the original where it overlaps.
		var pos, off int64
		for pos < res.size {
			h, got, err := decodeBatch(data[pos:res.size], off, nil, nil)
			if err != nil {
				t.Fatalf("kept batch at %d: %v", pos, err)
			}
			if h.base != off {
				t.Fatalf("kept batch at %d has offset %d, want %d", pos, h.base, off)
			}
			if int(pos) < ends[len(ends)-1] && int(pos) < keep {
				_, want, _ := decodeBatch(seg[pos:], off, nil, nil)
				checkRecords(t, "kept", got, want)
			}
			pos += int64(h.length)
			off = h.end()
		}
		if off != res.next {
			t.Fatalf("next offset %d, want %d", res.next, off)
		}
		for _, e := range res.index {
			if int64(e.pos) >= res.size {
				t.Fatalf("index entry %+v past the end %d", e, res.size)
			}
		}
	})
}
