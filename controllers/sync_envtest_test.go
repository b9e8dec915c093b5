package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/controllers"
)

// TestDriftIsRestored: topics and subscriptions deleted or changed on the broker behind the
// operator's back are restored by the periodic resync, with an Event and a Drifted condition that
// says what was corrected.
func TestDriftIsRestored(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)
	topic := newTopic(ns, "orders", "events", 2)
	topic.Spec.Retention = &heraldv1.TopicRetention{MaxAge: ptr.To(heraldv1.Duration("48h"))}
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())
	expectTopicReady(g, ns, "orders")
	recv := newPushEndpoint(t)
	sub := newSub(ns, "billing", "events", "orders")
	sub.Spec.Push = &heraldv1.PushSpec{URI: recv.srv.URL + "/"}
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())
	expectSubReady(g, ns, "billing")

	driftMessage := func(conds []metav1.Condition) string {
		c := cond(conds, heraldv1.ConditionDrifted)
		return string(c.Status) + " " + c.Reason + ": " + c.Message
	}

	t.Run("topic deleted on the broker", func(t *testing.T) {
		g := gt(t)
		g.Expect(b.client.DeleteTopic(ctx, "orders")).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(brokerTopic(g, b, "orders").Partitions).To(Equal(2))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(driftMessage(getTopic(g, ns, "orders").Status.Conditions)).To(ContainSubstring(
				"the topic was deleted on the broker; re-created it"))
			g.Expect(hasEvent(g, ns, "Topic", "orders", `Warning Drifted: Topic "orders" was deleted on BrokerCluster "events" behind the operator's back; re-created it`)).To(BeTrue())
		}).Should(Succeed())
		expectTopicReady(g, ns, "orders")
	})

	t.Run("topic changed on the broker", func(t *testing.T) {
		g := gt(t)
		bt := brokerTopic(g, b, "orders")
		changed := bt.TopicSpec
		changed.Retention = &api.Retention{MaxAge: api.Duration(time.Hour)}
		_, _, err := b.client.PutTopic(ctx, "orders", changed)
		g.Expect(err).NotTo(HaveOccurred())
		g.Eventually(func(g Gomega) {
			g.Expect(brokerTopic(g, b, "orders").Retention.MaxAge.D()).To(Equal(48 * time.Hour))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(driftMessage(getTopic(g, ns, "orders").Status.Conditions)).To(ContainSubstring(
				"retention.maxAge was 1h on the broker, restored to 48h"))
		}).Should(Succeed())
	})

	t.Run("topic grown on the broker", func(t *testing.T) {
		g := gt(t)
		// Partitions cannot shrink: the operator says what to do instead of failing in a loop.
		bt := brokerTopic(g, b, "orders")
		grown := bt.TopicSpec
		grown.Partitions = 5
		_, _, err := b.client.PutTopic(ctx, "orders", grown)
		g.Expect(err).NotTo(HaveOccurred())
		expectTopicNotReady(g, ns, "orders", controllers.ReasonPartitionsCannotShrink,
			"has 5 partitions on BrokerCluster \"events\", more than spec.partitions (2)")
		mergePatch(g, topic, `{"spec":{"partitions":5}}`)
		expectTopicReady(g, ns, "orders")
	})

	t.Run("subscription deleted on the broker", func(t *testing.T) {
		g := gt(t)
		g.Expect(b.client.DeleteSubscription(ctx, "billing")).To(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(brokerSub(g, b, "billing").Push.Endpoint).To(Equal(recv.srv.URL + "/"))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(driftMessage(getSub(g, ns, "billing").Status.Conditions)).To(ContainSubstring(
				"the subscription was deleted on the broker; re-created it"))
		}).Should(Succeed())
	})

	t.Run("subscription changed on the broker", func(t *testing.T) {
		g := gt(t)
		bs := brokerSub(g, b, "billing")
		changed := bs.SubscriptionSpec
		changed.Push.Endpoint = "http://127.0.0.1:9/elsewhere"
		changed.AckDeadline = api.Duration(time.Minute)
		_, _, err := b.client.PutSubscription(ctx, "billing", changed)
		g.Expect(err).NotTo(HaveOccurred())
		g.Eventually(func(g Gomega) {
			bs := brokerSub(g, b, "billing")
			g.Expect(bs.Push.Endpoint).To(Equal(recv.srv.URL + "/"))
			g.Expect(bs.AckDeadline.D()).To(Equal(30 * time.Second))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			m := driftMessage(getSub(g, ns, "billing").Status.Conditions)
			g.Expect(m).To(ContainSubstring("ackDeadline was 1m on the broker, restored to 30s"))
			g.Expect(m).To(ContainSubstring("push.endpoint was http://127.0.0.1:9/elsewhere on the broker, restored to " + recv.srv.URL + "/"))
			g.Expect(hasEvent(g, ns, "Subscription", "billing", `Warning Drifted: Subscription "billing" was changed on BrokerCluster "events" behind the operator's back; restored: `)).To(BeTrue())
		}).Should(Succeed())
		// Deliveries go on to the right place.
		publish(g, b, "orders", "after the drift")
		g.Eventually(func() bool { _, ok := recv.find("after the drift"); return ok }).Should(BeTrue())
		// Once a later resync finds the broker in sync, Drifted turns False and keeps the story.
		g.Eventually(func(g Gomega) {
			c := cond(getSub(g, ns, "billing").Status.Conditions, heraldv1.ConditionDrifted)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Message).To(ContainSubstring("last correction at "))
		}).Should(Succeed())
	})
}

// TestBrokerDownAndBack: a broker that stops answering is reported (no crash, no tight loop), and
// everything recovers when it is back.
func TestBrokerDownAndBack(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)
	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
	expectTopicReady(g, ns, "orders")
	g.Expect(k8s.Create(ctx, newSub(ns, "audit", "events", "orders"))).To(Succeed())
	expectSubReady(g, ns, "audit")

	b.kill()
	expectTopicNotReady(g, ns, "orders", controllers.ReasonBrokerUnreachable, `reading topic "orders"`, "connection refused")
	g.Eventually(func(g Gomega) {
		s := getSub(g, ns, "audit")
		c := cond(s.Status.Conditions, heraldv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		// Its Topic is not Ready, or its own request failed: either says why.
		g.Expect(c.Reason).To(BeElementOf(controllers.ReasonTopicNotReady, controllers.ReasonBrokerUnreachable))
		g.Expect(c.Message).To(ContainSubstring("connection refused"))
	}).Should(Succeed())
	g.Eventually(func(g Gomega) bool {
		return hasEvent(g, ns, "Topic", "orders", "Warning BrokerUnreachable: ")
	}).Should(BeTrue())
	// Back-off, not a tight loop: while the broker is down, a few reconciles at most per second.
	key := types.NamespacedName{Namespace: ns, Name: "orders"}
	before := topicRecons.get(key)
	start := time.Now()
	time.Sleep(3 * time.Second)
	if n, d := topicRecons.get(key)-before, time.Since(start); float64(n) > 2*d.Seconds()+2 {
		t.Errorf("%d reconciles of a Topic in %s while its broker was down", n, d)
	}

	b.start()
	expectTopicReady(g, ns, "orders")
	expectSubReady(g, ns, "audit")
	// Nothing was lost: the broker kept them on disk.
	g.Expect(brokerSub(g, b, "audit").Topic).To(Equal("orders"))
}

const orderManifests = `
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata: {name: shipping}
spec:
  clusterRef: {name: events}
  topic: orders
  deadLetterTopic: orders-dead
  retry: {policy: linear, maxAttempts: 3}
---
apiVersion: herald.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec:
  clusterRef: {name: events}
  partitions: 3
  retention: {maxAge: 24h}
---
apiVersion: herald.dev/v1alpha1
kind: Topic
metadata: {name: orders-dead}
spec:
  clusterRef: {name: events}
---
apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata: {name: events}
spec:
  replicas: 1
  storage: {ephemeral: true}
`

// TestOrderIndependenceAndReapply: manifests applied in the worst order (Subscription, then
// Topics, then BrokerCluster) converge; applying them again changes nothing and makes the
// operator write nothing.
func TestOrderIndependenceAndReapply(t *testing.T) {
	g := requireEnv(t)
	ns := newNamespace(t, g)
	b := startBroker(t)
	brokerURLs.set(ns, "events", b.url())
	dir := t.TempDir()
	var files []string
	for i, doc := range splitYAML(orderManifests) {
		f := filepath.Join(dir, fmt.Sprintf("%d.yaml", i))
		g.Expect(os.WriteFile(f, []byte(doc), 0o644)).To(Succeed())
		files = append(files, f)
	}
	apply := func(f string) {
		out, err := kubectl(t, "apply", "-n", ns, "-f", f)
		g.Expect(err).NotTo(HaveOccurred(), out)
	}

	apply(files[0]) // Subscription
	expectSubNotReady(g, ns, "shipping", controllers.ReasonClusterNotFound)
	apply(files[1]) // Topics
	apply(files[2])
	expectTopicNotReady(g, ns, "orders", controllers.ReasonClusterNotFound)
	apply(files[3]) // BrokerCluster
	expectTopicNotReady(g, ns, "orders", controllers.ReasonClusterNotReady)
	markPodsReady(g, ns, "events", 1)
	expectTopicReady(g, ns, "orders")
	expectTopicReady(g, ns, "orders-dead")
	expectSubReady(g, ns, "shipping")
	bs := brokerSub(g, b, "shipping")
	g.Expect(bs.DeadLetterTopic).To(Equal("orders-dead"))
	g.Expect(bs.Retry.Policy).To(Equal("linear"))
	g.Expect(bs.Retry.MaxAttempts).To(Equal(3))

	// Settled: a window of several resyncs with no write by the operator in the namespace.
	objects := []types.NamespacedName{{Namespace: ns, Name: "orders"}, {Namespace: ns, Name: "orders-dead"}}
	subKey := types.NamespacedName{Namespace: ns, Name: "shipping"}
	var before []string
	g.Eventually(func() []string {
		before = writes.in(ns)
		n := subRecons.get(subKey)
		g.Eventually(func() int { return subRecons.get(subKey) }).Should(BeNumerically(">=", n+2))
		return writes.in(ns)[len(before):]
	}).Should(BeEmpty())

	// Apply everything again, as a GitOps tool does, and make each object reconcile.
	startT, startS := topicRecons.get(objects[0]), subRecons.get(subKey)
	for _, f := range files {
		out, err := kubectl(t, "apply", "-n", ns, "-f", f)
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(out).To(ContainSubstring("unchanged"))
	}
	for _, obj := range []client.Object{
		&heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns}},
		&heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: "orders-dead", Namespace: ns}},
		&heraldv1.Subscription{ObjectMeta: metav1.ObjectMeta{Name: "shipping", Namespace: ns}},
	} {
		mergePatch(g, obj, `{"metadata":{"annotations":{"test.herald.dev/touch":"1"}}}`)
	}
	// Three more resyncs of everything.
	g.Eventually(func() bool {
		return topicRecons.get(objects[0]) >= startT+3 && subRecons.get(subKey) >= startS+3
	}).Should(BeTrue())
	after := writes.in(ns)
	g.Expect(after[len(before):]).To(BeEmpty(), "the operator wrote to the API server although nothing changed")
	t.Logf("%d Topic and %d Subscription reconciles after convergence, %d writes",
		topicRecons.get(objects[0])-startT, subRecons.get(subKey)-startS, len(after)-len(before))
}

func splitYAML(s string) []string {
	var out []string
	for _, doc := range strings.Split(s, "\n---\n") {
		if strings.TrimSpace(doc) != "" {
			out = append(out, doc+"\n")
		}
	}
	return out
}

// TestDeletingTheClusterOrNamespaceNeverHangs: finalizers are released at once when the
// BrokerCluster is gone, even with its brokers down; a whole namespace deletion finishes.
func TestDeletingTheClusterOrNamespaceNeverHangs(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	bc := newReadyCluster(t, g, ns, "events", 1, b)
	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
	g.Expect(k8s.Create(ctx, newSub(ns, "audit", "events", "orders"))).To(Succeed())
	expectTopicReady(g, ns, "orders")
	expectSubReady(g, ns, "audit")
	b.kill()

	t.Run("while the brokers are down, a delete waits", func(t *testing.T) {
		g := gt(t)
		g.Expect(k8s.Delete(ctx, newSub(ns, "audit", "events", "orders"))).To(Succeed())
		expectSubNotReady(g, ns, "audit", controllers.ReasonDeleteFailed, `deleting subscription "audit"`, "set deletionPolicy: Retain")
	})

	t.Run("deleting the BrokerCluster releases the finalizers", func(t *testing.T) {
		g := gt(t)
		g.Expect(k8s.Delete(ctx, bc)).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(bc), &heraldv1.BrokerCluster{}))
		}).Should(BeTrue())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "audit"}, &heraldv1.Subscription{}))
		}).Should(BeTrue())
		g.Expect(k8s.Delete(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders"}, &heraldv1.Topic{}))
		}).Should(BeTrue())
	})

	t.Run("namespace deletion finishes", func(t *testing.T) {
		g := gt(t)
		b2 := startBroker(t)
		newReadyCluster(t, g, ns, "second", 1, b2)
		for i := range 3 {
			g.Expect(k8s.Create(ctx, newTopic(ns, fmt.Sprintf("topic-%d", i), "second", 1))).To(Succeed())
			g.Expect(k8s.Create(ctx, newSub(ns, fmt.Sprintf("sub-%d", i), "second", fmt.Sprintf("topic-%d", i)))).To(Succeed())
		}
		for i := range 3 {
			expectTopicReady(g, ns, fmt.Sprintf("topic-%d", i))
			expectSubReady(g, ns, fmt.Sprintf("sub-%d", i))
		}
		b2.kill() // the worst case: nothing can be deleted on the brokers
		g.Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}))
		}).WithTimeout(4*time.Minute).Should(BeTrue(), "namespace %s is still there", ns)
	})
}
