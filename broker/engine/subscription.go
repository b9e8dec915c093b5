package engine

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// subscription delivers a topic's messages to consumers, tracking leases and acks per partition.
type subscription struct {
	b       *Broker
	name    string
	journal *journal // nil in memory mode

	mu      sync.Mutex
	meta    subMeta
	filter  *filter
	topic   *topic // nil while detached (its topic was deleted)
	cursors []*cursor
	due     dueHeap
	gen     uint64
	rr      int
	stats   api.SubscriptionStats // counters; Backlog and InFlight are computed
	// replWait waits for the replication of the last done ranges written (cluster mode).
	replWait func() error
	// leaseLog: lease changes not yet handed to the Replicator (cluster mode, see leases.go).
	leaseLog []LeaseRange
	flight   int64
	waiters  int
	notify   chan struct{} // closed when something may have become deliverable
	closed   bool
}

func (s *subscription) metaCopy() subMeta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta
}

// PutSubscription creates the subscription or updates its settings; created reports which.
func (b *Broker) PutSubscription(name string, spec api.SubscriptionSpec) (api.Subscription, bool, error) {
	return b.putSubscriptionWith(name, spec, nil)
}

func (b *Broker) putSubscriptionWith(name string, spec api.SubscriptionSpec, id *SubscriptionIdentity) (api.Subscription, bool, error) {
	if e := validName("name", name); e != nil {
		return api.Subscription{}, false, e
	}
	spec, f, e := b.normalizeSubSpec(name, spec)
	if e != nil {
		return api.Subscription{}, false, e
	}
	v, created, changed, err := b.putSubscription(name, spec, f, id)
	if err == nil && changed {
		b.notifyObservers(name, &v.SubscriptionSpec)
	}
	return v, created, err
}

// putSubscription also reports whether anything changed (an idempotent re-PUT changes nothing
// and wakes no observer).
func (b *Broker) putSubscription(name string, spec api.SubscriptionSpec, f *filter, id *SubscriptionIdentity) (api.Subscription, bool, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(); err != nil {
		return api.Subscription{}, false, false, err
	}
	if s, ok := b.subs[name]; ok {
		return b.updateSubscriptionLocked(s, spec, f)
	}
	t, ok := b.topics[spec.Topic]
	if !ok {
		return api.Subscription{}, false, false, api.NotFound("topic", "topic %q not found", spec.Topic)
	}
	var epoch [4]byte
	if _, err := rand.Read(epoch[:]); err != nil {
		return api.Subscription{}, false, false, err
	}
	sm := subMeta{Name: name, Spec: spec, CreateTime: b.cfg.Now().UTC().Truncate(time.Second), Epoch: binary.LittleEndian.Uint32(epoch[:]), TopicIncarnation: t.meta.Incarnation}
	if id != nil {
		sm.Epoch, sm.CreateTime = id.Epoch, id.CreateTime
	}
	if !b.cfg.Memory {
		// A leftover journal of an earlier subscription of this name must not leak into this one.
		if err := os.RemoveAll(b.journalDir("subs", name)); err != nil {
			return api.Subscription{}, false, false, err
		}
	}
	s, err := b.openSubscriptionAt(sm, t, true)
	if err != nil {
		return api.Subscription{}, false, false, err
	}
	if b.cfg.Replicator != nil {
		// Tell the followers where this leader started the new subscription.
		var start []doneRange
		for _, c := range s.cursors {
			if c.p.leader.Load() && c.floor > 0 {
				start = append(start, doneRange{partition: c.p.index, from: 0, n: c.floor})
			}
		}
		s.mu.Lock()
		s.writeDone(start)
		s.mu.Unlock()
	}
	b.subs[name] = s
	if err := b.saveMetaLocked(); err != nil {
		delete(b.subs, name)
		s.close()
		return api.Subscription{}, false, false, err
	}
	t.addSubscription(s)
	return s.view(false), true, true, nil
}

func (b *Broker) updateSubscriptionLocked(s *subscription, spec api.SubscriptionSpec, f *filter) (api.Subscription, bool, bool, error) {
	s.mu.Lock()
	old := s.meta
	if spec.Topic != old.Spec.Topic {
		s.mu.Unlock()
		return api.Subscription{}, false, false, api.Precondition("topic", "a subscription's topic cannot change (it is %q); delete and re-create it", old.Spec.Topic)
	}
	if spec.StartAt != old.Spec.StartAt {
		s.mu.Unlock()
		return api.Subscription{}, false, false, api.Precondition("startAt", "startAt applies only when a subscription is created (it was %q)", old.Spec.StartAt)
	}
	if reflect.DeepEqual(old.Spec, spec) {
		// An idempotent re-PUT (the operator's resync): nothing to write.
		s.mu.Unlock()
		return s.view(false), false, false, nil
	}
	s.meta.Spec = spec
	refilter := spec.Filter != old.Spec.Filter
	s.filter = f
	s.mu.Unlock()
	if err := b.saveMetaLocked(); err != nil {
		s.mu.Lock()
		s.meta = old
		s.mu.Unlock()
		return api.Subscription{}, false, false, err
	}
	if refilter {
		s.mu.Lock()
		s.recountLocked()
		s.wakeLocked()
		s.mu.Unlock()
	}
	return s.view(false), false, true, nil
}

// openSubscription recovers a subscription from meta.json and its journal.
func (b *Broker) openSubscription(sm subMeta) (*subscription, error) {
	t := b.topics[sm.Spec.Topic]
	if t != nil && t.meta.Incarnation != sm.TopicIncarnation {
		// The topic was deleted and re-created while this broker was down: start over on it.
		if err := os.RemoveAll(b.journalDir("subs", sm.Name)); err != nil {
			return nil, err
		}
		sm.TopicIncarnation = t.meta.Incarnation
		sm.Spec.StartAt = "earliest"
		s, err := b.openSubscriptionAt(sm, t, true)
		if err == nil {
			t.addSubscription(s)
		}
		return s, err
	}
	s, err := b.openSubscriptionAt(sm, t, false)
	if err == nil && t != nil {
		t.addSubscription(s)
	}
	return s, err
}

// openSubscriptionAt opens the journal and builds the cursors. fresh: position the cursors by
// startAt and persist that; otherwise restore them from the journal.
func (b *Broker) openSubscriptionAt(sm subMeta, t *topic, fresh bool) (*subscription, error) {
	f, err := compileFilter(sm.Spec.Filter)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
	}
	s := &subscription{b: b, name: sm.Name, meta: sm, filter: f, topic: t, notify: make(chan struct{})}
	var snap *cursorSnapshot
	if !b.cfg.Memory {
		j, sn, err := openJournal(b.journalDir("subs", sm.Name), b.cfg.Sync, b.Metrics.observeFsync)
		if err != nil {
			return nil, err
		}
		s.journal, snap = j, sn
	}
	if t == nil {
		return s, nil
	}
	now := b.cfg.Now()
	rewrite := fresh // persist the cursors once built
	for _, p := range t.partitions() {
		var c *cursor
		sp := (*snapPart)(nil)
		if snap != nil && !fresh {
			sp = snap.parts[p.index]
		}
		if sp != nil {
			c = newCursor(p, sp.floor)
			c.next = sp.next
			if end := p.log.EndOffset(); c.next > end && b.cfg.Replicator == nil {
				// The log lost its tail (disk damage, or a power loss under fsync interval or
				// never) after the journal recorded acks beyond it. New messages will reuse those
				// offsets: forget what the journal says about them, durably, or they would be
				// skipped as done.
				c.next = end
				c.floor = min(c.floor, end)
				rewrite = true
			}
			for off := range sp.pending {
				if off >= c.next {
					continue
				}
				s.gen++
				c.pending[off] = &entry{attempts: 1, gen: s.gen, visibleAt: now}
				s.due.add(due{at: now.UnixNano(), partition: p.index, offset: off, gen: s.gen})
			}
		} else {
			start, err := startOffset(p.log, sm.Spec.StartAt, fresh)
			if err != nil {
				s.journal.close()
				return nil, err
			}
			if b.cfg.Replicator != nil && !p.leader.Load() {
				// A follower's log end is not the leader's: start from the beginning and let
				// the leader's progress record say where the subscription starts.
				start = p.log.StartOffset()
			}
			c = newCursor(p, start)
		}
		s.clampToLog(c)
		s.cursors = append(s.cursors, c)
	}
	s.recountLocked()
	if rewrite {
		if err := s.journal.compact(s.snapshotLocked()); err != nil {
			s.journal.close()
			return nil, err
		}
	}
	return s, nil
}

// startOffset is where a new subscription starts reading p. Partitions added after the
// subscription was created are read from their beginning (fresh == false).
func startOffset(l store.Log, startAt string, fresh bool) (int64, error) {
	if !fresh {
		return l.StartOffset(), nil
	}
	switch startAt {
	case "earliest":
		return l.StartOffset(), nil
	case "latest", "":
		return l.EndOffset(), nil
	}
	ts, err := time.Parse(time.RFC3339Nano, startAt)
	if err != nil {
		return 0, err
	}
	return l.OffsetForTime(ts.UnixNano())
}

// clampToLog moves a cursor past messages retention already removed.
func (s *subscription) clampToLog(c *cursor) {
	start := c.p.log.StartOffset()
	if c.floor >= start {
		return
	}
	for off := range c.pending {
		if off < start {
			s.dropPendingLocked(c, off)
		}
	}
	if c.next < start {
		c.next = start
	}
	c.floor = start
	c.advanceFloor()
}

func (s *subscription) dropPendingLocked(c *cursor, off int64) {
	if e := c.pending[off]; e != nil && e.leased {
		s.flight--
	}
	delete(c.pending, off)
}

// recountLocked recomputes matchedAhead for a filtered subscription by reading the unread part
// of each partition once.
func (s *subscription) recountLocked() {
	for _, c := range s.cursors {
		c.matchedAhead = 0
		if s.filter != nil {
			c.matchedAhead = s.countMatching(c)
		}
	}
}

// countMatching counts the records from c.next on that pass the filter.
func (s *subscription) countMatching(c *cursor) int64 {
	var n int64
	for off := c.next; off < c.p.readEnd(); {
		recs, err := c.p.read(off, 1000, 4<<20)
		if err != nil || len(recs) == 0 {
			break
		}
		for i := range recs {
			if s.filter.matches(&recs[i]) {
				n++
			}
		}
		off = recs[len(recs)-1].Offset + 1
	}
	return n
}

// snapshotLocked captures the cursors for the journal.
func (s *subscription) snapshotLocked() *cursorSnapshot {
	snap := newSnapshot()
	for _, c := range s.cursors {
		sp := snap.part(c.p.index)
		sp.floor, sp.next = c.floor, c.next
		for off := range c.pending {
			sp.pending[off] = struct{}{}
		}
	}
	return snap
}

func (t *topic) addSubscription(s *subscription) {
	for {
		old := t.subs.Load()
		var list []*subscription
		if old != nil {
			list = append(list, *old...)
		}
		list = append(list, s)
		if t.subs.CompareAndSwap(old, &list) {
			return
		}
	}
}

func (t *topic) removeSubscription(s *subscription) {
	for {
		old := t.subs.Load()
		if old == nil {
			return
		}
		var list []*subscription
		for _, x := range *old {
			if x != s {
				list = append(list, x)
			}
		}
		if t.subs.CompareAndSwap(old, &list) {
			return
		}
	}
}

// addPartitions gives the subscription cursors for partitions added to its topic.
func (s *subscription) addPartitions(ps []*partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topic == nil {
		return
	}
	for _, p := range ps {
		if p.index != len(s.cursors) {
			continue // already there (a racing call)
		}
		c := newCursor(p, p.log.StartOffset())
		if s.filter != nil {
			// Messages may have arrived before this cursor existed: count them.
			c.matchedAhead = s.countMatching(c)
		}
		s.cursors = append(s.cursors, c)
	}
}

// detach drops the cursors when the topic is deleted.
func (s *subscription) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topic, s.cursors, s.due, s.flight = nil, nil, nil, 0
	s.wakeLocked()
}

// GetSubscription returns the subscription with its stats.
func (b *Broker) GetSubscription(name string) (api.Subscription, error) {
	s, err := b.subscription(name)
	if err != nil {
		return api.Subscription{}, err
	}
	return s.view(true), nil
}

// ListSubscriptions returns every subscription with stats, sorted by name.
func (b *Broker) ListSubscriptions() []api.Subscription {
	subs := b.subscriptionList()
	sortByName(subs, func(s *subscription) string { return s.name })
	out := make([]api.Subscription, 0, len(subs))
	for _, s := range subs {
		out = append(out, s.view(true))
	}
	return out
}

func (s *subscription) view(withStats bool) api.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := api.Subscription{Name: s.name, SubscriptionSpec: s.meta.Spec, CreateTime: s.meta.CreateTime}
	if withStats {
		st := s.stats
		st.InFlight = s.flight
		st.Backlog = s.backlogLocked()
		v.Stats = &st
	}
	return v
}

// backlogLocked counts matching messages not yet done: pending plus unread.
func (s *subscription) backlogLocked() int64 {
	var n int64
	for _, c := range s.cursors {
		if !c.p.leader.Load() {
			continue // counted by the partition's leader
		}
		n += int64(len(c.pending))
		if s.filter != nil {
			if c.matchedAhead > 0 {
				n += c.matchedAhead
			}
			continue
		}
		if end := c.p.readEnd(); end > c.next {
			n += end - c.next
		}
	}
	return n
}

// DeleteSubscription removes the subscription and its journal.
func (b *Broker) DeleteSubscription(name string) error {
	if e := validName("name", name); e != nil {
		return e
	}
	err := b.deleteSubscription(name)
	var ae *api.Error
	if err == nil || !errors.As(err, &ae) {
		b.notifyObservers(name, nil) // gone, even if removing its journal failed
	}
	return err
}

func (b *Broker) deleteSubscription(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(); err != nil {
		return err
	}
	s, ok := b.subs[name]
	if !ok {
		return api.NotFound("name", "subscription %q not found", name)
	}
	delete(b.subs, name)
	if err := b.saveMetaLocked(); err != nil {
		b.subs[name] = s
		return err
	}
	if t := b.topics[s.meta.Spec.Topic]; t != nil {
		t.removeSubscription(s)
	}
	err := s.close()
	if !b.cfg.Memory {
		err = errors.Join(err, os.RemoveAll(b.journalDir("subs", name)))
	}
	return err
}

// attachSubscriptions starts detached subscriptions of a re-created topic from its beginning.
func (b *Broker) attachSubscriptionsLocked(t *topic) (bool, error) {
	attached := false
	for _, s := range b.subs {
		s.mu.Lock()
		match := s.topic == nil && s.meta.Spec.Topic == t.name
		s.mu.Unlock()
		if !match {
			continue
		}
		s.mu.Lock()
		s.topic = t
		s.meta.TopicIncarnation = t.meta.Incarnation
		s.cursors = nil
		for _, p := range t.parts {
			s.cursors = append(s.cursors, newCursor(p, p.log.StartOffset()))
		}
		err := s.journal.compact(s.snapshotLocked())
		s.mu.Unlock()
		if err != nil {
			return attached, err
		}
		t.addSubscription(s)
		attached = true
	}
	return attached, nil
}

func (b *Broker) subscription(name string) (*subscription, error) {
	if e := validName("subscription", name); e != nil {
		return nil, e
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	s, ok := b.subs[name]
	if !ok {
		return nil, api.NotFound("subscription", "subscription %q not found", name)
	}
	return s, nil
}

func (s *subscription) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.wakeLocked()
	var err error
	if s.journal != nil && s.topic != nil {
		err = s.journal.compact(s.snapshotLocked())
	}
	s.mu.Unlock()
	return errors.Join(err, s.journal.close())
}

// wakeLocked wakes long polls waiting on this subscription.
func (s *subscription) wakeLocked() {
	if s.waiters == 0 {
		return
	}
	close(s.notify)
	s.notify = make(chan struct{})
}
