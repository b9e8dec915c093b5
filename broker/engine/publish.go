package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Limits on message metadata: generous, but bounded so one message cannot balloon the index
// or a push request's headers.
const (
	maxKeyBytes        = 4096
	maxTagBytes        = 256
	maxAttributes      = 64
	maxAttrKeyBytes    = 256
	maxAttrValueBytes  = 4096
	maxDelay           = 366 * 24 * time.Hour
	maxMessagesPerCall = 10000
)

// Publish appends msgs to the topic. It returns once every message is durable under the fsync
// policy (or scheduled durably, for delayed ones), with one result per message in order.
// Messages with the same key (or, without a key, the same ordering key) always go to the same
// partition; the rest of one call go together to the next partition in turn.
func (b *Broker) Publish(topicName string, msgs []api.PublishMessage) ([]api.PublishResult, error) {
	if len(msgs) == 0 {
		return nil, api.Invalid("messages", "messages must not be empty")
	}
	if len(msgs) > maxMessagesPerCall {
		return nil, api.Invalid("messages", "at most %d messages per request, got %d", maxMessagesPerCall, len(msgs))
	}
	t, err := b.topic(topicName)
	if err != nil {
		return nil, err
	}
	t.mu.RLock()
	spec, parts := t.meta.Spec, t.parts
	t.mu.RUnlock()
	if len(parts) == 0 {
		return nil, api.NotFound("topic", "topic %q not found", topicName)
	}
	now := b.cfg.Now()
	results := make([]api.PublishResult, len(msgs))
	batches := make([][]store.Record, len(parts))
	slots := make([][]int, len(parts)) // result index of each record in batches
	var delayed []delayedRecord
	var ids strings.Builder // one allocation for every id of the call
	ids.Grow(len(msgs) * idLen)
	sticky := -1
	for i := range msgs {
		m := &msgs[i]
		rec, deliverAt, e := b.buildRecord(m, i, spec, now, &ids)
		if e != nil {
			return nil, e
		}
		p := partitionFor(rec.Key, rec.OrderingKey, len(parts))
		if p < 0 {
			if sticky < 0 {
				sticky = int(t.rr.Add(1)-1) % len(parts)
			}
			p = sticky
		}
		results[i] = api.PublishResult{ID: rec.ID, Partition: p, Offset: -1}
		if !deliverAt.IsZero() && deliverAt.After(now) {
			at := deliverAt.UTC()
			results[i].DeliverAt = &at
			delayed = append(delayed, delayedRecord{rec: rec, partition: p, deliverAt: deliverAt})
			continue
		}
		if batches[p] == nil && (p == sticky || len(parts) == 1) {
			// Every unkeyed message of the call goes here: room for all that are left.
			batches[p] = make([]store.Record, 0, len(msgs)-i)
			slots[p] = make([]int, 0, len(msgs)-i)
		}
		batches[p] = append(batches[p], rec)
		slots[p] = append(slots[p], i)
	}
	if len(delayed) > 0 {
		if err := b.scheduleDelayed(t, len(parts), delayed); err != nil {
			return nil, err
		}
	}
	if err := b.storeBatches(t, parts, batches); err != nil {
		return nil, err
	}
	for p, batch := range batches {
		for k, rec := range batch {
			results[slots[p][k]].Offset = rec.Offset
		}
	}
	return results, nil
}

// appendBatches appends one batch per partition, in parallel when there are several, so they
// share fsyncs instead of paying one after another; then wakes readers.
func (b *Broker) appendBatches(t *topic, parts []*partition, batches [][]store.Record) error {
	n := 0
	for _, batch := range batches {
		if len(batch) > 0 {
			n++
		}
	}
	appendOne := func(p int) error {
		if _, err := parts[p].log.Append(batches[p]); err != nil {
			if errors.Is(err, store.ErrClosed) {
				return api.NotFound("topic", "topic %q was deleted", t.name)
			}
			return fmt.Errorf("engine: append to %s/%d: %w", t.name, p, err)
		}
		b.afterAppend(t, parts[p], batches[p])
		return nil
	}
	if n == 1 {
		for p, batch := range batches {
			if len(batch) > 0 {
				return appendOne(p)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for p, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			errs[p] = appendOne(p)
		}(p)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// storeBatches appends locally on a single node and through the cluster layer in a cluster.
func (b *Broker) storeBatches(t *topic, parts []*partition, batches [][]store.Record) error {
	if b.cfg.Replicator != nil {
		return b.replicateBatches(t, parts, batches)
	}
	return b.appendBatches(t, parts, batches)
}

// replicateBatches hands one batch per partition to the cluster layer, in parallel.
func (b *Broker) replicateBatches(t *topic, parts []*partition, batches [][]store.Record) error {
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for p, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			errs[p] = b.cfg.Replicator.Append(t.name, p, batches[p])
		}(p)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// afterAppend tells subscriptions and long polls about new records.
func (b *Broker) afterAppend(t *topic, p *partition, recs []store.Record) {
	bytes := 0
	for i := range recs {
		bytes += len(recs[i].Data)
	}
	b.Metrics.published.WithLabelValues(t.name).Add(float64(len(recs)))
	b.Metrics.publishedBytes.WithLabelValues(t.name).Add(float64(bytes))
	for _, s := range t.subscriptions() {
		s.onPublish(p.index, recs)
	}
	p.wake()
}

// buildRecord validates one message and turns it into a record. i is its index, for errors.
// The record's id is appended to ids.
func (b *Broker) buildRecord(m *api.PublishMessage, i int, spec api.TopicSpec, now time.Time, ids *strings.Builder) (store.Record, time.Time, *api.Error) {
	field := func(f string) string { return "messages[" + strconv.Itoa(i) + "]." + f }
	// checkField is checkText naming the field only when it fails: the name costs allocations.
	checkField := func(f func() string, s string, max int) *api.Error {
		e := checkText("", s, max)
		if e != nil {
			e.Field = f()
		}
		return e
	}
	var rec store.Record
	switch {
	case m.Text != nil && m.Data != nil:
		return rec, time.Time{}, api.Invalid(field("data"), "set either data or text, not both")
	case m.Text != nil:
		rec.Data = []byte(*m.Text)
	case m.Data != nil:
		rec.Data = m.Data
	default:
		return rec, time.Time{}, api.Invalid(field("data"), "a message needs data (base64) or text")
	}
	if len(rec.Data) > spec.MaxMessageBytes {
		f := "data"
		if m.Text != nil {
			f = "text"
		}
		return rec, time.Time{}, api.TooLarge(field(f), "message is %d bytes; the topic's maxMessageBytes is %d", len(rec.Data), spec.MaxMessageBytes)
	}
	if e := checkField(func() string { return field("key") }, m.Key, maxKeyBytes); e != nil {
		return rec, time.Time{}, e
	}
	if e := checkField(func() string { return field("orderingKey") }, m.OrderingKey, maxKeyBytes); e != nil {
		return rec, time.Time{}, e
	}
	if e := checkField(func() string { return field("tag") }, m.Tag, maxTagBytes); e != nil {
		return rec, time.Time{}, e
	}
	if len(m.Attributes) > maxAttributes {
		return rec, time.Time{}, api.Invalid(field("attributes"), "at most %d attributes, got %d", maxAttributes, len(m.Attributes))
	}
	for k, v := range m.Attributes {
		if k == "" {
			return rec, time.Time{}, api.Invalid(field("attributes"), "attribute names must not be empty")
		}
		attr := func() string { return field("attributes." + k) }
		if e := checkField(attr, k, maxAttrKeyBytes); e != nil {
			return rec, time.Time{}, e
		}
		if e := checkField(attr, v, maxAttrValueBytes); e != nil {
			return rec, time.Time{}, e
		}
	}
	var deliverAt time.Time
	switch {
	case m.Delay != nil && m.DeliverAt != nil:
		return rec, time.Time{}, api.Invalid(field("delay"), "set either delay or deliverAt, not both")
	case m.Delay != nil:
		if m.Delay.D() > maxDelay {
			return rec, time.Time{}, api.Invalid(field("delay"), "delay must be at most %s", api.Duration(maxDelay))
		}
		if m.Delay.D() > 0 {
			deliverAt = now.Add(m.Delay.D())
		}
	case m.DeliverAt != nil:
		if m.DeliverAt.Sub(now) > maxDelay {
			return rec, time.Time{}, api.Invalid(field("deliverAt"), "deliverAt must be at most %s ahead", api.Duration(maxDelay))
		}
		deliverAt = *m.DeliverAt
	}
	rec.ID = b.newID(ids)
	rec.Key, rec.OrderingKey, rec.Tag = m.Key, m.OrderingKey, m.Tag
	if len(m.Attributes) > 0 {
		rec.Attributes = m.Attributes
	}
	rec.Timestamp = now.UnixNano()
	return rec, deliverAt, nil
}

// checkText rejects invalid UTF-8, control characters (they would break push headers) and
// values over max bytes.
func checkText(field, s string, max int) *api.Error {
	if len(s) > max {
		return api.Invalid(field, "must be at most %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return api.Invalid(field, "must be valid UTF-8")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return api.Invalid(field, "must not contain control characters")
	}
	return nil
}

// partitionFor hashes the key (else the ordering key) to a partition; -1 when both are empty.
func partitionFor(key, orderingKey string, n int) int {
	k := key
	if k == "" {
		k = orderingKey
	}
	if k == "" {
		return -1
	}
	// FNV-1a, 32 bits (hash/fnv's New32a), without its allocations.
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// idLen is the length of a message id (below 1<<48 messages per process start).
const idLen = 25

// newID returns a message id unique across restarts: 12 hex digits chosen at random when the
// process starts, then a 12-digit hex sequence. It is appended to ids and returned as a part of
// it, so that the ids of one publish share an allocation (a strings.Builder never changes bytes
// it has handed out).
func (b *Broker) newID(ids *strings.Builder) string {
	var buf [32]byte
	out := strconv.AppendUint(buf[:0], b.idBase|1<<48, 16)[1:] // 12 digits, leading 1 dropped
	out = append(out, '-')
	seq := b.idSeq.Add(1)
	var hex [24]byte
	out = append(out, strconv.AppendUint(hex[:0], seq|1<<48, 16)[1:]...)
	start := ids.Len()
	ids.Write(out)
	return ids.String()[start:]
}
