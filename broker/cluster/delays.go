package cluster

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Delayed messages in a cluster (docs/adr/0001). A delayed message is appended to its
// partition's delay log — replicated like the progress log — and the publish is acknowledged
// once the in-sync replicas have it, so it survives the loss of any broker, the one that
// accepted it included. Every replica indexes the messages of its copy not moved yet. The
// partition's leader moves each one when it is due: it appends the message to the partition
// (where it gets its offset, and retention and TTL start, as on a single broker) and then a
// "moved" marker to the delay log. A leader that dies between the two has no marker written,
// and the next leader moves the message again: its dedup index recognises the batch by its ids
// for a while after taking over, else the message is delivered twice (at-least-once).
//
// Delay-log records: a delayed message is its message record with the due time (Unix
// nanoseconds) in the attribute attrDeliverAt; a marker has Tag tagMoved and Data: uvarint
// count, then varint delay-log offsets.

const (
	attrDeliverAt = "\x00deliverAt" // published attribute names cannot hold a NUL byte
	tagMoved      = "moved"
	// moveBatchBytes bounds one move (a burst of due messages may be large).
	moveBatchBytes = 4 << 20
	moveBatchMax   = 1000
	delayTick      = 100 * time.Millisecond
)

func delayLogName(k replicaKey) string { return "delays/" + k.topic + "/" + strconv.Itoa(k.part) }

// delayIndex is a replica's set of delayed messages not moved yet. Only a leader keeps them
// ordered by due time (built when it starts moving; a follower never pops its heap).
type delayIndex struct {
	pending map[int64]int64 // delay-log offset → due time (Unix ns)
	due     delayHeap
	built   bool
}

type delayItem struct{ at, off int64 }

type delayHeap []delayItem

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(i, k int) bool {
	if h[i].at != h[k].at {
		return h[i].at < h[k].at
	}
	return h[i].off < h[k].off
}
func (h delayHeap) Swap(i, k int) { h[i], h[k] = h[k], h[i] }
func (h *delayHeap) Push(x any)   { *h = append(*h, x.(delayItem)) }
func (h *delayHeap) Pop() any {
	o := *h
	x := o[len(o)-1]
	*h = o[:len(o)-1]
	return x
}

func encodeMoved(offs []int64) []byte {
	e := &encoder{b: make([]byte, 0, 2+len(offs)*5)}
	e.u(uint64(len(offs)))
	for _, o := range offs {
		e.i(o)
	}
	return e.b
}

func decodeMoved(b []byte) ([]int64, error) {
	d := &decoder{b: b}
	n := d.n(1)
	out := make([]int64, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.i())
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errDecode
	}
	return out, nil
}

// apply indexes records of the delay log starting at offset base.
func (x *delayIndex) apply(base int64, recs []store.Record) {
	if x.pending == nil {
		x.pending = map[int64]int64{}
	}
	for i := range recs {
		off := base + int64(i)
		if recs[i].Tag == tagMoved {
			offs, err := decodeMoved(recs[i].Data)
			if err != nil {
				continue // undecodable: its messages stay pending (moved again, not lost)
			}
			for _, o := range offs {
				delete(x.pending, o)
			}
			continue
		}
		at, err := strconv.ParseInt(recs[i].Attributes[attrDeliverAt], 10, 64)
		if err != nil {
			at = 0 // no readable due time: due now rather than never
		}
		x.pending[off] = at
		if x.built {
			heap.Push(&x.due, delayItem{at: at, off: off})
		}
	}
}

// applyDelayRecords indexes records appended to this replica's delay log at base.
func (r *replica) applyDelayRecords(base int64, recs []store.Record) {
	r.mu.Lock()
	r.delayed.apply(base, recs)
	r.mu.Unlock()
}

// loadDelays rebuilds the index from the delay log (at open, and after a truncation).
func (r *replica) loadDelays() error {
	var x delayIndex
	x.pending = map[int64]int64{}
	from := r.delays.StartOffset()
	for {
		recs, err := r.delays.Read(from, 1000, 4<<20)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		x.apply(recs[0].Offset, recs)
		from = recs[len(recs)-1].Offset + 1
	}
	r.mu.Lock()
	r.delayed = x
	r.mu.Unlock()
	return nil
}

// delayedCount is how many delayed messages wait in this replica's copy.
func (r *replica) delayedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.delayed.pending)
}

// oldestDelayed is the first delay-log offset still needed (the log end when none is).
func (r *replica) oldestDelayed() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.delays.EndOffset()
	for off := range r.delayed.pending {
		oldest = min(oldest, off)
	}
	return oldest
}

// dueDelayed pops the committed delayed messages that are due (leader only).
func (r *replica) dueDelayed(now time.Time) []delayItem {
	r.mu.Lock()
	defer r.mu.Unlock()
	x := &r.delayed
	if r.role != roleLeader {
		x.due, x.built = nil, false
		return nil
	}
	if !x.built {
		x.due = make(delayHeap, 0, len(x.pending))
		for off, at := range x.pending {
			x.due = append(x.due, delayItem{at: at, off: off})
		}
		heap.Init(&x.due)
		x.built = true
	}
	var out []delayItem
	for len(x.due) > 0 && x.due[0].at <= now.UnixNano() && len(out) < moveBatchMax {
		it := x.due[0]
		if at, ok := x.pending[it.off]; !ok || at != it.at {
			heap.Pop(&x.due) // moved already
			continue
		}
		if it.off >= r.hw[kindDelay] {
			break // not committed yet: a new leader might not have it
		}
		heap.Pop(&x.due)
		out = append(out, it)
	}
	return out
}

// requeueDelayed puts items back that are still pending (a move that failed).
func (r *replica) requeueDelayed(items []delayItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.delayed.built {
		return
	}
	for _, it := range items {
		if at, ok := r.delayed.pending[it.off]; ok && at == it.at {
			heap.Push(&r.delayed.due, it)
		}
	}
}

// moveDue moves this partition's due delayed messages into it (leader only).
func (r *replica) moveDue(now time.Time) {
	for {
		items := r.dueDelayed(now)
		if len(items) == 0 {
			return
		}
		moved, err := r.move(items, now)
		if err != nil {
			r.requeueDelayed(items)
			// Retried every tick: too few in-sync replicas (a 503) is expected for a while.
			lvl := slog.LevelWarn
			var ae *api.Error
			if errors.As(err, &ae) && ae.Status() == http.StatusServiceUnavailable {
				lvl = slog.LevelDebug
			}
			r.n.log.Log(context.Background(), lvl, "move delayed messages", "partition", r.key.String(), "err", err)
			return
		}
		if moved < len(items) {
			r.requeueDelayed(items[moved:]) // over the batch size: the next round
		}
	}
}

// move appends the messages of items (a prefix of them, up to moveBatchBytes) to the
// partition, then the marker; it returns how many it moved.
func (r *replica) move(items []delayItem, now time.Time) (int, error) {
	slices.SortFunc(items, func(a, b delayItem) int { return cmp.Compare(a.off, b.off) })
	var recs []store.Record
	var offs []int64
	bytes := 0
	for _, it := range items {
		if bytes >= moveBatchBytes {
			break
		}
		got, err := r.delays.Read(it.off, 1, 0)
		if err != nil {
			return 0, err
		}
		offs = append(offs, it.off)
		if len(got) != 1 || got[0].Offset != it.off {
			continue // gone (a reset): the marker still drops it from the index
		}
		rec := got[0]
		if len(rec.Attributes) == 1 {
			rec.Attributes = nil
		} else {
			attrs := make(map[string]string, len(rec.Attributes)-1)
			for k, v := range rec.Attributes {
				if k != attrDeliverAt {
					attrs[k] = v
				}
			}
			rec.Attributes = attrs
		}
		// The message enters the partition now: retention and TTL count from here.
		rec.Offset, rec.Timestamp = 0, now.UnixNano()
		recs = append(recs, rec)
		bytes += len(rec.Data) + len(rec.Key) + len(rec.ID) + 256
	}
	if len(recs) > 0 {
		if _, err := r.appendLeader(kindData, recs); err != nil {
			return 0, err
		}
	}
	if _, err := r.appendLeader(kindDelay, []store.Record{{Tag: tagMoved, Data: encodeMoved(offs), Timestamp: now.UnixNano()}}); err != nil {
		return 0, err
	}
	return len(offs), nil
}

// delayLoop moves due delayed messages of the partitions this node leads.
func (n *Node) delayLoop() { n.everyReplica(delayTick, (*replica).moveDue) }

// Delay implements engine.DelayReplicator: it stores delayed messages in their partition's
// delay log wherever its leader is, returning once the in-sync replicas have them.
func (n *Node) Delay(topic string, p int, recs []store.Record, deliverAt []time.Time) error {
	out := make([]store.Record, len(recs))
	for i, rec := range recs {
		attrs := make(map[string]string, len(rec.Attributes)+1)
		for k, v := range rec.Attributes {
			attrs[k] = v
		}
		attrs[attrDeliverAt] = strconv.FormatInt(deliverAt[i].UnixNano(), 10)
		rec.Attributes = attrs
		out[i] = rec
	}
	return n.appendKind(kindDelay, topic, p, out)
}

// DelayedCount implements engine.DelayReplicator: the delayed messages of the topic's
// partitions this node leads (the cluster's stats add up every member's).
func (n *Node) DelayedCount(topic string) int64 {
	partitions := 0
	n.fsm.read(func(s *State) {
		if t := s.Topics[topic]; t != nil {
			partitions = len(t.Partitions)
		}
	})
	var total int64
	for p := range partitions { // the topic's own replicas, not every replica of the node
		if r := n.replica(topic, p); r != nil {
			if ro, _, _ := r.roleView(); ro == roleLeader {
				total += int64(r.delayedCount())
			}
		}
	}
	return total
}
