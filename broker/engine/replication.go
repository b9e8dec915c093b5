package engine

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Replication hooks. A single-node broker has no Replicator: every partition is led here and
// every appended record is readable at once. In a cluster (broker/cluster, docs/adr/0001) the
// Replicator owns placement: the engine still validates, partitions and builds records, and
// keeps every topic and subscription of the cluster, but a partition's log only grows here when
// this node leads it (AppendLeader) or follows it (AppendReplica); readers see only offsets
// below the high watermark the cluster layer sets; only the leader delivers; and the "done"
// ranges of subscriptions (acks, skips, dead letters) are handed to the Replicator so the
// followers' journals keep up (ApplyProgress).

// Replicator is the cluster layer as the engine sees it.
type Replicator interface {
	// Append stores recs in partition p of topic wherever its leader is and returns once they
	// are committed, with their offsets written back into recs.
	Append(topic string, p int, recs []store.Record) error
	// Progress replicates done ranges of a subscription for partitions this node leads. The
	// returned func waits until they are committed; callers that need not wait drop it.
	Progress(sub string, epoch uint32, topic string, ranges []DoneRange) func() error
	// Leases replicates lease changes of a subscription for partitions this node leads
	// (leases.go); it only queues, nobody waits for them.
	Leases(sub string, epoch uint32, topic string, leases []LeaseRange)
}

// DelayReplicator is an optional part of a Replicator: delayed messages are handed to it —
// stored, replicated, with their partition, and moved into it when due by its leader — instead
// of waiting in this node's delay log, which would keep them hostage to this one broker.
type DelayReplicator interface {
	// Delay stores recs, due at deliverAt[i], for partition p of topic, and returns once they
	// are durable on the partition's in-sync replicas.
	Delay(topic string, p int, recs []store.Record, deliverAt []time.Time) error
	// DelayedCount is how many delayed messages of topic wait on partitions this node leads.
	DelayedCount(topic string) int64
}

// scheduleDelayed stores delayed messages: in this node's delay log, or through the
// DelayReplicator in a cluster (one call per partition, in parallel).
func (b *Broker) scheduleDelayed(t *topic, partitions int, delayed []delayedRecord) error {
	dr, ok := b.cfg.Replicator.(DelayReplicator)
	if !ok {
		return b.delays.schedule(t, delayed)
	}
	recs := make([][]store.Record, partitions)
	ats := make([][]time.Time, partitions)
	for _, d := range delayed {
		recs[d.partition] = append(recs[d.partition], d.rec)
		ats[d.partition] = append(ats[d.partition], d.deliverAt)
	}
	var wg sync.WaitGroup
	errs := make([]error, partitions)
	for p := range recs {
		if len(recs[p]) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = dr.Delay(t.name, p, recs[p], ats[p])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// DoneRange is a run of done offsets [From, From+N) of one partition of a subscription.
type DoneRange struct {
	Partition int   `json:"p"`
	From      int64 `json:"f"`
	N         int64 `json:"n"`
}

// ErrOtherEpoch is returned by ApplyProgress for ranges of another incarnation of the
// subscription than the local one (it was deleted and re-created, here or on the leader).
var ErrOtherEpoch = errors.New("engine: progress of another epoch of the subscription")

// ErrNotLeader is returned by AppendLeader when this node does not lead the partition.
var ErrNotLeader = api.Unavailable("this broker does not lead the partition")

func (b *Broker) partition(topicName string, p int) (*topic, *partition, error) {
	t, err := b.topic(topicName)
	if err != nil {
		return nil, nil, err
	}
	parts := t.partitions()
	if p < 0 || p >= len(parts) {
		return nil, nil, api.NotFound("partition", "topic %q has no partition %d", topicName, p)
	}
	return t, parts[p], nil
}

// AppendLeader appends recs to a partition this node leads and returns the first offset. The
// records become readable when SetHighWatermark passes them.
func (b *Broker) AppendLeader(topicName string, p int, epoch uint64, recs []store.Record) (int64, error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return 0, err
	}
	if !part.leader.Load() || part.epoch.Load() != epoch {
		return 0, ErrNotLeader
	}
	base, err := part.log.Append(recs)
	if errors.Is(err, store.ErrClosed) {
		return 0, api.NotFound("topic", "topic %q was deleted", topicName)
	}
	return base, err
}

// AppendReplica appends records fetched from the partition's leader; recs[0].Offset must be
// the local log's end.
func (b *Broker) AppendReplica(topicName string, p int, recs []store.Record) error {
	if len(recs) == 0 {
		return nil
	}
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return err
	}
	if end := part.log.EndOffset(); recs[0].Offset != end {
		return fmt.Errorf("engine: replica of %s/%d ends at %d, fetched records start at %d", topicName, p, end, recs[0].Offset)
	}
	_, err = part.log.Append(recs)
	return err
}

// TruncatePartition drops a replica's records from off on (its log diverged from the leader's).
func (b *Broker) TruncatePartition(topicName string, p int, off int64) error {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return err
	}
	if off >= part.log.EndOffset() {
		return nil
	}
	if hw := part.hw.Load(); hw > off {
		part.hw.Store(off)
	}
	return part.log.Truncate(off)
}

// ResetPartition empties a replica's log and restarts it at off (its leader no longer has
// the records before off).
func (b *Broker) ResetPartition(topicName string, p int, off int64) error {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return err
	}
	if err := part.log.Reset(off); err != nil {
		return err
	}
	if part.hw.Load() >= 0 {
		part.hw.Store(off) // nothing below off exists here any more
	}
	return nil
}

// ReadPartition reads a partition's log regardless of the high watermark (for followers).
func (b *Broker) ReadPartition(topicName string, p int, from int64, max, maxBytes int) ([]store.Record, error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return nil, err
	}
	return part.log.Read(from, max, maxBytes)
}

// ReadPartitionWritten reads a partition's log up to what is written, fsynced or not: a leader
// serves followers from it, so its own fsync and theirs overlap.
func (b *Broker) ReadPartitionWritten(topicName string, p int, from int64, max, maxBytes int) ([]store.Record, error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return nil, err
	}
	return part.log.ReadWritten(from, max, maxBytes)
}

// PartitionWrittenEnd is the end of what is written to a partition's log, fsynced or not.
func (b *Broker) PartitionWrittenEnd(topicName string, p int) (int64, error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return 0, err
	}
	return part.log.WrittenEnd(), nil
}

// LogWriteObserver is an optional part of a Replicator: LogWritten is called after every
// write to a log, before its fsync (a leader wakes its followers' fetches).
type LogWriteObserver interface {
	LogWritten()
}

// PartitionOffsets returns a partition's log start and end and its high watermark.
func (b *Broker) PartitionOffsets(topicName string, p int) (start, end, hw int64, err error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return 0, 0, 0, err
	}
	return part.log.StartOffset(), part.log.EndOffset(), part.readEnd(), nil
}

// PartitionChanged returns a channel closed at the partition's next local append or commit.
func (b *Broker) PartitionChanged(topicName string, p int) (<-chan struct{}, error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return nil, err
	}
	return part.changed(), nil
}

// SetHighWatermark makes the partition's records below hw readable (never moves backwards)
// and tells subscriptions about the newly committed ones.
func (b *Broker) SetHighWatermark(topicName string, p int, hw int64) error {
	t, part, err := b.partition(topicName, p)
	if err != nil {
		return err
	}
	if end := part.log.EndOffset(); hw > end {
		hw = end
	}
	for {
		old := part.hw.Load()
		if hw <= old {
			return nil
		}
		if part.hw.CompareAndSwap(old, hw) {
			b.afterCommit(t, part, old, hw)
			return nil
		}
	}
}

// afterCommit is afterAppend for records that became committed.
func (b *Broker) afterCommit(t *topic, p *partition, from, to int64) {
	subs := t.subscriptions()
	if !p.leader.Load() {
		p.wake()
		return
	}
	b.Metrics.published.WithLabelValues(t.name).Add(float64(to - from))
	filtered := false
	for _, s := range subs {
		if s.filter != nil {
			filtered = true
		}
	}
	if !filtered {
		for _, s := range subs {
			s.mu.Lock()
			s.wakeLocked()
			s.mu.Unlock()
		}
		p.wake()
		return
	}
	for off := from; off < to; {
		recs, err := p.log.Read(off, int(min(to-off, 1000)), 4<<20)
		if err != nil || len(recs) == 0 {
			break
		}
		for len(recs) > 0 && recs[len(recs)-1].Offset >= to {
			recs = recs[:len(recs)-1]
		}
		if len(recs) == 0 {
			break
		}
		for _, s := range subs {
			s.onPublish(p.index, recs)
		}
		off = recs[len(recs)-1].Offset + 1
	}
	p.wake()
}

// SetPartitionRole makes this node the partition's leader for epoch, or a follower (or not a
// replica at all) when leader is false. Every subscription's in-memory state of the partition
// (read-ahead, ordering blocks) restarts: a new leader redelivers what the old one had leased
// and not seen acked (at-least-once) once the replicated lease ends (leases.go).
func (b *Broker) SetPartitionRole(topicName string, p int, leader bool, epoch uint64) error {
	t, part, err := b.partition(topicName, p)
	if err != nil {
		return err
	}
	if part.leader.Load() == leader && part.epoch.Load() == epoch {
		return nil
	}
	part.epoch.Store(epoch)
	part.leader.Store(leader)
	for _, s := range t.subscriptions() {
		s.resetPartition(p)
	}
	part.wake()
	return nil
}

// PartitionRole reports whether this node leads the partition, and in which epoch.
func (b *Broker) PartitionRole(topicName string, p int) (leader bool, epoch uint64, err error) {
	_, part, err := b.partition(topicName, p)
	if err != nil {
		return false, 0, err
	}
	return part.leader.Load(), part.epoch.Load(), nil
}

// resetPartition forgets the in-memory delivery state of partition p: pending offsets stay
// pending, deliverable when their lease (granted here or replicated from the old leader) or
// nack delay ends; read-ahead and ordering blocks are dropped.
func (s *subscription) resetPartition(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cursor(p)
	if c == nil {
		return
	}
	now := s.b.cfg.Now()
	c.ahead, c.active, c.blocked = nil, map[string]int64{}, map[string][]int64{}
	for off, e := range c.pending {
		if e.leased {
			s.flight--
		}
		s.gen++
		at := now
		if e.visibleAt.After(now) && !s.meta.Spec.Ordered {
			// Ordered subscriptions redeliver at once instead: the ordering key of a lease
			// replicated from the old leader is not known here, so a later message of that key
			// could otherwise overtake it.
			at = e.visibleAt
		}
		c.pending[off] = &entry{attempts: e.attempts, gen: s.gen, visibleAt: at, firstSent: e.firstSent}
		s.due.add(due{at: at.UnixNano(), partition: p, offset: off, gen: s.gen})
	}
	// c.next may be past the committed end a new leader knows yet: acks replicated from the
	// old leader refer to messages committed there, which this in-sync replica has and will
	// commit again; offsets not done in between are pending, so nothing is skipped.
	if s.filter != nil {
		c.matchedAhead = s.countMatching(c)
	}
	s.wakeLocked()
}

// ApplyProgress applies done ranges replicated from a partition's leader to this follower's
// copy of the subscription (journal and cursors). Ranges of another epoch of the subscription
// (deleted and re-created meanwhile) are ignored.
func (b *Broker) ApplyProgress(sub string, epoch uint32, ranges []DoneRange) error {
	s, err := b.subscription(sub)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.meta.Epoch != epoch {
		s.mu.Unlock()
		return ErrOtherEpoch
	}
	if s.topic == nil {
		s.mu.Unlock()
		return nil
	}
	done := make([]doneRange, 0, len(ranges))
	for _, r := range ranges {
		c := s.cursor(r.Partition)
		if c == nil || r.N <= 0 || c.p.leader.Load() {
			continue
		}
		done = append(done, doneRange{partition: r.Partition, from: r.From, n: r.N})
		c.applyDone(r.From, r.N)
		for off := range c.pending {
			if off < c.floor {
				delete(c.pending, off)
			}
		}
	}
	pos, err := s.journal.write(done)
	s.maybeCompactLocked()
	s.mu.Unlock()
	if err == nil {
		err = s.journal.durable(pos)
	}
	return err
}

// applyDone is cursorSnapshot.applyDone for a live follower cursor (no leases).
func (c *cursor) applyDone(from, n int64) {
	end := from + n
	if from > c.next {
		for o := c.next; o < from; o++ {
			c.pending[o] = &entry{}
		}
	}
	for o := from; o < end && o < c.next; o++ {
		delete(c.pending, o)
	}
	if end > c.next {
		c.next = end
		c.ahead = nil
	}
	c.advanceFloor()
}

// writeDone journals done ranges and, in a cluster, replicates them; s.mu is held. The wait
// for the replication (only Ack waits for it) is left in s.replWait.
func (s *subscription) writeDone(done []doneRange) (int64, error) {
	pos, err := s.journal.write(done)
	if rp := s.b.cfg.Replicator; rp != nil && len(done) > 0 && err == nil && s.topic != nil {
		rs := make([]DoneRange, len(done))
		for i, d := range done {
			rs[i] = DoneRange{Partition: d.partition, From: d.from, N: d.n}
		}
		s.replWait = rp.Progress(s.name, s.meta.Epoch, s.topic.name, rs)
	}
	return pos, err
}

// TopicIdentity pins what a cluster's metadata decided about a topic, so every node's copy is
// the same topic: a different incarnation means it was deleted and re-created meanwhile.
type TopicIdentity struct {
	Incarnation uint64
	CreateTime  time.Time
}

// PutTopicAt is PutTopic with the incarnation the cluster metadata gave the topic. A local
// topic of that name with another incarnation is deleted first.
func (b *Broker) PutTopicAt(name string, spec api.TopicSpec, id TopicIdentity) (api.Topic, bool, error) {
	b.mu.RLock()
	t := b.topics[name]
	b.mu.RUnlock()
	if t != nil {
		t.mu.RLock()
		inc := t.meta.Incarnation
		t.mu.RUnlock()
		if inc != id.Incarnation {
			if err := b.DeleteTopic(name); err != nil {
				return api.Topic{}, false, err
			}
		}
	}
	return b.putTopic(name, spec, &id)
}

// SubscriptionIdentity pins a subscription's epoch (part of receipt handles) cluster-wide.
type SubscriptionIdentity struct {
	Epoch      uint32
	CreateTime time.Time
}

// PutSubscriptionAt is PutSubscription with the epoch the cluster metadata gave it. A local
// subscription of that name with another epoch is deleted first.
func (b *Broker) PutSubscriptionAt(name string, spec api.SubscriptionSpec, id SubscriptionIdentity) (api.Subscription, bool, error) {
	b.mu.RLock()
	s := b.subs[name]
	b.mu.RUnlock()
	if s != nil && s.metaCopy().Epoch != id.Epoch {
		if err := b.DeleteSubscription(name); err != nil {
			return api.Subscription{}, false, err
		}
	}
	return b.putSubscriptionWith(name, spec, &id)
}

// TopicIncarnation returns the local topic's incarnation (0 if absent).
func (b *Broker) TopicIncarnation(name string) uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if t := b.topics[name]; t != nil {
		return t.meta.Incarnation
	}
	return 0
}

// SubscriptionEpoch returns the local subscription's epoch (0 if absent).
func (b *Broker) SubscriptionEpoch(name string) uint32 {
	b.mu.RLock()
	s := b.subs[name]
	b.mu.RUnlock()
	if s == nil {
		return 0
	}
	return s.metaCopy().Epoch
}

// LocalNames lists the topics and subscriptions this node has (the cluster layer removes the
// ones its metadata no longer has).
func (b *Broker) LocalNames() (topics, subs []string) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for n := range b.topics {
		topics = append(topics, n)
	}
	for n := range b.subs {
		subs = append(subs, n)
	}
	sort.Strings(topics)
	sort.Strings(subs)
	return topics, subs
}

// foreignLeaseFor resolves a handle that an earlier leader of its partition issued (a
// failover happened since): the lease is gone, but the consumer's ack of that message still
// counts.
func (s *subscription) foreignLeaseFor(h string) (*cursor, receipt, bool) {
	r, err := decodeReceipt(h)
	if err != nil || r.epoch != s.meta.Epoch || r.leaderEpoch == 0 {
		return nil, r, false
	}
	c := s.cursor(r.partition)
	if c == nil || !c.p.leader.Load() || r.leaderEpoch >= c.p.epoch.Load() || r.offset >= c.p.readEnd() {
		return nil, r, false
	}
	return c, r, true
}

// ackForeignLocked marks off done on a leader's cursor unless it already is; offsets skipped
// over become pending and deliverable now (as after a failover).
func (s *subscription) ackForeignLocked(c *cursor, off int64) bool {
	if off < c.floor {
		return false
	}
	if off < c.next {
		e := c.pending[off]
		if e == nil || e.leased {
			return false // done already, or leased again by this leader: its handle rules
		}
		s.finishOffsetLocked(c, off, e.key)
		return true
	}
	now := s.b.cfg.Now()
	for o := c.next; o < off; o++ {
		s.gen++
		c.pending[o] = &entry{gen: s.gen, visibleAt: now}
		s.due.add(due{at: now.UnixNano(), partition: c.p.index, offset: o, gen: s.gen})
	}
	c.next, c.ahead = off+1, nil
	if s.filter != nil {
		c.matchedAhead = s.countMatching(c)
	}
	c.advanceFloor()
	return true
}
