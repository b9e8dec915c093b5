package engine

import "time"

// Lease replication. In a cluster the leader of a partition hands the leases it grants (and
// their ends: nacks, visibility changes) to the Replicator, which appends them to the
// partition's progress log without waiting; followers keep them in memory as pending entries
// with the lease's deadline. A follower promoted to leader then honours a lease the old leader
// granted — the message is not redelivered before that lease would have expired — and keeps its
// delivery attempt count and first delivery time (retry policies and dead-lettering count
// across failovers). A lease not yet replicated when the leader died is redelivered at once
// (at-least-once), as is every lease after a replica restarts (they are not journaled).

// LeaseRange is a run of offsets [From, From+N) of one partition, each delivered Attempts
// times, the last delivery first at FirstSent, and not to be delivered again before VisibleAt
// (a lease's deadline, or a nack's redelivery time).
type LeaseRange struct {
	Partition int
	From      int64
	N         int64
	Attempts  int
	VisibleAt time.Time
	FirstSent time.Time
}

// noteLeaseLocked records that off's entry changed hands (leased, nacked, lease extended) for
// the next flushLeasesLocked; s.mu is held. Standalone brokers record nothing.
func (s *subscription) noteLeaseLocked(p int, off int64, e *entry) {
	if s.b.cfg.Replicator == nil {
		return
	}
	if n := len(s.leaseLog); n > 0 {
		l := &s.leaseLog[n-1]
		if l.Partition == p && l.From+l.N == off && l.Attempts == e.attempts && l.VisibleAt.Equal(e.visibleAt) && l.FirstSent.Equal(e.firstSent) {
			l.N++
			return
		}
	}
	s.leaseLog = append(s.leaseLog, LeaseRange{Partition: p, From: off, N: 1, Attempts: e.attempts, VisibleAt: e.visibleAt, FirstSent: e.firstSent})
}

// flushLeasesLocked hands the recorded lease changes to the Replicator (which only queues).
func (s *subscription) flushLeasesLocked() {
	if len(s.leaseLog) == 0 {
		return
	}
	if rp := s.b.cfg.Replicator; rp != nil && s.topic != nil {
		rp.Leases(s.name, s.meta.Epoch, s.topic.name, s.leaseLog)
	}
	s.leaseLog = nil
}

// ApplyLeases applies lease changes replicated from a partition's leader to this follower's
// copy of the subscription: offsets not done here become pending with the lease's deadline.
// Nothing is journaled (see above). Ranges of another epoch of the subscription are ignored.
func (b *Broker) ApplyLeases(sub string, epoch uint32, ranges []LeaseRange) error {
	s, err := b.subscription(sub)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.meta.Epoch != epoch {
		return ErrOtherEpoch
	}
	if s.topic == nil {
		return nil
	}
	for _, r := range ranges {
		c := s.cursor(r.Partition)
		if c == nil || r.N <= 0 || r.N > maxLeaseRange || c.p.leader.Load() {
			continue
		}
		for off := max(r.From, c.floor); off < r.From+r.N; off++ {
			e := c.pending[off]
			if off < c.next && e == nil {
				continue // done already
			}
			if off >= c.next {
				for o := c.next; o < off; o++ {
					c.pending[o] = &entry{} // not seen done: pending, as applyDone does
				}
				c.next, c.ahead = off+1, nil
				e = &entry{}
				c.pending[off] = e
			}
			e.attempts, e.visibleAt, e.firstSent = r.Attempts, r.VisibleAt, r.FirstSent
		}
	}
	return nil
}

// maxLeaseRange bounds one replicated range (a pull leases at most a few thousand messages):
// a corrupt or hostile record must not make a follower allocate without bound.
const maxLeaseRange = 1 << 16
