package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/heraldmq/herald/test/cluster"
)

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestControllers starts the local control plane (no node) and checks that the controller
// manager's controllers act: ServiceAccounts and their tokens, the root CA ConfigMap, Deployment
// → ReplicaSet → Pod (with the token volume the ServiceAccount admission plugin adds), garbage
// collection, namespace deletion; and that kubectl works with the admin kubeconfig.
func TestControllers(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: run `make test`, or set it to the folder hack/build-control-plane.sh prints")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
			t.Errorf("cluster folder %s still there (%v)", c.Dir, err)
		}
	}()
	if !strings.HasPrefix(c.URL, "https://127.0.0.1:") {
		t.Errorf("API server URL %s: want 127.0.0.1", c.URL)
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "ctl"
	if err := cluster.CreateNamespace(ctx, cs, ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "kube-root-ca.crt", func() error {
		_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})

	// Legacy token Secrets are filled by the serviceaccount-token controller.
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "tok", Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "token secret", func() error {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, "tok", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Data["token"]) == 0 {
			return fmt.Errorf("no token yet")
		}
		return nil
	})

	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "ghcr.io/heraldmq/herald:test"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pods of the Deployment", func() error {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d pods", len(pods.Items))
		}
		for _, p := range pods.Items {
			token := false
			for _, v := range p.Spec.Volumes {
				token = token || strings.HasPrefix(v.Name, "kube-api-access-")
			}
			if !token {
				return fmt.Errorf("pod %s has no ServiceAccount token volume", p.Name)
			}
		}
		return nil
	})

	// kubectl with the admin kubeconfig.
	out, err := exec.Command(c.Kubectl(), "--kubeconfig", c.AdminKubeconfig, "get", "replicasets", "-n", ns, "-o", "name").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "replicaset.apps/web-") {
		t.Fatalf("kubectl get replicasets: %v\n%s", err, out)
	}

	// Deleting the Deployment: the garbage collector removes its ReplicaSet and pods.
	if err := cs.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "garbage collection", func() error {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(rs.Items) > 0 {
			return fmt.Errorf("%d ReplicaSets left", len(rs.Items))
		}
		return nil
	})

	// Namespace deletion completes (the namespace controller empties it).
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "namespace deletion", func() error {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace still there (%v)", err)
	})
}
