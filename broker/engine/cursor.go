package engine

import (
	"container/heap"
	"time"

	"github.com/heraldmq/herald/broker/store"
)

// cursor is a subscription's position in one partition. Offsets below floor are done; in
// [floor, next) the ones in pending are not done yet (leased, waiting for redelivery, or blocked
// behind an earlier message of the same ordering key) and the rest are done; offsets from next
// on were never delivered. First deliveries therefore go in offset order.
type cursor struct {
	p           *partition
	floor, next int64
	pending     map[int64]*entry
	// matchedAhead counts records in [next, end) that pass the filter (filtered subscriptions
	// only), so the backlog never counts what the subscription will skip.
	matchedAhead int64
	// Ordered delivery: the offset currently out for each ordering key, and the offsets queued
	// behind it in offset order.
	active  map[string]int64
	blocked map[string][]int64
	// ahead holds records read but not yet delivered, starting at next (see readAhead).
	ahead []store.Record
}

// entry is one pending message.
type entry struct {
	attempts  int
	leased    bool
	blocked   bool
	key       string    // ordering key, known once the message was read
	gen       uint64    // lease generation; a receipt handle must carry the current one
	visibleAt time.Time // leased: lease deadline; otherwise: when it may be redelivered
	firstSent time.Time
	// The last push failure, for the dead-letter attributes.
	lastErr    string
	lastStatus int
}

func newCursor(p *partition, start int64) *cursor {
	return &cursor{p: p, floor: start, next: start, pending: map[int64]*entry{}, active: map[string]int64{}, blocked: map[string][]int64{}}
}

// advanceFloor moves floor past offsets that are done.
func (c *cursor) advanceFloor() {
	for c.floor < c.next {
		if _, ok := c.pending[c.floor]; ok {
			return
		}
		c.floor++
	}
}

// block queues off behind the message currently out for key k.
func (c *cursor) block(k string, off int64, e *entry) {
	e.blocked = true
	q := c.blocked[k]
	i := len(q)
	for i > 0 && q[i-1] > off {
		i--
	}
	q = append(q, 0)
	copy(q[i+1:], q[i:])
	q[i] = off
	c.blocked[k] = q
}

// release ends off's turn for key k and returns the next offset queued for k, if any, which
// becomes the active one.
func (c *cursor) release(k string, off int64) (int64, bool) {
	if a, ok := c.active[k]; !ok || a != off {
		return 0, false
	}
	q := c.blocked[k]
	if len(q) == 0 {
		delete(c.active, k)
		return 0, false
	}
	nxt := q[0]
	if len(q) == 1 {
		delete(c.blocked, k)
	} else {
		c.blocked[k] = q[1:]
	}
	c.active[k] = nxt
	return nxt, true
}

// due is a heap item: a pending entry that becomes deliverable at at. Items are invalidated
// lazily: one whose gen no longer matches its entry is dropped when popped.
type due struct {
	at        int64 // Unix nanoseconds
	partition int
	offset    int64
	gen       uint64
}

type dueHeap []due

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, k int) bool {
	if h[i].at != h[k].at {
		return h[i].at < h[k].at
	}
	if h[i].offset != h[k].offset {
		return h[i].offset < h[k].offset
	}
	return h[i].partition < h[k].partition
}
func (h dueHeap) Swap(i, k int) { h[i], h[k] = h[k], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (h *dueHeap) add(d due) { heap.Push(h, d) }
func (h *dueHeap) popItem() due {
	return heap.Pop(h).(due)
}
