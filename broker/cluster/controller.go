package cluster

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"
)

// The controller is whichever node is the Raft leader. It tracks which members are alive
// (members send heartbeats), elects partition leaders from the in-sync replicas when a leader
// is down, removes dead followers from in-sync sets, and moves leadership off draining members.

type controller struct {
	n *Node

	mu       sync.Mutex
	lastSeen map[string]time.Time
	since    map[string]time.Time // alive without a gap since
	leading  bool                 // was the Raft leader at the last tick
}

func newController(n *Node) *controller {
	return &controller{n: n, lastSeen: map[string]time.Time{}}
}

// heartbeat records that a member is alive.
func (c *controller) heartbeat(id string) {
	c.mu.Lock()
	c.lastSeen[id] = time.Now()
	c.mu.Unlock()
}

// alive returns the members heard from within the failure timeout (this node always).
func (c *controller) alive(members map[string]string) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := map[string]bool{}
	for id := range members {
		if id == c.n.cfg.NodeID || now.Sub(c.lastSeen[id]) <= c.n.cfg.FailureTimeout {
			out[id] = true
		}
	}
	return out
}

func (c *controller) run() {
	defer c.n.wg.Done()
	tick := time.NewTicker(c.n.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.n.stop:
			return
		case <-tick.C:
		}
		if !c.n.isLeader() {
			c.mu.Lock()
			c.leading = false
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		if !c.leading {
			// A new controller gives every member a full failure timeout before judging it.
			c.leading = true
			now := time.Now()
			for id := range c.n.members() {
				c.lastSeen[id] = now
			}
		}
		c.mu.Unlock()
		c.tick()
	}
}

// place chooses replicas for count new partitions: rf distinct members each, spreading both
// replicas and preferred leaders over the least loaded members (draining ones excluded).
func place(st *State, members []string, count, rf int) []*PartitionState {
	load := map[string]int{}
	lead := map[string]int{}
	for _, id := range members {
		load[id], lead[id] = 0, 0
	}
	for _, t := range st.Topics {
		for _, p := range t.Partitions {
			for i, id := range p.Replicas {
				if _, ok := load[id]; ok {
					load[id]++
					if i == 0 {
						lead[id]++
					}
				}
			}
		}
	}
	out := make([]*PartitionState, 0, count)
	for i := 0; i < count; i++ {
		cands := slices.Clone(members)
		// Preferred leader: fewest leaderships, then fewest replicas, then a rotation by
		// partition index so equal loads still spread.
		sort.SliceStable(cands, func(a, b int) bool {
			if lead[cands[a]] != lead[cands[b]] {
				return lead[cands[a]] < lead[cands[b]]
			}
			return load[cands[a]] < load[cands[b]]
		})
		first := cands[0] // the least loaded
		rest := slices.DeleteFunc(slices.Clone(cands), func(id string) bool { return id == first })
		sort.SliceStable(rest, func(a, b int) bool { return load[rest[a]] < load[rest[b]] })
		reps := append([]string{first}, rest[:rf-1]...)
		for k, id := range reps {
			load[id]++
			if k == 0 {
				lead[id]++
			}
		}
		out = append(out, &PartitionState{Replicas: reps, Leader: first, Epoch: 1, ISR: slices.Clone(reps)})
	}
	return out
}

// heartbeatLoop reports this node to the controller.
func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if n.isLeader() {
			n.ctl.heartbeat(n.cfg.NodeID)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatInterval*2)
		_ = n.callLeader(ctx, "heartbeat", map[string]string{"id": n.cfg.NodeID}, nil)
		cancel()
	}
}

// requestISRChange asks the controller to add or remove a follower from a partition's ISR
// (leader only; the command is fenced by the leader's epoch).
func (n *Node) requestISRChange(r *replica, follower string, add bool) {
	r.mu.Lock()
	if r.role != roleLeader || time.Since(r.isrAsk) < n.cfg.HeartbeatInterval {
		r.mu.Unlock()
		return
	}
	r.isrAsk = time.Now()
	isr := slices.Clone(r.isr)
	from := slices.Clone(r.isr)
	epoch := r.epoch
	r.mu.Unlock()
	if add {
		if slices.Contains(isr, follower) {
			return
		}
		isr = append(isr, follower)
	} else {
		isr = slices.DeleteFunc(isr, func(id string) bool { return id == follower })
	}
	cmd := &Command{Op: opSetISR, Topic: r.key.topic, Partition: r.key.part, IfEpoch: epoch, IfISR: from, ISR: isr}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.propose(ctx, cmd); err != nil && err != errStaleEpoch {
			n.log.Debug("isr change", "partition", r.key.String(), "follower", follower, "add", add, "err", err)
		} else if err == nil {
			n.log.Info("isr changed", "partition", r.key.String(), "follower", follower, "add", add, "isr", isr)
		}
	}()
}
