package cluster

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// logKind names the replicated logs of a partition: its messages, the progress of its
// subscriptions (done ranges and leases, see docs/adr/0001), and its delayed messages
// (delays.go).
type logKind uint8

const (
	kindData     logKind = 0
	kindProgress logKind = 1
	kindDelay    logKind = 2
	numKinds             = 3
)

// kinds lists every replicated log kind, in fetch order.
var kinds = [numKinds]logKind{kindData, kindProgress, kindDelay}

type role uint8

const (
	roleNone role = iota
	roleFollower
	roleLeader
)

func (r role) String() string {
	return [...]string{"none", "follower", "leader"}[r]
}

type replicaKey struct {
	topic string
	part  int
}

func (k replicaKey) String() string { return k.topic + "/" + strconv.Itoa(k.part) }

// followerState is what a leader knows of one follower.
type followerState struct {
	leo       [numKinds]int64 // log ends it reported (everything below is on its disk)
	lastFetch time.Time       // its last fetch
	caughtUp  time.Time       // last time it had everything the leader had (see serveFetch)
	// The leader's log ends and the time when it last answered this follower, per log: a
	// follower that fetches from at least there has caught up to that moment (Kafka's rule;
	// comparing with the leader's end *now* would call a follower of a busy partition lagging
	// for ever).
	prevEnd  [numKinds]int64
	prevTime [numKinds]time.Time
	caught   [numKinds]time.Time
}

// unknownEnds: a follower's log ends before it first fetches.
func unknownEnds() [numKinds]int64 {
	var e [numKinds]int64
	for k := range e {
		e[k] = -1
	}
	return e
}

// replica is this node's copy of one partition: its role and, as leader, the followers'
// progress and the high watermarks.
type replica struct {
	n           *Node
	key         replicaKey
	incarnation uint64
	progress    store.Log // the subscription-progress log
	delays      store.Log // the delayed-message log (delays.go)
	epochs      [numKinds]*epochCache

	mu        sync.Mutex
	role      role
	epoch     uint64
	leaderID  string
	replicas  []string
	isr       []string
	hw        [numKinds]int64
	followers map[string]*followerState
	changed   chan struct{} // closed and replaced when hw, role or isr change
	isrAsk    time.Time     // last ISR change request (rate limit)
	// pendingISR: followers this leader asked the controller to add to the ISR, until the
	// metadata says they are in it. They count for the high watermark meanwhile: once the
	// controller has committed the addition, any of them may be elected, so nothing may be
	// committed without them (Kafka's "maximal ISR").
	pendingISR map[string]bool
	dedup      dedupIndex // leader: where recent batches went (see dedupIndex)
	delayed    delayIndex // the delayed messages not moved yet (delays.go)
}

func (n *Node) openReplica(k replicaKey, incarnation uint64) (*replica, error) {
	pl, err := n.progressStore.Open(progressLogName(k))
	if err != nil {
		return nil, err
	}
	dl, err := n.progressStore.Open(delayLogName(k))
	if err != nil {
		return nil, err
	}
	r := &replica{n: n, key: k, incarnation: incarnation, progress: pl, delays: dl, followers: map[string]*followerState{}, changed: make(chan struct{})}
	for kind := range r.epochs {
		path := ""
		if n.cfg.DataDir != "" {
			path = filepath.Join(n.cfg.DataDir, "epochs", k.topic, strconv.Itoa(k.part)+"."+strconv.Itoa(kind)+".json")
		}
		c, err := openEpochCache(path)
		if err != nil {
			return nil, err
		}
		r.epochs[kind] = c
	}
	_, _, hw, err := n.eng.PartitionOffsets(k.topic, k.part)
	if err != nil {
		return nil, err
	}
	r.hw[kindData] = hw
	r.hw[kindProgress] = pl.EndOffset() // applied to the engine when fetched
	r.hw[kindDelay] = dl.EndOffset()
	if err := r.loadDelays(); err != nil {
		return nil, err
	}
	return r, nil
}

// sideLog is the store of a log kept by the cluster layer (all but the data log, which is
// the engine's partition).
func (r *replica) sideLog(kind logKind) store.Log {
	switch kind {
	case kindProgress:
		return r.progress
	case kindDelay:
		return r.delays
	}
	return nil
}

// logEnd is the end of one of the replica's logs.
func (r *replica) logEnd(kind logKind) int64 {
	if l := r.sideLog(kind); l != nil {
		return l.EndOffset()
	}
	_, end, _, err := r.n.eng.PartitionOffsets(r.key.topic, r.key.part)
	if err != nil {
		return 0
	}
	return end
}

func (r *replica) logStart(kind logKind) int64 {
	if l := r.sideLog(kind); l != nil {
		return l.StartOffset()
	}
	start, _, _, err := r.n.eng.PartitionOffsets(r.key.topic, r.key.part)
	if err != nil {
		return 0
	}
	return start
}

// writtenEnd is the end of what is written to one of the logs, fsynced or not.
func (r *replica) writtenEnd(kind logKind) int64 {
	if l := r.sideLog(kind); l != nil {
		return l.WrittenEnd()
	}
	end, err := r.n.eng.PartitionWrittenEnd(r.key.topic, r.key.part)
	if err != nil {
		return 0
	}
	return end
}

// readWritten reads what is written, fsynced or not (to serve followers).
func (r *replica) readWritten(kind logKind, from int64, max, maxBytes int) ([]store.Record, error) {
	if l := r.sideLog(kind); l != nil {
		return l.ReadWritten(from, max, maxBytes)
	}
	return r.n.eng.ReadPartitionWritten(r.key.topic, r.key.part, from, max, maxBytes)
}

func (r *replica) read(kind logKind, from int64, max, maxBytes int) ([]store.Record, error) {
	if l := r.sideLog(kind); l != nil {
		return l.Read(from, max, maxBytes)
	}
	return r.n.eng.ReadPartition(r.key.topic, r.key.part, from, max, maxBytes)
}

func (r *replica) truncate(kind logKind, off int64) error {
	if err := r.epochs[kind].truncateTo(off); err != nil {
		return err
	}
	if l := r.sideLog(kind); l != nil {
		if off >= l.EndOffset() {
			return nil
		}
		if err := l.Truncate(off); err != nil {
			return err
		}
		if kind == kindDelay {
			return r.loadDelays()
		}
		return nil
	}
	return r.n.eng.TruncatePartition(r.key.topic, r.key.part, off)
}

// signalLocked wakes everything waiting on this replica, and fetches long-polling on the node.
func (r *replica) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
	r.n.bump()
}

// minISR is the in-sync replicas a write needs: a majority of the replicas.
func minISR(replicas int) int { return replicas/2 + 1 }

// setRole applies the metadata's view of the partition to this replica.
func (r *replica) setRole(p *PartitionState) error {
	me := r.n.cfg.NodeID
	want := roleNone
	switch {
	case p.Leader == me:
		want = roleLeader
	case slices.Contains(p.Replicas, me):
		want = roleFollower
	}
	r.mu.Lock()
	same := r.role == want && r.epoch == p.Epoch
	r.replicas, r.isr, r.leaderID = slices.Clone(p.Replicas), slices.Clone(p.ISR), p.Leader
	if same {
		if want == roleLeader {
			for id := range r.pendingISR {
				if slices.Contains(r.isr, id) || !slices.Contains(r.replicas, id) {
					delete(r.pendingISR, id) // in the ISR now, or moved away
				}
			}
			r.advanceHWLocked()
		}
		r.signalLocked()
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	if want == roleLeader {
		return r.becomeLeader(p.Epoch)
	}
	// Stop leading (if we did) before anything else: no more appends or deliveries here.
	if err := r.n.eng.SetPartitionRole(r.key.topic, r.key.part, false, p.Epoch); err != nil {
		return err
	}
	r.mu.Lock()
	r.role, r.epoch = want, p.Epoch
	r.followers = map[string]*followerState{}
	r.pendingISR = nil
	r.dedup = dedupIndex{}
	r.signalLocked()
	r.mu.Unlock()
	if want == roleNone {
		return r.dropCopy()
	}
	return nil
}

// dropCopy frees the disk of a partition this node keeps no copy of any more (its replica
// moved to another broker, or this broker was drained): every log becomes empty at offset 0.
// Nothing is lost: a replica leaves the partition's replicas only once the one replacing it
// is in sync. Should this node become a replica again, it fetches from the leader's start.
func (r *replica) dropCopy() error {
	empty := true
	for _, k := range kinds {
		if r.logEnd(k) > 0 || r.logStart(k) > 0 {
			empty = false
		}
	}
	if empty {
		return nil
	}
	r.n.log.Info("dropping the copy of a partition kept elsewhere now", "partition", r.key.String(), "end", r.logEnd(kindData))
	for _, k := range kinds {
		if err := r.epochs[k].truncateTo(0); err != nil {
			return err
		}
	}
	if err := r.n.eng.ResetPartition(r.key.topic, r.key.part, 0); err != nil {
		return err
	}
	for _, l := range []store.Log{r.progress, r.delays} {
		if err := l.Reset(0); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for k := range r.hw {
		r.hw[k] = 0
	}
	r.mu.Unlock()
	return r.loadDelays()
}

// becomeLeader starts leading at epoch: the epoch is recorded at the logs' ends (so followers
// can find where they diverge), then the engine starts accepting appends and delivering.
func (r *replica) becomeLeader(epoch uint64) error {
	if err := r.n.eng.SetPartitionRole(r.key.topic, r.key.part, false, epoch); err != nil {
		return err
	}
	for kind := range r.epochs {
		if err := r.epochs[kind].assign(epoch, r.logEnd(logKind(kind))); err != nil {
			return err
		}
	}
	tail := r.tailIDs()
	r.mu.Lock()
	r.role, r.epoch = roleLeader, epoch
	r.followers = map[string]*followerState{}
	r.pendingISR = nil
	now := time.Now()
	r.dedup = dedupIndex{tail: tail, tailUntil: now.Add(2 * r.n.cfg.CommitTimeout)}
	for _, id := range r.isr {
		if id != r.n.cfg.NodeID {
			// Unknown until it fetches; a grace period before the ISR check may drop it.
			r.followers[id] = &followerState{leo: unknownEnds(), caughtUp: now, lastFetch: now}
		}
	}
	r.advanceHWLocked()
	r.signalLocked()
	r.mu.Unlock()
	if err := r.n.eng.SetPartitionRole(r.key.topic, r.key.part, true, epoch); err != nil {
		return err
	}
	r.n.log.Info("leading partition", "partition", r.key.String(), "epoch", epoch)
	return nil
}

// advanceHWLocked recomputes the leader's high watermarks: the smallest log end among the
// in-sync replicas. It never moves back.
func (r *replica) advanceHWLocked() {
	if r.role != roleLeader {
		return
	}
	for kind := range r.hw {
		hw := r.logEnd(logKind(kind))
		for _, id := range r.isr {
			if id == r.n.cfg.NodeID {
				continue
			}
			f := r.followers[id]
			if f == nil || f.leo[kind] < 0 {
				hw = -1
				break
			}
			hw = min(hw, f.leo[kind])
		}
		for id := range r.pendingISR {
			if f := r.followers[id]; f != nil && !slices.Contains(r.isr, id) && slices.Contains(r.replicas, id) {
				hw = min(hw, f.leo[kind])
			}
		}
		if hw > r.hw[kind] {
			r.hw[kind] = hw
			if logKind(kind) == kindData {
				if err := r.n.eng.SetHighWatermark(r.key.topic, r.key.part, hw); err != nil {
					r.n.log.Warn("set high watermark", "partition", r.key.String(), "err", err)
				}
			}
			r.signalLocked()
		}
	}
}

// appendLeader appends records as the partition's leader and waits until they are committed.
func (r *replica) appendLeader(kind logKind, recs []store.Record) (int64, error) {
	r.mu.Lock()
	if r.role != roleLeader {
		r.mu.Unlock()
		return 0, errNotLeader
	}
	epoch := r.epoch
	if isr, reps := len(r.isr), len(r.replicas); isr < minISR(reps) {
		r.mu.Unlock()
		return 0, api.Unavailable("%s", fmt.Sprintf("partition %s has %d in-sync replicas of %d; a write needs %d", r.key, isr, reps, minISR(reps)))
	}
	r.mu.Unlock()
	if kind == kindData {
		if base, ok := r.stored(recs); ok {
			// A batch sent again by a broker that lost the answer: it is here already.
			r.n.log.Info("batch sent again is stored already", "partition", r.key.String(), "base", base, "records", len(recs))
			return base, r.waitCommitted(kind, base+int64(len(recs)), epoch)
		}
	}
	var base int64
	var err error
	if l := r.sideLog(kind); l != nil {
		base, err = l.Append(recs)
		if err == nil && kind == kindDelay {
			r.applyDelayRecords(base, recs)
		}
	} else {
		base, err = r.n.eng.AppendLeader(r.key.topic, r.key.part, epoch, recs)
	}
	if err != nil {
		return 0, err
	}
	end := base + int64(len(recs))
	r.mu.Lock()
	if kind == kindData && len(recs) > 0 && r.epoch == epoch {
		r.dedup.add(recs[0].ID, base)
	}
	r.advanceHWLocked()
	r.n.bump()
	r.mu.Unlock()
	return base, r.waitCommitted(kind, end, epoch)
}

// waitCommitted waits until the high watermark reaches end, while this node leads at epoch.
func (r *replica) waitCommitted(kind logKind, end int64, epoch uint64) error {
	timeout := time.NewTimer(r.n.cfg.CommitTimeout)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		if r.role != roleLeader || r.epoch != epoch {
			r.mu.Unlock()
			return api.Unavailable("%s", fmt.Sprintf("partition %s changed leader before the write was committed; retry", r.key))
		}
		if r.hw[kind] >= end {
			r.mu.Unlock()
			return nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			return api.Unavailable("%s", fmt.Sprintf("partition %s: the in-sync replicas did not confirm the write within %s; retry", r.key, r.n.cfg.CommitTimeout))
		case <-r.n.stop:
			return api.Unavailable("broker is shutting down")
		}
	}
}

var errNotLeader = api.Unavailable("this broker does not lead the partition")

// serveFetch answers one entry of a follower's fetch. It records the follower's progress.
func (r *replica) serveFetch(follower string, x fetchEntry, maxBytes int) fetchResult {
	r.mu.Lock()
	if r.role != roleLeader || r.epoch != x.Epoch || r.incarnation != x.Incarnation {
		r.mu.Unlock()
		return fetchResult{Code: fetchNotLeader}
	}
	kind := x.Kind
	// Followers get what is written, fsynced or not: their copy and fsync overlap the
	// leader's own fsync. The high watermark still counts only the leader's fsynced end.
	end := r.writtenEnd(kind)
	start := r.logStart(kind)
	if x.Offset < start {
		r.mu.Unlock()
		return fetchResult{Code: fetchOutOfRange, LogStart: start}
	}
	if x.Offset > 0 {
		e, epochEnd := r.epochs[kind].endFor(x.LastEpoch, end)
		if e != x.LastEpoch || epochEnd < x.Offset {
			r.mu.Unlock()
			return fetchResult{Code: fetchDiverging, DivergeEpoch: e, DivergeEnd: epochEnd}
		}
	}
	f := r.followers[follower]
	if f == nil {
		f = &followerState{leo: unknownEnds()}
		r.followers[follower] = f
	}
	now := time.Now()
	f.leo[kind] = x.Offset
	f.lastFetch = now
	if x.Offset >= end {
		f.caught[kind] = now
	} else if !f.prevTime[kind].IsZero() && x.Offset >= f.prevEnd[kind] {
		f.caught[kind] = f.prevTime[kind]
	}
	f.prevEnd[kind], f.prevTime[kind] = end, now
	c := f.caught[kindData]
	for _, k := range kinds {
		if f.caught[k].Before(c) {
			c = f.caught[k]
		}
	}
	if c.After(f.caughtUp) {
		f.caughtUp = c
	}
	r.advanceHWLocked()
	hw := r.hw[kind]
	needISR := !slices.Contains(r.isr, follower)
	for _, k := range kinds {
		needISR = needISR && f.leo[k] >= r.hw[k] && f.leo[k] >= 0
	}
	if needISR {
		if r.pendingISR == nil {
			r.pendingISR = map[string]bool{}
		}
		r.pendingISR[follower] = true
	}
	r.mu.Unlock()
	if needISR {
		r.n.requestISRChange(r, follower, true)
	}
	res := fetchResult{Code: fetchOK, HW: hw, LogStart: start}
	if x.Offset < end {
		recs, err := r.readWritten(kind, x.Offset, 2000, maxBytes)
		if err == nil && len(recs) > 0 {
			res.Records = recs
			res.Epochs = r.epochs[kind].covering(x.Offset, recs[len(recs)-1].Offset+1)
		}
	}
	return res
}

// checkISR drops in-sync followers that stopped keeping up (leader only).
func (r *replica) checkISR(now time.Time) {
	r.mu.Lock()
	if r.role != roleLeader {
		r.mu.Unlock()
		return
	}
	var drop []string
	for _, id := range r.isr {
		if id == r.n.cfg.NodeID {
			continue
		}
		f := r.followers[id]
		if f == nil {
			continue
		}
		if now.Sub(f.caughtUp) > r.n.cfg.ReplicaLagTime || now.Sub(f.lastFetch) > r.n.cfg.FailureTimeout*2 {
			drop = append(drop, id)
		}
	}
	for id := range r.pendingISR {
		// An addition the controller never made (the metadata would have it by now): a follower
		// that stopped keeping up no longer holds the high watermark back.
		if f := r.followers[id]; f == nil || now.Sub(f.caughtUp) > r.n.cfg.ReplicaLagTime || now.Sub(f.lastFetch) > r.n.cfg.FailureTimeout*2 {
			delete(r.pendingISR, id)
		}
	}
	r.mu.Unlock()
	for _, id := range drop {
		r.n.requestISRChange(r, id, false)
	}
}

// applyFetched stores what the leader sent for one entry (follower side). It returns whether
// it made progress.
func (r *replica) applyFetched(x fetchEntry, res fetchResult) (bool, error) {
	kind := x.Kind
	switch res.Code {
	case fetchOK:
	case fetchDiverging:
		_, mine := r.epochs[kind].endFor(res.DivergeEpoch, r.logEnd(kind))
		to := min(res.DivergeEnd, mine, r.logEnd(kind))
		r.n.log.Info("truncating diverged replica", "partition", r.key.String(), "kind", kind, "to", to, "end", r.logEnd(kind))
		return true, r.truncate(kind, to)
	case fetchOutOfRange:
		// The leader's retention removed what this replica would fetch next: start over at
		// the leader's log start (what is gone is gone everywhere).
		r.n.log.Warn("replica fell behind the leader's log start; resetting", "partition", r.key.String(), "kind", kind, "end", x.Offset, "leaderStart", res.LogStart)
		if err := r.epochs[kind].truncateTo(0); err != nil {
			return false, err
		}
		if l := r.sideLog(kind); l != nil {
			if err := l.Reset(res.LogStart); err != nil {
				return false, err
			}
			if kind == kindDelay {
				return true, r.loadDelays()
			}
			return true, nil
		}
		return true, r.n.eng.ResetPartition(r.key.topic, r.key.part, res.LogStart)
	default:
		return false, nil
	}
	if len(res.Records) > 0 {
		if res.Records[0].Offset != r.logEnd(kind) {
			return false, nil // a truncation raced with this fetch: ask again
		}
		for _, e := range res.Epochs {
			if err := r.epochs[kind].assign(e.Epoch, max(e.Start, res.Records[0].Offset)); err != nil {
				return false, err
			}
		}
		switch kind {
		case kindProgress:
			if err := r.n.applyProgressRecords(r.key, res.Records); err != nil {
				return false, err
			}
			if _, err := r.progress.Append(res.Records); err != nil {
				return false, err
			}
		case kindDelay:
			if _, err := r.delays.Append(res.Records); err != nil {
				return false, err
			}
			r.applyDelayRecords(res.Records[0].Offset, res.Records)
		default:
			if err := r.n.eng.AppendReplica(r.key.topic, r.key.part, res.Records); err != nil {
				return false, err
			}
		}
	}
	hw := min(res.HW, r.logEnd(kind))
	r.mu.Lock()
	if hw > r.hw[kind] {
		r.hw[kind] = hw
	}
	r.mu.Unlock()
	if kind == kindData {
		if err := r.n.eng.SetHighWatermark(r.key.topic, r.key.part, hw); err != nil {
			return false, err
		}
	}
	return len(res.Records) > 0, nil
}

// fetchEntry describes what this follower has of one log.
func (r *replica) fetchEntry(kind logKind) (fetchEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.role != roleFollower || r.leaderID == "" {
		return fetchEntry{}, false
	}
	return fetchEntry{Topic: r.key.topic, Partition: r.key.part, Kind: kind, Incarnation: r.incarnation, Epoch: r.epoch,
		Offset: r.logEnd(kind), LastEpoch: r.epochs[kind].lastEpoch(), HW: r.hw[kind]}, true
}

// view is the partition as GET /v1/cluster shows it.
func (r *replica) roleView() (role, uint64, [numKinds]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role, r.epoch, r.hw
}

func (r *replica) close() error {
	return nil
}

// dedupIndex lets a leader recognize a batch it is sent again. A broker forwarding a publish
// to the partition's leader that loses the answer (the leader died, or the connection broke)
// sends the same batch — the same record ids — again, to the new leader or the same one; the
// first copy may well be stored, and even committed. Storing it twice would deliver it twice
// under one id. The leader therefore remembers where the batches it appended start (first
// record id → offset), and, for a while after it takes over, the ids of the tail of its log
// (the previous leader's last batches, which it replicated).
type dedupIndex struct {
	firsts    map[string]int64
	ring      [dedupBatches]string
	next      int
	tail      map[string]int64
	tailUntil time.Time
}

const (
	dedupBatches  = 256     // batch starts remembered per led partition
	dedupTailRecs = 4096    // records of the log tail indexed at a leader change
	dedupTailSize = 4 << 20 // and at most this many bytes of them
)

func (d *dedupIndex) add(id string, base int64) {
	if id == "" {
		return
	}
	if d.firsts == nil {
		d.firsts = make(map[string]int64, dedupBatches)
	}
	if _, ok := d.firsts[id]; ok {
		return
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.firsts, old)
	}
	d.ring[d.next] = id
	d.next = (d.next + 1) % dedupBatches
	d.firsts[id] = base
}

func (d *dedupIndex) lookup(id string, now time.Time) (int64, bool) {
	if off, ok := d.firsts[id]; ok {
		return off, true
	}
	if d.tail != nil {
		if now.After(d.tailUntil) {
			d.tail = nil
		} else if off, ok := d.tail[id]; ok {
			return off, true
		}
	}
	return 0, false
}

// tailIDs indexes the ids of the last records of the data log (newest first, within a budget).
func (r *replica) tailIDs() map[string]int64 {
	start, end := r.logStart(kindData), r.logEnd(kindData)
	out := map[string]int64{}
	size := 0
	for to := end; to > start && len(out) < dedupTailRecs && size < dedupTailSize; {
		from := max(start, to-256)
		recs, err := r.read(kindData, from, int(to-from), dedupTailSize)
		if err != nil || len(recs) == 0 {
			break
		}
		for i := range recs {
			if recs[i].Offset >= to {
				break
			}
			if recs[i].ID != "" {
				out[recs[i].ID] = recs[i].Offset
			}
			size += len(recs[i].Data) + len(recs[i].ID)
		}
		to = recs[0].Offset
		if recs[0].Offset != from {
			break // a read shorter than asked: no further back
		}
	}
	return out
}

// stored reports whether recs (a batch sent again) are in the data log already, in order,
// and where they start.
func (r *replica) stored(recs []store.Record) (int64, bool) {
	if len(recs) == 0 || recs[0].ID == "" {
		return 0, false
	}
	r.mu.Lock()
	base, ok := r.dedup.lookup(recs[0].ID, time.Now())
	r.mu.Unlock()
	if !ok {
		return 0, false
	}
	got, err := r.read(kindData, base, len(recs), 64<<20)
	if err != nil || len(got) != len(recs) || got[0].Offset != base {
		return 0, false
	}
	for i := range recs {
		if got[i].ID != recs[i].ID {
			return 0, false
		}
	}
	return base, true
}
