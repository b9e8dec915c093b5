package engine

import (
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// topic is a named set of partition logs plus its delay queue.
type topic struct {
	name string

	mu    sync.RWMutex // guards meta and parts
	meta  topicMeta
	parts []*partition

	rr   atomic.Uint64                   // round-robin for messages without a key
	subs atomic.Pointer[[]*subscription] // subscriptions reading this topic (copy on write)
}

// partition is one log and the channel that wakes long polls when it grows.
type partition struct {
	index int
	log   store.Log

	// Replication (see replication.go). On a single node hw is -1 (every appended record is
	// readable) and leader is true. In a cluster, readers see only offsets below hw (committed
	// on the in-sync replicas), and only the partition's leader delivers.
	hw     atomic.Int64
	leader atomic.Bool
	epoch  atomic.Uint64 // leader epoch while leader; part of receipt handles

	nmu    sync.Mutex
	notify chan struct{} // closed and replaced after every append
}

func newPartition(i int, l store.Log, replicated bool) *partition {
	p := &partition{index: i, log: l, notify: make(chan struct{})}
	if replicated {
		p.hw.Store(0)
	} else {
		p.hw.Store(-1)
		p.leader.Store(true)
	}
	return p
}

// readEnd is the end of what readers may see: the log end, or the high watermark when replicated.
func (p *partition) readEnd() int64 {
	end := p.log.EndOffset()
	if hw := p.hw.Load(); hw >= 0 && hw < end {
		return hw
	}
	return end
}

// read is log.Read limited to readEnd.
func (p *partition) read(from int64, max, maxBytes int) ([]store.Record, error) {
	end := p.readEnd()
	if from >= end {
		if from < p.log.StartOffset() {
			return nil, store.ErrOutOfRange
		}
		return nil, nil
	}
	if n := end - from; int64(max) > n {
		max = int(n)
	}
	recs, err := p.log.Read(from, max, maxBytes)
	for len(recs) > 0 && recs[len(recs)-1].Offset >= end {
		recs = recs[:len(recs)-1]
	}
	return recs, err
}

// changed returns a channel closed at the next append.
func (p *partition) changed() <-chan struct{} {
	p.nmu.Lock()
	defer p.nmu.Unlock()
	return p.notify
}

func (p *partition) wake() {
	p.nmu.Lock()
	close(p.notify)
	p.notify = make(chan struct{})
	p.nmu.Unlock()
}

func partitionLogName(t string, p int) string { return "topics/" + t + "/" + strconv.Itoa(p) }

func (t *topic) spec() api.TopicSpec {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.meta.Spec
}

func (t *topic) partitions() []*partition {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.parts
}

func (t *topic) subscriptions() []*subscription {
	if p := t.subs.Load(); p != nil {
		return *p
	}
	return nil
}

// NormalizeTopicSpec fills a topic spec's defaults and validates it, as PutTopic would.
func (b *Broker) NormalizeTopicSpec(s api.TopicSpec) (api.TopicSpec, error) {
	out, e := b.normalizeTopicSpec(s)
	if e != nil {
		return out, e
	}
	return out, nil
}

// normalizeTopicSpec fills defaults and validates; it never mutates the broker.
func (b *Broker) normalizeTopicSpec(s api.TopicSpec) (api.TopicSpec, *api.Error) {
	if s.Partitions == 0 {
		s.Partitions = 1
	}
	if s.Partitions < 0 || s.Partitions > 4096 {
		return s, api.Invalid("partitions", "partitions must be between 1 and 4096, got %d", s.Partitions)
	}
	if s.ReplicationFactor < 0 {
		return s, api.Invalid("replicationFactor", "replicationFactor must be at least 1, got %d", s.ReplicationFactor)
	}
	if b.cfg.Replicator == nil {
		// The cluster layer checks it against its brokers before the engine sees it.
		if s.ReplicationFactor > 1 {
			return s, api.Invalid("replicationFactor", "replicationFactor %d needs a cluster of at least %d brokers; this broker runs alone", s.ReplicationFactor, s.ReplicationFactor)
		}
		s.ReplicationFactor = 1
	}
	if s.Retention == nil {
		s.Retention = &api.Retention{MaxAge: api.Duration(b.cfg.DefaultRetentionMaxAge), MaxBytes: b.cfg.DefaultRetentionMaxBytes}
	}
	if s.Retention.MaxBytes < 0 {
		return s, api.Invalid("retention.maxBytes", "retention.maxBytes must not be negative")
	}
	if s.MaxMessageBytes == 0 {
		s.MaxMessageBytes = b.cfg.DefaultMaxMessageBytes
	}
	if s.MaxMessageBytes < 0 || s.MaxMessageBytes > 64<<20 {
		return s, api.Invalid("maxMessageBytes", "maxMessageBytes must be between 1 and %d", 64<<20)
	}
	return s, nil
}

// PutTopic creates the topic or updates it; created reports which. Idempotent.
func (b *Broker) PutTopic(name string, spec api.TopicSpec) (api.Topic, bool, error) {
	return b.putTopic(name, spec, nil)
}

func (b *Broker) putTopic(name string, spec api.TopicSpec, id *TopicIdentity) (api.Topic, bool, error) {
	if e := validName("name", name); e != nil {
		return api.Topic{}, false, e
	}
	spec, e := b.normalizeTopicSpec(spec)
	if e != nil {
		return api.Topic{}, false, e
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(); err != nil {
		return api.Topic{}, false, err
	}
	if t, ok := b.topics[name]; ok {
		return b.updateTopicLocked(t, spec)
	}
	parts, err := b.openPartitions(name, 0, spec.Partitions)
	if err != nil {
		return api.Topic{}, false, err
	}
	b.incarnation++
	tm := topicMeta{Name: name, Spec: spec, CreateTime: b.cfg.Now().UTC().Truncate(time.Second), Incarnation: b.incarnation}
	if id != nil {
		tm.Incarnation, tm.CreateTime = id.Incarnation, id.CreateTime
		b.incarnation = max(b.incarnation, id.Incarnation)
	}
	t := &topic{name: name, parts: parts, meta: tm}
	b.topics[name] = t
	if err := b.saveMetaLocked(); err != nil {
		delete(b.topics, name)
		return api.Topic{}, false, err
	}
	if err := b.delays.addTopic(t); err != nil {
		delete(b.topics, name)
		return api.Topic{}, false, err
	}
	attached, err := b.attachSubscriptionsLocked(t)
	if err != nil {
		return api.Topic{}, false, err
	}
	if attached {
		// The re-attached subscriptions' topic incarnation changed.
		if err := b.saveMetaLocked(); err != nil {
			return api.Topic{}, false, err
		}
	}
	return b.topicView(t, false), true, nil
}

// updateTopicLocked applies a new spec to an existing topic; the caller holds b.mu.
func (b *Broker) updateTopicLocked(t *topic, spec api.TopicSpec) (api.Topic, bool, error) {
	t.mu.Lock()
	if spec.Partitions < len(t.parts) {
		n := len(t.parts)
		t.mu.Unlock()
		return api.Topic{}, false, api.Precondition("partitions", "topic %q has %d partitions; partitions can grow but never shrink", t.name, n)
	}
	old := t.meta.Spec
	if spec.ReplicationFactor != old.ReplicationFactor && old.ReplicationFactor != 0 {
		t.mu.Unlock()
		return api.Topic{}, false, api.Precondition("replicationFactor", "topic %q has replicationFactor %d; it cannot change", t.name, old.ReplicationFactor)
	}
	if reflect.DeepEqual(old, spec) {
		// An idempotent re-PUT (the operator's resync): nothing to write.
		view := b.topicView(t, false)
		t.mu.Unlock()
		return view, false, nil
	}
	added, err := b.openPartitions(t.name, len(t.parts), spec.Partitions)
	if err != nil {
		t.mu.Unlock()
		return api.Topic{}, false, err
	}
	t.meta.Spec = spec
	if err := b.saveMetaLocked(); err != nil {
		t.meta.Spec = old
		t.mu.Unlock()
		return api.Topic{}, false, err
	}
	t.parts = append(append([]*partition(nil), t.parts...), added...)
	view := b.topicView(t, false)
	t.mu.Unlock()
	// Outside t.mu: a subscription's lock is taken before its topic's elsewhere (pull), never after.
	for _, s := range t.subscriptions() {
		s.addPartitions(added)
	}
	return view, false, nil
}

func (b *Broker) openPartitions(name string, from, to int) ([]*partition, error) {
	var out []*partition
	for i := from; i < to; i++ {
		l, err := b.st.Open(partitionLogName(name, i))
		if err != nil {
			return nil, fmt.Errorf("engine: open partition %d of %q: %w", i, name, err)
		}
		out = append(out, newPartition(i, l, b.cfg.Replicator != nil))
	}
	return out, nil
}

// GetTopic returns the topic with its stats.
func (b *Broker) GetTopic(name string) (api.Topic, error) {
	t, err := b.topic(name)
	if err != nil {
		return api.Topic{}, err
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return b.topicView(t, true), nil
}

// ListTopics returns every topic with stats, sorted by name.
func (b *Broker) ListTopics() []api.Topic {
	b.mu.RLock()
	ts := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, t)
	}
	b.mu.RUnlock()
	sortByName(ts, func(t *topic) string { return t.name })
	out := make([]api.Topic, 0, len(ts))
	for _, t := range ts {
		t.mu.RLock()
		out = append(out, b.topicView(t, true))
		t.mu.RUnlock()
	}
	return out
}

// topicView renders t; the caller holds t.mu (read or write).
func (b *Broker) topicView(t *topic, withStats bool) api.Topic {
	v := api.Topic{Name: t.name, TopicSpec: t.meta.Spec, CreateTime: t.meta.CreateTime}
	r := *v.Retention
	v.Retention = &r
	if withStats {
		st := &api.TopicStats{Partitions: make([]api.PartitionStats, 0, len(t.parts))}
		for _, p := range t.parts {
			ps := api.PartitionStats{Partition: p.index, StartOffset: p.log.StartOffset(), EndOffset: p.readEnd(), Bytes: p.log.Size()}
			st.Messages += ps.EndOffset - ps.StartOffset
			st.Bytes += ps.Bytes
			st.Partitions = append(st.Partitions, ps)
		}
		st.Delayed = b.delays.pendingFor(t.name)
		if dr, ok := b.cfg.Replicator.(DelayReplicator); ok {
			st.Delayed += dr.DelayedCount(t.name)
		}
		v.Stats = st
	}
	return v
}

// DeleteTopic removes the topic and its data. Subscriptions on it stay, detached: they deliver
// nothing until a topic of that name exists again, and then start from its beginning.
func (b *Broker) DeleteTopic(name string) error {
	if e := validName("name", name); e != nil {
		return e
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.checkOpen(); err != nil {
		return err
	}
	t, ok := b.topics[name]
	if !ok {
		return api.NotFound("name", "topic %q not found", name)
	}
	delete(b.topics, name)
	if err := b.saveMetaLocked(); err != nil {
		b.topics[name] = t
		return err
	}
	for _, s := range t.subscriptions() {
		s.detach()
	}
	b.delays.removeTopic(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	var firstErr error
	for _, p := range t.parts {
		if err := b.st.Remove(partitionLogName(name, p.index)); err != nil && firstErr == nil {
			firstErr = err
		}
		p.wake()
	}
	t.parts = nil
	return firstErr
}

func (b *Broker) topic(name string) (*topic, error) {
	if e := validName("topic", name); e != nil {
		return nil, e
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.checkOpen(); err != nil {
		return nil, err
	}
	t, ok := b.topics[name]
	if !ok {
		return nil, api.NotFound("topic", "topic %q not found", name)
	}
	return t, nil
}
