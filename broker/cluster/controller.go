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
	// Process incarnations members reported (see opRestarted), and the one each replaced:
	// a heartbeat of the previous process still in flight must not look like one more restart.
	reported map[string]incarnationReport
	replaced map[string]uint64
}

// incarnationReport is what a member's heartbeats say about its process.
type incarnationReport struct {
	incarnation uint64
	durable     bool
}

// heartbeatRequest is the body of the heartbeat rpc. Incarnation 0 (a caller from before
// incarnations) only says the member is alive.
type heartbeatRequest struct {
	ID          string `json:"id"`
	Incarnation uint64 `json:"incarnation,omitempty"`
	Durable     bool   `json:"durable,omitempty"`
}

func newController(n *Node) *controller {
	return &controller{n: n, lastSeen: map[string]time.Time{}, reported: map[string]incarnationReport{}, replaced: map[string]uint64{}}
}

// heartbeat records that a member is alive (a heartbeat, or a fetch from it).
func (c *controller) heartbeat(id string) {
	c.mu.Lock()
	c.lastSeen[id] = time.Now()
	c.mu.Unlock()
}

// report records a heartbeat: the member is alive, and which process of it is running.
func (c *controller) report(h heartbeatRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastSeen[h.ID] = time.Now()
	if h.Incarnation == 0 || h.Incarnation == c.replaced[h.ID] {
		return
	}
	if old, ok := c.reported[h.ID]; ok && old.incarnation != h.Incarnation {
		c.replaced[h.ID] = old.incarnation
	}
	c.reported[h.ID] = incarnationReport{incarnation: h.Incarnation, durable: h.Durable}
}

// restarts records the incarnations members reported that the metadata does not have yet
// (opRestarted: for a restarted member without fsync on every write, that also moves its
// leaderships and takes it out of the ISRs). It runs before the partitions' decisions so that
// they see the result, and reports whether it changed anything.
func (c *controller) restarts(st *State, members map[string]string, alive map[string]bool) bool {
	c.mu.Lock()
	var cmds []*Command
	for _, id := range sortedKeys(members) {
		r, ok := c.reported[id]
		if !ok {
			continue
		}
		if m := st.Members[id]; m != nil && m.Incarnation == r.incarnation {
			continue
		}
		cmds = append(cmds, &Command{Op: opRestarted, MemberID: id, Incarnation: r.incarnation, Durable: r.durable, Alive: sortedKeys(alive)})
	}
	c.mu.Unlock()
	changed := false
	for _, cmd := range cmds {
		if _, err := c.n.apply(cmd); err != nil {
			c.n.log.Warn("controller", "op", cmd.Op, "member", cmd.MemberID, "err", err)
			continue
		}
		changed = true
		prev := uint64(0)
		if m := st.Members[cmd.MemberID]; m != nil {
			prev = m.Incarnation
		}
		if prev != 0 && !cmd.Durable {
			c.n.log.Info("member restarted without fsync on every write: out of its ISRs, its leaderships moved", "member", cmd.MemberID)
		} else {
			c.n.log.Debug("member incarnation recorded", "member", cmd.MemberID, "durable", cmd.Durable, "first", prev == 0)
		}
	}
	return changed
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
			// Reports from an earlier term may name processes replaced since (they reported to
			// another controller): only fresh heartbeats may say that a member restarted.
			clear(c.reported)
			clear(c.replaced)
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
		hb := heartbeatRequest{ID: n.cfg.NodeID, Incarnation: n.incarnation, Durable: n.durable}
		if n.isLeader() {
			n.ctl.report(hb)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HeartbeatInterval*2)
		_ = n.callLeader(ctx, "heartbeat", hb, nil)
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
