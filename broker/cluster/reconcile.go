package cluster

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// The reconciler makes this node's engine and replicas match the metadata, level-based (like
// a Kubernetes controller): after every applied Raft entry, and every second in case a step
// failed (a disk error must not leave a node different for good).

func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	retention := time.NewTicker(time.Minute)
	defer retention.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.reconCh:
		case <-tick.C:
		case now := <-retention.C:
			n.trimProgress(now)
			continue
		}
		n.reconcile()
	}
}

// Progress logs only carry done ranges to followers, which apply them to their journals as
// they fetch them; a follower that falls further behind than this restarts at the leader's
// log start (redelivering, at worst, what it missed — never skipping).
const (
	progressMaxAge   = 24 * time.Hour
	progressMaxBytes = 64 << 20
)

func (n *Node) trimProgress(now time.Time) {
	for _, r := range n.replicaList() {
		if _, err := r.progress.EnforceRetention(now, progressMaxAge, progressMaxBytes); err != nil {
			n.log.Warn("progress log retention", "partition", r.key.String(), "err", err)
		}
		// A delay log keeps what is not moved yet; a follower that falls behind its leader's
		// start resets to it and misses only messages moved already.
		if _, err := r.delays.DropBefore(r.oldestDelayed()); err != nil {
			n.log.Warn("delay log retention", "partition", r.key.String(), "err", err)
		}
	}
}

// reconcile runs one pass now.
func (n *Node) reconcile() {
	n.recMu.Lock()
	defer n.recMu.Unlock()
	if !n.caughtUp() {
		// Right after a restart the metadata is whatever the last Raft snapshot held until the
		// log is replayed: acting on it would delete topics created since (and their data).
		return
	}
	st, _ := n.fsm.snapshotState()
	if err := n.syncEngine(st); err != nil {
		n.log.Warn("reconcile engine", "err", err)
	}
	n.syncReplicas(st)
	n.syncFetchers()
	n.clearLeaving(st)
	select {
	case <-n.ready:
	default:
		if _, ok := n.members()[n.cfg.NodeID]; ok {
			close(n.ready)
		}
	}
}

// caughtUp reports whether the metadata this node has applied is current enough to act on:
// every entry its Raft log held at start is applied, a leader exists, and the node has applied
// what that leader had committed when first asked. Once true it stays true.
func (n *Node) caughtUp() bool {
	if n.metaCurrent.Load() {
		return true
	}
	if n.raft == nil || n.fsm.appliedIndex() < n.startIndex {
		return false
	}
	if n.isLeader() {
		// A leader has applied its whole log once its first barrier returns.
		if n.raft.Barrier(5*time.Second).Error() != nil {
			return false
		}
		n.metaCurrent.Store(true)
		return true
	}
	if addr, _ := n.leaderAddr(); addr == "" {
		return false
	}
	if !n.commitAsked {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var out struct {
			Index uint64 `json:"index"`
		}
		err := n.callLeader(ctx, "commitIndex", struct{}{}, &out)
		cancel()
		if err != nil {
			return false
		}
		n.commitTarget, n.commitAsked = out.Index, true
	}
	if n.fsm.appliedIndex() < n.commitTarget {
		return false
	}
	n.metaCurrent.Store(true)
	return true
}

// syncEngine creates, updates and deletes the engine's topics and subscriptions.
func (n *Node) syncEngine(st *State) error {
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	localTopics, localSubs := n.eng.LocalNames()
	for _, name := range localSubs {
		if sub, ok := st.Subscriptions[name]; !ok || sub.Epoch != n.eng.SubscriptionEpoch(name) {
			if err := n.eng.DeleteSubscription(name); err != nil && !isNotFound(err) {
				keep(err)
			}
		}
	}
	for _, name := range localTopics {
		if t, ok := st.Topics[name]; !ok || t.Incarnation != n.eng.TopicIncarnation(name) {
			n.dropReplicas(name)
			if err := n.eng.DeleteTopic(name); err != nil && !isNotFound(err) {
				keep(err)
			}
		}
	}
	for _, t := range sortedTopics(st) {
		cur, err := n.eng.GetTopic(t.Name)
		if err == nil && cur.CreateTime.Equal(t.CreateTime) && specEqual(cur.TopicSpec, t.Spec) && n.eng.TopicIncarnation(t.Name) == t.Incarnation {
			continue
		}
		_, _, err = n.eng.PutTopicAt(t.Name, t.Spec, engine.TopicIdentity{Incarnation: t.Incarnation, CreateTime: t.CreateTime})
		keep(err)
	}
	for _, s := range st.Subscriptions {
		if n.eng.SubscriptionEpoch(s.Name) == s.Epoch {
			cur, err := n.eng.GetSubscription(s.Name)
			if err == nil && reflect.DeepEqual(cur.SubscriptionSpec, s.Spec) {
				continue
			}
		}
		_, _, err := n.eng.PutSubscriptionAt(s.Name, s.Spec, engine.SubscriptionIdentity{Epoch: s.Epoch, CreateTime: s.CreateTime})
		keep(err)
	}
	return firstErr
}

func specEqual(a, b api.TopicSpec) bool { return reflect.DeepEqual(a, b) }

func isNotFound(err error) bool {
	e, ok := err.(*api.Error)
	return ok && e.Code == api.CodeNotFound
}

func sortedTopics(st *State) []*TopicState {
	out := make([]*TopicState, 0, len(st.Topics))
	for _, id := range sortedKeys(st.Topics) {
		out = append(out, st.Topics[id])
	}
	return out
}

// syncReplicas gives every partition of every topic its role on this node.
func (n *Node) syncReplicas(st *State) {
	seen := map[replicaKey]bool{}
	fenced := n.fencedFromLeading(st)
	for _, t := range sortedTopics(st) {
		if n.eng.TopicIncarnation(t.Name) != t.Incarnation {
			continue // the engine could not create it (yet)
		}
		for i, p := range t.Partitions {
			k := replicaKey{t.Name, i}
			seen[k] = true
			n.mu.Lock()
			r := n.replicas[k]
			n.mu.Unlock()
			if r != nil && r.incarnation != t.Incarnation {
				n.dropReplica(k)
				r = nil
			}
			if r == nil {
				var err error
				r, err = n.openReplica(k, t.Incarnation)
				if err != nil {
					n.log.Warn("open replica", "partition", k.String(), "err", err)
					continue
				}
				n.mu.Lock()
				n.replicas[k] = r
				n.mu.Unlock()
			}
			if fenced && p.Leader == n.cfg.NodeID {
				// Not yet: lead nothing (clients get the usual retryable not-leader answer).
				q := *p
				q.Leader = ""
				p = &q
			}
			if err := r.setRole(p); err != nil {
				n.log.Warn("replica role", "partition", k.String(), "err", err)
			}
		}
	}
	n.mu.Lock()
	var gone []replicaKey
	for k := range n.replicas {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	n.mu.Unlock()
	for _, k := range gone {
		n.dropReplica(k)
	}
}

// fencedFromLeading reports whether this node must not act as the leader of any partition
// yet: it does not fsync every write, and the metadata does not have this process's
// incarnation. Its logs may have lost a tail the others count on (a host crash), and until the
// controller has recorded the restart (opRestarted, which moves its leaderships to other
// in-sync replicas in the same step) the metadata may still name it leader at the epoch of its
// previous process. Durable nodes lost nothing acknowledged: no fence.
func (n *Node) fencedFromLeading(st *State) bool {
	if n.durable {
		return false
	}
	m := st.Members[n.cfg.NodeID]
	return m == nil || m.Incarnation != n.incarnation
}

func (n *Node) dropReplica(k replicaKey) {
	n.mu.Lock()
	r := n.replicas[k]
	delete(n.replicas, k)
	n.mu.Unlock()
	if r == nil {
		return
	}
	r.mu.Lock()
	r.role = roleNone
	r.signalLocked()
	r.mu.Unlock()
	if err := n.progressStore.Remove(progressLogName(k)); err != nil {
		n.log.Warn("remove progress log", "partition", k.String(), "err", err)
	}
	if err := n.progressStore.Remove(delayLogName(k)); err != nil {
		n.log.Warn("remove delay log", "partition", k.String(), "err", err)
	}
	// A topic re-created under this name must not inherit the old epoch history.
	if n.cfg.DataDir != "" {
		for kind := 0; kind < numKinds; kind++ {
			p := filepath.Join(n.cfg.DataDir, "epochs", k.topic, strconv.Itoa(k.part)+"."+strconv.Itoa(kind)+".json")
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				n.log.Warn("remove epoch cache", "partition", k.String(), "err", err)
			}
		}
	}
}

// dropReplicas drops every replica of a topic.
func (n *Node) dropReplicas(topic string) {
	n.mu.Lock()
	var ks []replicaKey
	for k := range n.replicas {
		if k.topic == topic {
			ks = append(ks, k)
		}
	}
	n.mu.Unlock()
	for _, k := range ks {
		n.dropReplica(k)
	}
}

// replica returns this node's replica of a partition, or nil.
func (n *Node) replica(topic string, p int) *replica {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.replicas[replicaKey{topic, p}]
}

// replicaList returns every replica on this node.
func (n *Node) replicaList() []*replica {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*replica, 0, len(n.replicas))
	for _, r := range n.replicas {
		out = append(out, r)
	}
	return out
}

// isrLoop checks, as partition leader, that in-sync followers keep up.
func (n *Node) isrLoop() { n.everyReplica(n.cfg.HeartbeatInterval, (*replica).checkISR) }

// everyReplica calls f on each replica of this node every interval until the node stops.
func (n *Node) everyReplica(interval time.Duration, f func(r *replica, now time.Time)) {
	defer n.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-tick.C:
			for _, r := range n.replicaList() {
				f(r, now)
			}
		}
	}
}
