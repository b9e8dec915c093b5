package engine

import (
	"log/slog"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// The push dispatcher (broker/push) drives push subscriptions through these: it leases with
// Lease, acks with Ack, and reports failures with Retry or Reject. The engine keeps the state
// (leases, attempts, journal), so push and pull share one at-least-once machinery.

// SubscriptionObserver is told when a subscription appears, changes (spec set) or goes away
// (spec nil). It is called without broker locks held.
type SubscriptionObserver func(name string, spec *api.SubscriptionSpec)

// Observe registers fn and calls it at once for every existing subscription.
func (b *Broker) Observe(fn SubscriptionObserver) {
	b.mu.Lock()
	b.observers = append(b.observers, fn)
	subs := make([]*subscription, 0, len(b.subs))
	for _, s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		m := s.metaCopy()
		fn(m.Name, &m.Spec)
	}
}

// notifyObservers tells observers about a change; call it after releasing b.mu.
func (b *Broker) notifyObservers(name string, spec *api.SubscriptionSpec) {
	b.mu.RLock()
	obs := append([]SubscriptionObserver(nil), b.observers...)
	b.mu.RUnlock()
	for _, fn := range obs {
		fn(name, spec)
	}
}

// Retry ends a lease after a failed push: the message is redelivered after delay (the
// dispatcher computes it from the retry policy and Retry-After), unless it ran out of attempts
// or age, in which case it is dead-lettered. failure and status are recorded for the stats and
// the dead-letter attributes.
func (b *Broker) Retry(name, handle string, delay time.Duration, failure string, status int) error {
	s, err := b.subscription(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	now := b.cfg.Now()
	c, e, r, ok := s.leaseFor(handle, now)
	if !ok {
		s.mu.Unlock()
		return api.Precondition("receiptHandle", "receipt handle is expired or unknown")
	}
	s.recordFailureLocked(e, failure, status, now)
	var dead []deadLetter
	var pos int64
	if exhaustedAttempts(s.meta.Spec.Retry, e, now) {
		recs, rerr := c.p.read(r.offset, 1, 0)
		if rerr == nil && len(recs) == 1 {
			dead = append(dead, e.deadLetter(recs[0], c, s.meta.Spec.Retry, now))
			done := s.finishLocked(c, &recs[0], nil)
			pos, err = s.writeDone(done)
		} else {
			s.requeueLocked(c, e, r.offset, now.Add(delay))
		}
	} else {
		s.requeueLocked(c, e, r.offset, now.Add(delay))
	}
	// A long poll (the dispatcher's own lease) may be sleeping past the new due time.
	s.wakeLocked()
	s.mu.Unlock()
	s.deadLetter(dead)
	if err == nil {
		err = s.journal.durable(pos)
	}
	return err
}

// Reject dead-letters a leased message at once: the endpoint said the failure is permanent.
func (b *Broker) Reject(name, handle string, failure string, status int) error {
	s, err := b.subscription(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	now := b.cfg.Now()
	c, e, r, ok := s.leaseFor(handle, now)
	if !ok {
		s.mu.Unlock()
		return api.Precondition("receiptHandle", "receipt handle is expired or unknown")
	}
	s.recordFailureLocked(e, failure, status, now)
	recs, err := c.p.read(r.offset, 1, 0)
	if err != nil || len(recs) != 1 {
		s.mu.Unlock()
		return err
	}
	d := e.deadLetter(recs[0], c, s.meta.Spec.Retry, now)
	d.reason = "permanent failure: " + failure
	pos, err := s.writeDone(s.finishLocked(c, &recs[0], nil))
	s.mu.Unlock()
	s.deadLetter([]deadLetter{d})
	if err == nil {
		err = s.journal.durable(pos)
	}
	return err
}

func (s *subscription) recordFailureLocked(e *entry, failure string, status int, now time.Time) {
	e.lastErr, e.lastStatus = failure, status
	s.stats.Failed++
	s.stats.LastError = failure
	t := now.UTC()
	s.stats.LastErrorTime = &t
}

// PushSpec returns a subscription's current spec (for the dispatcher's settings).
func (b *Broker) PushSpec(name string) (api.SubscriptionSpec, error) {
	s, err := b.subscription(name)
	if err != nil {
		return api.SubscriptionSpec{}, err
	}
	return s.metaCopy().Spec, nil
}

// TopicExists reports whether a topic exists (push endpoints of the form topic:<name>).
func (b *Broker) TopicExists(name string) bool {
	_, err := b.topic(name)
	return err == nil
}

// AllowLinkLocalEndpoints reports whether push endpoints may use link-local and cloud metadata
// addresses (Config.AllowLinkLocalEndpoints); the dispatcher's dialer enforces it.
func (b *Broker) AllowLinkLocalEndpoints() bool { return b.cfg.AllowLinkLocalEndpoints }

// Logger is the broker's logger (Config.Logger).
func (b *Broker) Logger() *slog.Logger { return b.cfg.Logger }
