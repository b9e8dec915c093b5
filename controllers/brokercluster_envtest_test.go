package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/controllers"
)

// children are empty objects of every kind a BrokerCluster owns, with their names.
func children(bc *heraldv1.BrokerCluster) map[string]client.Object {
	return map[string]client.Object{
		"StatefulSet " + controllers.StatefulSetName(bc):                 &appsv1.StatefulSet{},
		"Service " + controllers.ClientServiceName(bc):                   &corev1.Service{},
		"Service " + controllers.HeadlessServiceName(bc):                 &corev1.Service{},
		"ConfigMap " + controllers.ConfigMapName(bc):                     &corev1.ConfigMap{},
		"PodDisruptionBudget " + controllers.PodDisruptionBudgetName(bc): &policyv1.PodDisruptionBudget{},
	}
}

func nameOf(kindAndName string) string { return kindAndName[strings.Index(kindAndName, " ")+1:] }

func getBC(g Gomega, key types.NamespacedName) *heraldv1.BrokerCluster {
	bc := &heraldv1.BrokerCluster{}
	g.Expect(k8s.Get(context.Background(), key, bc)).To(Succeed())
	return bc
}

func condition(bc *heraldv1.BrokerCluster, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(bc.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "<missing>"}
}

// events returns "Type Reason: message" of the Events about a BrokerCluster.
func events(g Gomega, bc *heraldv1.BrokerCluster) []string {
	list := &corev1.EventList{}
	g.Expect(k8s.List(context.Background(), list, client.InNamespace(bc.Namespace))).To(Succeed())
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "BrokerCluster" && e.InvolvedObject.Name == bc.Name {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
		}
	}
	return out
}

func expectOwnedBy(g Gomega, obj client.Object, bc *heraldv1.BrokerCluster) {
	refs := obj.GetOwnerReferences()
	g.Expect(refs).To(HaveLen(1), "owner references of %s", obj.GetName())
	r := refs[0]
	g.Expect(r.APIVersion).To(Equal("herald.dev/v1alpha1"))
	g.Expect(r.Kind).To(Equal("BrokerCluster"))
	g.Expect(r.Name).To(Equal(bc.Name))
	g.Expect(r.UID).To(Equal(bc.UID))
	g.Expect(ptr.Deref(r.Controller, false)).To(BeTrue(), "controller owner reference")
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue("app.kubernetes.io/name", "herald"))
	g.Expect(obj.GetLabels()).To(HaveKeyWithValue("app.kubernetes.io/instance", bc.Name))
}

func TestBrokerClusterLifecycle(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)

	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: ns}}
	g.Expect(k8s.Create(ctx, bc)).To(Succeed())
	key := client.ObjectKeyFromObject(bc)

	// The API server applied the CRD's defaults.
	g.Expect(*bc.Spec.Replicas).To(Equal(int32(3)))
	g.Expect(bc.Spec.Config.Fsync).To(Equal(heraldv1.FsyncAlways))
	g.Expect(bc.Spec.Listeners.HTTP.Port).To(Equal(int32(8080)))
	g.Expect(bc.Spec.Storage.Size.String()).To(Equal("1Gi"))
	g.Expect(*bc.Spec.Disruption.MaxUnavailable).To(Equal(intstr.FromInt32(1)))

	t.Run("children", func(t *testing.T) {
		g := gt(t)
		for what, obj := range children(bc) {
			g.Eventually(func() error {
				return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: nameOf(what)}, obj)
			}).Should(Succeed(), what)
			expectOwnedBy(g, obj, bc)
		}
		sts := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
		g.Expect(*sts.Spec.Replicas).To(Equal(int32(3)))
		g.Expect(sts.Spec.ServiceName).To(Equal("orders-headless"))
		g.Expect(sts.Spec.Selector.MatchLabels).To(Equal(map[string]string{
			"app.kubernetes.io/name": "herald", "app.kubernetes.io/instance": "orders"}))
		c := sts.Spec.Template.Spec.Containers[0]
		g.Expect(c.Image).To(Equal(testImage), "the operator's own image by default")
		g.Expect(c.Ports[0].ContainerPort).To(Equal(int32(8080)), "the broker port is the first container port")
		g.Expect(c.Args).To(Equal([]string{"broker", "--data-dir", "/var/lib/herald", "--listen", "0.0.0.0:8080",
			"--fsync", "always", "--config", "/etc/herald/broker.yaml"}))
		g.Expect(sts.Spec.Template.Annotations).To(HaveKey(controllers.AnnotationConfigHash))
		g.Expect(sts.Spec.VolumeClaimTemplates).To(HaveLen(1))

		headless := &corev1.Service{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders-headless"}, headless)).To(Succeed())
		g.Expect(headless.Spec.ClusterIP).To(Equal(corev1.ClusterIPNone))
		g.Expect(headless.Spec.PublishNotReadyAddresses).To(BeTrue())
		cm := &corev1.ConfigMap{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders-config"}, cm)).To(Succeed())
		g.Expect(cm.Data["broker.yaml"]).To(ContainSubstring("fsync: always"))
	})

	t.Run("status", func(t *testing.T) {
		g := gt(t)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
			g.Expect(bc.Status.Endpoint).To(Equal(fmt.Sprintf("http://orders.%s.svc:8080", ns)))
			g.Expect(bc.Status.Version).To(Equal("v9.9.9"))
			// kube-controller-manager creates the pods; nothing runs them, so none is ready.
			g.Expect(bc.Status.Replicas).To(Equal(int32(3)))
			g.Expect(bc.Status.ReadyReplicas).To(Equal(int32(0)))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseCreating))
			g.Expect(condition(bc, "Ready").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(condition(bc, "Available").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(condition(bc, "Available").Reason).To(Equal(controllers.ReasonQuorumNotReady))
			g.Expect(condition(bc, "Progressing").Status).To(Equal(metav1.ConditionTrue))
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionFalse))
		}).Should(Succeed())
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": "orders"})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(3))
	})

	t.Run("events", func(t *testing.T) {
		g := gt(t)
		g.Eventually(func(g Gomega) {
			ev := events(g, bc)
			for what := range children(bc) {
				g.Expect(ev).To(ContainElement("Normal Created: Created "+what), "events %v", ev)
			}
		}).Should(Succeed())
	})

	t.Run("scale", func(t *testing.T) {
		g := gt(t)
		patch(g, key, `{"spec":{"replicas":5}}`)
		g.Eventually(func(g Gomega) {
			sts := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			g.Expect(*sts.Spec.Replicas).To(Equal(int32(5)))
			bc := getBC(g, key)
			g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
			g.Expect(bc.Status.Replicas).To(Equal(int32(5)))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			g.Expect(events(g, bc)).To(ContainElement("Normal Updated: Updated StatefulSet orders"))
		}).Should(Succeed())
	})

	t.Run("config edit rolls the pods", func(t *testing.T) {
		g := gt(t)
		sts := &appsv1.StatefulSet{}
		g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
		oldHash := sts.Spec.Template.Annotations[controllers.AnnotationConfigHash]
		g.Expect(oldHash).NotTo(BeEmpty())

		patch(g, key, `{"spec":{"config":{"fsync":"interval","maxMessageBytes":2048}}}`)
		g.Eventually(func(g Gomega) {
			cm := &corev1.ConfigMap{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "orders-config"}, cm)).To(Succeed())
			g.Expect(cm.Data["broker.yaml"]).To(ContainSubstring("fsync: interval"))
			g.Expect(cm.Data["broker.yaml"]).To(ContainSubstring("maxMessageBytes: 2048"))
			sts := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			g.Expect(sts.Spec.Template.Annotations[controllers.AnnotationConfigHash]).NotTo(Equal(oldHash))
			g.Expect(sts.Spec.Template.Spec.Containers[0].Args).To(ContainElement("interval"))
		}).Should(Succeed())

		// A change outside the configuration (replicas) keeps the hash.
		g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
		hash := sts.Spec.Template.Annotations[controllers.AnnotationConfigHash]
		patch(g, key, `{"spec":{"replicas":6}}`)
		g.Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			g.Expect(*sts.Spec.Replicas).To(Equal(int32(6)))
		}).Should(Succeed())
		g.Expect(sts.Spec.Template.Annotations[controllers.AnnotationConfigHash]).To(Equal(hash))
	})

	t.Run("a scale-down waits for the brokers to drain", func(t *testing.T) {
		g := gt(t)
		// Nothing answers at the cluster's address (no pod runs): the brokers that go cannot be
		// drained, so the StatefulSet keeps them and the status says why.
		patch(g, key, `{"spec":{"replicas":4}}`)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(bc.Status.Drain).NotTo(BeNil())
			g.Expect(bc.Status.Drain.Members).To(Equal([]string{"orders-4", "orders-5"}))
			g.Expect(bc.Status.Drain.BlockedReason).To(ContainSubstring(
				fmt.Sprintf("asking the brokers at http://orders.%s.svc:8080 for the cluster's members", ns)))
			p := condition(bc, "Progressing")
			g.Expect(p.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(p.Reason).To(Equal(controllers.ReasonDrainBlocked))
			g.Expect(p.Message).To(HavePrefix("cannot drain orders-4, orders-5: "))
			g.Expect(p.Message).To(HaveSuffix(" before scaling from 6 to 4 brokers"))
			// A wait, not a failure: Degraded only once the progress deadline passes.
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(events(g, bc)).To(ContainElement(HavePrefix("Warning DrainBlocked: asking the brokers at ")))
		}).Should(Succeed())
		g.Consistently(func(g Gomega) int32 {
			sts := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			return *sts.Spec.Replicas
		}, 2*time.Second, 200*time.Millisecond).Should(Equal(int32(6)))
	})

	t.Run("replicas 0 stops every pod at once", func(t *testing.T) {
		g := gt(t)
		patch(g, key, `{"spec":{"replicas":0}}`)
		g.Eventually(func(g Gomega) {
			sts := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			g.Expect(*sts.Spec.Replicas).To(BeZero())
			bc := getBC(g, key)
			g.Expect(bc.Status.Drain).To(BeNil())
			g.Expect(bc.Status.Replicas).To(BeZero())
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseStopped))
		}).Should(Succeed())
	})

	t.Run("delete garbage-collects every child", func(t *testing.T) {
		g := gt(t)
		g.Expect(k8s.Delete(ctx, getBC(g, key))).To(Succeed())
		for what, obj := range children(bc) {
			g.Eventually(func() bool {
				err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: nameOf(what)}, obj)
				return apierrors.IsNotFound(err)
			}).Should(BeTrue(), "%s still exists", what)
		}
		g.Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": "orders"})).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
		}).Should(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, key, &heraldv1.BrokerCluster{}))
		}).Should(BeTrue())
	})
}

// patch merge-patches a BrokerCluster as the test user.
func patch(g Gomega, key types.NamespacedName, body string) {
	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace}}
	g.Expect(k8s.Patch(context.Background(), bc, client.RawPatch(types.MergePatchType, []byte(body)))).To(Succeed())
}

const testPriorityClass = "herald-test-high"

// fullSpec sets every field the operator turns into a child, so the steady-state test covers the
// comparison of every one of them with what the API server stored.
func fullSpec(ns string) *heraldv1.BrokerCluster {
	return &heraldv1.BrokerCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "full", Namespace: ns},
		Spec: heraldv1.BrokerClusterSpec{
			Replicas: ptr.To[int32](3),
			Image:    "registry.test/other/herald:v1.0.0",
			Storage: heraldv1.BrokerStorage{
				Size:             ptr.To(resource.MustParse("2Gi")),
				StorageClassName: ptr.To("fast"),
				PersistentVolumeClaimRetentionPolicy: heraldv1.PVCRetentionPolicy{
					WhenDeleted: heraldv1.PVCDelete, WhenScaled: heraldv1.PVCDelete},
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0.5"), corev1.ResourceMemory: resource.MustParse("256Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1024Mi")},
			},
			Config: heraldv1.BrokerConfig{
				Fsync:           heraldv1.FsyncInterval,
				MaxMessageBytes: ptr.To[int32](65536),
				Retention:       heraldv1.RetentionDefaults{MaxAge: ptr.To(heraldv1.Duration("24h")), MaxBytes: ptr.To[int64](1 << 30)},
			},
			Listeners: heraldv1.BrokerListeners{HTTP: heraldv1.HTTPListener{Port: 9443,
				TLS: &heraldv1.ListenerTLS{SecretName: "full-tls"}}},
			PodTemplate: heraldv1.PodTemplateOverrides{
				Labels:       map[string]string{"team": "payments"},
				Annotations:  map[string]string{"example.com/scrape": "true"},
				NodeSelector: map[string]string{"disk": "ssd"},
				Tolerations: []corev1.Toleration{
					{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "herald", Effect: corev1.TaintEffectNoSchedule},
					{Key: "flaky", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)},
				},
				Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
						Weight: 50,
						PodAffinityTerm: corev1.PodAffinityTerm{
							TopologyKey:   "kubernetes.io/hostname",
							LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/instance": "full"}},
						},
					}},
				}},
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
					MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway,
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/instance": "full"}},
				}},
				PriorityClassName:             testPriorityClass,
				TerminationGracePeriodSeconds: ptr.To[int64](60),
			},
			Disruption: heraldv1.DisruptionSpec{MaxUnavailable: ptr.To(intstr.FromString("34%"))},
		},
	}
}

func tlsSecret(ns, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": []byte("cert"), "tls.key": []byte("key")},
	}
}

func TestBrokerClusterSteadyStateMakesNoWrites(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)
	g.Expect(k8s.Create(ctx, tlsSecret(ns, "full-tls"))).To(Succeed())
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: testPriorityClass}, Value: 1000}
	g.Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, pc))).To(Succeed())
	bc := fullSpec(ns)
	g.Expect(k8s.Create(ctx, bc)).To(Succeed())
	key := client.ObjectKeyFromObject(bc)

	// Converged: every child exists, the status reflects the three (Pending) pods.
	g.Eventually(func(g Gomega) {
		bc := getBC(g, key)
		g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
		g.Expect(bc.Status.Replicas).To(Equal(int32(3)))
		g.Expect(condition(bc, "Progressing").Reason).To(Equal(controllers.ReasonWaitingForReadiness))
		g.Expect(bc.Status.Endpoint).To(Equal(fmt.Sprintf("https://full.%s.svc:9443", ns)))
		for what, obj := range children(bc) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: nameOf(what)}, obj)).To(Succeed())
		}
	}).Should(Succeed())
	// Wait until the reconciles caused by the last status change are done and no more writes come.
	var before []string
	g.Eventually(func() []string {
		n := recons.get(key)
		before = writes.in(ns)
		// Another reconcile, caused by a no-op touch, must come and go without a write.
		touch(g, key, "settle", fmt.Sprint(n))
		g.Eventually(func() int { return recons.get(key) }).Should(BeNumerically(">", n))
		return writes.in(ns)[len(before):]
	}).Should(BeEmpty())

	// N more reconciles: metadata-only changes of the BrokerCluster, and foreign changes of the
	// children that do not touch what the operator manages.
	const n = 5
	start := recons.get(key)
	for i := range n {
		touch(g, key, "touch", fmt.Sprint(i))
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "full", Namespace: ns}}
	g.Expect(k8s.Patch(ctx, sts, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"example.com/someone-else":"was here"}}}`)))).To(Succeed())
	g.Eventually(func() int { return recons.get(key) }).Should(BeNumerically(">=", start+n))
	// Once more, so the last touch is surely reconciled.
	last := recons.get(key)
	touch(g, key, "touch", "last")
	g.Eventually(func() int { return recons.get(key) }).Should(BeNumerically(">", last))

	after := writes.in(ns)
	g.Expect(after[len(before):]).To(BeEmpty(), "the operator wrote to the API server although nothing changed")
	t.Logf("%d reconciles after convergence, %d writes", recons.get(key)-start, len(after)-len(before))

	t.Run("drift is corrected", func(t *testing.T) {
		g := gt(t)
		// Someone scales the StatefulSet by hand (a plain update, another field manager).
		g.Eventually(func() error {
			sts := &appsv1.StatefulSet{}
			if err := k8s.Get(ctx, key, sts); err != nil {
				return err
			}
			sts.Spec.Replicas = ptr.To[int32](1)
			return k8s.Update(ctx, sts, client.FieldOwner("kubectl-edit"))
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			sts := &appsv1.StatefulSet{}
			g.Expect(k8s.Get(ctx, key, sts)).To(Succeed())
			g.Expect(*sts.Spec.Replicas).To(Equal(int32(3)))
		}).Should(Succeed())
		// And deletes the ConfigMap.
		g.Expect(k8s.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "full-config", Namespace: ns}})).To(Succeed())
		g.Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "full-config"}, &corev1.ConfigMap{})
		}).Should(Succeed())
	})
}

// touch sets an annotation on a BrokerCluster: a change that does not bump its generation but
// makes the operator reconcile.
func touch(g Gomega, key types.NamespacedName, k, v string) {
	patch(g, key, fmt.Sprintf(`{"metadata":{"annotations":{"test.herald.dev/%s":%q}}}`, k, v))
}

func TestBrokerClusterInvalidSpec(t *testing.T) {
	g := requireEnv(t)
	ctx := context.Background()
	ns := newNamespace(t, g)

	t.Run("rejected StatefulSet", func(t *testing.T) {
		g := gt(t)
		// Passes the CRD's schema, but the API server rejects the pod template: requests above limits.
		bc := &heraldv1.BrokerCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "greedy", Namespace: ns},
			Spec: heraldv1.BrokerClusterSpec{Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			}},
		}
		g.Expect(k8s.Create(ctx, bc)).To(Succeed())
		key := client.ObjectKeyFromObject(bc)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			c := condition(bc, "Degraded")
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Reason).To(Equal(controllers.ReasonInvalidSpec))
			g.Expect(c.Message).To(ContainSubstring("StatefulSet greedy"))
			g.Expect(c.Message).To(ContainSubstring("must be less than or equal to cpu limit"))
			g.Expect(condition(bc, "Ready").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(condition(bc, "Ready").Reason).To(Equal(controllers.ReasonInvalidSpec))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseFailed))
			g.Expect(bc.Status.ObservedGeneration).To(BeZero(), "observedGeneration moves only after a successful reconcile")
		}).Should(Succeed())
		g.Eventually(func(g Gomega) {
			ev := events(g, bc)
			g.Expect(slices.ContainsFunc(ev, func(e string) bool { return strings.HasPrefix(e, "Warning InvalidSpec: ") })).
				To(BeTrue(), "events %v", ev)
		}).Should(Succeed())

		// Fixing the spec recovers.
		patch(g, key, `{"spec":{"resources":{"limits":{"cpu":"4"}}}}`)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseCreating))
			g.Expect(k8s.Get(ctx, key, &appsv1.StatefulSet{})).To(Succeed())
		}).Should(Succeed())
	})

	t.Run("missing TLS secret", func(t *testing.T) {
		g := gt(t)
		bc := &heraldv1.BrokerCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "secure", Namespace: ns},
			Spec: heraldv1.BrokerClusterSpec{Listeners: heraldv1.BrokerListeners{HTTP: heraldv1.HTTPListener{
				TLS: &heraldv1.ListenerTLS{SecretName: "secure-tls"}}}},
		}
		g.Expect(k8s.Create(ctx, bc)).To(Succeed())
		key := client.ObjectKeyFromObject(bc)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(condition(bc, "Degraded").Reason).To(Equal(controllers.ReasonTLSSecretNotFound))
			g.Expect(condition(bc, "Degraded").Message).To(ContainSubstring(`"secure-tls" not found`))
			g.Expect(bc.Status.Phase).To(Equal(heraldv1.PhaseFailed))
		}).Should(Succeed())
		g.Expect(apierrors.IsNotFound(k8s.Get(ctx, key, &appsv1.StatefulSet{}))).To(BeTrue(), "no StatefulSet without its certificate")

		// Secrets are not watched: the operator looks again after a while; a touch is faster.
		g.Expect(k8s.Create(ctx, tlsSecret(ns, "secure-tls"))).To(Succeed())
		touch(g, key, "secret", "created")
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(condition(bc, "Degraded").Status).To(Equal(metav1.ConditionFalse))
			g.Expect(bc.Status.Endpoint).To(HavePrefix("https://"))
			g.Expect(k8s.Get(ctx, key, &appsv1.StatefulSet{})).To(Succeed())
		}).Should(Succeed())
	})

	t.Run("foreign object in the way", func(t *testing.T) {
		g := gt(t)
		foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "taken-config", Namespace: ns},
			Data: map[string]string{"mine": "yes"}}
		g.Expect(k8s.Create(ctx, foreign)).To(Succeed())
		bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns}}
		g.Expect(k8s.Create(ctx, bc)).To(Succeed())
		key := client.ObjectKeyFromObject(bc)
		g.Eventually(func(g Gomega) {
			bc := getBC(g, key)
			g.Expect(condition(bc, "Degraded").Reason).To(Equal(controllers.ReasonResourceConflict))
			g.Expect(condition(bc, "Degraded").Message).To(ContainSubstring("ConfigMap " + ns + "/taken-config"))
		}).Should(Succeed())
		cm := &corev1.ConfigMap{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(foreign), cm)).To(Succeed())
		g.Expect(cm.Data).To(Equal(map[string]string{"mine": "yes"}), "the foreign ConfigMap was overwritten")
		g.Expect(cm.OwnerReferences).To(BeEmpty())
	})
}
