package cluster

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// Subscription progress: the engine reports done ranges (acks, skips, dead letters) of the
// partitions this node leads; they are appended, batched, to each partition's progress log,
// which followers fetch and apply to their own journals (docs/adr/0001).
//
// A progress record: Key is the subscription name, Data is uvarint epoch, uvarint count, then
// per range varint from and uvarint length (the partition is the log's).

// A lease record (Tag "lease", see engine/leases.go): Key is the subscription name, Data is
// uvarint epoch, uvarint count, then per range varint from, uvarint length, uvarint attempts,
// varint visible-at and varint first-sent (Unix milliseconds). Lease records are not waited
// for; a follower keeps them in memory only.
const tagLease = "lease"

func progressLogName(k replicaKey) string { return "progress/" + k.topic + "/" + strconv.Itoa(k.part) }

func encodeProgress(epoch uint32, ranges []engine.DoneRange) []byte {
	e := &encoder{b: make([]byte, 0, 8+len(ranges)*8)}
	e.u(uint64(epoch))
	e.u(uint64(len(ranges)))
	for _, r := range ranges {
		e.i(r.From)
		e.u(uint64(r.N))
	}
	return e.b
}

func decodeProgress(b []byte, partition int) (uint32, []engine.DoneRange, error) {
	d := &decoder{b: b}
	epoch := d.u()
	n := d.n(2)
	out := make([]engine.DoneRange, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, engine.DoneRange{Partition: partition, From: d.i(), N: int64(d.u())})
	}
	if d.err != nil || len(d.b) != 0 || epoch > 1<<32-1 {
		return 0, nil, errDecode
	}
	return uint32(epoch), out, nil
}

func encodeLeases(epoch uint32, ranges []engine.LeaseRange) []byte {
	e := &encoder{b: make([]byte, 0, 8+len(ranges)*24)}
	e.u(uint64(epoch))
	e.u(uint64(len(ranges)))
	for _, r := range ranges {
		e.i(r.From)
		e.u(uint64(r.N))
		e.u(uint64(r.Attempts))
		e.i(r.VisibleAt.UnixMilli())
		e.i(r.FirstSent.UnixMilli())
	}
	return e.b
}

func decodeLeases(b []byte, partition int) (uint32, []engine.LeaseRange, error) {
	d := &decoder{b: b}
	epoch := d.u()
	n := d.n(5)
	out := make([]engine.LeaseRange, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		r := engine.LeaseRange{Partition: partition, From: d.i(), N: int64(d.u()), Attempts: int(d.u())}
		r.VisibleAt, r.FirstSent = time.UnixMilli(d.i()), time.UnixMilli(d.i())
		if r.Attempts < 0 || r.N < 0 {
			return 0, nil, errDecode
		}
		out = append(out, r)
	}
	if d.err != nil || len(d.b) != 0 || epoch > 1<<32-1 {
		return 0, nil, errDecode
	}
	return uint32(epoch), out, nil
}

// Leases implements engine.Replicator: like Progress, but nobody waits for the records (a lease
// lost with its leader only means an earlier redelivery).
func (n *Node) Leases(sub string, epoch uint32, topic string, leases []engine.LeaseRange) {
	byPart := map[int][]engine.LeaseRange{}
	for _, r := range leases {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p, rs := range byPart {
		n.progress.enqueue(&progressItem{key: replicaKey{topic, p}, rec: store.Record{Key: sub, Tag: tagLease, Data: encodeLeases(epoch, rs)}, done: make(chan struct{})})
	}
}

// Progress implements engine.Replicator. It is called with the subscription's lock held, so it
// only queues; the returned func waits for the commit.
func (n *Node) Progress(sub string, epoch uint32, topic string, ranges []engine.DoneRange) func() error {
	byPart := map[int][]engine.DoneRange{}
	for _, r := range ranges {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	var items []*progressItem
	for p, rs := range byPart {
		it := &progressItem{key: replicaKey{topic, p}, rec: store.Record{Key: sub, Data: encodeProgress(epoch, rs)}, done: make(chan struct{})}
		items = append(items, it)
		n.progress.enqueue(it)
	}
	return func() error {
		for _, it := range items {
			<-it.done
			if it.err != nil {
				return it.err
			}
		}
		return nil
	}
}

type progressItem struct {
	key  replicaKey
	rec  store.Record
	done chan struct{}
	err  error
}

// progressWriter appends queued progress records, one batch per partition per round.
type progressWriter struct {
	n      *Node
	mu     sync.Mutex
	queue  []*progressItem
	closed bool // the node stopped: nothing queued would ever be written
	wake   chan struct{}
}

func newProgressWriter(n *Node) *progressWriter {
	return &progressWriter{n: n, wake: make(chan struct{}, 1)}
}

func (w *progressWriter) enqueue(it *progressItem) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		it.err = errShutdown
		close(it.done)
		return
	}
	w.queue = append(w.queue, it)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *progressWriter) run() {
	defer w.n.wg.Done()
	for {
		select {
		case <-w.n.stop:
			w.failAll(api.Unavailable("broker is shutting down"))
			return
		case <-w.wake:
		}
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		w.mu.Unlock()
		if len(q) == 0 {
			continue
		}
		byKey := map[replicaKey][]*progressItem{}
		var order []replicaKey
		for _, it := range q {
			if _, ok := byKey[it.key]; !ok {
				order = append(order, it.key)
			}
			byKey[it.key] = append(byKey[it.key], it)
		}
		var wg sync.WaitGroup
		for _, k := range order {
			items := byKey[k]
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := w.write(k, items)
				for _, it := range items {
					it.err = err
					close(it.done)
				}
			}()
		}
		wg.Wait()
	}
}

func (w *progressWriter) write(k replicaKey, items []*progressItem) error {
	r := w.n.replica(k.topic, k.part)
	if r == nil {
		return api.Unavailable("partition %s is not on this broker any more", k)
	}
	recs := make([]store.Record, len(items))
	for i, it := range items {
		recs[i] = it.rec
	}
	_, err := r.appendLeader(kindProgress, recs)
	return err
}

func (w *progressWriter) failAll(err error) {
	w.mu.Lock()
	q := w.queue
	w.queue = nil
	w.closed = true
	w.mu.Unlock()
	for _, it := range q {
		it.err = err
		close(it.done)
	}
}

// applyProgressRecords applies fetched progress records to the local engine (follower side).
func (n *Node) applyProgressRecords(k replicaKey, recs []store.Record) error {
	for i := range recs {
		if recs[i].Tag == tagLease {
			n.applyLeaseRecord(k, &recs[i])
			continue
		}
		epoch, ranges, err := decodeProgress(recs[i].Data, k.part)
		if err != nil {
			n.log.Warn("undecodable progress record", "partition", k.String(), "offset", recs[i].Offset)
			continue
		}
		err = n.eng.ApplyProgress(recs[i].Key, epoch, ranges)
		if err == nil {
			continue
		}
		if isNotFound(err) || errors.Is(err, engine.ErrOtherEpoch) {
			// Progress of a subscription this node has not created (or re-created) yet: retry
			// the fetch after the reconciler catches up — unless the metadata has no such
			// subscription any more, then the record is moot. A subscription's epoch is the
			// Raft index that created it: metadata that has not applied that index yet is
			// behind (this node is catching up, after a restart say), not newer.
			applied := n.fsm.appliedIndex()
			var want uint32
			n.fsm.read(func(s *State) {
				if ss := s.Subscriptions[recs[i].Key]; ss != nil {
					want = ss.Epoch
				}
			})
			if want != epoch && applied >= uint64(epoch) {
				continue
			}
			n.triggerReconcile()
			return fmt.Errorf("cluster: subscription %q (epoch %d) is not here yet: %w", recs[i].Key, epoch, err)
		}
		return err
	}
	return nil
}

// applyLeaseRecord applies one replicated lease record. A subscription that is not here (yet)
// or is another epoch of it just misses the lease: its messages are redelivered sooner after a
// failover, never lost, so this never holds the progress log back the way done ranges do.
func (n *Node) applyLeaseRecord(k replicaKey, rec *store.Record) {
	epoch, ranges, err := decodeLeases(rec.Data, k.part)
	if err != nil {
		n.log.Warn("undecodable lease record", "partition", k.String(), "offset", rec.Offset)
		return
	}
	if err := n.eng.ApplyLeases(rec.Key, epoch, ranges); err != nil && !isNotFound(err) && !errors.Is(err, engine.ErrOtherEpoch) {
		n.log.Warn("apply lease record", "partition", k.String(), "subscription", rec.Key, "err", err)
	}
}
