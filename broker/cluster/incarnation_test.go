package cluster

// Process incarnations (docs/adr/0001, "Restarts"): the restarted op of the state machine, the
// controller's bookkeeping of reported incarnations, the fence that keeps a restarted
// non-durable broker from leading, and one in-process cluster where such a leader restarts
// within the failure timeout.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// incState is a cluster of a, b, c where a has restarted before (incarnation 1 recorded).
//
//	p0: a leads, everyone in sync
//	p1: b leads, a in sync
//	p2: a leads, the only in-sync replica
//	p3: b leads, a out of sync
func incState() *State {
	st := newState()
	st.Members["a"] = &Member{ID: "a", Incarnation: 1}
	st.Topics["t"] = &TopicState{Name: "t", Incarnation: 3, Partitions: []*PartitionState{
		{Replicas: []string{"a", "b", "c"}, Leader: "a", Epoch: 5, ISR: []string{"a", "b", "c"}},
		{Replicas: []string{"b", "a", "c"}, Leader: "b", Epoch: 3, ISR: []string{"b", "a"}},
		{Replicas: []string{"a", "b", "c"}, Leader: "a", Epoch: 7, ISR: []string{"a"}},
		{Replicas: []string{"b", "c", "a"}, Leader: "b", Epoch: 2, ISR: []string{"b", "c"}},
	}}
	return st
}

func TestApplyRestarted(t *testing.T) {
	unchanged := func(st *State) []PartitionState {
		var out []PartitionState
		for _, p := range st.Topics["t"].Partitions {
			out = append(out, *p)
		}
		return out
	}(incState())
	cases := []struct {
		name    string
		prep    func(st *State)
		cmd     Command
		wantErr bool
		changed bool
		want    []PartitionState // nil: the partitions stay as they were
	}{{
		name:    "non-durable restart: out of the ISRs, leaderships to the next in-sync replica at a new epoch, last in-sync replica keeps its place",
		cmd:     Command{MemberID: "a", Incarnation: 2},
		changed: true,
		want: []PartitionState{
			{Replicas: []string{"a", "b", "c"}, Leader: "b", Epoch: 6, ISR: []string{"b", "c"}},
			{Replicas: []string{"b", "a", "c"}, Leader: "b", Epoch: 3, ISR: []string{"b"}},
			unchanged[2], unchanged[3],
		},
	}, {
		name:    "a live successor is preferred",
		cmd:     Command{MemberID: "a", Incarnation: 2, Alive: []string{"a", "c"}},
		changed: true,
		want: []PartitionState{
			{Replicas: []string{"a", "b", "c"}, Leader: "c", Epoch: 6, ISR: []string{"b", "c"}},
			{Replicas: []string{"b", "a", "c"}, Leader: "b", Epoch: 3, ISR: []string{"b"}},
			unchanged[2], unchanged[3],
		},
	}, {
		name:    "a draining or leaving member is not chosen while another can lead",
		prep:    func(st *State) { st.Members["b"] = &Member{ID: "b", Draining: true} },
		cmd:     Command{MemberID: "a", Incarnation: 2, Alive: []string{"a", "b", "c"}},
		changed: true,
		want: []PartitionState{
			{Replicas: []string{"a", "b", "c"}, Leader: "c", Epoch: 6, ISR: []string{"b", "c"}},
			{Replicas: []string{"b", "a", "c"}, Leader: "b", Epoch: 3, ISR: []string{"b"}},
			unchanged[2], unchanged[3],
		},
	}, {
		name:    "no live successor: still another in-sync replica, never the restarted one",
		cmd:     Command{MemberID: "a", Incarnation: 2, Alive: []string{"a"}},
		changed: true,
		want: []PartitionState{
			{Replicas: []string{"a", "b", "c"}, Leader: "b", Epoch: 6, ISR: []string{"b", "c"}},
			{Replicas: []string{"b", "a", "c"}, Leader: "b", Epoch: 3, ISR: []string{"b"}},
			unchanged[2], unchanged[3],
		},
	}, {
		name:    "durable restart: only recorded",
		cmd:     Command{MemberID: "a", Incarnation: 2, Durable: true},
		changed: true,
	}, {
		name:    "first report: only recorded",
		prep:    func(st *State) { st.Members["a"].Incarnation = 0 },
		cmd:     Command{MemberID: "a", Incarnation: 2},
		changed: true,
	}, {
		name:    "first report of a member without an entry: only recorded",
		prep:    func(st *State) { delete(st.Members, "a") },
		cmd:     Command{MemberID: "a", Incarnation: 2},
		changed: true,
	}, {
		name: "same incarnation again: nothing",
		cmd:  Command{MemberID: "a", Incarnation: 1},
	}, {
		name:    "incarnation 0 is refused",
		cmd:     Command{MemberID: "a"},
		wantErr: true,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := incState()
			if tc.prep != nil {
				tc.prep(st)
			}
			// Through fsm.Apply: the command travels as JSON in the Raft log.
			f := newFSM(nil)
			f.state = st.clone()
			cmd := tc.cmd
			cmd.Op = opRestarted
			b, err := json.Marshal(&cmd)
			if err != nil {
				t.Fatal(err)
			}
			res := f.Apply(&raft.Log{Index: 42, Data: b}).(applyResult)
			if (res.err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", res.err, tc.wantErr)
			}
			if res.changed != tc.changed {
				t.Errorf("changed = %v, want %v", res.changed, tc.changed)
			}
			got, _ := f.snapshotState()
			want := tc.want
			if want == nil {
				want = unchanged
			}
			for i, p := range got.Topics["t"].Partitions {
				if !reflect.DeepEqual(*p, want[i]) {
					t.Errorf("p%d = %+v, want %+v", i, *p, want[i])
				}
			}
			if !tc.wantErr {
				if m := got.Members["a"]; m == nil || m.Incarnation != tc.cmd.Incarnation {
					t.Errorf("member a = %+v, want incarnation %d", m, tc.cmd.Incarnation)
				}
			}
			// Deterministic: every node applying the same entry ends with the same state.
			again := st.clone()
			apply(again, &cmd, 42)
			if !reflect.DeepEqual(again, got) {
				t.Errorf("a second apply of the same command gave another state")
			}
		})
	}
}

func TestControllerIncarnationReports(t *testing.T) {
	c := newController(&Node{cfg: Config{NodeID: "ctl"}})
	for _, h := range []heartbeatRequest{
		{ID: "a"},                                // an old caller: alive, nothing else
		{ID: "a", Incarnation: 1},                // first process
		{ID: "a", Incarnation: 2, Durable: true}, // restarted
		{ID: "a", Incarnation: 1},                // the previous process's heartbeat, late
		{ID: "a"},                                // an old caller again
	} {
		c.report(h)
	}
	if got := c.reported["a"]; got != (incarnationReport{incarnation: 2, durable: true}) {
		t.Errorf("reported = %+v, want incarnation 2, durable", got)
	}
	if c.lastSeen["a"].IsZero() {
		t.Error("heartbeats did not count as alive")
	}
}

// TestHeartbeatRPC: the rpc takes the old body (only the id) and the new one.
func TestHeartbeatRPC(t *testing.T) {
	n, err := New(Config{NodeID: "a", Advertise: "127.0.0.1:1", Sync: store.SyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.incarnation == 0 || n.durable {
		t.Errorf("incarnation %d, durable %v: want non-zero, not durable under SyncInterval", n.incarnation, n.durable)
	}
	m, err := New(Config{NodeID: "b", Advertise: "127.0.0.1:1"}) // zero value: SyncAlways
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.durable || m.incarnation == n.incarnation {
		t.Errorf("second node: durable %v, incarnation %d (first %d)", m.durable, m.incarnation, n.incarnation)
	}
	h := n.rpcs()["heartbeat"]
	if _, err := h(context.Background(), json.RawMessage(`{"id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.ctl.reported["x"]; ok || n.ctl.lastSeen["x"].IsZero() {
		t.Errorf("old heartbeat: reported %v, last seen %v", n.ctl.reported, n.ctl.lastSeen["x"])
	}
	if _, err := h(context.Background(), json.RawMessage(`{"id":"x","incarnation":7,"durable":true}`)); err != nil {
		t.Fatal(err)
	}
	if got := n.ctl.reported["x"]; got != (incarnationReport{incarnation: 7, durable: true}) {
		t.Errorf("reported %+v", got)
	}
}

func TestFencedFromLeading(t *testing.T) {
	const me, inc = "a", 99
	for _, tc := range []struct {
		name    string
		durable bool
		member  *Member
		want    bool
	}{
		{"durable: never", true, nil, false},
		{"durable, old incarnation", true, &Member{ID: me, Incarnation: 1}, false},
		{"not durable, not recorded yet", false, nil, true},
		{"not durable, previous process recorded", false, &Member{ID: me, Incarnation: 1}, true},
		{"not durable, this process recorded", false, &Member{ID: me, Incarnation: inc}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{cfg: Config{NodeID: me}, incarnation: inc, durable: tc.durable}
			st := newState()
			if tc.member != nil {
				st.Members[me] = tc.member
			}
			if got := n.fencedFromLeading(st); got != tc.want {
				t.Errorf("fenced = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestNonDurableLeaderQuickRestart: a partition leader running with --fsync interval restarts
// well within the failure timeout (the controller never sees it down). Its new incarnation
// moves the leadership to another in-sync replica at a new epoch and takes it out of the ISR;
// it rejoins the ISR once caught up, and publishing through every node goes on with no
// acknowledged message lost.
func TestNonDurableLeaderQuickRestart(t *testing.T) {
	t.Parallel()
	// A failure timeout far longer than a restart: only the incarnation can move leadership.
	const failureTimeout = 15 * time.Second
	c := newCluster(t, clusterOpts{failureTimeout: failureTimeout})
	// Every broker runs without fsync on every write from now on (the harness starts them
	// with SyncAlways).
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.stop() }()
	}
	wg.Wait()
	for i := range c.nodes {
		c.restartSync(i, store.SyncInterval)
	}
	c.waitReady()
	waitFor(t, 10*time.Second, "every incarnation recorded", func() (bool, string) {
		st := c.state()
		for _, tn := range c.nodes {
			n, _ := tn.get()
			if m := st.Members[tn.id]; m == nil || m.Incarnation != n.incarnation {
				return false, fmt.Sprintf("%s: %+v, process %d", tn.id, m, n.incarnation)
			}
		}
		return true, ""
	})

	const topic = "inc"
	c.putTopic(topic, 1, 3)
	li := c.waitLeader(topic, 0)
	leader := c.nodes[li].id
	// The controller elsewhere: this test is about the partition leader, not Raft's.
	c.transferController((li + 1) % len(c.nodes))
	acked, _ := c.publishRetry(topic, []int{0, 1, 2}, payloads("before", 20), 20*time.Second)
	c.waitConverged(topic)
	before := c.partition(topic, 0)
	if before.Leader != leader || len(before.ISR) != 3 {
		t.Fatalf("before the restart: %+v", before)
	}

	// Publishers through every node, the restarted one included, all along.
	stop := make(chan struct{})
	var pmu sync.Mutex
	var during []published
	var pwg sync.WaitGroup
	for i := range c.nodes {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if !c.nodes[i].isUp() {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				p := fmt.Sprintf("during-%s-%04d", c.nodes[i].id, k)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				res, err := c.cl(i).Publish(ctx, topic, []api.PublishMessage{{Text: text(p), Key: p}})
				cancel()
				if err != nil {
					time.Sleep(20 * time.Millisecond) // retryable or not, the next one is new
					continue
				}
				pmu.Lock()
				during = append(during, published{p, res[0]})
				pmu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)

	started := time.Now()
	c.kill(li)
	c.restartSync(li, store.SyncInterval)
	if took := time.Since(started); took >= failureTimeout/2 {
		t.Fatalf("the restart took %s: not a quick restart any more (failure timeout %s)", took, failureTimeout)
	}
	restarted, _ := c.nodes[li].get()
	waitFor(t, 10*time.Second, "a new leader epoch after the restart", func() (bool, string) {
		st := c.state()
		p := st.Topics[topic].Partitions[0]
		m := st.Members[leader]
		if m == nil || m.Incarnation != restarted.incarnation || p.Epoch <= before.Epoch {
			return false, fmt.Sprintf("member %+v (process %d), partition %+v", m, restarted.incarnation, *p)
		}
		return true, ""
	})
	c.waitConverged(topic) // includes: every running replica, the restarted one too, in the ISR
	time.Sleep(300 * time.Millisecond)
	close(stop)
	pwg.Wait()
	c.waitConverged(topic)
	pmu.Lock()
	acked = append(acked, during...)
	pmu.Unlock()
	if len(during) == 0 {
		t.Error("no publish succeeded around the restart")
	}
	acked = append(acked, c.mustPublish(topic, []int{0, 1, 2}, payloads("after", 20))...)
	c.waitConverged(topic)
	c.checkInLogs(topic, acked)

	// The whole history, from a Raft log: the restart's own entry moved the leadership away
	// from the restarted broker at a new epoch and took it out of the ISR; it came back later.
	obs := (li + 1) % len(c.nodes)
	c.kill(obs)
	hist := raftHistory(t, filepath.Join(c.nodes[obs].dir, "cluster", "raft", "raft.db"), topic)
	restartAt := -1
	for k, h := range hist {
		if h.cmd.Op == opRestarted && h.cmd.MemberID == leader && h.cmd.Incarnation == restarted.incarnation {
			restartAt = k
			break
		}
	}
	if restartAt < 0 {
		t.Fatalf("no restarted entry for %s in the Raft log", leader)
	}
	h := hist[restartAt]
	for _, x := range hist[restartAt:] {
		t.Logf("%s %s → leader %q epoch %d isr %v", x.cmd.Op, x.cmd.MemberID, x.p.Leader, x.p.Epoch, x.p.ISR)
	}
	t.Logf("%d messages acknowledged while %s restarted", len(during), leader)
	if h.p.Epoch != before.Epoch+1 || h.p.Leader == leader || h.p.Leader == "" || slices.Contains(h.p.ISR, leader) {
		t.Errorf("after the restarted entry: %+v (before: %+v)", h.p, before)
	}
	rejoined := false
	for _, h := range hist[restartAt+1:] {
		if slices.Contains(h.p.ISR, leader) {
			rejoined = true
			break
		}
	}
	if !rejoined {
		t.Errorf("%s never rejoined the ISR after its restart", leader)
	}
}

// mustPublish publishes in the test goroutine, retrying (publishRetry).
func (c *tcluster) mustPublish(topic string, via []int, ps []string) []published {
	c.t.Helper()
	out, _ := c.publishRetry(topic, via, ps, 30*time.Second)
	return out
}

type histEntry struct {
	cmd Command
	p   PartitionState // partition 0 of the topic after the entry
}

// raftHistory replays a stopped node's Raft log from its first entry and returns, after each
// command, partition 0 of topic.
func raftHistory(t *testing.T, path, topic string) []histEntry {
	t.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	first, _ := bolt.FirstIndex()
	last, _ := bolt.LastIndex()
	if first != 1 {
		t.Fatalf("the Raft log was compacted (first index %d): cannot replay it", first)
	}
	st := newState()
	var out []histEntry
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := bolt.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		var cmd Command
		if err := json.Unmarshal(l.Data, &cmd); err != nil {
			t.Fatal(err)
		}
		apply(st, &cmd, l.Index)
		if tp := st.Topics[topic]; tp != nil && len(tp.Partitions) > 0 {
			p := *tp.Partitions[0]
			p.ISR, p.Replicas = slices.Clone(p.ISR), slices.Clone(p.Replicas)
			out = append(out, histEntry{cmd, p})
		}
	}
	return out
}

// restartSync is the harness's restart with another fsync policy (the harness runs SyncAlways).
func (c *tcluster) restartSync(i int, sync store.SyncPolicy) {
	c.t.Helper()
	c.nodes[i].sync = sync
	c.restart(i)
}
