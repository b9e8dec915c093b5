package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/controllers"
)

func getTopic(g Gomega, ns, name string) *heraldv1.Topic {
	t := &heraldv1.Topic{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, t)).To(Succeed())
	return t
}

func getSub(g Gomega, ns, name string) *heraldv1.Subscription {
	s := &heraldv1.Subscription{}
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
	return s
}

func cond(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "<missing>"}
}

// objectEvents returns "Type Reason: message" of the Events about one object.
func objectEvents(g Gomega, ns, kind, name string) []string {
	list := &corev1.EventList{}
	g.Expect(k8s.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
		}
	}
	return out
}

func hasEvent(g Gomega, ns, kind, name, prefix string) bool {
	return slices.ContainsFunc(objectEvents(g, ns, kind, name), func(e string) bool { return strings.HasPrefix(e, prefix) })
}

// expectTopicReady waits until the Topic is Ready for its current generation.
func expectTopicReady(g *WithT, ns, name string) *heraldv1.Topic {
	var out *heraldv1.Topic
	g.Eventually(func(g Gomega) {
		t := getTopic(g, ns, name)
		c := cond(t.Status.Conditions, heraldv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "Ready: %s: %s", c.Reason, c.Message)
		g.Expect(t.Status.ObservedGeneration).To(Equal(t.Generation))
		out = t
	}).Should(Succeed())
	return out
}

func expectTopicNotReady(g *WithT, ns, name, reason string, msg ...string) {
	g.Eventually(func(g Gomega) {
		t := getTopic(g, ns, name)
		c := cond(t.Status.Conditions, heraldv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "Ready: %s: %s", c.Reason, c.Message)
		g.Expect(c.Reason).To(Equal(reason), "message: %s", c.Message)
		for _, m := range msg {
			g.Expect(c.Message).To(ContainSubstring(m))
		}
	}).Should(Succeed())
}

func newTopic(ns, name, cluster string, partitions int32) *heraldv1.Topic {
	return &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: heraldv1.TopicSpec{ClusterRef: heraldv1.ClusterReference{Name: cluster}, Partitions: partitions}}
}

func mergePatch(g Gomega, obj client.Object, body string) {
	g.Expect(k8s.Patch(context.Background(), obj, client.RawPatch(types.MergePatchType, []byte(body)))).To(Succeed())
}

func brokerTopic(g Gomega, b *brokerProc, name string) api.Topic {
	t, err := b.client.GetTopic(context.Background(), name)
	g.Expect(err).NotTo(HaveOccurred())
	return t
}

func brokerTopicGone(b *brokerProc, name string) bool {
	_, err := b.client.GetTopic(context.Background(), name)
	var apiErr *api.Error
	return err != nil && errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound
}

func TestTopicLifecycle(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)

	topic := newTopic(ns, "orders", "events", 1)
	topic.Spec.Retention = &heraldv1.TopicRetention{MaxAge: ptr.To(heraldv1.Duration("72h"))}
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())

	t.Run("created on the broker", func(t *testing.T) {
		g := gt(t)
		got := expectTopicReady(g, ns, "orders")
		g.Expect(got.Status.TopicName).To(Equal("orders"))
		g.Expect(got.Status.Partitions).To(Equal(int32(1)))
		g.Expect(got.Status.Stats).NotTo(BeNil())
		g.Expect(got.Finalizers).To(ContainElement(controllers.Finalizer))
		g.Expect(cond(got.Status.Conditions, heraldv1.ConditionReady).Reason).To(Equal(controllers.ReasonSynced))
		g.Expect(cond(got.Status.Conditions, heraldv1.ConditionDrifted).Status).To(Equal(metav1.ConditionFalse))
		bt := brokerTopic(g, b, "orders")
		g.Expect(bt.Partitions).To(Equal(1))
		g.Expect(bt.Retention.MaxAge.D()).To(Equal(72 * time.Hour))
		// Unset in the Topic: the BrokerCluster's defaults.
		g.Expect(bt.Retention.MaxBytes).To(BeZero())
		g.Expect(bt.MaxMessageBytes).To(Equal(1048576))
		g.Eventually(func(g Gomega) {
			g.Expect(objectEvents(g, ns, "Topic", "orders")).To(ContainElement(
				`Normal Created: Created topic "orders" with 1 partitions on BrokerCluster "events"`))
		}).Should(Succeed())
	})

	t.Run("partitions grow, retention and TTL change", func(t *testing.T) {
		g := gt(t)
		mergePatch(g, topic, `{"spec":{"partitions":3,"retention":{"maxAge":"24h","maxBytes":1048576},"messageTTL":"1h","maxMessageBytes":4096}}`)
		g.Eventually(func(g Gomega) {
			bt := brokerTopic(g, b, "orders")
			g.Expect(bt.Partitions).To(Equal(3))
			g.Expect(bt.Retention.MaxAge.D()).To(Equal(24 * time.Hour))
			g.Expect(bt.Retention.MaxBytes).To(Equal(int64(1048576)))
			g.Expect(bt.MessageTTL.D()).To(Equal(time.Hour))
			g.Expect(bt.MaxMessageBytes).To(Equal(4096))
		}).Should(Succeed())
		got := expectTopicReady(g, ns, "orders")
		g.Expect(got.Status.Partitions).To(Equal(int32(3)))
		g.Eventually(func(g Gomega) bool {
			return hasEvent(g, ns, "Topic", "orders", `Normal Updated: Updated topic "orders" on BrokerCluster "events": partitions 1 → 3`)
		}).Should(BeTrue())
		// Not reported as drift: the spec changed.
		g.Expect(cond(got.Status.Conditions, heraldv1.ConditionDrifted).Status).To(Equal(metav1.ConditionFalse))
	})

	t.Run("stats are refreshed", func(t *testing.T) {
		g := gt(t)
		for i := range 5 {
			publish(g, b, "orders", fmt.Sprintf("message %d", i))
		}
		g.Eventually(func(g Gomega) {
			st := getTopic(g, ns, "orders").Status.Stats
			g.Expect(st).NotTo(BeNil())
			g.Expect(st.Messages).To(Equal(int64(5)))
			g.Expect(st.Bytes).To(BeNumerically(">", 0))
		}).Should(Succeed())
	})

	t.Run("deletionPolicy Delete", func(t *testing.T) {
		g := gt(t)
		g.Expect(k8s.Delete(ctx, topic)).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(topic), &heraldv1.Topic{}))
		}).Should(BeTrue())
		g.Expect(brokerTopicGone(b, "orders")).To(BeTrue(), "the topic is still on the broker")
		g.Eventually(func(g Gomega) bool {
			return hasEvent(g, ns, "Topic", "orders", `Normal Deleted: Deleted topic "orders" from BrokerCluster "events"`)
		}).Should(BeTrue())
	})

	t.Run("deletionPolicy Retain", func(t *testing.T) {
		g := gt(t)
		kept := newTopic(ns, "audit-log", "events", 2)
		kept.Spec.TopicName = "audit"
		kept.Spec.DeletionPolicy = heraldv1.DeletionPolicyRetain
		g.Expect(k8s.Create(ctx, kept)).To(Succeed())
		got := expectTopicReady(g, ns, "audit-log")
		g.Expect(got.Status.TopicName).To(Equal("audit"))
		g.Expect(brokerTopic(g, b, "audit").Partitions).To(Equal(2))
		g.Expect(k8s.Delete(ctx, kept)).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(kept), &heraldv1.Topic{}))
		}).Should(BeTrue())
		g.Expect(brokerTopic(g, b, "audit").Partitions).To(Equal(2), "a Retain topic stays on the broker")
	})
}

// TestTopicClusterState: a Topic waits for its cluster to exist and be ready, and for enough
// replicas for its replicationFactor.
func TestTopicClusterState(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)

	lost := newTopic(ns, "lost", "nowhere", 1)
	g.Expect(k8s.Create(ctx, lost)).To(Succeed())
	expectTopicNotReady(g, ns, "lost", controllers.ReasonClusterNotFound, `BrokerCluster "nowhere" not found`)
	g.Expect(getTopic(g, ns, "lost").Finalizers).To(BeEmpty(), "no finalizer before anything exists on a broker")

	createCluster(t, g, ns, "events", 1, b)
	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
	wide := newTopic(ns, "wide", "events", 1)
	wide.Spec.ReplicationFactor = 2
	g.Expect(k8s.Create(ctx, wide)).To(Succeed())
	// The pods never started: no kubelet until the test plays it.
	expectTopicNotReady(g, ns, "orders", controllers.ReasonClusterNotReady, `BrokerCluster "events" is not ready`)
	g.Expect(brokerTopicGone(b, "orders")).To(BeTrue())

	// The cluster's status changes: the Topics converge without waiting for a resync.
	markPodsReady(g, ns, "events", 1)
	expectTopicReady(g, ns, "orders")
	expectTopicNotReady(g, ns, "wide", controllers.ReasonReplicationFactorTooLarge,
		`spec.replicationFactor is 2 but BrokerCluster "events" has 1 replicas`)
	g.Expect(brokerTopicGone(b, "wide")).To(BeTrue(), "a topic that cannot have its replicas is not created")
	g.Eventually(func(g Gomega) bool {
		return hasEvent(g, ns, "Topic", "wide", "Warning ReplicationFactorTooLarge: ")
	}).Should(BeTrue())
	// Waiting for a cluster is said by the condition only, not by Events.
	g.Expect(hasEvent(g, ns, "Topic", "orders", "Warning ClusterNotReady")).To(BeFalse())

	// A Topic of a cluster that does not exist goes at once.
	g.Expect(k8s.Delete(ctx, lost)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(lost), &heraldv1.Topic{}))
	}).Should(BeTrue())
}

// TestTopicConflict: two Topics claim one topic name: the younger waits with reason Conflict, and
// takes over when the older goes (the topic stays on the broker since another Topic claims it).
func TestTopicConflict(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)

	older := newTopic(ns, "payments", "events", 2)
	older.Spec.TopicName = "shared"
	g.Expect(k8s.Create(ctx, older)).To(Succeed())
	expectTopicReady(g, ns, "payments")
	younger := newTopic(ns, "billing", "events", 4)
	younger.Spec.TopicName = "shared"
	g.Expect(k8s.Create(ctx, younger)).To(Succeed())
	expectTopicNotReady(g, ns, "billing", controllers.ReasonConflict, `Topic "payments"`, `already claims topic name "shared"`)
	g.Expect(brokerTopic(g, b, "shared").Partitions).To(Equal(2), "the younger Topic changed the older's topic")
	g.Expect(getTopic(g, ns, "billing").Finalizers).To(BeEmpty())
	// The older stays Ready.
	expectTopicReady(g, ns, "payments")

	g.Expect(k8s.Delete(ctx, older)).To(Succeed())
	got := expectTopicReady(g, ns, "billing")
	g.Expect(got.Status.Partitions).To(Equal(int32(4)))
	g.Expect(brokerTopic(g, b, "shared").Partitions).To(Equal(4))
	g.Eventually(func(g Gomega) bool {
		return hasEvent(g, ns, "Topic", "payments", `Normal Retained: Kept topic "shared" on BrokerCluster "events": Topic "billing" claims it too`)
	}).Should(BeTrue())
}
