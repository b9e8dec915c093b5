package controllers_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// object parses a YAML manifest into an unstructured object in namespace ns.
func object(t *testing.T, ns, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatalf("bad manifest: %v\n%s", err, manifest)
	}
	u.SetNamespace(ns)
	return u
}

// TestCRDValidationRejects creates invalid objects; the API server must reject each (OpenAPI
// schema or CEL) with a message naming the problem.
func TestCRDValidationRejects(t *testing.T) {
	g := requireEnv(t)
	ns := newNamespace(t, g)
	tests := []struct {
		name     string
		manifest string
		wantMsgs []string
	}{
		{
			name: "topic with zero partitions",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t0},
				spec: {clusterRef: {name: c}, partitions: 0}}`,
			wantMsgs: []string{"spec.partitions", "should be greater than or equal to 1"},
		},
		{
			name:     "topic without clusterRef",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t1}, spec: {partitions: 1}}`,
			wantMsgs: []string{"spec.clusterRef", "Required value"},
		},
		{
			name: "topic name with a slash",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t2},
				spec: {clusterRef: {name: c}, topicName: "a/b"}}`,
			wantMsgs: []string{"spec.topicName", "should match"},
		},
		{
			name: "topic with a bad duration",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t3},
				spec: {clusterRef: {name: c}, retention: {maxAge: "7 days"}}}`,
			wantMsgs: []string{"spec.retention.maxAge", "must be a duration such as 30s"},
		},
		{
			name: "topic with a bad deletion policy",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t4},
				spec: {clusterRef: {name: c}, deletionPolicy: Orphan}}`,
			wantMsgs: []string{"spec.deletionPolicy", `supported values: "Delete", "Retain"`},
		},
		{
			name: "push subscription with both uri and serviceRef",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s0},
				spec: {clusterRef: {name: c}, topic: t, push: {uri: "http://x.example/", serviceRef: {name: svc}}}}`,
			wantMsgs: []string{"spec.push", "push needs exactly one of uri or serviceRef"},
		},
		{
			name: "push subscription with neither uri nor serviceRef",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s1},
				spec: {clusterRef: {name: c}, topic: t, push: {format: json}}}`,
			wantMsgs: []string{"push needs exactly one of uri or serviceRef"},
		},
		{
			name: "push uri that is not http",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s2},
				spec: {clusterRef: {name: c}, topic: t, push: {uri: "ftp://x.example/"}}}`,
			wantMsgs: []string{"spec.push.uri", "uri must be an absolute http or https URL"},
		},
		{
			name: "subscription with a bad ackDeadline",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s3},
				spec: {clusterRef: {name: c}, topic: t, ackDeadline: "-5s"}}`,
			wantMsgs: []string{"spec.ackDeadline", "must be a duration"},
		},
		{
			name: "subscription with a bad startAt",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s4},
				spec: {clusterRef: {name: c}, topic: t, startAt: yesterday}}`,
			wantMsgs: []string{"spec.startAt", "must be latest, earliest or an RFC 3339 time"},
		},
		{
			name: "subscription with minBackoff above maxBackoff",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s5},
				spec: {clusterRef: {name: c}, topic: t, retry: {minBackoff: 1h, maxBackoff: 1m}}}`,
			wantMsgs: []string{"retry.minBackoff must not exceed retry.maxBackoff"},
		},
		{
			name: "subscription with an unknown retry policy",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s5b},
				spec: {clusterRef: {name: c}, topic: t, retry: {policy: fibonacci}}}`,
			wantMsgs: []string{"spec.retry.policy", `supported values: "linear", "exponential", "mns-backoff", "mns-exponential-decay"`},
		},
		{
			name: "topic with more partitions than a broker allows",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Topic, metadata: {name: t5},
				spec: {clusterRef: {name: c}, partitions: 4097}}`,
			wantMsgs: []string{"spec.partitions", "4096"},
		},
		{
			name: "subscription with an unknown push format",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: Subscription, metadata: {name: s6},
				spec: {clusterRef: {name: c}, topic: t, push: {uri: "http://x/", format: xml}}}`,
			wantMsgs: []string{"spec.push.format", "Unsupported value"},
		},
		{
			name: "broker cluster with an unknown fsync policy",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b0},
				spec: {config: {fsync: sometimes}}}`,
			wantMsgs: []string{"spec.config.fsync", `supported values: "always", "interval", "never"`},
		},
		{
			name: "broker cluster with negative replicas",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b1},
				spec: {replicas: -1}}`,
			wantMsgs: []string{"spec.replicas", "should be greater than or equal to 0"},
		},
		{
			name: "broker cluster with a port out of range",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b2},
				spec: {listeners: {http: {port: 70000}}}}`,
			wantMsgs: []string{"spec.listeners.http.port", "should be less than or equal to 65535"},
		},
		{
			name: "broker cluster whose name cannot name a Service",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: 1st.cluster},
				spec: {}}`,
			wantMsgs: []string{"metadata.name must be a DNS-1035 label"},
		},
		{
			name: "broker cluster overriding the selector labels",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b3},
				spec: {podTemplate: {labels: {app.kubernetes.io/instance: other}}}}`,
			wantMsgs: []string{"spec.podTemplate.labels", "cannot set app.kubernetes.io/name or app.kubernetes.io/instance"},
		},
		{
			name: "broker cluster with a bad maxUnavailable",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b4},
				spec: {disruption: {maxUnavailable: "half"}}}`,
			wantMsgs: []string{"spec.disruption.maxUnavailable", "percentage"},
		},
		{
			name: "broker cluster with an unknown field",
			manifest: `{apiVersion: herald.dev/v1alpha1, kind: BrokerCluster, metadata: {name: b5},
				spec: {replica: 3}}`,
			wantMsgs: []string{`unknown field "spec.replica"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gt(t)
			err := k8s.Create(context.Background(), object(t, ns, tt.manifest), client.FieldValidation("Strict"))
			g.Expect(err).To(HaveOccurred(), "the API server accepted it")
			if !strings.Contains(tt.wantMsgs[0], "unknown field") {
				g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			}
			for _, m := range tt.wantMsgs {
				g.Expect(err.Error()).To(ContainSubstring(m))
			}
		})
	}
}

// TestCRDValidationTransitions checks the CEL rules that compare an update with the stored object.
func TestCRDValidationTransitions(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)

	topic := &heraldv1.Topic{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns},
		Spec:       heraldv1.TopicSpec{ClusterRef: heraldv1.ClusterReference{Name: "c"}, Partitions: 3, ReplicationFactor: 2},
	}
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())
	key := client.ObjectKeyFromObject(topic)
	// Defaults.
	g.Expect(topic.Spec.DeletionPolicy).To(Equal(heraldv1.DeletionPolicyDelete))

	update := func(mutate func(*heraldv1.Topic)) error {
		t := &heraldv1.Topic{}
		g.Expect(k8s.Get(ctx, key, t)).To(Succeed())
		mutate(t)
		return k8s.Update(ctx, t)
	}
	mergePatch := func(body string) error {
		t := &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
		return k8s.Patch(ctx, t, client.RawPatch(types.MergePatchType, []byte(body)))
	}

	t.Run("partitions never decrease", func(t *testing.T) {
		g := gt(t)
		err := update(func(t *heraldv1.Topic) { t.Spec.Partitions = 2 })
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.partitions"))
		g.Expect(err.Error()).To(ContainSubstring("partitions cannot be decreased"))
		// An increase is fine.
		g.Expect(update(func(t *heraldv1.Topic) { t.Spec.Partitions = 6 })).To(Succeed())
	})
	t.Run("replicationFactor is immutable", func(t *testing.T) {
		g := gt(t)
		err := update(func(t *heraldv1.Topic) { t.Spec.ReplicationFactor = 3 })
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.replicationFactor"))
		g.Expect(err.Error()).To(ContainSubstring("replicationFactor is immutable"))
	})
	t.Run("topicName is immutable", func(t *testing.T) {
		g := gt(t)
		// Unset means metadata.name: setting it to that is no change.
		g.Expect(mergePatch(`{"spec":{"topicName":"orders"}}`)).To(Succeed())
		err := mergePatch(`{"spec":{"topicName":"orders-v2"}}`)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.topicName is immutable"))
		err = mergePatch(`{"spec":{"topicName":null}}`)
		g.Expect(err).NotTo(HaveOccurred(), "removing it keeps the same effective name")
	})
	t.Run("clusterRef is immutable", func(t *testing.T) {
		g := gt(t)
		err := mergePatch(`{"spec":{"clusterRef":{"name":"other"}}}`)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
		g.Expect(err.Error()).To(ContainSubstring("clusterRef is immutable"))
	})
	t.Run("other fields change freely", func(t *testing.T) {
		g := gt(t)
		g.Expect(mergePatch(`{"spec":{"retention":{"maxAge":"72h","maxBytes":1000},"messageTTL":"1h","deletionPolicy":"Retain"}}`)).To(Succeed())
	})

	t.Run("broker cluster storage is immutable", func(t *testing.T) {
		g := gt(t)
		bc := &heraldv1.BrokerCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "fixed", Namespace: ns},
			Spec:       heraldv1.BrokerClusterSpec{Replicas: ptr.To[int32](0)},
		}
		g.Expect(k8s.Create(ctx, bc)).To(Succeed())
		p := func(body string) error {
			return k8s.Patch(ctx, &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "fixed", Namespace: ns}},
				client.RawPatch(types.MergePatchType, []byte(body)))
		}
		err := p(`{"spec":{"storage":{"size":"5Gi"}}}`)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("storage.size is immutable"))
		err = p(`{"spec":{"storage":{"ephemeral":true}}}`)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("storage.ephemeral is immutable"))
		err = p(`{"spec":{"storage":{"storageClassName":"fast"}}}`)
		g.Expect(err).To(HaveOccurred())
		g.Expect(err.Error()).To(ContainSubstring("storage.storageClassName is immutable"))
		g.Expect(p(`{"spec":{"storage":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}}`)).To(Succeed())
	})
}

// TestCRDDefaults checks the defaults the API server fills in.
func TestCRDDefaults(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)

	sub := &heraldv1.Subscription{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: ns},
		Spec: heraldv1.SubscriptionSpec{ClusterRef: heraldv1.ClusterReference{Name: "c"}, Topic: "orders",
			Push: &heraldv1.PushSpec{ServiceRef: &heraldv1.ServiceReference{Name: "billing"}}},
	}
	g.Expect(k8s.Create(ctx, sub)).To(Succeed())
	g.Expect(sub.Spec.Push.Format).To(Equal(heraldv1.PushFormatRaw))
	g.Expect(*sub.Spec.Push.Timeout).To(Equal(heraldv1.Duration("10s")))
	g.Expect(sub.Spec.Push.MaxInFlight).To(Equal(int32(16)))
	g.Expect(sub.Spec.Retry.Policy).To(Equal(heraldv1.RetryExponential))
	// minBackoff, maxBackoff and maxAttempts default per policy (the operator fills them in), so
	// the CRD leaves them unset.
	g.Expect(sub.Spec.Retry.MinBackoff).To(BeNil())
	g.Expect(sub.Spec.Retry.MaxBackoff).To(BeNil())
	g.Expect(sub.Spec.Retry.MaxAttempts).To(BeZero())
	g.Expect(*sub.Spec.Retry.MaxAge).To(Equal(heraldv1.Duration("24h")))
	for _, policy := range []heraldv1.RetryPolicy{heraldv1.RetryLinear, heraldv1.RetryMNSBackoff, heraldv1.RetryMNSExponentialDecay} {
		s := &heraldv1.Subscription{
			ObjectMeta: metav1.ObjectMeta{Name: "s-" + string(policy), Namespace: ns},
			Spec: heraldv1.SubscriptionSpec{ClusterRef: heraldv1.ClusterReference{Name: "c"}, Topic: "orders",
				Retry: heraldv1.RetrySpec{Policy: policy}},
		}
		g.Expect(k8s.Create(ctx, s)).To(Succeed(), "retry.policy %s", policy)
	}
	g.Expect(*sub.Spec.AckDeadline).To(Equal(heraldv1.Duration("30s")))
	g.Expect(sub.Spec.StartAt).To(Equal("latest"))
	g.Expect(sub.Spec.DeletionPolicy).To(Equal(heraldv1.DeletionPolicyDelete))

	at := &heraldv1.Subscription{
		ObjectMeta: metav1.ObjectMeta{Name: "at", Namespace: ns},
		Spec: heraldv1.SubscriptionSpec{ClusterRef: heraldv1.ClusterReference{Name: "c"}, Topic: "orders",
			StartAt: "2024-05-01T12:00:00+02:00", Push: &heraldv1.PushSpec{URI: "https://hooks.example.com/x"}},
	}
	g.Expect(k8s.Create(ctx, at)).To(Succeed())

	topic := &heraldv1.Topic{
		ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: ns},
		Spec:       heraldv1.TopicSpec{ClusterRef: heraldv1.ClusterReference{Name: "c"}},
	}
	g.Expect(k8s.Create(ctx, topic)).To(Succeed())
	g.Expect(topic.Spec.Partitions).To(Equal(int32(1)))
	g.Expect(topic.Spec.ReplicationFactor).To(Equal(int32(1)))
	g.Expect(topic.EffectiveTopicName()).To(Equal("t"))

	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: ns}, Spec: heraldv1.BrokerClusterSpec{Replicas: ptr.To[int32](0)}}
	g.Expect(k8s.Create(ctx, bc)).To(Succeed())
	g.Expect(*bc.Spec.Config.MaxMessageBytes).To(Equal(int32(1048576)))
	g.Expect(*bc.Spec.Config.Retention.MaxAge).To(Equal(heraldv1.Duration("168h")))
	g.Expect(bc.Spec.Storage.PersistentVolumeClaimRetentionPolicy.WhenDeleted).To(Equal(heraldv1.PVCRetain))
	g.Expect(bc.Spec.Storage.Ephemeral).To(BeFalse())
}

// TestSamplesAreValid applies config/samples to the API server with strict field validation.
func TestSamplesAreValid(t *testing.T) {
	g := requireEnv(t)
	ns := newNamespace(t, g)
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "herald_*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	if len(files) == 0 {
		t.Skip("no samples in config/samples")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(k8s.Create(context.Background(), object(t, ns, string(b)), client.FieldValidation("Strict"))).
			To(Succeed(), "%s", f)
	}
}
