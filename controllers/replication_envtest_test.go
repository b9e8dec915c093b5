package controllers_test

// The operator against a replicated cluster: three real `herald broker` processes whose node ids
// are the pod names of a BrokerCluster (as under the operator), which the operator reaches
// through its broker URL override at the first one. The StatefulSet's pods never run (no kubelet
// in envtest): the test marks them ready and plays the kubelet's part when a pod goes (it kills
// that broker).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/controllers"
)

// clusterView is GET /v1/cluster of broker b.
func clusterView(g Gomega, b *brokerProc) controllers.ClusterView {
	resp, err := http.Get(b.url() + "/v1/cluster")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "GET /v1/cluster: %s", body)
	var v controllers.ClusterView
	g.Expect(json.Unmarshal(body, &v)).To(Succeed())
	return v
}

func member(v controllers.ClusterView, id string) (controllers.ClusterMember, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return controllers.ClusterMember{}, false
}

func statefulSetReplicas(g Gomega, ns, name string) int32 {
	sts := &appsv1.StatefulSet{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, sts)).To(Succeed())
	return ptr.Deref(sts.Spec.Replicas, -1)
}

func TestTopicReplication(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	nodes := startBrokerCluster(t, "repl", 3)
	newReadyCluster(t, g, ns, "repl", 3, nodes[0])

	topic := newTopic(ns, "orders", "repl", 3)
	topic.Spec.ReplicationFactor = 3
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())

	t.Run("replicationFactor reaches the brokers", func(t *testing.T) {
		g := gt(t)
		got := expectTopicReady(g, ns, "orders")
		g.Expect(got.Status.ReplicationFactor).To(Equal(int32(3)))
		g.Expect(brokerTopic(g, nodes[0], "orders").ReplicationFactor).To(Equal(3))
		for _, p := range clusterView(g, nodes[0]).Partitions {
			if p.Topic == "orders" {
				g.Expect(p.Replicas).To(HaveLen(3))
			}
		}
		g.Eventually(func(g Gomega) {
			tp := getTopic(g, ns, "orders")
			c := cond(tp.Status.Conditions, heraldv1.ConditionUnderReplicated)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "%s: %s", c.Reason, c.Message)
			g.Expect(c.Reason).To(Equal(controllers.ReasonFullyReplicated))
			g.Expect(c.Message).To(Equal("all 3 partitions have every copy in sync"))
			g.Expect(tp.Status.UnderReplicatedPartitions).To(BeZero())
		}).Should(Succeed())
	})

	t.Run("a broker down makes the topic under-replicated", func(t *testing.T) {
		g := gt(t)
		publish(g, nodes[0], "orders", "before")
		nodes[2].kill()
		g.Eventually(func(g Gomega) {
			tp := getTopic(g, ns, "orders")
			c := cond(tp.Status.Conditions, heraldv1.ConditionUnderReplicated)
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%s: %s", c.Reason, c.Message)
			g.Expect(c.Reason).To(Equal(controllers.ReasonUnderReplicated))
			g.Expect(c.Message).To(HavePrefix("3 of 3 partitions are under-replicated: partition 0 has 2 of 3 copies in sync"))
			g.Expect(c.Message).To(ContainSubstring("partition 2 has 2 of 3 copies in sync"))
			g.Expect(tp.Status.UnderReplicatedPartitions).To(Equal(int32(3)))
			// Still served by the other two.
			g.Expect(cond(tp.Status.Conditions, heraldv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())
		publish(g, nodes[0], "orders", "while one is down")
	})

	t.Run("back in sync when it returns", func(t *testing.T) {
		g := gt(t)
		nodes[2].start()
		g.Eventually(func(g Gomega) {
			tp := getTopic(g, ns, "orders")
			c := cond(tp.Status.Conditions, heraldv1.ConditionUnderReplicated)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "%s: %s", c.Reason, c.Message)
			g.Expect(tp.Status.UnderReplicatedPartitions).To(BeZero())
		}).Should(Succeed())
	})

	t.Run("a broker topic with another replicationFactor is reported, not changed", func(t *testing.T) {
		g := gt(t)
		_, _, err := nodes[0].client.PutTopic(ctx, "audit", api.TopicSpec{Partitions: 1, ReplicationFactor: 2})
		g.Expect(err).NotTo(HaveOccurred())
		audit := newTopic(ns, "audit", "repl", 1)
		audit.Spec.ReplicationFactor = 3
		g.Expect(k8s.Create(ctx, audit)).To(Succeed())
		expectTopicNotReady(g, ns, "audit", controllers.ReasonReplicationFactorMismatch,
			`topic "audit" has replicationFactor 2 on BrokerCluster "repl", not 3`)
		g.Expect(brokerTopic(g, nodes[0], "audit").ReplicationFactor).To(Equal(2))
	})
}

func TestScaleDownDrainsBrokers(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	nodes := startBrokerCluster(t, "shrink", 3)
	bc := newReadyCluster(t, g, ns, "shrink", 3, nodes[0])
	key := client.ObjectKeyFromObject(bc)

	evTopic := newTopic(ns, "events", "shrink", 4)
	evTopic.Spec.ReplicationFactor = 2
	g.Expect(k8s.Create(ctx, evTopic)).To(Succeed())
	wide := newTopic(ns, "wide", "shrink", 1)
	wide.Spec.ReplicationFactor = 3
	g.Expect(k8s.Create(ctx, wide)).To(Succeed())
	expectTopicReady(g, ns, "events")
	expectTopicReady(g, ns, "wide")
	for i := range 20 {
		_, err := nodes[0].client.Publish(ctx, "events", []api.PublishMessage{{Text: ptr.To(fmt.Sprint("m", i)), Key: fmt.Sprint("k", i)}})
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Eventually(func(g Gomega) {
		m, ok := member(clusterView(g, nodes[0]), "shrink-2")
		g.Expect(ok).To(BeTrue())
		g.Expect(m.Replicas).To(BeNumerically(">", 1), "shrink-2 holds partition replicas")
	}).Should(Succeed())

	t.Run("a topic with more copies than brokers blocks the scale-down", func(t *testing.T) {
		g := gt(t)
		patch(g, key, `{"spec":{"replicas":2}}`)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(bc.Status.Drain).NotTo(BeNil())
			g.Expect(bc.Status.Drain.Members).To(Equal([]string{"shrink-2"}))
			g.Expect(bc.Status.Drain.BlockedReason).To(ContainSubstring(
				`cannot scale down to 2 brokers: Topic "wide" (replicationFactor 3) keeps more copies of each partition than 2 brokers can hold`))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseFailed))
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionTrue))
			g.Expect(condition(bc, "Degraded").Reason).To(Equal(controllers.ReasonDrainBlocked))
			g.Expect(condition(bc, "Progressing").Reason).To(Equal(controllers.ReasonDrainBlocked))
			g.Expect(events(g, bc)).To(ContainElement(ContainSubstring(`Warning DrainBlocked: cannot scale down to 2 brokers`)))
		}).Should(Succeed())
		// Nothing moves: the StatefulSet keeps its pods, the broker is not drained, and the
		// cluster and its topics keep working.
		g.Consistently(func(g Gomega) {
			g.Expect(statefulSetReplicas(g, ns, "shrink")).To(Equal(int32(3)))
			m, ok := member(clusterView(g, nodes[0]), "shrink-2")
			g.Expect(ok).To(BeTrue())
			g.Expect(m.Draining).To(BeFalse())
		}, 3*time.Second, 200*time.Millisecond).Should(Succeed())
		g.Expect(cond(getTopic(g, ns, "wide").Status.Conditions, heraldv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		g.Expect(cond(getTopic(g, ns, "events").Status.Conditions, heraldv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
	})

	t.Run("the broker that goes is drained and removed before the StatefulSet shrinks", func(t *testing.T) {
		g := gt(t)
		// Deleting the blocking Topic (and its topic on the brokers) unblocks the drain.
		g.Expect(k8s.Delete(ctx, getTopic(g, ns, "wide"))).To(Succeed())
		sawDraining := false
		g.Eventually(func(g Gomega) {
			replicas := statefulSetReplicas(g, ns, "shrink")
			view := clusterView(g, nodes[0])
			m, isMember := member(view, "shrink-2")
			if replicas == 3 {
				bc := getBC(g, key)
				if bc.Status.Drain != nil && bc.Status.Drain.BlockedReason == "" &&
					condition(bc, "Progressing").Reason == controllers.ReasonDraining {
					g.Expect(bc.Status.Drain.Members).To(Equal([]string{"shrink-2"}))
					g.Expect(condition(bc, "Progressing").Message).To(HavePrefix("draining shrink-2 ("))
					g.Expect(condition(bc, "Progressing").Message).To(HaveSuffix("partition replicas left) before scaling from 3 to 2 brokers"))
					g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseUpdating))
					g.Expect(isMember).To(BeTrue())
					g.Expect(m.Draining).To(BeTrue())
					sawDraining = true
				}
			}
			// The StatefulSet shrinks only once the broker is out of the cluster.
			g.Expect(isMember).To(BeFalse(), "shrink-2 is still a member (%+v); StatefulSet replicas %d", m, replicas)
			g.Expect(replicas).To(Equal(int32(2)))
		}).Should(Succeed())
		g.Expect(sawDraining).To(BeTrue(), "the status never showed the drain in progress")
		// The kubelet's part: the pod goes, and its broker with it.
		nodes[2].kill()

		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(bc.Status.Drain).To(BeNil())
			g.Expect(bc.Status.Replicas).To(Equal(int32(2)))
			g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseRunning))
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(condition(bc, "Ready").Status).To(Equal(metav1.ConditionTrue))
			ev := events(g, bc)
			g.Expect(ev).To(ContainElement(HavePrefix("Normal Draining: Draining broker shrink-2 (")))
			g.Expect(ev).To(ContainElement("Normal RemovedMember: Removed the drained broker shrink-2 from the cluster"))
			g.Expect(ev).To(ContainElement("Normal Drained: Every broker that goes is drained and removed from the cluster; scaling from 3 to 2 brokers"))
		}).Should(Succeed())

		// Every message is still there, on the two brokers that stay, fully replicated.
		view := clusterView(g, nodes[0])
		g.Expect(view.Members).To(HaveLen(2))
		for _, p := range view.Partitions {
			g.Expect(p.Replicas).NotTo(ContainElement("shrink-2"), "partition %s/%d", p.Topic, p.Partition)
		}
		bt := brokerTopic(g, nodes[0], "events")
		g.Expect(bt.Stats.Messages).To(Equal(int64(20)))
		g.Eventually(func(g Gomega) {
			c := cond(getTopic(g, ns, "events").Status.Conditions, heraldv1.ConditionUnderReplicated)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "%s: %s", c.Reason, c.Message)
		}).Should(Succeed())
		g.Expect(slices.ContainsFunc(view.Members, func(m controllers.ClusterMember) bool { return m.Draining })).To(BeFalse())
	})
}

// TestDrainStall: a drain whose new copies cannot get in sync (a broker that stays is down)
// is reported blocked after the stall timeout, naming the partitions and the broker; it goes
// on, and finishes, once the broker is back.
func TestDrainStall(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	nodes := startBrokerCluster(t, "stall", 3)
	bc := newReadyCluster(t, g, ns, "stall", 3, nodes[0])
	key := client.ObjectKeyFromObject(bc)
	topic := newTopic(ns, "slow", "stall", 3)
	topic.Spec.ReplicationFactor = 2
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())
	expectTopicReady(g, ns, "slow")
	g.Eventually(func(g Gomega) {
		m, ok := member(clusterView(g, nodes[0]), "stall-2")
		g.Expect(ok).To(BeTrue())
		g.Expect(m.Replicas).To(BeNumerically(">", 0))
	}).Should(Succeed())

	// stall-1 stays but is down: stall-2's replicas have nowhere to get in sync.
	nodes[1].kill()
	patch(g, key, `{"spec":{"replicas":2}}`)
	var since *metav1.Time
	g.Eventually(func(g Gomega) {
		bc := getBC(g, key)
		g.Expect(bc.Status.Drain).NotTo(BeNil())
		since = bc.Status.Drain.LastProgressTime
		g.Expect(since).NotTo(BeNil())
		g.Expect(bc.Status.Drain.BlockedReason).To(ContainSubstring("no partition replica moved off stall-2 for"))
		g.Expect(bc.Status.Drain.BlockedReason).To(ContainSubstring("brokers not ready: stall-1"))
		g.Expect(bc.Status.Drain.BlockedReason).To(MatchRegexp(`\d+ partitions wait for their new copies to get in sync, e\.g\. slow/\d \(replicas `))
		g.Expect(condition(bc, "Progressing").Reason).To(Equal(controllers.ReasonDrainBlocked))
		g.Expect(statefulSetReplicas(g, ns, "stall")).To(Equal(int32(3)))
		g.Expect(events(g, bc)).To(ContainElement(ContainSubstring("Warning DrainBlocked: no partition replica moved off stall-2")))
	}, testDrainStall+60*time.Second, time.Second).Should(Succeed())
	t.Logf("blocked since %s", since.Time.Format(time.RFC3339))

	// Back: the copies catch up, the drain finishes, the StatefulSet shrinks.
	nodes[1].start()
	g.Eventually(func(g Gomega) {
		g.Expect(statefulSetReplicas(g, ns, "stall")).To(Equal(int32(2)))
		_, isMember := member(clusterView(g, nodes[0]), "stall-2")
		g.Expect(isMember).To(BeFalse())
	}, 90*time.Second, time.Second).Should(Succeed())
	nodes[2].kill()
	g.Eventually(func(g Gomega) {
		bc := getBC(g, key)
		g.Expect(bc.Status.Drain).To(BeNil())
		g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseRunning))
	}).Should(Succeed())
}
