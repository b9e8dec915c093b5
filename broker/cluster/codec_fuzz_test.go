package cluster

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// The internal decoders take bytes from the network: whatever they get, they must not panic,
// and what they accept must survive a round trip (decode → encode → decode gives the same).

func seedRecords() []store.Record {
	return []store.Record{
		{Offset: 7, Timestamp: 1700000000000, ID: "0000000000aa-000000000001", Key: "k", OrderingKey: "ok", Tag: "t",
			Attributes: map[string]string{"a": "1", "content-type": "text/plain"}, Data: []byte("hello")},
		{Offset: 8, Timestamp: -1, ID: "0000000000aa-000000000002", Data: []byte{}},
		{Offset: 9, ID: "x", Data: bytes.Repeat([]byte{0xff}, 300)},
	}
}

func FuzzDecodeFetchRequest(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add([]byte{codecVersion + 1, 0, 0, 0})
	f.Add((&fetchRequest{Follower: "n2", MaxWaitMs: 500}).encode())
	f.Add((&fetchRequest{Follower: "n3", MaxWaitMs: 1 << 40, Entries: []fetchEntry{
		{Topic: "orders", Partition: 3, Kind: kindData, Incarnation: 42, Epoch: 7, Offset: 1000, LastEpoch: 6, HW: 990},
		{Topic: "orders", Partition: 3, Kind: kindProgress, Incarnation: 42, Epoch: 7, Offset: -1, LastEpoch: 0, HW: -5},
	}}).encode())
	f.Add([]byte{codecVersion, 2, 'n', '1', 0, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a huge entry count
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeFetchRequest(b)
		if err != nil {
			if req != nil {
				t.Fatalf("an error with a request")
			}
			return
		}
		again, err := decodeFetchRequest(req.encode())
		if err != nil {
			t.Fatalf("re-encoded request does not decode: %v", err)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", req, again)
		}
	})
}

func FuzzFetchRequestRoundTrip(f *testing.F) {
	f.Add("n1", uint64(500), "orders", uint32(0), false, uint64(1), uint64(2), int64(10), uint64(1), int64(9))
	f.Add("", uint64(0), "", uint32(0xfffff), true, uint64(1<<63), uint64(0), int64(-1<<63), uint64(1<<64-1), int64(1<<63-1))
	f.Fuzz(func(t *testing.T, follower string, wait uint64, topic string, part uint32, progress bool, inc, epoch uint64, off int64, last uint64, hw int64) {
		kind := kindData
		if progress {
			kind = kindProgress
		}
		x := fetchEntry{Topic: topic, Partition: int(part & 0xfffff), Kind: kind, Incarnation: inc, Epoch: epoch, Offset: off, LastEpoch: last, HW: hw}
		req := &fetchRequest{Follower: follower, MaxWaitMs: wait, Entries: []fetchEntry{x, x}}
		got, err := decodeFetchRequest(req.encode())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(req, got) {
			t.Fatalf("round trip:\n%+v\n%+v", req, got)
		}
	})
}

func FuzzDecodeFetchResults(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add(encodeFetchResults(nil))
	f.Add(encodeFetchResults([]fetchResult{
		{Code: fetchOK, HW: 8, LogStart: 0, Epochs: []epochEntry{{Epoch: 1, Start: 0}, {Epoch: 3, Start: 8}}, Records: seedRecords()},
		{Code: fetchDiverging, DivergeEpoch: 2, DivergeEnd: 5},
		{Code: fetchNotLeader},
		{Code: fetchOutOfRange, LogStart: 100},
	}))
	// Records whose offsets are not consecutive are refused.
	bad := seedRecords()
	bad[1].Offset = 20
	f.Add(encodeFetchResults([]fetchResult{{Records: bad}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := decodeFetchResults(b)
		if err != nil {
			return
		}
		for _, r := range rs {
			for i := 1; i < len(r.Records); i++ {
				if r.Records[i].Offset != r.Records[i-1].Offset+1 {
					t.Fatalf("accepted records at offsets %d then %d", r.Records[i-1].Offset, r.Records[i].Offset)
				}
			}
		}
		again, err := decodeFetchResults(encodeFetchResults(rs))
		if err != nil {
			t.Fatalf("re-encoded results do not decode: %v", err)
		}
		if !reflect.DeepEqual(rs, again) {
			t.Fatalf("round trip changed the results:\n%+v\n%+v", rs, again)
		}
	})
}

func FuzzDecodeAppendRequest(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add((&appendRequest{Topic: "orders", Partition: 2, Incarnation: 9, Records: seedRecords()}).encode())
	f.Add((&appendRequest{Topic: "t", Records: []store.Record{{Offset: 5}, {Offset: 5}}}).encode()) // offsets not assigned yet
	f.Add((&appendRequest{Topic: "empty"}).encode())                                                // no records: refused
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeAppendRequest(b)
		if err != nil {
			return
		}
		if len(req.Records) == 0 {
			t.Fatalf("accepted an append without records")
		}
		again, err := decodeAppendRequest(req.encode())
		if err != nil {
			t.Fatalf("re-encoded append does not decode: %v", err)
		}
		if !reflect.DeepEqual(req, again) {
			t.Fatalf("round trip changed the append:\n%+v\n%+v", req, again)
		}
	})
}

func FuzzDecodeProgress(f *testing.F) {
	f.Add([]byte{}, 0)
	f.Add(encodeProgress(7, nil), 1)
	f.Add(encodeProgress(1<<32-1, []engine.DoneRange{{Partition: 3, From: 0, N: 10}, {Partition: 3, From: -4, N: -1}, {Partition: 3, From: 1 << 62, N: 1 << 62}}), 3)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x1f, 0}, 0) // epoch above 32 bits
	f.Fuzz(func(t *testing.T, b []byte, part int) {
		epoch, ranges, err := decodeProgress(b, part)
		if err != nil {
			if ranges != nil || epoch != 0 {
				t.Fatalf("an error with a result")
			}
			return
		}
		for _, r := range ranges {
			if r.Partition != part {
				t.Fatalf("range of partition %d decoded for partition %d", r.Partition, part)
			}
		}
		e2, r2, err := decodeProgress(encodeProgress(epoch, ranges), part)
		if err != nil {
			t.Fatalf("re-encoded progress does not decode: %v", err)
		}
		if e2 != epoch || !reflect.DeepEqual(ranges, r2) {
			t.Fatalf("round trip: %d %+v → %d %+v", epoch, ranges, e2, r2)
		}
	})
}

func FuzzDecodeLeases(f *testing.F) {
	f.Add([]byte{}, 0)
	at := time.UnixMilli(1_790_000_000_000)
	f.Add(encodeLeases(7, []engine.LeaseRange{{Partition: 1, From: 10, N: 3, Attempts: 1, VisibleAt: at, FirstSent: at}, {Partition: 1, From: 20, N: 1, Attempts: 4, VisibleAt: at.Add(time.Minute)}}), 1)
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, 0) // a huge range count
	f.Fuzz(func(t *testing.T, b []byte, part int) {
		epoch, ranges, err := decodeLeases(b, part)
		if err != nil {
			if ranges != nil || epoch != 0 {
				t.Fatalf("an error with a result")
			}
			return
		}
		for _, r := range ranges {
			if r.Partition != part || r.N < 0 || r.Attempts < 0 {
				t.Fatalf("bad range decoded: %+v", r)
			}
		}
		// Compared as encodings: times far outside time.Time's range do not round-trip as
		// values, but what a follower would apply must be stable.
		enc := encodeLeases(epoch, ranges)
		e2, r2, err := decodeLeases(enc, part)
		if err != nil {
			t.Fatalf("re-encoded leases do not decode: %v", err)
		}
		if e2 != epoch || len(r2) != len(ranges) || !bytes.Equal(encodeLeases(e2, r2), enc) {
			t.Fatalf("round trip changed the leases: %x", b)
		}
	})
}

func FuzzDecodeMoved(f *testing.F) {
	f.Add([]byte{})
	f.Add(encodeMoved([]int64{0, 5, 1 << 40, -3}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // a huge count
	f.Fuzz(func(t *testing.T, b []byte) {
		offs, err := decodeMoved(b)
		if err != nil {
			if offs != nil {
				t.Fatalf("an error with a result")
			}
			return
		}
		again, err := decodeMoved(encodeMoved(offs))
		if err != nil || !reflect.DeepEqual(offs, again) {
			t.Fatalf("round trip: %v → %v, %v", offs, again, err)
		}
	})
}
