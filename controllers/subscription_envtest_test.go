package controllers_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
	"github.com/heraldmq/herald/controllers"
)

func newSub(ns, name, cluster, topic string) *heraldv1.Subscription {
	return &heraldv1.Subscription{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: heraldv1.SubscriptionSpec{ClusterRef: heraldv1.ClusterReference{Name: cluster}, Topic: topic}}
}

func expectSubReady(g *WithT, ns, name string) *heraldv1.Subscription {
	var out *heraldv1.Subscription
	g.Eventually(func(g Gomega) {
		s := getSub(g, ns, name)
		c := cond(s.Status.Conditions, heraldv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "Ready: %s: %s", c.Reason, c.Message)
		g.Expect(s.Status.ObservedGeneration).To(Equal(s.Generation))
		out = s
	}).Should(Succeed())
	return out
}

func expectSubNotReady(g *WithT, ns, name, reason string, msg ...string) {
	g.Eventually(func(g Gomega) {
		s := getSub(g, ns, name)
		c := cond(s.Status.Conditions, heraldv1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "Ready: %s: %s", c.Reason, c.Message)
		g.Expect(c.Reason).To(Equal(reason), "message: %s", c.Message)
		for _, m := range msg {
			g.Expect(c.Message).To(ContainSubstring(m))
		}
	}).Should(Succeed())
}

func brokerSub(g Gomega, b *brokerProc, name string) api.Subscription {
	s, err := b.client.GetSubscription(context.Background(), name)
	g.Expect(err).NotTo(HaveOccurred())
	return s
}

// TestSubscriptionPush: a push subscription to a real HTTP server delivers what is published
// through the broker; a new endpoint in the spec gets the later messages.
func TestSubscriptionPush(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)
	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 2))).To(Succeed())
	expectTopicReady(g, ns, "orders")

	first, second := newPushEndpoint(t), newPushEndpoint(t)
	sub := newSub(ns, "billing", "events", "orders")
	sub.Spec.Push = &heraldv1.PushSpec{URI: first.srv.URL + "/hook", Headers: map[string]string{"X-Team": "billing"}}
	sub.Spec.Retry = heraldv1.RetrySpec{Policy: heraldv1.RetryMNSBackoff}
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())

	got := expectSubReady(g, ns, "billing")
	g.Expect(got.Status.Mode).To(Equal(heraldv1.ModePush))
	g.Expect(got.Status.Endpoint).To(Equal(first.srv.URL + "/hook"))
	g.Expect(got.Finalizers).To(ContainElement(controllers.Finalizer))
	bs := brokerSub(g, b, "billing")
	g.Expect(bs.Topic).To(Equal("orders"))
	g.Expect(bs.Push.Endpoint).To(Equal(first.srv.URL + "/hook"))
	g.Expect(bs.Retry.Policy).To(Equal("mns-backoff"))
	g.Expect(bs.Retry.MaxAttempts).To(Equal(4), "the policy's own default, not the exponential one")

	publish(g, b, "orders", "first message")
	g.Eventually(func() bool { _, ok := first.find("first message"); return ok }).Should(BeTrue())
	r, _ := first.find("first message")
	g.Expect(r.Header.Get("X-Team")).To(Equal("billing"))
	g.Expect(r.Header.Get("Herald-Subscription")).To(Equal("billing"))

	mergePatch(g, sub, fmt.Sprintf(`{"spec":{"push":{"uri":%q}}}`, second.srv.URL+"/v2"))
	g.Eventually(func(g Gomega) {
		g.Expect(brokerSub(g, b, "billing").Push.Endpoint).To(Equal(second.srv.URL + "/v2"))
	}).Should(Succeed())
	got = expectSubReady(g, ns, "billing")
	g.Expect(got.Status.Endpoint).To(Equal(second.srv.URL + "/v2"))
	publish(g, b, "orders", "second message")
	g.Eventually(func() bool { _, ok := second.find("second message"); return ok }).Should(BeTrue())
	_, ok := first.find("second message")
	g.Expect(ok).To(BeFalse(), "the old endpoint got a message published after the change")
	g.Eventually(func(g Gomega) {
		g.Expect(hasEvent(g, ns, "Subscription", "billing", "Normal Updated: Updated subscription \"billing\" on BrokerCluster \"events\": push.endpoint ")).To(BeTrue())
		s := getSub(g, ns, "billing")
		g.Expect(s.Status.Delivered).To(BeNumerically(">=", 2))
		g.Expect(s.Status.Backlog).To(BeZero())
	}).Should(Succeed())
}

// TestSubscriptionWaitsForItsTopic: a Subscription applied before its Topic waits with a
// condition, then converges as soon as the Topic is Ready; a pull subscription has no endpoint.
func TestSubscriptionWaitsForItsTopic(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)

	sub := newSub(ns, "audit", "events", "orders")
	sub.Spec.DeadLetterTopic = "orders-dead"
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())
	expectSubNotReady(g, ns, "audit", controllers.ReasonTopicNotFound, `waiting for Topic "orders"`)
	g.Expect(getSub(g, ns, "audit").Finalizers).To(BeEmpty())

	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
	expectSubNotReady(g, ns, "audit", controllers.ReasonDeadLetterTopicNotReady, `spec.deadLetterTopic: waiting for Topic "orders-dead"`)
	dead := newTopic(ns, "orders-dead", "events", 1)
	dead.Spec.TopicName = "orders.dlq"
	g.Expect(k8s.Create(ctx, dead)).To(Succeed())
	got := expectSubReady(g, ns, "audit")
	g.Expect(got.Status.Mode).To(Equal(heraldv1.ModePull))
	g.Expect(got.Status.Endpoint).To(BeEmpty())
	bs := brokerSub(g, b, "audit")
	g.Expect(bs.Push).To(BeNil())
	g.Expect(bs.DeadLetterTopic).To(Equal("orders.dlq"))

	publish(g, b, "orders", "one")
	publish(g, b, "orders", "two")
	g.Eventually(func(g Gomega) {
		g.Expect(getSub(g, ns, "audit").Status.Backlog).To(Equal(int64(2)))
	}).Should(Succeed())
}

// TestSubscriptionServiceRefAndSigningSecret: push.serviceRef resolves to the Service's cluster
// URL and is resolved again when the Service changes; the signing Secret is read, and rotating it
// changes the signature of later deliveries.
func TestSubscriptionServiceRefAndSigningSecret(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "events", 1, b)
	g.Expect(k8s.Create(ctx, newTopic(ns, "orders", "events", 1))).To(Succeed())
	expectTopicReady(g, ns, "orders")

	recv := newPushEndpoint(t)
	// The local stand-in for cluster DNS: the Service's name resolves to the endpoint's host.
	b.addHost("hooks." + ns + ".svc")
	url := fmt.Sprintf("http://hooks.%s.svc:%d/in", ns, recv.port())
	sub := newSub(ns, "signed", "events", "orders")
	sub.Spec.Push = &heraldv1.PushSpec{
		ServiceRef:       &heraldv1.ServiceReference{Name: "hooks", Port: ptr.To(recv.port()), Path: "/in"},
		SigningSecretRef: &heraldv1.SecretReference{Name: "hook-signing"},
	}
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())
	expectSubNotReady(g, ns, "signed", controllers.ReasonServiceNotFound, `Service "hooks" not found`)
	g.Expect(getSub(g, ns, "signed").Status.Endpoint).To(Equal(url))

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hooks", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: recv.port() + 1, TargetPort: intstr.FromInt32(8080)}}}}
	g.Expect(k8s.Create(ctx, svc)).To(Succeed())
	expectSubNotReady(g, ns, "signed", controllers.ReasonServicePortNotFound, fmt.Sprintf("no TCP port %d", recv.port()))
	svc.Spec.Ports[0].Port = recv.port()
	g.Expect(k8s.Update(ctx, svc)).To(Succeed())
	expectSubNotReady(g, ns, "signed", controllers.ReasonSigningSecretNotFound, `Secret "hook-signing" not found`)

	keyA := "whsec_" + base64.StdEncoding.EncodeToString([]byte("first signing key"))
	keyB := "whsec_" + base64.StdEncoding.EncodeToString([]byte("second signing key"))
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook-signing", Namespace: ns},
		Data: map[string][]byte{"current": []byte(keyA)}}
	g.Expect(k8s.Create(ctx, secret)).To(Succeed())
	got := expectSubReady(g, ns, "signed")
	g.Expect(got.Status.Endpoint).To(Equal(url))
	g.Expect(brokerSub(g, b, "signed").Push.Endpoint).To(Equal(url))

	publish(g, b, "orders", "signed with A")
	g.Eventually(func() bool { _, ok := recv.find("signed with A"); return ok }).Should(BeTrue())
	r, _ := recv.find("signed with A")
	g.Expect(brokerclient.VerifyWebhook([]string{keyA}, r.Header, []byte(r.Body), time.Hour)).To(Succeed())

	// Rotation: the Secret's new value is applied without any change to the Subscription.
	secret.Data = map[string][]byte{"current": []byte(keyB)}
	g.Expect(k8s.Update(ctx, secret)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(brokerSub(g, b, "signed").Push.SigningSecrets).To(Equal([]string{keyB}))
	}).Should(Succeed())
	publish(g, b, "orders", "signed with B")
	g.Eventually(func() bool { _, ok := recv.find("signed with B"); return ok }).Should(BeTrue())
	r, _ = recv.find("signed with B")
	g.Expect(brokerclient.VerifyWebhook([]string{keyB}, r.Header, []byte(r.Body), time.Hour)).To(Succeed())
	g.Expect(brokerclient.VerifyWebhook([]string{keyA}, r.Header, []byte(r.Body), time.Hour)).NotTo(Succeed(),
		"a delivery after the rotation is still signed with the old secret")
	g.Eventually(func(g Gomega) bool {
		return hasEvent(g, ns, "Subscription", "signed", `Normal Updated: Updated subscription "signed" on BrokerCluster "events": push.signingSecrets changed`)
	}).Should(BeTrue())
	// The secret never shows in the Subscription's status or Events.
	for _, e := range objectEvents(g, ns, "Subscription", "signed") {
		g.Expect(e).NotTo(ContainSubstring("whsec_"))
	}
}
