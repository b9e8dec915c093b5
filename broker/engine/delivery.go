package engine

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Pull limits.
const (
	defaultPullMax = 1
	maxPullMax     = 1000
	maxPullWait    = 30 * time.Second
	maxPullBytes   = 8 << 20 // stop adding messages to one pull response past this
)

// PullOptions are the knobs of one pull.
type PullOptions struct {
	Max        int
	Wait       time.Duration // long poll: wait up to this for the first message
	Visibility time.Duration // lease; 0 = the subscription's ackDeadline
}

// deadLetter is a message to move to the dead-letter topic once the subscription lock is free.
type deadLetter struct {
	rec      store.Record
	c        *cursor
	attempts int
	reason   string // why: maxAttempts, maxAge, or the push failure that was permanent
	status   int    // last HTTP status of a push, 0 if none
}

// Pull leases up to Max messages, waiting up to Wait for the first one.
func (b *Broker) Pull(ctx context.Context, name string, o PullOptions) ([]api.Message, error) {
	return b.pull(ctx, name, o, false)
}

// Lease is Pull for the push dispatcher: it works on push subscriptions only.
func (b *Broker) Lease(ctx context.Context, name string, o PullOptions) ([]api.Message, error) {
	return b.pull(ctx, name, o, true)
}

func (b *Broker) pull(ctx context.Context, name string, o PullOptions, push bool) ([]api.Message, error) {
	s, err := b.subscription(name)
	if err != nil {
		return nil, err
	}
	if o.Max == 0 {
		o.Max = defaultPullMax
	}
	if o.Max < 0 || o.Max > maxPullMax {
		return nil, api.Invalid("max", "max must be between 1 and %d", maxPullMax)
	}
	if o.Wait < 0 || o.Wait > maxPullWait {
		return nil, api.Invalid("wait", "wait must be at most %s", api.Duration(maxPullWait))
	}
	if o.Visibility < 0 || o.Visibility > maxAckDeadline {
		return nil, api.Invalid("visibility", "visibility must be at most %s", api.Duration(maxAckDeadline))
	}
	deadline := b.cfg.Now().Add(o.Wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if err := s.pullableLocked(push); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		vis := o.Visibility
		if vis == 0 {
			vis = s.meta.Spec.AckDeadline.D()
		}
		now := b.cfg.Now()
		msgs, dead, pos, err := s.collectLocked(o.Max, vis, now)
		var wake <-chan struct{}
		nextDue := time.Duration(-1)
		if len(msgs) == 0 && err == nil {
			s.waiters++
			wake = s.notify
			if len(s.due) > 0 {
				nextDue = time.Duration(s.due[0].at - now.UnixNano())
			}
		}
		s.mu.Unlock()
		s.deadLetter(dead)
		if jerr := s.journal.durable(pos); err == nil {
			err = jerr
		}
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		left := deadline.Sub(now)
		if left <= 0 {
			s.unwait()
			return []api.Message{}, nil
		}
		if nextDue >= 0 && nextDue < left {
			left = nextDue + time.Millisecond
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			s.unwait()
			return []api.Message{}, nil
		case <-b.stop:
			s.unwait()
			return nil, ErrClosed
		}
		s.unwait()
	}
}

func (s *subscription) unwait() {
	s.mu.Lock()
	s.waiters--
	s.mu.Unlock()
}

func (s *subscription) pullableLocked(push bool) error {
	if s.closed {
		return api.NotFound("subscription", "subscription %q was deleted", s.name)
	}
	if s.topic == nil {
		return api.Precondition("subscription", "the topic %q of subscription %q was deleted", s.meta.Spec.Topic, s.name)
	}
	if push && s.meta.Spec.Push == nil {
		return api.Precondition("subscription", "subscription %q does not push", s.name)
	}
	if !push && s.meta.Spec.Push != nil {
		return api.Precondition("subscription", "subscription %q pushes to %s; pull works only on subscriptions without push", s.name, s.meta.Spec.Push.Endpoint)
	}
	return nil
}

// collectLocked picks up to max deliverable messages: due redeliveries first, then new
// messages, taking partitions in turn. It returns the messages, the ones to dead-letter, and the
// journal position to wait for (skips and dead letters are journaled).
func (s *subscription) collectLocked(max int, vis time.Duration, now time.Time) ([]api.Message, []deadLetter, int64, error) {
	var out []api.Message
	var dead []deadLetter
	var done []doneRange
	bytes := 0
	full := func() bool { return len(out) >= max || bytes >= maxPullBytes }
	ttl := s.topic.spec().MessageTTL.D()
	retry := s.meta.Spec.Retry
	// Redeliveries that are due.
	for !full() {
		c, e, d, ok := s.nextDueLocked(now)
		if !ok {
			break
		}
		if d.offset >= c.p.readEnd() {
			// Not committed here yet (a new leader catching up on its high watermark).
			s.due.add(due{at: now.Add(100 * time.Millisecond).UnixNano(), partition: d.partition, offset: d.offset, gen: d.gen})
			continue
		}
		recs, err := c.p.read(d.offset, 1, 0)
		if errors.Is(err, store.ErrOutOfRange) || (err == nil && (len(recs) == 0 || recs[0].Offset != d.offset)) {
			s.dropPendingLocked(c, d.offset) // removed by retention
			c.advanceFloor()
			continue
		}
		if err != nil {
			s.due.add(d)
			return out, dead, 0, err
		}
		rec := &recs[0]
		switch {
		case !s.filter.matches(rec):
			done = s.finishLocked(c, rec, done)
			continue
		case ttl > 0 && now.Sub(time.Unix(0, rec.Timestamp)) > ttl:
			s.stats.Expired++
			done = s.finishLocked(c, rec, done)
			continue
		case exhaustedAttempts(retry, e, now):
			dead = append(dead, e.deadLetter(*rec, c, retry, now))
			done = s.finishLocked(c, rec, done)
			continue
		}
		if s.meta.Spec.Ordered {
			if k := orderKey(rec); k != "" {
				if a, ok := c.active[k]; ok && a != rec.Offset {
					c.block(k, rec.Offset, e)
					continue
				}
				c.active[k] = rec.Offset
			}
		}
		out = append(out, s.leaseLocked(c, e, rec, vis, now))
		bytes += len(rec.Data)
	}
	// New messages, in offset order per partition.
	n := len(s.cursors)
	for i := 0; i < n && !full(); i++ {
		c := s.cursors[(s.rr+i)%n]
		if !c.p.leader.Load() {
			continue // another node delivers this partition
		}
		for !full() && c.next < c.p.readEnd() {
			recs, err := c.readAhead(max - len(out))
			if errors.Is(err, store.ErrOutOfRange) {
				s.clampToLog(c)
				continue
			}
			if err != nil {
				return out, dead, 0, err
			}
			if len(recs) == 0 {
				break
			}
			for k := range recs {
				if full() {
					c.ahead = recs[k:] // the next pull starts here without reading again
					break
				}
				rec := &recs[k]
				c.next = rec.Offset + 1
				if s.filter != nil {
					if !s.filter.matches(rec) {
						done = appendDone(done, c.p.index, rec.Offset)
						continue
					}
					c.matchedAhead--
				}
				if ttl > 0 && now.Sub(time.Unix(0, rec.Timestamp)) > ttl {
					s.stats.Expired++
					done = appendDone(done, c.p.index, rec.Offset)
					continue
				}
				e := &entry{firstSent: now}
				c.pending[rec.Offset] = e
				if s.meta.Spec.Ordered {
					if key := orderKey(rec); key != "" {
						if _, busy := c.active[key]; busy {
							c.block(key, rec.Offset, e)
							continue
						}
						c.active[key] = rec.Offset
					}
				}
				out = append(out, s.leaseLocked(c, e, rec, vis, now))
				bytes += len(rec.Data)
			}
		}
		c.advanceFloor()
	}
	s.rr++
	s.flushLeasesLocked()
	pos, err := s.writeDone(done)
	s.maybeCompactLocked()
	if out == nil {
		out = []api.Message{}
	}
	return out, dead, pos, err
}

// orderKey is what ordered delivery serializes on: the ordering key, else the key.
func orderKey(r *store.Record) string {
	if r.OrderingKey != "" {
		return r.OrderingKey
	}
	return r.Key
}

func appendDone(done []doneRange, p int, off int64) []doneRange {
	if n := len(done); n > 0 && done[n-1].partition == p && done[n-1].from+done[n-1].n == off {
		done[n-1].n++
		return done
	}
	return append(done, doneRange{partition: p, from: off, n: 1})
}

// leaseLocked hands e out until now+vis and renders the message.
func (s *subscription) leaseLocked(c *cursor, e *entry, rec *store.Record, vis time.Duration, now time.Time) api.Message {
	s.gen++
	e.gen = s.gen
	e.attempts++
	e.leased = true
	e.key = orderKey(rec)
	e.visibleAt = now.Add(vis)
	if e.firstSent.IsZero() {
		e.firstSent = now
	}
	s.flight++
	s.stats.Delivered++
	s.due.add(due{at: e.visibleAt.UnixNano(), partition: c.p.index, offset: rec.Offset, gen: e.gen})
	s.noteLeaseLocked(c.p.index, rec.Offset, e)
	s.b.Metrics.delivered.WithLabelValues(s.name).Inc()
	return api.Message{
		ID:              rec.ID,
		ReceiptHandle:   receipt{epoch: s.meta.Epoch, partition: c.p.index, offset: rec.Offset, gen: e.gen, leaderEpoch: c.p.epoch.Load()}.encode(),
		Partition:       c.p.index,
		Offset:          rec.Offset,
		Data:            nonNil(rec.Data),
		Attributes:      attrsOrEmpty(rec.Attributes),
		Key:             rec.Key,
		Tag:             rec.Tag,
		OrderingKey:     rec.OrderingKey,
		PublishTime:     time.Unix(0, rec.Timestamp).UTC(),
		DeliveryAttempt: e.attempts,
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// finishLocked marks rec done (acked, skipped, expired or dead-lettered) and unblocks the next
// message of its ordering key.
func (s *subscription) finishLocked(c *cursor, rec *store.Record, done []doneRange) []doneRange {
	s.finishOffsetLocked(c, rec.Offset, orderKey(rec))
	return appendDone(done, c.p.index, rec.Offset)
}

func (s *subscription) finishOffsetLocked(c *cursor, off int64, key string) {
	s.dropPendingLocked(c, off)
	if s.meta.Spec.Ordered && key != "" {
		if nxt, ok := c.release(key, off); ok {
			if e := c.pending[nxt]; e != nil {
				e.blocked = false
				s.gen++
				e.gen = s.gen
				s.due.add(due{at: s.b.cfg.Now().UnixNano(), partition: c.p.index, offset: nxt, gen: e.gen})
				s.wakeLocked()
			}
		}
	}
	c.advanceFloor()
}

func (s *subscription) cursor(p int) *cursor {
	if p < 0 || p >= len(s.cursors) {
		return nil
	}
	return s.cursors[p]
}

// leaseFor resolves a receipt handle to its live lease.
func (s *subscription) leaseFor(h string, now time.Time) (*cursor, *entry, receipt, bool) {
	r, err := decodeReceipt(h)
	if err != nil || r.epoch != s.meta.Epoch {
		return nil, nil, r, false
	}
	c := s.cursor(r.partition)
	if c == nil {
		return nil, nil, r, false
	}
	if !c.p.leader.Load() || r.leaderEpoch != c.p.epoch.Load() {
		return nil, nil, r, false
	}
	e := c.pending[r.offset]
	if e == nil || e.gen != r.gen || !e.leased || !now.Before(e.visibleAt) {
		return nil, nil, r, false
	}
	return c, e, r, true
}

// Ack marks leased messages done. Unknown and expired handles are returned, not an error.
func (b *Broker) Ack(name string, handles []string) (api.AckResponse, error) {
	if len(handles) == 0 {
		return api.AckResponse{}, api.Invalid("receiptHandles", "receiptHandles must not be empty")
	}
	s, err := b.subscription(name)
	if err != nil {
		return api.AckResponse{}, err
	}
	resp := api.AckResponse{Invalid: []string{}}
	var done []doneRange
	s.mu.Lock()
	now := b.cfg.Now()
	for _, h := range handles {
		c, e, r, ok := s.leaseFor(h, now)
		if !ok {
			if c, r, ok := s.foreignLeaseFor(h); ok && s.ackForeignLocked(c, r.offset) {
				done = appendDone(done, c.p.index, r.offset)
				resp.Acked++
				continue
			}
			resp.Invalid = append(resp.Invalid, h)
			continue
		}
		s.finishOffsetLocked(c, r.offset, e.key)
		done = appendDone(done, c.p.index, r.offset)
		resp.Acked++
	}
	s.stats.Acked += int64(resp.Acked)
	s.replWait = nil
	pos, err := s.writeDone(done)
	repl := s.replWait
	s.maybeCompactLocked()
	s.mu.Unlock()
	b.Metrics.acked.WithLabelValues(name).Add(float64(resp.Acked))
	if err == nil {
		err = s.journal.durable(pos)
	}
	if err == nil && repl != nil {
		// In a cluster an ack counts once the in-sync replicas have it: a new leader must not
		// redeliver what a consumer was told is acked.
		err = repl()
	}
	return resp, err
}

// Nack returns leased messages for redelivery after delay.
func (b *Broker) Nack(name string, handles []string, delay time.Duration) (api.NackResponse, error) {
	if len(handles) == 0 {
		return api.NackResponse{}, api.Invalid("receiptHandles", "receiptHandles must not be empty")
	}
	if delay < 0 || delay > maxAckDeadline {
		return api.NackResponse{}, api.Invalid("delay", "delay must be at most %s", api.Duration(maxAckDeadline))
	}
	s, err := b.subscription(name)
	if err != nil {
		return api.NackResponse{}, err
	}
	resp := api.NackResponse{Invalid: []string{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.cfg.Now()
	for _, h := range handles {
		c, e, r, ok := s.leaseFor(h, now)
		if !ok {
			resp.Invalid = append(resp.Invalid, h)
			continue
		}
		at := now.Add(delay)
		if delay == 0 {
			at = now.Add(backoff(s.meta.Spec.Retry, e.attempts))
		}
		s.requeueLocked(c, e, r.offset, at)
		resp.Nacked++
	}
	s.flushLeasesLocked()
	if resp.Nacked > 0 && delay == 0 {
		s.wakeLocked()
	}
	return resp, nil
}

// requeueLocked ends e's lease and schedules its redelivery at at.
func (s *subscription) requeueLocked(c *cursor, e *entry, off int64, at time.Time) {
	if e.leased {
		e.leased = false
		s.flight--
	}
	s.gen++
	e.gen = s.gen
	e.visibleAt = at
	s.due.add(due{at: at.UnixNano(), partition: c.p.index, offset: off, gen: e.gen})
	s.noteLeaseLocked(c.p.index, off, e)
}

// ModifyVisibility moves a lease's deadline to now+vis and returns the handle to use from then
// on. vis 0 makes the message deliverable again at once (like a nack) and returns "".
func (b *Broker) ModifyVisibility(name, handle string, vis time.Duration) (string, error) {
	if handle == "" {
		return "", api.Invalid("receiptHandle", "receiptHandle is required")
	}
	if vis < 0 || vis > maxAckDeadline {
		return "", api.Invalid("visibility", "visibility must be at most %s", api.Duration(maxAckDeadline))
	}
	s, err := b.subscription(name)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := b.cfg.Now()
	c, e, r, ok := s.leaseFor(handle, now)
	if !ok {
		return "", api.Precondition("receiptHandle", "receipt handle is expired or unknown")
	}
	if vis == 0 {
		s.requeueLocked(c, e, r.offset, now)
		s.flushLeasesLocked()
		s.wakeLocked()
		return "", nil
	}
	s.gen++
	e.gen = s.gen
	e.visibleAt = now.Add(vis)
	s.due.add(due{at: e.visibleAt.UnixNano(), partition: c.p.index, offset: r.offset, gen: e.gen})
	s.noteLeaseLocked(c.p.index, r.offset, e)
	s.flushLeasesLocked()
	return receipt{epoch: s.meta.Epoch, partition: r.partition, offset: r.offset, gen: e.gen, leaderEpoch: c.p.epoch.Load()}.encode(), nil
}

// Peek returns up to max messages that a pull would deliver now, without leasing them.
func (b *Broker) Peek(name string, max int) ([]api.Message, error) {
	if max == 0 {
		max = defaultPullMax
	}
	if max < 0 || max > maxPullMax {
		return nil, api.Invalid("max", "max must be between 1 and %d", maxPullMax)
	}
	s, err := b.subscription(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.topic == nil {
		return nil, s.pullableLocked(false)
	}
	now := b.cfg.Now()
	ttl := s.topic.spec().MessageTTL.D()
	out := []api.Message{}
	visible := func(rec *store.Record) bool {
		return s.filter.matches(rec) && (ttl == 0 || now.Sub(time.Unix(0, rec.Timestamp)) <= ttl)
	}
	render := func(c *cursor, rec *store.Record, attempts int) {
		out = append(out, api.Message{ID: rec.ID, Partition: c.p.index, Offset: rec.Offset, Data: nonNil(rec.Data),
			Attributes: attrsOrEmpty(rec.Attributes), Key: rec.Key, Tag: rec.Tag, OrderingKey: rec.OrderingKey,
			PublishTime: time.Unix(0, rec.Timestamp).UTC(), DeliveryAttempt: attempts})
	}
	for _, c := range s.cursors {
		if !c.p.leader.Load() {
			continue
		}
		offs := make([]int64, 0, len(c.pending))
		for off, e := range c.pending {
			if !e.leased && !e.blocked && !now.Before(e.visibleAt) {
				offs = append(offs, off)
			}
		}
		sort.Slice(offs, func(i, k int) bool { return offs[i] < offs[k] })
		for _, off := range offs {
			if len(out) >= max {
				return out, nil
			}
			recs, err := c.p.read(off, 1, 0)
			if err == nil && len(recs) == 1 && recs[0].Offset == off && visible(&recs[0]) {
				render(c, &recs[0], c.pending[off].attempts)
			}
		}
		for off := c.next; len(out) < max && off < c.p.readEnd(); {
			recs, err := c.p.read(off, max, maxPullBytes)
			if err != nil || len(recs) == 0 {
				break
			}
			for k := range recs {
				if len(out) < max && visible(&recs[k]) {
					render(c, &recs[k], 0)
				}
			}
			off = recs[len(recs)-1].Offset + 1
		}
	}
	return out, nil
}

// onPublish counts new matching records for the backlog and wakes long polls.
func (s *subscription) onPublish(p int, recs []store.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.filter != nil {
		if c := s.cursor(p); c != nil {
			for i := range recs {
				if s.filter.matches(&recs[i]) {
					c.matchedAhead++
				}
			}
		}
	}
	s.wakeLocked()
}

// sweep expires leases whose messages ran out of attempts, so dead-lettering and the stats do
// not wait for the next pull. It runs about once a second.
func (s *subscription) sweep() {
	s.mu.Lock()
	if s.topic == nil || s.closed {
		s.mu.Unlock()
		return
	}
	now := s.b.cfg.Now()
	var dead []deadLetter
	var done []doneRange
	var keep []due
	for {
		c, e, d, ok := s.nextDueLocked(now)
		if !ok {
			break
		}
		if exhaustedAttempts(s.meta.Spec.Retry, e, now) {
			recs, err := c.p.read(d.offset, 1, 0)
			if err == nil && len(recs) == 1 && recs[0].Offset == d.offset {
				dead = append(dead, e.deadLetter(recs[0], c, s.meta.Spec.Retry, now))
				done = s.finishLocked(c, &recs[0], done)
				continue
			}
		}
		keep = append(keep, d)
	}
	for _, d := range keep {
		s.due.add(d)
	}
	if len(keep) > 0 {
		s.wakeLocked()
	}
	s.flushLeasesLocked()
	pos, err := s.writeDone(done)
	s.mu.Unlock()
	s.deadLetter(dead)
	if err == nil {
		err = s.journal.durable(pos)
	}
	if err != nil {
		s.b.cfg.Logger.Error("journal", "subscription", s.name, "err", err)
	}
}

func exhaustedAttempts(r *api.RetryPolicy, e *entry, now time.Time) bool {
	if r == nil {
		return false
	}
	return (r.MaxAttempts > 0 && e.attempts >= r.MaxAttempts) || (r.MaxAge > 0 && !e.firstSent.IsZero() && now.Sub(e.firstSent) > r.MaxAge.D())
}

// nextDueLocked pops the due heap until an item names a pending, unblocked entry that may be
// delivered now, and returns it; ok is false when nothing more is due. Stale items (an older
// lease generation) are dropped. A lease that has just expired is ended here and, under a retry
// policy, first waits out its backoff (re-queued, not returned) — one place for pull and sweep.
func (s *subscription) nextDueLocked(now time.Time) (c *cursor, e *entry, d due, ok bool) {
	retry := s.meta.Spec.Retry
	for len(s.due) > 0 && s.due[0].at <= now.UnixNano() {
		d = s.due.popItem()
		if c = s.cursor(d.partition); c == nil || !c.p.leader.Load() {
			continue // gone, or led elsewhere now (resetPartition requeues it if it comes back)
		}
		if e = c.pending[d.offset]; e == nil || e.gen != d.gen || e.blocked {
			continue
		}
		if e.leased {
			e.leased = false
			s.flight--
			if bo := backoff(retry, e.attempts); bo > 0 && !exhaustedAttempts(retry, e, now) {
				s.gen++
				e.gen = s.gen
				e.visibleAt = time.Unix(0, d.at+int64(bo))
				s.due.add(due{at: d.at + int64(bo), partition: d.partition, offset: d.offset, gen: e.gen})
				s.noteLeaseLocked(d.partition, d.offset, e)
				continue
			}
		}
		return c, e, d, true
	}
	return nil, nil, due{}, false
}

// deadLetter publishes messages that ran out of attempts to the dead-letter topic, or drops
// and counts them when there is none. Called without s.mu: the publish may fan out to other
// subscriptions, whose locks must never nest inside this one's.
func (s *subscription) deadLetter(dead []deadLetter) {
	if len(dead) == 0 {
		return
	}
	s.mu.Lock()
	dlq := s.meta.Spec.DeadLetterTopic
	topicName := s.meta.Spec.Topic
	s.mu.Unlock()
	var lastErr string
	if dlq != "" {
		msgs := make([]api.PublishMessage, len(dead))
		for i, d := range dead {
			attrs := make(map[string]string, len(d.rec.Attributes)+4)
			for k, v := range d.rec.Attributes {
				attrs[k] = v
			}
			attrs["herald.deadLetter.subscription"] = s.name
			attrs["herald.deadLetter.topic"] = topicName
			attrs["herald.deadLetter.messageId"] = d.rec.ID
			attrs["herald.deadLetter.attempts"] = strconv.Itoa(d.attempts)
			attrs["herald.deadLetter.reason"] = d.reason
			if d.status != 0 {
				attrs["herald.deadLetter.lastStatus"] = strconv.Itoa(d.status)
			}
			data := nonNil(d.rec.Data)
			msgs[i] = api.PublishMessage{Data: data, Key: d.rec.Key, Tag: d.rec.Tag, OrderingKey: d.rec.OrderingKey, Attributes: attrs}
		}
		if _, err := s.b.Publish(dlq, msgs); err != nil {
			lastErr = "dead-letter topic " + dlq + ": " + err.Error()
		}
	}
	s.mu.Lock()
	s.stats.DeadLettered += int64(len(dead))
	if lastErr != "" {
		s.stats.LastError = lastErr
	}
	s.mu.Unlock()
	s.b.Metrics.deadLettered.WithLabelValues(s.name).Add(float64(len(dead)))
}

// maybeCompactLocked folds the journal into a snapshot when it has grown large.
func (s *subscription) maybeCompactLocked() {
	if s.journal == nil || s.journal.size() < journalCompactAt || s.topic == nil {
		return
	}
	if err := s.journal.compact(s.snapshotLocked()); err != nil {
		s.b.cfg.Logger.Error("compact ack journal", "subscription", s.name, "err", err)
	}
}

// deadLetter describes why e, which ran out of attempts or age, leaves the subscription.
func (e *entry) deadLetter(rec store.Record, c *cursor, r *api.RetryPolicy, now time.Time) deadLetter {
	reason := "maxAttempts reached"
	if r != nil && r.MaxAge > 0 && !e.firstSent.IsZero() && now.Sub(e.firstSent) > r.MaxAge.D() {
		reason = "maxAge reached"
	}
	if e.lastErr != "" {
		reason += "; last error: " + e.lastErr
	}
	return deadLetter{rec: rec, c: c, attempts: e.attempts, reason: reason, status: e.lastStatus}
}

// Read-ahead: a log read costs about the same for one record as for a few hundred (the store
// reads and checks whole batches), and push dispatchers and small pulls ask for a few at a
// time. So a cursor reads up to readAheadRecords and keeps what it did not deliver for the
// next call.
const (
	readAheadRecords = 256
	readAheadBytes   = 1 << 20
)

// readAhead returns records from c.next on: the ones read ahead last time if they start there,
// else a fresh read of at least want records.
func (c *cursor) readAhead(want int) ([]store.Record, error) {
	if len(c.ahead) > 0 {
		recs := c.ahead
		c.ahead = nil
		if recs[0].Offset == c.next {
			return recs, nil
		}
	}
	return c.p.read(c.next, max(want, readAheadRecords), max(readAheadBytes, maxPullBytes/8))
}

// emptyAttrs is what a message without attributes shows: {} rather than null in JSON. Shared and
// never written to.
var emptyAttrs = map[string]string{}

func attrsOrEmpty(a map[string]string) map[string]string {
	if a == nil {
		return emptyAttrs
	}
	return a
}
