package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldmq/herald/broker/api"
)

// State is the cluster metadata every node holds a copy of: what the Raft group agreed on.
type State struct {
	Members       map[string]*Member     `json:"members"`
	Topics        map[string]*TopicState `json:"topics"`
	Subscriptions map[string]*SubState   `json:"subscriptions"`
}

// Member is one broker of the cluster.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"` // host:port of its HTTP listener
	// Draining members get no new replicas, and the controller moves their replicas and
	// leaderships to other members (scale-down).
	Draining bool `json:"draining,omitempty"`
	// Leaving members lead nothing (a graceful stop or restart); their replicas stay.
	Leaving bool `json:"leaving,omitempty"`
	// Incarnation is the random id the member's current process reported in its heartbeats
	// (0: not reported yet). A change means the broker restarted (see opRestarted).
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// TopicState is a topic and where its partitions live.
type TopicState struct {
	Name string        `json:"name"`
	Spec api.TopicSpec `json:"spec"`
	// Incarnation is the Raft index that created the topic: the same on every node, and
	// different for a topic deleted and created again under the same name.
	Incarnation uint64            `json:"incarnation"`
	CreateTime  time.Time         `json:"createTime"`
	Partitions  []*PartitionState `json:"partitions"`
}

// PartitionState is where one partition lives. Replicas[0] is the preferred leader.
type PartitionState struct {
	Replicas []string `json:"replicas"`
	Leader   string   `json:"leader"` // "" while no in-sync replica is alive
	Epoch    uint64   `json:"epoch"`  // bumped at every leader change
	ISR      []string `json:"isr"`
}

// SubState is a subscription.
type SubState struct {
	Name       string               `json:"name"`
	Spec       api.SubscriptionSpec `json:"spec"`
	Epoch      uint32               `json:"epoch"` // from the creating Raft index; in receipt handles
	CreateTime time.Time            `json:"createTime"`
}

func newState() *State {
	return &State{Members: map[string]*Member{}, Topics: map[string]*TopicState{}, Subscriptions: map[string]*SubState{}}
}

// clone deep-copies the state (through JSON: it is small and changes rarely).
func (s *State) clone() *State {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	out := newState()
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

// Command is one change to the metadata, the payload of a Raft log entry.
type Command struct {
	Op string `json:"op"`

	Member    *Member               `json:"member,omitempty"`
	MemberID  string                `json:"memberId,omitempty"`
	Draining  bool                  `json:"draining,omitempty"`
	Topic     string                `json:"topic,omitempty"`
	TopicSpec *api.TopicSpec        `json:"topicSpec,omitempty"`
	Sub       string                `json:"sub,omitempty"`
	SubSpec   *api.SubscriptionSpec `json:"subSpec,omitempty"`
	// Placement of new partitions (putTopic) or of one partition (elect, setISR, reassign).
	Placement []*PartitionState `json:"placement,omitempty"`
	Partition int               `json:"partition,omitempty"`
	// Elect/setISR/reassign apply only if the partition is still at this epoch (fencing).
	IfEpoch uint64 `json:"ifEpoch,omitempty"`
	// IfISR (setISR): the ISR the request was computed from; refused if it changed meanwhile,
	// so a late request cannot undo a newer decision.
	IfISR  []string  `json:"ifISR,omitempty"`
	Leader string    `json:"leader,omitempty"`
	ISR    []string  `json:"isr,omitempty"`
	Now    time.Time `json:"now,omitempty"`
	// Restarted: the member's new process incarnation, whether it fsyncs every write, and the
	// members the controller saw alive (a hint for choosing new leaders; the state machine
	// cannot know liveness itself, so it travels in the command to keep Apply deterministic).
	Incarnation uint64   `json:"incarnation,omitempty"`
	Durable     bool     `json:"durable,omitempty"`
	Alive       []string `json:"alive,omitempty"`
}

// Command ops.
const (
	opAddMember    = "addMember"
	opRemoveMember = "removeMember"
	opSetDraining  = "setDraining"
	opSetLeaving   = "setLeaving"
	// opForgetReplicas takes a member that lost its data out of every ISR (and leadership).
	opForgetReplicas = "forgetReplicas"
	opPutTopic       = "putTopic"
	opDeleteTopic    = "deleteTopic"
	opPutSub         = "putSub"
	opDeleteSub      = "deleteSub"
	opElect          = "elect"    // new leader (and ISR) for a partition, epoch+1
	opSetISR         = "setISR"   // the leader changes the ISR, same epoch
	opReassign       = "reassign" // new replica list (scale up/down); ISR trimmed to it
	// opRestarted records a member's new process incarnation; for a member that does not fsync
	// every write it also takes it out of every ISR and leadership it had (see applyRestarted).
	opRestarted = "restarted"
)

// applyResult is what fsm.Apply returns to the proposer.
type applyResult struct {
	err     error
	changed bool
}

// fsm is the Raft state machine. Apply only changes State; each node's reconciler then makes
// its engine match it (engine errors must not make replicas' states differ).
type fsm struct {
	mu      sync.RWMutex
	state   *State
	index   uint64
	changed func() // called after every applied change (non-blocking)
}

func newFSM(changed func()) *fsm { return &fsm{state: newState(), changed: changed} }

func (f *fsm) snapshotState() (*State, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.clone(), f.index
}

func (f *fsm) appliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// read runs fn with the state under the read lock (fn must not keep references).
func (f *fsm) read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return applyResult{err: fmt.Errorf("cluster: undecodable command at index %d: %w", l.Index, err)}
	}
	f.mu.Lock()
	res := apply(f.state, &c, l.Index)
	f.index = l.Index
	f.mu.Unlock()
	if res.changed && f.changed != nil {
		f.changed()
	}
	return res
}

// apply is the deterministic core of Apply.
func apply(s *State, c *Command, index uint64) applyResult {
	switch c.Op {
	case opAddMember:
		if c.Member == nil || c.Member.ID == "" {
			return applyResult{err: api.Invalid("member", "member id is required")}
		}
		if m, ok := s.Members[c.Member.ID]; ok && m.Address == c.Member.Address {
			return applyResult{}
		}
		m := *c.Member
		s.Members[m.ID] = &m
	case opRemoveMember:
		if _, ok := s.Members[c.MemberID]; !ok {
			return applyResult{}
		}
		delete(s.Members, c.MemberID)
	case opSetDraining:
		m, ok := s.Members[c.MemberID]
		if !ok {
			if !c.Draining {
				return applyResult{}
			}
			m = &Member{ID: c.MemberID}
			s.Members[c.MemberID] = m
		}
		if m.Draining == c.Draining {
			return applyResult{}
		}
		m.Draining = c.Draining
	case opSetLeaving:
		m := s.Members[c.MemberID]
		if m == nil {
			if !c.Draining {
				return applyResult{}
			}
			m = &Member{ID: c.MemberID}
			s.Members[c.MemberID] = m
		}
		if m.Leaving == c.Draining {
			return applyResult{}
		}
		m.Leaving = c.Draining
	case opForgetReplicas:
		changed := false
		for _, t := range s.Topics {
			for _, p := range t.Partitions {
				if !slices.Contains(p.ISR, c.MemberID) {
					continue
				}
				changed = true
				p.ISR = slices.DeleteFunc(p.ISR, func(id string) bool { return id == c.MemberID })
				if p.Leader == c.MemberID {
					p.Leader, p.Epoch = "", p.Epoch+1
				}
			}
		}
		if !changed {
			return applyResult{}
		}
	case opRestarted:
		return applyRestarted(s, c)
	case opPutTopic:
		spec := *c.TopicSpec
		t, ok := s.Topics[c.Topic]
		if !ok {
			if len(c.Placement) != spec.Partitions {
				return applyResult{err: fmt.Errorf("cluster: %d placements for %d partitions", len(c.Placement), spec.Partitions)}
			}
			s.Topics[c.Topic] = &TopicState{Name: c.Topic, Spec: spec, Incarnation: index, CreateTime: c.Now, Partitions: clonePlacements(c.Placement)}
			break
		}
		if spec.Partitions < len(t.Partitions) {
			return applyResult{err: api.Precondition("partitions", "topic %q has %d partitions; partitions can grow but never shrink", c.Topic, len(t.Partitions))}
		}
		if len(t.Partitions)+len(c.Placement) != spec.Partitions {
			return applyResult{err: fmt.Errorf("cluster: %d new placements for %d → %d partitions", len(c.Placement), len(t.Partitions), spec.Partitions)}
		}
		t.Spec = spec
		t.Partitions = append(t.Partitions, clonePlacements(c.Placement)...)
	case opDeleteTopic:
		if _, ok := s.Topics[c.Topic]; !ok {
			return applyResult{err: api.NotFound("name", "topic %q not found", c.Topic)}
		}
		delete(s.Topics, c.Topic)
	case opPutSub:
		sub, ok := s.Subscriptions[c.Sub]
		if !ok {
			if _, ok := s.Topics[c.SubSpec.Topic]; !ok {
				return applyResult{err: api.NotFound("topic", "topic %q not found", c.SubSpec.Topic)}
			}
			epoch := uint32(index)
			if epoch == 0 {
				epoch = 1
			}
			s.Subscriptions[c.Sub] = &SubState{Name: c.Sub, Spec: *c.SubSpec, Epoch: epoch, CreateTime: c.Now}
			break
		}
		sub.Spec = *c.SubSpec
	case opDeleteSub:
		if _, ok := s.Subscriptions[c.Sub]; !ok {
			return applyResult{err: api.NotFound("name", "subscription %q not found", c.Sub)}
		}
		delete(s.Subscriptions, c.Sub)
	case opElect, opSetISR, opReassign:
		t, ok := s.Topics[c.Topic]
		if !ok || c.Partition < 0 || c.Partition >= len(t.Partitions) {
			return applyResult{err: api.NotFound("partition", "no partition %s/%d", c.Topic, c.Partition)}
		}
		p := t.Partitions[c.Partition]
		if p.Epoch != c.IfEpoch {
			return applyResult{err: errStaleEpoch}
		}
		switch c.Op {
		case opElect:
			if c.Leader != "" && !slices.Contains(c.ISR, c.Leader) {
				return applyResult{err: fmt.Errorf("cluster: elect %q outside the ISR %v", c.Leader, c.ISR)}
			}
			p.Leader, p.ISR, p.Epoch = c.Leader, slices.Clone(c.ISR), p.Epoch+1
		case opSetISR:
			if c.IfISR != nil && !sameSet(c.IfISR, p.ISR) {
				return applyResult{err: errStaleEpoch}
			}
			if p.Leader != "" && !slices.Contains(c.ISR, p.Leader) {
				return applyResult{err: fmt.Errorf("cluster: ISR %v without the leader %q", c.ISR, p.Leader)}
			}
			// Only replicas can be in sync: a request made before a reassignment may name one
			// that has been moved away since.
			p.ISR = slices.DeleteFunc(slices.Clone(c.ISR), func(id string) bool { return !slices.Contains(p.Replicas, id) })
		case opReassign:
			if len(c.Placement) != 1 || len(c.Placement[0].Replicas) == 0 || (p.Leader != "" && !slices.Contains(c.Placement[0].Replicas, p.Leader)) {
				return applyResult{err: fmt.Errorf("cluster: bad reassignment of %s/%d", c.Topic, c.Partition)}
			}
			p.Replicas = slices.Clone(c.Placement[0].Replicas)
			var isr []string
			for _, id := range p.ISR {
				if slices.Contains(p.Replicas, id) {
					isr = append(isr, id)
				}
			}
			p.ISR = isr
			if !slices.Contains(p.Replicas, p.Leader) {
				p.Leader, p.Epoch = "", p.Epoch+1
			}
		}
	default:
		return applyResult{err: fmt.Errorf("cluster: unknown command %q", c.Op)}
	}
	return applyResult{changed: true}
}

// applyRestarted records that a member runs a new process (c.Incarnation). A broker that
// does not fsync every write (--fsync interval|never) may have lost the tail of its logs in a
// host crash, tail that the high watermark counted as acknowledged: while it was in an ISR, the
// other replicas relied on its copy. If it came back within the failure timeout, nothing else
// notices (it never looked down), so here it leaves every ISR it was in, and every partition
// it led gets another in-sync leader at a new epoch: followers then truncate to the new
// leader's log (which has every acknowledged message), never to the restarted one's, and the
// restarted broker rejoins the ISRs the usual way, once it has caught up. It keeps its place
// only where it is the last in-sync replica (taking it away would leave no leader at all; the
// election rule is never unclean). A durable member (fsync always) lost nothing acknowledged,
// and a first report (no incarnation recorded: a new member, or one from before incarnations)
// cannot tell a restart: both only get their incarnation recorded.
func applyRestarted(s *State, c *Command) applyResult {
	if c.MemberID == "" || c.Incarnation == 0 {
		return applyResult{err: api.Invalid("member", "member id and incarnation are required")}
	}
	m := s.Members[c.MemberID]
	if m == nil {
		m = &Member{ID: c.MemberID}
		s.Members[c.MemberID] = m
	}
	if m.Incarnation == c.Incarnation {
		return applyResult{}
	}
	prev := m.Incarnation
	m.Incarnation = c.Incarnation
	if c.Durable || prev == 0 {
		return applyResult{changed: true}
	}
	for _, t := range sortedTopics(s) {
		for _, p := range t.Partitions {
			if len(p.ISR) < 2 || !slices.Contains(p.ISR, c.MemberID) {
				continue
			}
			p.ISR = slices.DeleteFunc(slices.Clone(p.ISR), func(id string) bool { return id == c.MemberID })
			if p.Leader == c.MemberID {
				// As opElect: a new leader from the ISR, and a new epoch.
				p.Leader, p.Epoch = successor(s, p, c.Alive), p.Epoch+1
			}
		}
	}
	return applyResult{changed: true}
}

// successor picks a partition's next leader among its ISR (in the replicas' preferred order):
// a live member that may lead (not draining or leaving) first, then any live one, then any.
// alive nil means unknown: everyone counts as alive.
func successor(s *State, p *PartitionState, alive []string) string {
	isAlive := func(id string) bool { return alive == nil || slices.Contains(alive, id) }
	canLead := func(id string) bool {
		m := s.Members[id]
		return isAlive(id) && (m == nil || (!m.Draining && !m.Leaving))
	}
	order := append(slices.Clone(p.Replicas), p.ISR...) // the ISR is within the replicas; just in case
	for _, ok := range []func(string) bool{canLead, isAlive, func(string) bool { return true }} {
		for _, id := range order {
			if slices.Contains(p.ISR, id) && ok(id) {
				return id
			}
		}
	}
	return ""
}

var errStaleEpoch = api.Precondition("epoch", "the partition's leader epoch changed meanwhile")

func clonePlacements(ps []*PartitionState) []*PartitionState {
	out := make([]*PartitionState, len(ps))
	for i, p := range ps {
		out[i] = &PartitionState{Replicas: slices.Clone(p.Replicas), Leader: p.Leader, Epoch: p.Epoch, ISR: slices.Clone(p.ISR)}
	}
	return out
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	st, index := f.snapshotState()
	b, err := json.Marshal(snapshotFile{State: st, Index: index})
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var sf snapshotFile
	if err := json.NewDecoder(rc).Decode(&sf); err != nil || sf.State == nil {
		return fmt.Errorf("cluster: restore snapshot: %v", err)
	}
	if sf.State.Members == nil {
		sf.State.Members = map[string]*Member{}
	}
	if sf.State.Topics == nil {
		sf.State.Topics = map[string]*TopicState{}
	}
	if sf.State.Subscriptions == nil {
		sf.State.Subscriptions = map[string]*SubState{}
	}
	f.mu.Lock()
	f.state = sf.State
	f.index = sf.Index
	f.mu.Unlock()
	if f.changed != nil {
		f.changed()
	}
	return nil
}

// snapshotFile is the snapshot's content: the state and the index it includes.
type snapshotFile struct {
	State *State `json:"state"`
	Index uint64 `json:"index"`
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}

// memberIDs returns the member ids in order.
func (s *State) memberIDs() []string {
	ids := make([]string, 0, len(s.Members))
	for id := range s.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
