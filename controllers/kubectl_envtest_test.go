package controllers_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// TestKubectlGetHerald runs the kubectl of KUBEBUILDER_ASSETS against the test API server:
// `kubectl get herald` (the category) lists all three kinds with their printer columns, the short
// names work, and `kubectl explain` shows the field documentation.
func TestKubectlGetHerald(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)

	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "events", Namespace: ns},
		Spec: heraldv1.BrokerClusterSpec{Replicas: ptr.To[int32](2)}}
	topic := &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Spec: heraldv1.TopicSpec{ClusterRef: heraldv1.ClusterReference{Name: "events"}, Partitions: 6, ReplicationFactor: 2}}
	sub := &heraldv1.Subscription{ObjectMeta: metav1.ObjectMeta{Name: "billing", Namespace: ns},
		Spec: heraldv1.SubscriptionSpec{ClusterRef: heraldv1.ClusterReference{Name: "events"}, Topic: "orders"}}
	g.Expect(k8s.Create(ctx, bc)).To(Succeed())
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())
	// The operator has filled in the BrokerCluster's status.
	g.Eventually(func(g Gomega) {
		bc := getBC(g, client.ObjectKeyFromObject(bc))
		g.Expect(bc.Status.Endpoint).NotTo(BeEmpty())
		g.Expect(bc.Status.Phase).NotTo(BeEmpty())
	}).Should(Succeed())

	out, err := kubectl(t, "get", "herald", "-n", ns)
	g.Expect(err).NotTo(HaveOccurred())
	t.Logf("kubectl get herald:\n%s", out)
	// One table per kind: a NAME header line, then rows named <kind>.<group>/<name>.
	headers := map[string][]string{}
	var header []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "NAME":
			header = f
		case header != nil:
			headers[strings.SplitN(f[0], "/", 2)[0]] = header
			header = nil
		}
	}
	g.Expect(headers).To(HaveKeyWithValue("brokercluster.herald.dev",
		[]string{"NAME", "REPLICAS", "READY", "PHASE", "ENDPOINT", "AGE"}))
	g.Expect(headers).To(HaveKeyWithValue("topic.herald.dev",
		[]string{"NAME", "CLUSTER", "PARTITIONS", "RF", "READY", "AGE"}))
	g.Expect(headers).To(HaveKeyWithValue("subscription.herald.dev",
		[]string{"NAME", "TOPIC", "MODE", "ENDPOINT", "BACKLOG", "READY", "AGE"}))
	g.Expect(out).To(MatchRegexp(`(?m)^brokercluster\.herald\.dev/events\s+2\s+\S+\s+Creating\s+http://events\.%s\.svc:8080\s`, regexp.QuoteMeta(ns)))
	g.Expect(out).To(MatchRegexp(`(?m)^topic\.herald\.dev/orders\s+events\s+6\s+2\s`))
	g.Expect(out).To(MatchRegexp(`(?m)^subscription\.herald\.dev/billing\s+orders\s`))

	for short, name := range map[string]string{"hbc": "events", "htopic": "orders", "hsub": "billing"} {
		out, err := kubectl(t, "get", short, "-n", ns, "-o", "name")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(out).To(ContainSubstring("/"+name), "kubectl get %s", short)
	}

	out, err = kubectl(t, "explain", "brokercluster.spec.config.fsync")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(ContainSubstring("When the brokers flush appended messages to disk"))
	out, err = kubectl(t, "explain", "topic.spec.partitions")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(ContainSubstring("Number of partitions"))
}
