package cluster

import (
	"slices"
	"time"
)

// tick makes one round of decisions.
func (c *controller) tick() {
	members := c.n.members()
	alive := c.alive(members)
	st, _ := c.n.fsm.snapshotState()
	if c.restarts(st, members, alive) {
		st, _ = c.n.fsm.snapshotState()
	}
	v := &ctlView{st: st, members: members, alive: alive, now: time.Now(), since: c.aliveSince(alive),
		preferredDelay: c.n.cfg.PreferredLeaderDelay, maxMoves: 4}
	v.countLoads()
	for _, t := range sortedTopics(st) {
		for i, p := range t.Partitions {
			cmd := v.decide(t, i, p)
			if cmd == nil {
				continue
			}
			if _, err := c.n.apply(cmd); err != nil && err != errStaleEpoch {
				c.n.log.Warn("controller", "op", cmd.Op, "partition", t.Name, "index", i, "err", err)
				continue
			}
			if cmd.Op == opReassign {
				v.moved(p.Replicas, cmd.Placement[0].Replicas)
			}
		}
	}
}

// aliveSince tracks since when each member has been alive without a gap.
func (c *controller) aliveSince(alive map[string]bool) map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.since == nil {
		c.since = map[string]time.Time{}
	}
	now := time.Now()
	for id := range c.since {
		if !alive[id] {
			delete(c.since, id)
		}
	}
	out := map[string]time.Time{}
	for id := range alive {
		if _, ok := c.since[id]; !ok {
			c.since[id] = now
		}
		out[id] = c.since[id]
	}
	return out
}

// ctlView is what one controller round decides on.
type ctlView struct {
	st             *State
	members        map[string]string
	alive          map[string]bool
	since          map[string]time.Time
	now            time.Time
	preferredDelay time.Duration
	maxMoves       int
	load           map[string]int // replicas per member
	moving         int            // partitions with more replicas than their RF
}

func (v *ctlView) flags(id string) (draining, leaving bool) {
	if m := v.st.Members[id]; m != nil {
		return m.Draining, m.Leaving
	}
	return false, false
}

// canLead: a live member that is neither draining nor leaving.
func (v *ctlView) canLead(id string) bool {
	d, l := v.flags(id)
	_, member := v.members[id]
	return member && v.alive[id] && !d && !l
}

// canHost: a live member that may receive a new replica.
func (v *ctlView) canHost(id string) bool {
	d, _ := v.flags(id)
	_, member := v.members[id]
	return member && v.alive[id] && !d
}

// bad: a replica that must move away (its member is draining or gone).
func (v *ctlView) bad(id string) bool {
	d, _ := v.flags(id)
	_, member := v.members[id]
	return d || !member
}

func (v *ctlView) countLoads() {
	v.load = map[string]int{}
	for id := range v.members {
		v.load[id] = 0
	}
	for _, t := range v.st.Topics {
		for _, p := range t.Partitions {
			for _, id := range p.Replicas {
				v.load[id]++
			}
			if len(p.Replicas) > t.Spec.ReplicationFactor {
				v.moving++
			}
		}
	}
}

func (v *ctlView) moved(from, to []string) {
	for _, id := range from {
		v.load[id]--
	}
	for _, id := range to {
		v.load[id]++
	}
	if len(to) > len(from) {
		v.moving++
	} else if len(to) < len(from) {
		v.moving--
	}
}

// decide returns the one change a partition needs now, or nil. In order: a leader where there
// is none or it is down; leadership off draining/leaving members; dead followers out of the
// ISR; replicas off draining members and onto new ones (add, catch up, then remove); the
// preferred leader back once it has been up for a while.
func (v *ctlView) decide(t *TopicState, part int, p *PartitionState) *Command {
	elect := func(leader string, isr []string) *Command {
		return &Command{Op: opElect, Topic: t.Name, Partition: part, IfEpoch: p.Epoch, Leader: leader, ISR: isr}
	}
	if p.Leader == "" || !v.alive[p.Leader] {
		next := v.pick(p, v.canLead)
		if next == "" {
			next = v.pick(p, func(id string) bool { return v.alive[id] })
		}
		if next == "" {
			if p.Leader == "" {
				return nil // offline until an in-sync replica comes back
			}
			// Fence the dead leader; the ISR stays, so any of them may lead when it returns.
			return elect("", p.ISR)
		}
		isr := []string{next}
		for _, id := range p.ISR {
			if id != next && v.alive[id] {
				isr = append(isr, id)
			}
		}
		return elect(next, isr)
	}
	if !v.canLead(p.Leader) {
		if next := v.pick(p, v.canLead); next != "" {
			return elect(next, p.ISR)
		}
	}
	// A live leader: drop dead followers from the ISR now instead of after the lag time, so
	// writes go on without them.
	var isr []string
	for _, id := range p.ISR {
		if id == p.Leader || v.alive[id] {
			isr = append(isr, id)
		}
	}
	if len(isr) != len(p.ISR) {
		return &Command{Op: opSetISR, Topic: t.Name, Partition: part, IfEpoch: p.Epoch, IfISR: p.ISR, ISR: isr}
	}
	if cmd := v.reassign(t, part, p); cmd != nil {
		return cmd
	}
	if pref := p.Replicas[0]; pref != p.Leader && v.canLead(pref) && slices.Contains(p.ISR, pref) &&
		v.now.Sub(v.since[pref]) >= v.preferredDelay {
		return elect(pref, p.ISR)
	}
	return nil
}

// pick is the first replica (preferred order) in the ISR that ok accepts.
func (v *ctlView) pick(p *PartitionState, ok func(string) bool) string {
	for _, id := range p.Replicas {
		if slices.Contains(p.ISR, id) && ok(id) {
			return id
		}
	}
	return ""
}

// reassign moves one replica of a partition: while it has its RF, it gets an extra replica on
// the least loaded member when a replica sits on a draining or removed member, or when the
// load is uneven by more than one; once the extra replica is in sync, the replica to move away
// is dropped.
func (v *ctlView) reassign(t *TopicState, part int, p *PartitionState) *Command {
	rf := t.Spec.ReplicationFactor
	if rf <= 0 {
		rf = len(p.Replicas)
	}
	cmd := func(replicas []string) *Command {
		return &Command{Op: opReassign, Topic: t.Name, Partition: part, IfEpoch: p.Epoch, Placement: []*PartitionState{{Replicas: replicas}}}
	}
	if len(p.Replicas) > rf {
		// Drop one: a bad replica first, else the most loaded one; never the leader, and only
		// when the ISR keeps rf good members without it.
		victim := ""
		for _, id := range p.Replicas {
			if id != p.Leader && v.bad(id) {
				victim = id
				break
			}
		}
		if victim == "" {
			for _, id := range p.Replicas {
				if id != p.Leader && (victim == "" || v.load[id] > v.load[victim]) {
					victim = id
				}
			}
		}
		if victim == "" {
			return nil
		}
		// Live in-sync copies on draining members still count: a partition with copies on two
		// draining members drops them one at a time (it gets one new copy per step).
		inSync := 0
		for _, id := range p.ISR {
			_, member := v.members[id]
			if id != victim && (!v.bad(id) || (member && v.alive[id])) {
				inSync++
			}
		}
		if inSync < rf {
			return nil // the new replica is still catching up
		}
		return cmd(slices.DeleteFunc(slices.Clone(p.Replicas), func(id string) bool { return id == victim }))
	}
	if v.moving >= v.maxMoves {
		return nil
	}
	target := ""
	for _, id := range sortedKeys(v.members) {
		if v.canHost(id) && !slices.Contains(p.Replicas, id) && (target == "" || v.load[id] < v.load[target]) {
			target = id
		}
	}
	if target == "" {
		return nil
	}
	need := false
	for _, id := range p.Replicas {
		if v.bad(id) || v.load[id] > v.load[target]+1 {
			need = true
			break
		}
	}
	if !need {
		return nil
	}
	return cmd(append(slices.Clone(p.Replicas), target))
}
