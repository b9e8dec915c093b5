package engine

import (
	"container/heap"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Delayed messages wait in a per-topic delay log ("delay/<topic>") and are moved into their
// partition when due, where they get their offset; the topic's journal records which were
// moved. A crash between a move and its journal entry moves that message again on restart
// (at-least-once, like every delivery here). The due time and the partition chosen at publish
// travel with the record as two attributes whose names start with a NUL byte, which published
// attribute names cannot contain.
const (
	attrDeliverAt = "\x00deliverAt"
	attrPartition = "\x00partition"
)

type delayedRecord struct {
	rec       store.Record
	partition int
	deliverAt time.Time
}

type delayQueue struct {
	b *Broker

	mu     sync.Mutex
	topics map[string]*delayTopic
	due    delayHeap
	wake   chan struct{}
}

// delayTopic is one topic's delay log and which of its records still wait.
type delayTopic struct {
	t       *topic
	log     store.Log
	journal *journal
	pending map[int64]struct{}
	known   int64 // every delay-log offset below this is in pending or moved
	removed bool
}

type delayItem struct {
	at     int64
	offset int64
	dt     *delayTopic
}

type delayHeap []delayItem

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, k int) bool { return h[i].at < h[k].at }
func (h delayHeap) Swap(i, k int)      { h[i], h[k] = h[k], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayItem)) }
func (h *delayHeap) Pop() any          { o := *h; x := o[len(o)-1]; *h = o[:len(o)-1]; return x }
func delayLogName(topic string) string { return "delay/" + topic }

func newDelayQueue(b *Broker) *delayQueue {
	return &delayQueue{b: b, topics: map[string]*delayTopic{}, wake: make(chan struct{}, 1)}
}

// openTopic opens t's delay log and journal and queues every record not yet moved.
func (q *delayQueue) openTopic(t *topic) (*delayTopic, error) {
	l, err := q.b.st.Open(delayLogName(t.name))
	if err != nil {
		return nil, err
	}
	dt := &delayTopic{t: t, log: l, pending: map[int64]struct{}{}, known: l.EndOffset()}
	snap := newSnapshot()
	if !q.b.cfg.Memory {
		j, sn, err := openJournal(q.b.journalDir("delay", t.name), q.b.cfg.Sync, q.b.Metrics.observeFsync)
		if err != nil {
			return nil, err
		}
		dt.journal, snap = j, sn
	}
	sp := snap.part(0)
	if sp.floor < l.StartOffset() {
		sp.floor = l.StartOffset()
	}
	// The delay log lost its tail after the journal recorded moves beyond it: new delayed
	// messages will reuse those offsets, so the journal must forget them (rewritten below).
	truncated := sp.next > l.EndOffset()
	if truncated {
		sp.next = l.EndOffset()
		sp.floor = min(sp.floor, sp.next)
	}
	var items []delayItem
	for off := sp.floor; off < l.EndOffset(); {
		recs, err := l.Read(off, 1000, 4<<20)
		if err != nil || len(recs) == 0 {
			if err != nil {
				return nil, err
			}
			break
		}
		for i := range recs {
			o := recs[i].Offset
			if _, wait := sp.pending[o]; o < sp.next && !wait {
				continue // moved already
			}
			at, _ := strconv.ParseInt(recs[i].Attributes[attrDeliverAt], 10, 64)
			dt.pending[o] = struct{}{}
			items = append(items, delayItem{at: at, offset: o, dt: dt})
		}
		off = recs[len(recs)-1].Offset + 1
	}
	if truncated {
		if err := dt.journal.compact(dt.snapshotLocked()); err != nil {
			dt.journal.close()
			return nil, err
		}
	}
	q.mu.Lock()
	q.topics[t.name] = dt
	for _, it := range items {
		heap.Push(&q.due, it)
	}
	q.mu.Unlock()
	q.signal()
	return dt, nil
}

func (q *delayQueue) recoverTopic(t *topic, _ func(time.Duration)) error {
	_, err := q.openTopic(t)
	return err
}

// addTopic prepares the delay log of a new topic, dropping any leftover of an earlier topic
// of the same name.
func (q *delayQueue) addTopic(t *topic) error {
	if err := q.b.st.Remove(delayLogName(t.name)); err != nil {
		return err
	}
	if !q.b.cfg.Memory {
		if err := os.RemoveAll(q.b.journalDir("delay", t.name)); err != nil {
			return err
		}
	}
	_, err := q.openTopic(t)
	return err
}

func (q *delayQueue) removeTopic(name string) {
	q.mu.Lock()
	dt := q.topics[name]
	delete(q.topics, name)
	if dt != nil {
		dt.removed = true
	}
	q.mu.Unlock()
	if dt == nil {
		return
	}
	dt.journal.close()
	q.b.st.Remove(delayLogName(name))
	if !q.b.cfg.Memory {
		os.RemoveAll(q.b.journalDir("delay", name))
	}
}

func (q *delayQueue) pendingFor(name string) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if dt := q.topics[name]; dt != nil {
		return int64(len(dt.pending))
	}
	return 0
}

// schedule stores delayed messages durably and queues them.
func (q *delayQueue) schedule(t *topic, ds []delayedRecord) error {
	q.mu.Lock()
	dt := q.topics[t.name]
	q.mu.Unlock()
	if dt == nil {
		return api.NotFound("topic", "topic %q not found", t.name)
	}
	recs := make([]store.Record, len(ds))
	for i, d := range ds {
		r := d.rec
		attrs := make(map[string]string, len(r.Attributes)+2)
		for k, v := range r.Attributes {
			attrs[k] = v
		}
		attrs[attrDeliverAt] = strconv.FormatInt(d.deliverAt.UnixNano(), 10)
		attrs[attrPartition] = strconv.Itoa(d.partition)
		r.Attributes = attrs
		recs[i] = r
	}
	if _, err := dt.log.Append(recs); err != nil {
		if errors.Is(err, store.ErrClosed) {
			return api.NotFound("topic", "topic %q was deleted", t.name)
		}
		return err
	}
	q.mu.Lock()
	for i := range recs {
		dt.pending[recs[i].Offset] = struct{}{}
		if recs[i].Offset >= dt.known {
			dt.known = recs[i].Offset + 1
		}
		heap.Push(&q.due, delayItem{at: ds[i].deliverAt.UnixNano(), offset: recs[i].Offset, dt: dt})
	}
	q.mu.Unlock()
	q.signal()
	return nil
}

func (q *delayQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run moves due messages until the broker stops.
func (q *delayQueue) run() {
	defer q.b.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := q.b.cfg.Now().UnixNano()
		batch := map[*delayTopic][]int64{}
		q.mu.Lock()
		for len(q.due) > 0 && q.due[0].at <= now && len(batch) < 64 {
			it := heap.Pop(&q.due).(delayItem)
			if it.dt.removed {
				continue
			}
			batch[it.dt] = append(batch[it.dt], it.offset)
		}
		wait := time.Hour
		if len(q.due) > 0 {
			wait = time.Duration(q.due[0].at - now)
		}
		q.mu.Unlock()
		for dt, offs := range batch {
			if err := q.move(dt, offs); err != nil {
				q.b.cfg.Logger.Error("move delayed messages", "topic", dt.t.name, "err", err)
				q.mu.Lock()
				retry := q.b.cfg.Now().Add(time.Second).UnixNano()
				for _, o := range offs {
					heap.Push(&q.due, delayItem{at: retry, offset: o, dt: dt})
				}
				q.mu.Unlock()
			}
		}
		if len(batch) > 0 {
			continue
		}
		if wait < time.Millisecond {
			wait = time.Millisecond
		}
		timer.Reset(wait)
		select {
		case <-q.b.stop:
			return
		case <-q.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// move appends the delayed records at offs to their partitions and journals that, in chunks
// small enough for one log batch each (a burst of due messages can exceed a segment).
func (q *delayQueue) move(dt *delayTopic, offs []int64) error {
	parts := dt.t.partitions()
	if len(parts) == 0 {
		return nil // topic deleted meanwhile
	}
	// Only what still waits: after a failed chunk, run re-queues every offset of the call.
	q.mu.Lock()
	waiting := offs[:0:0]
	for _, off := range offs {
		if _, ok := dt.pending[off]; ok {
			waiting = append(waiting, off)
		}
	}
	q.mu.Unlock()
	limit := min(q.b.cfg.SegmentBytes/2, 8<<20)
	batches := make([][]store.Record, len(parts))
	var chunk []int64
	var done []doneRange
	bytes := int64(0)
	now := q.b.cfg.Now()
	for i, off := range waiting {
		recs, err := dt.log.Read(off, 1, 0)
		if errors.Is(err, store.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(recs) == 1 && recs[0].Offset == off {
			r := recs[0]
			p, _ := strconv.Atoi(r.Attributes[attrPartition])
			if p < 0 || p >= len(parts) {
				p = 0
			}
			delete(r.Attributes, attrDeliverAt)
			delete(r.Attributes, attrPartition)
			if len(r.Attributes) == 0 {
				r.Attributes = nil
			}
			// The message enters the topic now: retention and TTL count from here.
			r.Timestamp = now.UnixNano()
			batches[p] = append(batches[p], r)
			done = appendDone(done, 0, off)
			bytes += int64(len(r.Data)+len(r.Key)+len(r.ID)) + 256
		}
		chunk = append(chunk, off)
		if bytes < limit && i < len(waiting)-1 {
			continue
		}
		if err := q.moveChunk(dt, parts, batches, done, chunk); err != nil {
			return err
		}
		batches = make([][]store.Record, len(parts))
		chunk, done, bytes = nil, nil, 0
	}
	return nil
}

// moveChunk appends one chunk of moved records, journals them as moved and forgets them.
func (q *delayQueue) moveChunk(dt *delayTopic, parts []*partition, batches [][]store.Record, done []doneRange, offs []int64) error {
	if err := q.b.storeBatches(dt.t, parts, batches); err != nil {
		return err
	}
	pos, err := dt.journal.write(done)
	if err == nil {
		err = dt.journal.durable(pos)
	}
	q.mu.Lock()
	for _, off := range offs {
		delete(dt.pending, off)
	}
	compact := dt.journal.size() >= journalCompactAt
	var snap *cursorSnapshot
	if compact {
		snap = dt.snapshotLocked()
	}
	q.mu.Unlock()
	if compact {
		if cerr := dt.journal.compact(snap); cerr != nil {
			q.b.cfg.Logger.Error("compact delay journal", "topic", dt.t.name, "err", cerr)
		}
	}
	return err
}

// snapshotLocked renders which delay-log records still wait; the caller holds q.mu.
func (dt *delayTopic) snapshotLocked() *cursorSnapshot {
	snap := newSnapshot()
	sp := snap.part(0)
	sp.next = dt.known
	sp.floor = sp.next
	for off := range dt.pending {
		sp.pending[off] = struct{}{}
		if off < sp.floor {
			sp.floor = off
		}
	}
	return snap
}

func (q *delayQueue) flush() {
	q.mu.Lock()
	dts := make([]*delayTopic, 0, len(q.topics))
	for _, dt := range q.topics {
		dts = append(dts, dt)
	}
	q.mu.Unlock()
	for _, dt := range dts {
		dt.journal.flushIfDirty()
	}
}

func (q *delayQueue) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var errs []error
	for _, dt := range q.topics {
		if dt.journal != nil {
			errs = append(errs, dt.journal.compact(dt.snapshotLocked()))
		}
		errs = append(errs, dt.journal.close())
	}
	return errors.Join(errs...)
}

// dropMoved removes delay-log segments whose every record was moved to its topic, so the log
// holds only what still waits. It runs with retention (about once a minute).
func (q *delayQueue) dropMoved() {
	q.mu.Lock()
	type cut struct {
		dt    *delayTopic
		floor int64
	}
	var cuts []cut
	for _, dt := range q.topics {
		floor := dt.known
		for off := range dt.pending {
			floor = min(floor, off)
		}
		if floor > dt.log.StartOffset() {
			cuts = append(cuts, cut{dt, floor})
		}
	}
	q.mu.Unlock()
	for _, c := range cuts {
		if _, err := c.dt.log.DropBefore(c.floor); err != nil && !errors.Is(err, store.ErrClosed) {
			q.b.cfg.Logger.Error("drop moved delayed messages", "topic", c.dt.t.name, "err", err)
		}
	}
}
