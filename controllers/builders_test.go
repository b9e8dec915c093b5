package controllers

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// toTyped converts an apply configuration into the typed object it describes, for assertions.
func toTyped[T any](t *testing.T, ac any) *T {
	t.Helper()
	b, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func testCluster(mutate ...func(*heraldv1.BrokerCluster)) *heraldv1.BrokerCluster {
	bc := &heraldv1.BrokerCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", UID: "uid-1", Generation: 1},
	}
	for _, m := range mutate {
		m(bc)
	}
	return bc
}

func buildSTS(t *testing.T, bc *heraldv1.BrokerCluster) *appsv1.StatefulSet {
	t.Helper()
	_, hash, err := BuildConfigMap(bc)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := BuildStatefulSet(bc, StatefulSetParams{DefaultImage: "ghcr.io/heraldmq/herald:v1.2.3", ConfigHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	return toTyped[appsv1.StatefulSet](t, ac)
}

func checkOwner(t *testing.T, what string, meta metav1.ObjectMeta) {
	t.Helper()
	if len(meta.OwnerReferences) != 1 {
		t.Fatalf("%s: owner references %v, want one", what, meta.OwnerReferences)
	}
	o := meta.OwnerReferences[0]
	if o.APIVersion != "herald.dev/v1alpha1" || o.Kind != "BrokerCluster" || o.Name != "orders" || o.UID != "uid-1" ||
		!ptr.Deref(o.Controller, false) || !ptr.Deref(o.BlockOwnerDeletion, false) {
		t.Errorf("%s: owner reference %+v", what, o)
	}
	if meta.Labels[LabelName] != "herald" || meta.Labels[LabelInstance] != "orders" || meta.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("%s: labels %v", what, meta.Labels)
	}
}

func TestBuildStatefulSet(t *testing.T) {
	tests := []struct {
		name  string
		bc    *heraldv1.BrokerCluster
		check func(t *testing.T, sts *appsv1.StatefulSet)
	}{
		{
			name: "defaults",
			bc:   testCluster(),
			check: func(t *testing.T, sts *appsv1.StatefulSet) {
				if sts.Name != "orders" || sts.Namespace != "shop" {
					t.Errorf("name %s/%s", sts.Namespace, sts.Name)
				}
				checkOwner(t, "statefulset", sts.ObjectMeta)
				s := sts.Spec
				if *s.Replicas != 3 || s.ServiceName != "orders-headless" || s.PodManagementPolicy != appsv1.ParallelPodManagement {
					t.Errorf("replicas %d serviceName %q policy %q", *s.Replicas, s.ServiceName, s.PodManagementPolicy)
				}
				if s.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
					t.Errorf("update strategy %v", s.UpdateStrategy)
				}
				want := map[string]string{"app.kubernetes.io/name": "herald", "app.kubernetes.io/instance": "orders"}
				if !mapsEqual(s.Selector.MatchLabels, want) {
					t.Errorf("selector %v", s.Selector.MatchLabels)
				}
				for k, v := range want {
					if s.Template.Labels[k] != v {
						t.Errorf("pod label %s=%q", k, s.Template.Labels[k])
					}
				}
				if s.Template.Annotations[AnnotationConfigHash] == "" {
					t.Error("no config hash annotation")
				}
				pod := s.Template.Spec
				if len(pod.Containers) != 1 {
					t.Fatalf("containers %d", len(pod.Containers))
				}
				c := pod.Containers[0]
				if c.Image != "ghcr.io/heraldmq/herald:v1.2.3" {
					t.Errorf("image %q", c.Image)
				}
				wantArgs := []string{"broker", "--data-dir", "/var/lib/herald", "--listen", "0.0.0.0:8080", "--fsync", "always", "--config", "/etc/herald/broker.yaml"}
				if !slices.Equal(c.Args, wantArgs) {
					t.Errorf("args %q, want %q", c.Args, wantArgs)
				}
				if c.Ports[0].ContainerPort != 8080 || c.Ports[0].Name != "http" || c.Ports[0].Protocol != corev1.ProtocolTCP {
					t.Errorf("first port %+v", c.Ports[0])
				}
				if p := c.ReadinessProbe.HTTPGet; p.Path != "/readyz" || p.Port != intstr.FromString("http") || p.Scheme != corev1.URISchemeHTTP {
					t.Errorf("readiness %+v", p)
				}
				if p := c.LivenessProbe.HTTPGet; p.Path != "/healthz" || p.Port != intstr.FromString("http") {
					t.Errorf("liveness %+v", p)
				}
				sc := c.SecurityContext
				if !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
					!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("container security context %+v", sc)
				}
				psc := pod.SecurityContext
				if !*psc.RunAsNonRoot || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || *psc.FSGroup != 65532 {
					t.Errorf("pod security context %+v", psc)
				}
				if *pod.EnableServiceLinks || *pod.AutomountServiceAccountToken {
					t.Error("service links or token automount enabled")
				}
				// Room for a stopping broker to hand its leaderships over (15 s) and shut down (10 s).
				if g := ptr.Deref(pod.TerminationGracePeriodSeconds, 0); g < 40 {
					t.Errorf("terminationGracePeriodSeconds %d, want at least 40", g)
				}
				mounts := map[string]string{}
				for _, m := range c.VolumeMounts {
					mounts[m.Name] = m.MountPath
				}
				if mounts["data"] != "/var/lib/herald" || mounts["config"] != "/etc/herald" || mounts["tmp"] != "/tmp" {
					t.Errorf("mounts %v", mounts)
				}
				if len(s.VolumeClaimTemplates) != 1 {
					t.Fatalf("volumeClaimTemplates %d", len(s.VolumeClaimTemplates))
				}
				vct := s.VolumeClaimTemplates[0]
				if vct.Name != "data" || vct.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("1Gi")) != 0 ||
					vct.Spec.StorageClassName != nil || !slices.Equal(vct.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
					t.Errorf("volumeClaimTemplate %+v", vct)
				}
				if r := s.PersistentVolumeClaimRetentionPolicy; r.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
					r.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
					t.Errorf("pvc retention %+v", r)
				}
				if len(pod.TopologySpreadConstraints) != 1 {
					t.Fatalf("topology spread %v", pod.TopologySpreadConstraints)
				}
				tsc := pod.TopologySpreadConstraints[0]
				if tsc.TopologyKey != "kubernetes.io/hostname" || tsc.MaxSkew != 1 || tsc.WhenUnsatisfiable != corev1.ScheduleAnyway ||
					!mapsEqual(tsc.LabelSelector.MatchLabels, want) {
					t.Errorf("default topology spread %+v", tsc)
				}
				if c.Resources.Limits != nil || c.Resources.Requests != nil {
					t.Errorf("resources %+v", c.Resources)
				}
				for _, v := range pod.Volumes {
					if v.Name == "data" {
						t.Error("data volume in the pod although a claim template provides it")
					}
				}
			},
		},
		{
			name: "ephemeral storage uses an emptyDir",
			bc: testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Spec.Storage.Ephemeral = true
				bc.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
			}),
			check: func(t *testing.T, sts *appsv1.StatefulSet) {
				if len(sts.Spec.VolumeClaimTemplates) != 0 || sts.Spec.PersistentVolumeClaimRetentionPolicy != nil {
					t.Errorf("claim templates %v retention %v", sts.Spec.VolumeClaimTemplates, sts.Spec.PersistentVolumeClaimRetentionPolicy)
				}
				var data *corev1.Volume
				for i, v := range sts.Spec.Template.Spec.Volumes {
					if v.Name == "data" {
						data = &sts.Spec.Template.Spec.Volumes[i]
					}
				}
				if data == nil || data.EmptyDir == nil || data.EmptyDir.SizeLimit.Cmp(resource.MustParse("2Gi")) != 0 {
					t.Errorf("data volume %+v", data)
				}
			},
		},
		{
			name: "storage class, size, retention policy, replicas, port, fsync",
			bc: testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Spec.Replicas = ptr.To[int32](5)
				bc.Spec.Storage.Size = ptr.To(resource.MustParse("20Gi"))
				bc.Spec.Storage.StorageClassName = ptr.To("fast")
				bc.Spec.Storage.PersistentVolumeClaimRetentionPolicy = heraldv1.PVCRetentionPolicy{WhenDeleted: heraldv1.PVCDelete, WhenScaled: heraldv1.PVCRetain}
				bc.Spec.Listeners.HTTP.Port = 9000
				bc.Spec.Config.Fsync = heraldv1.FsyncInterval
			}),
			check: func(t *testing.T, sts *appsv1.StatefulSet) {
				s := sts.Spec
				if *s.Replicas != 5 {
					t.Errorf("replicas %d", *s.Replicas)
				}
				vct := s.VolumeClaimTemplates[0]
				if ptr.Deref(vct.Spec.StorageClassName, "") != "fast" || vct.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("20Gi")) != 0 {
					t.Errorf("claim template %+v", vct.Spec)
				}
				if s.PersistentVolumeClaimRetentionPolicy.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType ||
					s.PersistentVolumeClaimRetentionPolicy.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
					t.Errorf("retention %+v", s.PersistentVolumeClaimRetentionPolicy)
				}
				c := s.Template.Spec.Containers[0]
				if c.Ports[0].ContainerPort != 9000 || !slices.Contains(c.Args, "0.0.0.0:9000") {
					t.Errorf("port %d args %q", c.Ports[0].ContainerPort, c.Args)
				}
				if i := slices.Index(c.Args, "--fsync"); i < 0 || c.Args[i+1] != "interval" {
					t.Errorf("args %q", c.Args)
				}
			},
		},
		{
			name: "pod template overrides, resources and image",
			bc: testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Spec.Image = "registry.local/herald@sha256:abc"
				bc.Spec.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
				}
				bc.Spec.PodTemplate = heraldv1.PodTemplateOverrides{
					Labels:                        map[string]string{"team": "payments", LabelComponent: "mine"},
					Annotations:                   map[string]string{"example.com/a": "b", AnnotationConfigHash: "forged"},
					NodeSelector:                  map[string]string{"disk": "ssd"},
					Tolerations:                   []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "herald", Effect: corev1.TaintEffectNoSchedule}},
					PriorityClassName:             "high",
					TerminationGracePeriodSeconds: ptr.To[int64](120),
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							TopologyKey:   "kubernetes.io/hostname",
							LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/instance": "orders"}},
						}},
					}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 2, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.DoNotSchedule,
					}},
				}
			}),
			check: func(t *testing.T, sts *appsv1.StatefulSet) {
				tpl := sts.Spec.Template
				if tpl.Labels["team"] != "payments" || tpl.Labels[LabelComponent] != "broker" {
					t.Errorf("labels %v (the operator's own labels must win)", tpl.Labels)
				}
				if tpl.Annotations["example.com/a"] != "b" || tpl.Annotations[AnnotationConfigHash] == "forged" {
					t.Errorf("annotations %v", tpl.Annotations)
				}
				pod := tpl.Spec
				if pod.NodeSelector["disk"] != "ssd" || pod.PriorityClassName != "high" || len(pod.Tolerations) != 1 ||
					pod.Tolerations[0].Key != "dedicated" || pod.Affinity == nil ||
					len(pod.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
					t.Errorf("scheduling %+v", pod)
				}
				if ptr.Deref(pod.TerminationGracePeriodSeconds, 0) != 120 {
					t.Errorf("terminationGracePeriodSeconds %v, want the override's 120", pod.TerminationGracePeriodSeconds)
				}
				if len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].TopologyKey != "topology.kubernetes.io/zone" {
					t.Errorf("topology spread %+v (the spec's replace the default)", pod.TopologySpreadConstraints)
				}
				c := pod.Containers[0]
				if c.Image != "registry.local/herald@sha256:abc" {
					t.Errorf("image %q", c.Image)
				}
				if c.Resources.Requests.Cpu().String() != "500m" || c.Resources.Limits.Memory().String() != "1Gi" {
					t.Errorf("resources %+v", c.Resources)
				}
			},
		},
		{
			name: "TLS listener",
			bc: testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Spec.Listeners.HTTP.TLS = &heraldv1.ListenerTLS{SecretName: "orders-tls"}
			}),
			check: func(t *testing.T, sts *appsv1.StatefulSet) {
				pod := sts.Spec.Template.Spec
				c := pod.Containers[0]
				if c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
					t.Error("probes are not HTTPS")
				}
				found := false
				for _, v := range pod.Volumes {
					if v.Name == "tls" && v.Secret != nil && v.Secret.SecretName == "orders-tls" {
						found = true
					}
				}
				if !found {
					t.Errorf("no TLS volume in %+v", pod.Volumes)
				}
				if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "tls" && m.MountPath == TLSDir }) {
					t.Errorf("no TLS mount in %+v", c.VolumeMounts)
				}
				if !slices.Equal(c.Args[len(c.Args)-4:], []string{"--tls-cert-file", "/etc/herald-tls/tls.crt", "--tls-key-file", "/etc/herald-tls/tls.key"}) {
					t.Errorf("args %q", c.Args)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, buildSTS(t, tt.bc)) })
	}
}

// TestBuildStatefulSetReplicas: the reconciler decides the replica count (during a drain it keeps
// the current one); the builder takes it as given, and spec.replicas when it is not given.
func TestBuildStatefulSetReplicas(t *testing.T) {
	bc := testCluster(func(bc *heraldv1.BrokerCluster) { bc.Spec.Replicas = ptr.To[int32](2) })
	for _, tt := range []struct {
		param *int32
		want  int32
	}{{nil, 2}, {ptr.To[int32](3), 3}, {ptr.To[int32](0), 0}} {
		ac, err := BuildStatefulSet(bc, StatefulSetParams{DefaultImage: "x:v1", ConfigHash: "h", Replicas: tt.param})
		if err != nil {
			t.Fatal(err)
		}
		if got := *toTyped[appsv1.StatefulSet](t, ac).Spec.Replicas; got != tt.want {
			t.Errorf("Replicas %v: StatefulSet replicas %d, want %d", ptr.Deref(tt.param, -1), got, tt.want)
		}
	}
	// Pure: the same input gives the same object, and the BrokerCluster is not touched.
	before := bc.DeepCopy()
	a, _ := BuildStatefulSet(bc, StatefulSetParams{DefaultImage: "x:v1", ConfigHash: "h", Replicas: ptr.To[int32](3)})
	b, _ := BuildStatefulSet(bc, StatefulSetParams{DefaultImage: "x:v1", ConfigHash: "h", Replicas: ptr.To[int32](3)})
	if !jsonEqual(t, a, b) || !jsonEqual(t, bc, before) {
		t.Error("BuildStatefulSet is not pure")
	}
}

func TestBuildConfigMap(t *testing.T) {
	tests := []struct {
		name   string
		bc     *heraldv1.BrokerCluster
		expect BrokerConfigFile
	}{
		{
			name: "defaults",
			bc:   testCluster(),
			expect: BrokerConfigFile{
				Listen: "0.0.0.0:8080", DataDir: "/var/lib/herald", Fsync: "always", MaxMessageBytes: 1048576,
				Retention: RetentionConfig{MaxAge: "168h"},
				Cluster:   ClusterConfig{Name: "orders", Namespace: "shop", StatefulSet: "orders", PeerDomain: "orders-headless.shop.svc", Port: 8080},
			},
		},
		{
			name: "everything set",
			bc: testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Spec.Config = heraldv1.BrokerConfig{
					Fsync:           heraldv1.FsyncNever,
					MaxMessageBytes: ptr.To[int32](4096),
					Retention:       heraldv1.RetentionDefaults{MaxAge: ptr.To(heraldv1.Duration("1h")), MaxBytes: ptr.To[int64](1 << 30)},
				}
				bc.Spec.Listeners.HTTP = heraldv1.HTTPListener{Port: 9443, TLS: &heraldv1.ListenerTLS{SecretName: "x"}}
			}),
			expect: BrokerConfigFile{
				Listen: "0.0.0.0:9443", DataDir: "/var/lib/herald", Fsync: "never", MaxMessageBytes: 4096,
				Retention: RetentionConfig{MaxAge: "1h", MaxBytes: 1 << 30},
				TLS:       &TLSConfig{CertFile: TLSDir + "/tls.crt", KeyFile: TLSDir + "/tls.key"},
				Cluster:   ClusterConfig{Name: "orders", Namespace: "shop", StatefulSet: "orders", PeerDomain: "orders-headless.shop.svc", Port: 9443},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ac, hash, err := BuildConfigMap(tt.bc)
			if err != nil {
				t.Fatal(err)
			}
			cm := toTyped[corev1.ConfigMap](t, ac)
			if cm.Name != "orders-config" || cm.Namespace != "shop" {
				t.Errorf("name %s/%s", cm.Namespace, cm.Name)
			}
			checkOwner(t, "configmap", cm.ObjectMeta)
			text := cm.Data[ConfigFileName]
			if !strings.HasPrefix(text, "# ") {
				t.Errorf("no header comment:\n%s", text)
			}
			var got BrokerConfigFile
			if err := yaml.UnmarshalStrict([]byte(text), &got); err != nil {
				t.Fatalf("broker.yaml does not parse: %v\n%s", err, text)
			}
			if !jsonEqual(t, got, tt.expect) {
				t.Errorf("broker.yaml:\n%s\nwant %+v", text, tt.expect)
			}
			if hash != configHash(cm.Data) || len(hash) != 16 {
				t.Errorf("hash %q", hash)
			}
		})
	}
}

func TestConfigHashFollowsConfig(t *testing.T) {
	hashOf := func(bc *heraldv1.BrokerCluster) string {
		_, h, err := BuildConfigMap(bc)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	base := hashOf(testCluster())
	if again := hashOf(testCluster()); again != base {
		t.Errorf("hash not stable: %s then %s", base, again)
	}
	changed := map[string]func(*heraldv1.BrokerCluster){
		"fsync":           func(bc *heraldv1.BrokerCluster) { bc.Spec.Config.Fsync = heraldv1.FsyncInterval },
		"maxMessageBytes": func(bc *heraldv1.BrokerCluster) { bc.Spec.Config.MaxMessageBytes = ptr.To[int32](10) },
		"retention":       func(bc *heraldv1.BrokerCluster) { bc.Spec.Config.Retention.MaxAge = ptr.To(heraldv1.Duration("1h")) },
		"port":            func(bc *heraldv1.BrokerCluster) { bc.Spec.Listeners.HTTP.Port = 1234 },
	}
	for name, m := range changed {
		if h := hashOf(testCluster(m)); h == base {
			t.Errorf("%s: hash unchanged", name)
		}
	}
	// Scaling must not roll the pods.
	if h := hashOf(testCluster(func(bc *heraldv1.BrokerCluster) { bc.Spec.Replicas = ptr.To[int32](7) })); h != base {
		t.Error("replicas changed the config hash")
	}
	a := buildSTS(t, testCluster())
	b := buildSTS(t, testCluster(changed["fsync"]))
	if a.Spec.Template.Annotations[AnnotationConfigHash] == b.Spec.Template.Annotations[AnnotationConfigHash] {
		t.Error("pod template annotation did not change with the config")
	}
}

func TestBuildServices(t *testing.T) {
	bc := testCluster(func(bc *heraldv1.BrokerCluster) { bc.Spec.Listeners.HTTP.Port = 9000 })
	tests := []struct {
		name     string
		svc      *corev1.Service
		wantName string
		headless bool
	}{
		{"headless", toTyped[corev1.Service](t, BuildHeadlessService(bc)), "orders-headless", true},
		{"client", toTyped[corev1.Service](t, BuildClientService(bc)), "orders", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.svc
			if s.Name != tt.wantName || s.Namespace != "shop" {
				t.Errorf("name %s/%s", s.Namespace, s.Name)
			}
			checkOwner(t, tt.name, s.ObjectMeta)
			if tt.headless != (s.Spec.ClusterIP == corev1.ClusterIPNone) || tt.headless != s.Spec.PublishNotReadyAddresses {
				t.Errorf("clusterIP %q publishNotReadyAddresses %v", s.Spec.ClusterIP, s.Spec.PublishNotReadyAddresses)
			}
			if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 9000 || s.Spec.Ports[0].TargetPort != intstr.FromString("http") ||
				s.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
				t.Errorf("ports %+v", s.Spec.Ports)
			}
			if !mapsEqual(s.Spec.Selector, SelectorLabels(bc)) {
				t.Errorf("selector %v", s.Spec.Selector)
			}
		})
	}
}

func TestBuildPodDisruptionBudget(t *testing.T) {
	tests := []struct {
		name string
		max  *intstr.IntOrString
		want intstr.IntOrString
	}{
		{"default", nil, intstr.FromInt32(1)},
		{"number", ptr.To(intstr.FromInt32(2)), intstr.FromInt32(2)},
		{"percent", ptr.To(intstr.FromString("25%")), intstr.FromString("25%")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bc := testCluster(func(bc *heraldv1.BrokerCluster) { bc.Spec.Disruption.MaxUnavailable = tt.max })
			pdb := toTyped[policyv1.PodDisruptionBudget](t, BuildPodDisruptionBudget(bc))
			checkOwner(t, "pdb", pdb.ObjectMeta)
			if pdb.Name != "orders" || *pdb.Spec.MaxUnavailable != tt.want || pdb.Spec.MinAvailable != nil {
				t.Errorf("pdb %+v", pdb.Spec)
			}
			if !mapsEqual(pdb.Spec.Selector.MatchLabels, SelectorLabels(bc)) {
				t.Errorf("selector %v", pdb.Spec.Selector)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		bc   *heraldv1.BrokerCluster
		want string
	}{
		{testCluster(), "http://orders.shop.svc:8080"},
		{testCluster(func(bc *heraldv1.BrokerCluster) {
			bc.Spec.Listeners.HTTP = heraldv1.HTTPListener{Port: 8443, TLS: &heraldv1.ListenerTLS{SecretName: "t"}}
		}), "https://orders.shop.svc:8443"},
	}
	for _, tt := range tests {
		if got := Endpoint(tt.bc); got != tt.want {
			t.Errorf("Endpoint = %q, want %q", got, tt.want)
		}
	}
}

func TestImageVersion(t *testing.T) {
	tests := map[string]string{
		"ghcr.io/heraldmq/herald:v0.1.0":            "v0.1.0",
		"localhost:5000/herald":                     "latest",
		"localhost:5000/herald:dev":                 "dev",
		"herald":                                    "latest",
		"ghcr.io/heraldmq/herald@sha256:abcd":       "sha256:abcd",
		"ghcr.io/heraldmq/herald:v2@sha256:abcdef0": "v2",
	}
	for image, want := range tests {
		if got := ImageVersion(image); got != want {
			t.Errorf("ImageVersion(%q) = %q, want %q", image, got, want)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

// TestDefaultsMatchCRD keeps withDefaults in step with the +kubebuilder:default markers that
// controller-gen wrote into the CRD.
func TestDefaultsMatchCRD(t *testing.T) {
	b, err := os.ReadFile("../config/crd/bases/herald.dev_brokerclusters.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	def := func(path ...string) string {
		s := spec
		for _, p := range path {
			s = s.Properties[p]
		}
		if s.Default == nil {
			t.Fatalf("no default for spec.%s", strings.Join(path, "."))
		}
		return strings.Trim(string(s.Default.Raw), `"`)
	}
	d := withDefaults(heraldv1.BrokerClusterSpec{})
	checks := map[string][2]string{
		"replicas":           {def("replicas"), fmt.Sprint(*d.Replicas)},
		"storage.size":       {def("storage", "size"), d.Storage.Size.String()},
		"whenDeleted":        {def("storage", "persistentVolumeClaimRetentionPolicy", "whenDeleted"), string(d.Storage.PersistentVolumeClaimRetentionPolicy.WhenDeleted)},
		"whenScaled":         {def("storage", "persistentVolumeClaimRetentionPolicy", "whenScaled"), string(d.Storage.PersistentVolumeClaimRetentionPolicy.WhenScaled)},
		"fsync":              {def("config", "fsync"), string(d.Config.Fsync)},
		"maxMessageBytes":    {def("config", "maxMessageBytes"), fmt.Sprint(*d.Config.MaxMessageBytes)},
		"retention.maxAge":   {def("config", "retention", "maxAge"), string(*d.Config.Retention.MaxAge)},
		"retention.maxBytes": {def("config", "retention", "maxBytes"), fmt.Sprint(*d.Config.Retention.MaxBytes)},
		"port":               {def("listeners", "http", "port"), fmt.Sprint(d.Listeners.HTTP.Port)},
		"maxUnavailable":     {def("disruption", "maxUnavailable"), d.Disruption.MaxUnavailable.String()},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s: CRD default %q, withDefaults %q", name, c[0], c[1])
		}
	}
}
