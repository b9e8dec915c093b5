package cluster

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/heraldmq/herald/broker/store"
)

// The internal replication messages (fetch, forwarded appends) are binary: uvarint-prefixed
// fields, a version byte first. They never leave the cluster, and every decoder bounds every
// length by the bytes it has (fuzzed in codec_fuzz_test.go).

const codecVersion = 1

var errDecode = errors.New("cluster: malformed internal message")

type encoder struct{ b []byte }

func (e *encoder) u(v uint64)  { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) i(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) s(v string)  { e.u(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) by(v []byte) { e.u(uint64(len(v))); e.b = append(e.b, v...) }

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errDecode
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) i() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errDecode
		return 0
	}
	d.b = d.b[n:]
	return v
}

// n reads a count that must be coverable by the remaining bytes (each item >= min bytes).
func (d *decoder) n(min int) int {
	v := d.u()
	if d.err == nil && (v > math.MaxInt32 || int(v)*min > len(d.b)) {
		d.err = errDecode
		return 0
	}
	return int(v)
}

func (d *decoder) by() []byte {
	l := d.n(1)
	if d.err != nil {
		return nil
	}
	v := d.b[:l:l]
	d.b = d.b[l:]
	return v
}

func (d *decoder) s() string { return string(d.by()) }

func encodeRecords(e *encoder, recs []store.Record) {
	e.u(uint64(len(recs)))
	for i := range recs {
		r := &recs[i]
		e.i(r.Offset)
		e.i(r.Timestamp)
		e.s(r.ID)
		e.s(r.Key)
		e.s(r.OrderingKey)
		e.s(r.Tag)
		e.u(uint64(len(r.Attributes)))
		for k, v := range r.Attributes {
			e.s(k)
			e.s(v)
		}
		e.by(r.Data)
	}
}

func decodeRecords(d *decoder) []store.Record {
	n := d.n(7)
	if d.err != nil || n == 0 {
		return nil
	}
	recs := make([]store.Record, n)
	for i := range recs {
		r := &recs[i]
		r.Offset = d.i()
		r.Timestamp = d.i()
		r.ID = d.s()
		r.Key = d.s()
		r.OrderingKey = d.s()
		r.Tag = d.s()
		if na := d.n(2); na > 0 {
			r.Attributes = make(map[string]string, na)
			for k := 0; k < na; k++ {
				key := d.s()
				r.Attributes[key] = d.s()
			}
		}
		// The data aliases the message buffer, which the caller owns and does not reuse.
		r.Data = d.by()
		if d.err != nil {
			return nil
		}
		if i > 0 && r.Offset != recs[i-1].Offset+1 {
			d.err = errDecode
			return nil
		}
	}
	return recs
}

// fetchRequest asks a leader for what a follower misses, for every partition it follows there.
type fetchRequest struct {
	Follower  string
	MaxWaitMs uint64
	Entries   []fetchEntry
}

type fetchEntry struct {
	Topic       string
	Partition   int
	Kind        logKind
	Incarnation uint64
	Epoch       uint64 // the leader epoch the follower follows
	Offset      int64  // the follower's log end: everything below is on its disk
	LastEpoch   uint64 // the epoch of the follower's last record (0: empty)
	HW          int64  // the high watermark the follower knows
}

// fetch result codes.
const (
	fetchOK         = 0
	fetchNotLeader  = 1 // this node does not lead the partition at that epoch
	fetchDiverging  = 2 // truncate to DivergeEnd (of DivergeEpoch) first
	fetchUnknown    = 3 // no such topic/partition (yet) here
	fetchOutOfRange = 4 // Offset is below the leader's log start: restart at LogStart
)

type fetchResult struct {
	Code         uint8
	HW           int64
	LogStart     int64
	DivergeEpoch uint64
	DivergeEnd   int64
	Epochs       []epochEntry // the leader's epoch entries covering the returned records
	Records      []store.Record
}

func (r *fetchRequest) encode() []byte {
	e := &encoder{b: []byte{codecVersion}}
	e.s(r.Follower)
	e.u(r.MaxWaitMs)
	e.u(uint64(len(r.Entries)))
	for _, x := range r.Entries {
		e.s(x.Topic)
		e.u(uint64(x.Partition))
		e.u(uint64(x.Kind))
		e.u(x.Incarnation)
		e.u(x.Epoch)
		e.i(x.Offset)
		e.u(x.LastEpoch)
		e.i(x.HW)
	}
	return e.b
}

func decodeFetchRequest(b []byte) (*fetchRequest, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return nil, errDecode
	}
	d := &decoder{b: b[1:]}
	r := &fetchRequest{Follower: d.s(), MaxWaitMs: d.u()}
	n := d.n(8)
	for k := 0; k < n && d.err == nil; k++ {
		x := fetchEntry{Topic: d.s(), Partition: int(d.u() & 0xfffff), Kind: logKind(d.u() % numKinds), Incarnation: d.u(), Epoch: d.u(), Offset: d.i(), LastEpoch: d.u(), HW: d.i()}
		r.Entries = append(r.Entries, x)
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errDecode
	}
	return r, nil
}

// recordsSize estimates the encoded size of records, so buffers are allocated once.
func recordsSize(recs []store.Record) int {
	n := 0
	for i := range recs {
		r := &recs[i]
		n += 48 + len(r.ID) + len(r.Key) + len(r.OrderingKey) + len(r.Tag) + len(r.Data)
		for k, v := range r.Attributes {
			n += 10 + len(k) + len(v)
		}
	}
	return n
}

func encodeFetchResults(rs []fetchResult) []byte {
	size := 1
	for _, r := range rs {
		size += 64 + 16*len(r.Epochs) + recordsSize(r.Records)
	}
	e := &encoder{b: make([]byte, 1, size)}
	e.b[0] = codecVersion
	e.u(uint64(len(rs)))
	for _, r := range rs {
		e.u(uint64(r.Code))
		e.i(r.HW)
		e.i(r.LogStart)
		e.u(r.DivergeEpoch)
		e.i(r.DivergeEnd)
		e.u(uint64(len(r.Epochs)))
		for _, ep := range r.Epochs {
			e.u(ep.Epoch)
			e.i(ep.Start)
		}
		encodeRecords(e, r.Records)
	}
	return e.b
}

func decodeFetchResults(b []byte) ([]fetchResult, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return nil, errDecode
	}
	d := &decoder{b: b[1:]}
	n := d.n(7)
	rs := make([]fetchResult, 0, n)
	for k := 0; k < n && d.err == nil; k++ {
		r := fetchResult{Code: uint8(d.u()), HW: d.i(), LogStart: d.i(), DivergeEpoch: d.u(), DivergeEnd: d.i()}
		ne := d.n(2)
		for j := 0; j < ne && d.err == nil; j++ {
			r.Epochs = append(r.Epochs, epochEntry{Epoch: d.u(), Start: d.i()})
		}
		r.Records = decodeRecords(d)
		rs = append(rs, r)
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errDecode
	}
	return rs, nil
}

// appendRequest is a publish forwarded to a partition's leader.
type appendRequest struct {
	Topic       string
	Partition   int
	Incarnation uint64
	Records     []store.Record
}

func (r *appendRequest) encode() []byte {
	e := &encoder{b: make([]byte, 1, 32+len(r.Topic)+recordsSize(r.Records))}
	e.b[0] = codecVersion
	e.s(r.Topic)
	e.u(uint64(r.Partition))
	e.u(r.Incarnation)
	encodeRecords(e, r.Records)
	return e.b
}

func decodeAppendRequest(b []byte) (*appendRequest, error) {
	if len(b) == 0 || b[0] != codecVersion {
		return nil, errDecode
	}
	d := &decoder{b: b[1:]}
	r := &appendRequest{Topic: d.s(), Partition: int(d.u() & 0xfffff), Incarnation: d.u()}
	// Offsets of forwarded records are not assigned yet: decode without the sequence check.
	n := d.n(7)
	for k := 0; k < n && d.err == nil; k++ {
		var rec store.Record
		rec.Offset = d.i()
		rec.Timestamp = d.i()
		rec.ID, rec.Key, rec.OrderingKey, rec.Tag = d.s(), d.s(), d.s(), d.s()
		if na := d.n(2); na > 0 {
			rec.Attributes = make(map[string]string, na)
			for j := 0; j < na; j++ {
				key := d.s()
				rec.Attributes[key] = d.s()
			}
		}
		rec.Data = d.by()
		r.Records = append(r.Records, rec)
	}
	if d.err != nil || len(d.b) != 0 || len(r.Records) == 0 {
		return nil, errDecode
	}
	return r, nil
}
