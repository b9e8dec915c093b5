package operator

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/internal/version"
)

func TestParseNamespaces(t *testing.T) {
	tests := map[string][]string{
		"":                   nil,
		" , ":                nil,
		"a":                  {"a"},
		"a,b":                {"a", "b"},
		" a , b ,a,, c ":     {"a", "b", "c"},
		"team-1,team-2,":     {"team-1", "team-2"},
		"kube-system,herald": {"kube-system", "herald"},
	}
	for in, want := range tests {
		if got := ParseNamespaces(in); !slices.Equal(got, want) {
			t.Errorf("ParseNamespaces(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDefaultBrokerImage(t *testing.T) {
	old := version.Version
	t.Cleanup(func() { version.Version = old })
	version.Version = "v1.2.3"
	if got := DefaultBrokerImage(); got != "ghcr.io/heraldmq/herald:v1.2.3" {
		t.Errorf("DefaultBrokerImage() = %q", got)
	}
}

// TestWatchNamespaces runs the operator the way the Helm chart does with watchNamespaces: its
// ClusterRole (config/rbac/role.yaml) bound by a RoleBinding in one namespace only. It must
// reconcile there, and neither fail on nor touch other namespaces.
func TestWatchNamespaces(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: skipping the envtest test (`make test` sets it from hack/build-control-plane.sh)")
	}
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(2 * time.Minute)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	_, err := env.Start()
	defer func() { _ = env.Stop() }() // also after a failed start, which leaves processes running
	g.Expect(err).NotTo(HaveOccurred())

	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	g.Expect(err).NotTo(HaveOccurred())
	k8s, err := client.New(admin.Config(), client.Options{Scheme: NewScheme()})
	g.Expect(err).NotTo(HaveOccurred())

	for _, ns := range []string{"watched", "other"} {
		g.Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	g.Expect(yaml.UnmarshalStrict(b, role)).To(Succeed())
	g.Expect(k8s.Create(ctx, role)).To(Succeed())
	g.Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "herald-operator", Namespace: "watched"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "herald-operator"}},
	})).To(Succeed())
	opUser, err := env.AddUser(envtest.User{Name: "herald-operator"}, nil)
	g.Expect(err).NotTo(HaveOccurred())

	// A BrokerCluster the operator must leave alone, created first.
	other := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "other"},
		Spec: heraldv1.BrokerClusterSpec{Replicas: ptr.To[int32](1)}}
	g.Expect(k8s.Create(ctx, other)).To(Succeed())

	mgr, err := NewManager(opUser.Config(), Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		WatchNamespaces:        []string{"watched"},
		BrokerImage:            "registry.test/herald:v1",
	})
	g.Expect(err).NotTo(HaveOccurred())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		g.Expect(<-done).To(Succeed())
	}()

	watched := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "watched"},
		Spec: heraldv1.BrokerClusterSpec{Replicas: ptr.To[int32](1)}}
	g.Expect(k8s.Create(ctx, watched)).To(Succeed())
	g.Eventually(func(g Gomega) {
		bc := &heraldv1.BrokerCluster{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(watched), bc)).To(Succeed())
		g.Expect(bc.Status.ObservedGeneration).To(Equal(bc.Generation))
		g.Expect(bc.Status.Endpoint).To(Equal("http://c.watched.svc:8080"))
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(watched), &appsv1.StatefulSet{})).To(Succeed())
	}).Should(Succeed())

	bc := &heraldv1.BrokerCluster{}
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(other), bc)).To(Succeed())
	g.Expect(bc.Status.Conditions).To(BeEmpty(), "the operator reconciled a namespace it does not watch")
	err = k8s.Get(ctx, client.ObjectKeyFromObject(other), &appsv1.StatefulSet{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "%v", err)
}
