package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
)

func TestMemberOrdinal(t *testing.T) {
	bc := testCluster() // "orders"
	for id, want := range map[string]int32{"orders-0": 0, "orders-2": 2, "orders-17": 17} {
		if got, ok := memberOrdinal(bc, id); !ok || got != want {
			t.Errorf("%s: %d %v, want %d", id, got, ok, want)
		}
	}
	for _, id := range []string{"standalone", "orders", "orders-", "orders-x", "orders-01", "orders--1", "other-1", "orders-1-2"} {
		if got, ok := memberOrdinal(bc, id); ok {
			t.Errorf("%s: ordinal %d, want none", id, got)
		}
	}
}

func TestPlanDrain(t *testing.T) {
	bc := testCluster()
	view := &ClusterView{Members: []ClusterMember{
		{ID: "orders-0", Replicas: 3},
		{ID: "orders-1", Replicas: 2, Draining: true}, // a scale-down called off
		{ID: "orders-4", Replicas: 1},                 // a member whose pod went without a drain
		{ID: "orders-2", Replicas: 2},
		{ID: "orders-3", Draining: true, Drained: true},
		{ID: "standalone", Draining: true},
	}}
	p := planDrain(bc, 2, view)
	if !slices.Equal(p.Undrain, []string{"orders-1"}) {
		t.Errorf("undrain %v", p.Undrain)
	}
	var leaving []string
	for _, m := range p.Leaving {
		leaving = append(leaving, m.ID)
	}
	if !slices.Equal(leaving, []string{"orders-2", "orders-3", "orders-4"}) {
		t.Errorf("leaving %v, want by ordinal", leaving)
	}
	if p := planDrain(bc, 5, view); len(p.Leaving) != 0 || !slices.Equal(p.Undrain, []string{"orders-1", "orders-3"}) {
		t.Errorf("scale-up: %+v", p)
	}
}

func TestReplicationBlockers(t *testing.T) {
	bc := testCluster()
	topic := func(name, cluster string, rf int32, deleting bool) heraldv1.Topic {
		t := heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: heraldv1.TopicSpec{ClusterRef: heraldv1.ClusterReference{Name: cluster}, ReplicationFactor: rf}}
		if deleting {
			t.DeletionTimestamp = ptr.To(metav1.Now())
		}
		return t
	}
	topics := []heraldv1.Topic{
		topic("wide", "orders", 3, false),
		topic("narrow", "orders", 2, false),
		topic("going", "orders", 3, true),
		topic("elsewhere", "other", 5, false),
	}
	onBrokers := []api.Topic{
		{Name: "wide", TopicSpec: api.TopicSpec{ReplicationFactor: 3}},   // the Topic's
		{Name: "manual", TopicSpec: api.TopicSpec{ReplicationFactor: 3}}, // nobody's Topic
		{Name: "narrow", TopicSpec: api.TopicSpec{ReplicationFactor: 2}},
	}
	got := replicationBlockers(bc, topics, onBrokers, 2)
	want := []rfBlocker{{`Topic "wide"`, 3}, {`topic "manual" on the brokers`, 3}}
	if !slices.Equal(got, want) {
		t.Errorf("blockers %v, want %v", got, want)
	}
	if got := replicationBlockers(bc, topics, onBrokers, 3); len(got) != 0 {
		t.Errorf("3 brokers hold 3 copies: %v", got)
	}
	msg := blockedMessage([]string{"orders-2"}, want, 2)
	if msg != `cannot scale down to 2 brokers: Topic "wide" (replicationFactor 3), topic "manual" on the brokers (replicationFactor 3) keep more copies of each partition than 2 brokers can hold, so orders-2 cannot be drained; delete them or set spec.replicas to at least 3` {
		t.Errorf("message %q", msg)
	}
	if msg := blockedMessage([]string{"orders-3", "orders-4"}, want[:1], 3); !strings.Contains(msg, `Topic "wide" (replicationFactor 3) keeps more`) ||
		!strings.Contains(msg, "so orders-3, orders-4 cannot be drained; delete it or") {
		t.Errorf("message %q", msg)
	}
}

func TestRebalancing(t *testing.T) {
	members := func(loads ...int) []ClusterMember {
		var out []ClusterMember
		for i, l := range loads {
			out = append(out, ClusterMember{ID: "orders-" + string(rune('0'+i)), Ready: true, Replicas: l})
		}
		return out
	}
	tests := []struct {
		name string
		view ClusterView
		want string // substring; "" for not rebalancing
	}{
		{"even", ClusterView{Members: members(4, 4, 3)}, ""},
		{"a new empty broker", ClusterView{Members: members(6, 6, 0)},
			"partitions are moving between the brokers (partition replicas per broker: orders-0 6, orders-1 6, orders-2 0)"},
		{"one broker alone", ClusterView{Members: members(5)}, ""},
		{"a draining broker does not count", ClusterView{Members: append(members(3, 3),
			ClusterMember{ID: "orders-2", Ready: true, Draining: true, Replicas: 0})}, ""},
		{"a down broker does not count, nor do its stale copies", ClusterView{
			Members:    append(members(3, 3), ClusterMember{ID: "orders-2", Replicas: 0}),
			Partitions: []ClusterPartition{{Topic: "t", Replicas: []string{"orders-0", "orders-2"}, InSync: []string{"orders-0"}}}}, ""},
		{"a copy catching up", ClusterView{Members: members(2, 2, 2),
			Partitions: []ClusterPartition{{Topic: "t", Replicas: []string{"orders-0", "orders-1", "orders-2"}, InSync: []string{"orders-0", "orders-1"}}}},
			"; 1 partitions have a copy catching up"},
	}
	for _, tt := range tests {
		got := rebalancing(&tt.view)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestComputeStatusDrain(t *testing.T) {
	bc := testCluster(func(bc *heraldv1.BrokerCluster) {
		bc.Generation = 2
		bc.Spec.Replicas = ptr.To[int32](2)
		bc.Status.ObservedGeneration = 1
		bc.Status.Phase = heraldv1.PhaseRunning
	})
	sts := stsWith(1, 1, 3, 3, 3, "r1", "r1") // still 3 pods: the drain holds them
	tests := []struct {
		name        string
		drain       *drainReport
		rebalancing string
		sts         *appsv1.StatefulSet
		phase       heraldv1.BrokerClusterPhase
		progressing metav1.ConditionStatus
		reason      string // Progressing's
		degraded    metav1.ConditionStatus
		msg         string
		observed    int64
	}{
		{
			name: "draining",
			drain: &drainReport{Holding: true, From: 3, To: 2,
				Status: &heraldv1.DrainStatus{Members: []string{"orders-2"}, ReplicasRemaining: 4}},
			phase: heraldv1.PhaseUpdating, progressing: "True", reason: ReasonDraining, degraded: "False",
			msg:      "draining orders-2 (4 partition replicas left) before scaling from 3 to 2 brokers",
			observed: 2,
		},
		{
			name: "brokers not answering",
			drain: &drainReport{Holding: true, From: 3, To: 2,
				Status: &heraldv1.DrainStatus{Members: []string{"orders-2"}, BlockedReason: "connection refused"}},
			phase: heraldv1.PhaseUpdating, progressing: "True", reason: ReasonDrainBlocked, degraded: "False",
			msg:      "cannot drain orders-2: connection refused before scaling from 3 to 2 brokers",
			observed: 2,
		},
		{
			name: "blocked by a topic",
			drain: &drainReport{Holding: true, From: 3, To: 2, SpecBlocked: true,
				Status: &heraldv1.DrainStatus{Members: []string{"orders-2"}, BlockedReason: "cannot scale down to 2 brokers: …"}},
			phase: heraldv1.PhaseFailed, progressing: "False", reason: ReasonDrainBlocked, degraded: "True",
			msg:      "cannot scale down to 2 brokers: …",
			observed: 1,
		},
		{
			name: "rebalancing after a scale-up", sts: stsWith(1, 1, 2, 2, 2, "r1", "r1"),
			rebalancing: "partitions are moving",
			phase:       heraldv1.PhaseRunning, progressing: "True", reason: ReasonRebalancing, degraded: "False",
			msg: "partitions are moving", observed: 2,
		},
		{
			name: "members without pods leave", sts: stsWith(1, 1, 2, 2, 2, "r1", "r1"),
			drain: &drainReport{From: 2, To: 2, Status: &heraldv1.DrainStatus{Members: []string{"orders-2"}, ReplicasRemaining: 1}},
			phase: heraldv1.PhaseRunning, progressing: "True", reason: ReasonDraining, degraded: "False",
			msg: "draining orders-2 (1 partition replicas left) out of the cluster: their pods are gone", observed: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sts
			if tt.sts != nil {
				s = tt.sts
			}
			in := statusInput{BC: bc.DeepCopy(), StatefulSet: s, Image: "x/herald:v9", Now: t0, Drain: tt.drain, Rebalancing: tt.rebalancing}
			st, _ := computeStatus(in)
			p := cond(st, heraldv1.ConditionProgressing)
			if st.Phase != tt.phase || p.Status != tt.progressing || p.Reason != tt.reason || p.Message != tt.msg {
				t.Errorf("phase %s, Progressing %s %s %q", st.Phase, p.Status, p.Reason, p.Message)
			}
			if d := cond(st, heraldv1.ConditionDegraded); d.Status != tt.degraded {
				t.Errorf("Degraded %s %s", d.Status, d.Reason)
			}
			if st.ObservedGeneration != tt.observed {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, tt.observed)
			}
			if a := cond(st, heraldv1.ConditionAvailable); a.Status != "True" {
				t.Errorf("Available %s: %s", a.Status, a.Message)
			}
			if tt.drain != nil && !equality.Semantic.DeepEqual(st.Drain, tt.drain.Status) {
				t.Errorf("status.drain %+v", st.Drain)
			}
			if tt.drain == nil && st.Drain != nil {
				t.Errorf("status.drain %+v, want none", st.Drain)
			}
			// A drain that progresses is not held to the progress deadline: moving data takes
			// the time it takes.
			if tt.reason == ReasonDraining && tt.drain.Holding {
				in.BC.Status = st
				in.Now = t0.Add(time.Hour)
				again, _ := computeStatus(in)
				if cond(again, heraldv1.ConditionDegraded).Status != "False" {
					t.Errorf("a long drain became Degraded: %+v", cond(again, heraldv1.ConditionDegraded))
				}
			}
		})
	}
	// Draining: the drained brokers still count for the quorum.
	in := statusInput{BC: bc.DeepCopy(), StatefulSet: stsWith(1, 1, 3, 2, 3, "r1", "r1"), Image: "x:v1", Now: t0,
		Drain: &drainReport{Holding: true, From: 3, To: 2, Status: &heraldv1.DrainStatus{Members: []string{"orders-2"}}}}
	st, _ := computeStatus(in)
	if a := cond(st, heraldv1.ConditionAvailable); a.Message != "2 of 3 brokers ready (quorum 2)" {
		t.Errorf("Available: %s", a.Message)
	}
}

func TestDrainProgressAndStallMessage(t *testing.T) {
	view := &ClusterView{
		Members: []ClusterMember{{ID: "b-0", Ready: true}, {ID: "b-1"}, {ID: "b-2", Ready: true}},
		Partitions: []ClusterPartition{
			{Topic: "t", Partition: 0, Replicas: []string{"b-2", "b-1"}, InSync: []string{"b-2"}, Lag: map[string]int64{"b-1": 40}},
			{Topic: "t", Partition: 1, Replicas: []string{"b-0", "b-1"}, InSync: []string{"b-0", "b-1"}},
			{Topic: "t", Partition: 2, Replicas: []string{"b-0", "b-2", "b-1"}, InSync: []string{"b-0", "b-2"}},
		},
	}
	cur := measureDrain(view, []string{"b-2"}, 2)
	// Partition 0: b-1 is 40 behind; partition 2: b-1 has not fetched yet (counts 1); partition
	// 1 has no replica on b-2.
	if cur.remaining != 2 || cur.lag != 41 {
		t.Fatalf("measure: %+v", cur)
	}
	for _, tc := range []struct {
		name string
		prev drainProgress
		want bool
	}{
		{"a replica moved", drainProgress{remaining: 3, lag: 41}, true},
		{"copies closer to in sync", drainProgress{remaining: 2, lag: 90}, true},
		{"nothing moved", drainProgress{remaining: 2, lag: 41}, false},
		{"further behind", drainProgress{remaining: 2, lag: 10}, false},
	} {
		if got := cur.progressed(tc.prev); got != tc.want {
			t.Errorf("%s: progressed = %v, want %v", tc.name, got, tc.want)
		}
	}
	msg := stallMessage(view, []string{"b-2"}, 5*time.Minute+400*time.Millisecond)
	want := "no partition replica moved off b-2 for 5m0s; 2 partitions wait for their new copies to get in sync, " +
		"e.g. t/0 (replicas b-2,b-1, in sync b-2); t/2 (replicas b-0,b-2,b-1, in sync b-0,b-2); brokers not ready: b-1"
	if msg != want {
		t.Errorf("stall message:\n got %s\nwant %s", msg, want)
	}
}
