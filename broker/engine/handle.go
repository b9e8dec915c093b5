package engine

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// A receipt handle names one lease of one message: the subscription's epoch (so a handle never
// matches a re-created subscription of the same name), the partition, the offset and the lease
// generation (so a handle dies when its lease expires, is nacked or is replaced by a visibility
// change). In a cluster a fifth uvarint carries the partition's leader epoch, so a handle of a
// leader that has since failed over is told from the new leader's leases. It is opaque to
// clients: URL-safe base64 of four or five uvarints.
type receipt struct {
	epoch       uint32
	partition   int
	offset      int64
	gen         uint64
	leaderEpoch uint64 // 0 on a single node (not encoded)
}

var errBadHandle = errors.New("engine: malformed receipt handle")

func (r receipt) encode() string {
	var buf [40]byte
	b := binary.AppendUvarint(buf[:0], uint64(r.epoch))
	b = binary.AppendUvarint(b, uint64(r.partition))
	b = binary.AppendUvarint(b, uint64(r.offset))
	b = binary.AppendUvarint(b, r.gen)
	if r.leaderEpoch != 0 {
		b = binary.AppendUvarint(b, r.leaderEpoch)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeReceipt(s string) (receipt, error) {
	if len(s) == 0 || len(s) > 64 {
		return receipt{}, errBadHandle
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return receipt{}, errBadHandle
	}
	d := decoder{b: raw}
	epoch, p, off, gen := d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
	var le uint64
	if d.err == nil && len(d.b) > 0 {
		if le = d.uvarint(); le == 0 {
			return receipt{}, errBadHandle // never encoded: one handle has one spelling
		}
	}
	if d.err != nil || len(d.b) != 0 || epoch > 1<<32-1 || p > 1<<20 || off > 1<<62 {
		return receipt{}, errBadHandle
	}
	return receipt{epoch: uint32(epoch), partition: int(p), offset: int64(off), gen: gen, leaderEpoch: le}, nil
}

// HandlePartition returns the partition a receipt handle names (the cluster layer routes acks
// by it).
func HandlePartition(h string) (int, bool) {
	r, err := decodeReceipt(h)
	if err != nil {
		return 0, false
	}
	return r.partition, true
}
