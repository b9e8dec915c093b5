package podrunner_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/controllers"
	"github.com/heraldmq/herald/test/cluster"
	"github.com/heraldmq/herald/test/podrunner"
)

// One local cluster and pod runner for the whole package, started by the first test that needs
// them (tests skip when KUBEBUILDER_ASSETS is unset) and stopped by TestMain.
var (
	envOnce sync.Once
	envErr  error
	theEnv  *testEnv
)

type testEnv struct {
	cluster *cluster.Cluster
	runner  *podrunner.Runner
	cs      kubernetes.Interface
	state   string
	tmp     string
}

const heraldImage = "ghcr.io/heraldmq/herald:test"

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if theEnv != nil {
		theEnv.stop()
	}
	os.Exit(code)
}

func env(t *testing.T) *testEnv {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: run `make test`, or set it to the folder hack/build-control-plane.sh prints")
	}
	envOnce.Do(func() { theEnv, envErr = startEnv() })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return theEnv
}

func startEnv() (*testEnv, error) {
	tmp, err := os.MkdirTemp("", "herald-podrunner-test-")
	if err != nil {
		return nil, err
	}
	e := &testEnv{tmp: tmp, state: filepath.Join(tmp, "node")}
	bin := os.Getenv("HERALD_BINARY")
	if bin == "" {
		bin = filepath.Join(tmp, "herald")
		build := exec.Command("go", "build", "-o", bin, "github.com/heraldmq/herald")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			e.stop()
			return nil, fmt.Errorf("building herald: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.cluster, err = cluster.Start(ctx, cluster.Options{Dir: filepath.Join(tmp, "cluster")})
	if err != nil {
		e.stop()
		return nil, err
	}
	logf, err := os.Create(filepath.Join(tmp, "podrunner.log"))
	if err != nil {
		e.stop()
		return nil, err
	}
	e.runner, err = podrunner.New(podrunner.Options{
		Config:         e.cluster.Config,
		HeraldBinary:   bin,
		StateDir:       e.state,
		InitialBackoff: 2 * time.Second,
		StopGrace:      5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(logf, nil)),
	})
	if err == nil {
		err = e.runner.Start(ctx)
	}
	if err != nil {
		e.stop()
		return nil, err
	}
	e.cs, err = kubernetes.NewForConfig(e.cluster.Config)
	if err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

func (e *testEnv) stop() {
	if e.runner != nil {
		e.runner.Stop()
	}
	if e.cluster != nil {
		_ = e.cluster.Stop()
	}
	if os.Getenv("KEEP_PODRUNNER_STATE") == "" {
		_ = os.RemoveAll(e.tmp)
	} else {
		fmt.Fprintln(os.Stderr, "podrunner test state kept in", e.tmp)
	}
}

// namespace creates a namespace for one test; on failure the test logs the runner's log and the
// pods' logs.
func (e *testEnv) namespace(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.CreateNamespace(ctx, e.cs, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.dump(t, name)
		}
	})
	return name
}

func (e *testEnv) dump(t *testing.T, ns string) {
	ctx := context.Background()
	pods, _ := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		b, _ := json.MarshalIndent(p.Status, "", "  ")
		t.Logf("pod %s/%s status:\n%s", ns, p.Name, b)
	}
	_ = filepath.WalkDir(filepath.Join(e.state, "pods", ns), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".log") {
			b, _ := os.ReadFile(p)
			t.Logf("%s:\n%s", p, tail(b, 3000))
		}
		return nil
	})
	b, _ := os.ReadFile(filepath.Join(e.tmp, "podrunner.log"))
	t.Logf("pod runner log:\n%s", tail(b, 6000))
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// eventually polls cond every 200ms until it returns nil, failing the test after timeout.
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

func (e *testEnv) pod(ns, name string) (*corev1.Pod, error) {
	return e.cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReady waits for pod ns/name to be Running and Ready; with notUID, for a pod of another UID.
func (e *testEnv) waitReady(t *testing.T, ns, name, notUID string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, timeout, "pod "+ns+"/"+name+" ready", func() error {
		p, err := e.pod(ns, name)
		if err != nil {
			return err
		}
		if string(p.UID) == notUID {
			return fmt.Errorf("still the old pod")
		}
		if p.Status.Phase != corev1.PodRunning || !isReady(p) {
			return fmt.Errorf("phase %s, ready %v, containers %+v", p.Status.Phase, isReady(p), p.Status.ContainerStatuses)
		}
		pod = p
		return nil
	})
	return pod
}

func httpGet(url string) (int, []byte, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func httpDo(method, url, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// hostsLookup reads a hosts file: name → addresses.
func hostsLookup(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		for _, n := range f[min(1, len(f)):] {
			out[n] = append(out[n], f[0])
		}
	}
	return out
}

// TestBrokerStatefulSet runs what the operator builds for a one-broker BrokerCluster (its own
// builders: ConfigMap, headless and client Services, StatefulSet with a volume claim template and
// probes) and checks the pod runner end to end: the pod is Ready on a 127.x address and the broker
// answers there; its claim is bound to a folder; the hosts file has the cluster names; a SIGKILL
// is a restart on the same data; deleting the pod makes the StatefulSet recreate it, again on the
// same data.
func TestBrokerStatefulSet(t *testing.T) {
	e := env(t)
	t.Parallel()
	ns := e.namespace(t, "sts")
	ctx := context.Background()

	bc := &heraldv1.BrokerCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "demo", Namespace: ns, UID: "00000000-0000-0000-0000-000000000001"},
		Spec: heraldv1.BrokerClusterSpec{
			Replicas: ptr.To(int32(1)),
			Storage:  heraldv1.BrokerStorage{Size: ptr.To(resource.MustParse("64Mi"))},
		},
	}
	cm, hash, err := controllers.BuildConfigMap(bc)
	if err != nil {
		t.Fatal(err)
	}
	sts, err := controllers.BuildStatefulSet(bc, controllers.StatefulSetParams{DefaultImage: heraldImage, ConfigHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	headless, client := controllers.BuildHeadlessService(bc), controllers.BuildClientService(bc)
	// No BrokerCluster exists here: without the owner references the garbage collector leaves
	// the objects alone.
	cm.OwnerReferences, sts.OwnerReferences, headless.OwnerReferences, client.OwnerReferences = nil, nil, nil, nil
	apply := metav1.ApplyOptions{FieldManager: "podrunner-test", Force: true}
	if _, err := e.cs.CoreV1().ConfigMaps(ns).Apply(ctx, cm, apply); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []*corev1ac.ServiceApplyConfiguration{headless, client} {
		if _, err := e.cs.CoreV1().Services(ns).Apply(ctx, svc, apply); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.cs.AppsV1().StatefulSets(ns).Apply(ctx, sts, apply); err != nil {
		t.Fatal(err)
	}

	pod := e.waitReady(t, ns, "demo-0", "", 60*time.Second)
	ip := pod.Status.PodIP
	if !strings.HasPrefix(ip, "127.") || ip == "127.0.0.1" {
		t.Fatalf("pod IP %q: want a 127.x address of its own", ip)
	}
	base := "http://" + ip + ":8080"
	if code, body, err := httpGet(base + "/readyz"); err != nil || code != 200 {
		t.Fatalf("GET /readyz on the pod IP: %d %s %v", code, body, err)
	}
	if st := pod.Status.ContainerStatuses; len(st) != 1 || !st[0].Ready || st[0].State.Running == nil || st[0].RestartCount != 0 || !ptr.Deref(st[0].Started, false) {
		t.Fatalf("container status: %+v", st)
	}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodReadyToStartContainers} {
		found := false
		for _, pc := range pod.Status.Conditions {
			if pc.Type == c && pc.Status == corev1.ConditionTrue {
				found = true
			}
		}
		if !found {
			t.Errorf("condition %s is not True: %+v", c, pod.Status.Conditions)
		}
	}

	// The claim from the volume claim template is bound to a folder of the runner's.
	pvc, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-demo-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		t.Fatalf("claim: phase %s volume %q", pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Status.Phase != corev1.VolumeBound || pv.Spec.HostPath == nil || !strings.HasPrefix(pv.Spec.HostPath.Path, e.state) {
		t.Fatalf("volume: phase %s source %+v", pv.Status.Phase, pv.Spec.PersistentVolumeSource)
	}
	dataDir := pv.Spec.HostPath.Path
	pid, ok := e.runner.PID(ns, "demo-0", "broker")
	if !ok {
		t.Fatal("no PID for the broker")
	}
	// The broker got the folder for --data-dir /var/lib/herald and the pod IP for --listen 0.0.0.0:8080.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil {
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !slices.Contains(args, dataDir) || !slices.Contains(args, ip+":8080") {
			t.Errorf("broker arguments %q: want the data folder %s and the listen address %s:8080", args, dataDir, ip)
		}
	}

	// Cluster DNS names in the namespace's hosts file.
	eventually(t, 10*time.Second, "hosts file", func() error {
		hosts := hostsLookup(t, e.runner.HostsFile(ns))
		for _, name := range []string{
			"demo-0.demo-headless." + ns + ".svc", "demo-0.demo-headless." + ns + ".svc.cluster.local",
			"demo-headless." + ns + ".svc", "demo." + ns + ".svc", "demo." + ns + ".svc.cluster.local", "demo",
		} {
			if got := hosts[name]; !slices.Equal(got, []string{ip}) {
				return fmt.Errorf("%s → %v, want [%s]", name, got, ip)
			}
		}
		return nil
	})

	// Data written before a crash survives it.
	if code, body, err := httpDo(http.MethodPut, base+"/v1/topics/orders", `{"partitions":1}`); err != nil || code/100 != 2 {
		t.Fatalf("PUT topic: %d %s %v", code, body, err)
	}
	if code, body, err := httpDo(http.MethodPost, base+"/v1/topics/orders/messages", `{"messages":[{"text":"before the crash"}]}`); err != nil || code != 200 {
		t.Fatalf("publish: %d %s %v", code, body, err)
	}
	entries, _ := os.ReadDir(dataDir)
	if len(entries) == 0 {
		t.Fatalf("the broker wrote nothing into its claim's folder %s", dataDir)
	}

	// kill -9: a container crash, restarted in place.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "restart after SIGKILL", func() error {
		p, err := e.pod(ns, "demo-0")
		if err != nil {
			return err
		}
		if p.UID != pod.UID {
			return fmt.Errorf("the pod was replaced")
		}
		st := p.Status.ContainerStatuses
		if len(st) != 1 || st[0].RestartCount != 1 || !st[0].Ready || !isReady(p) {
			return fmt.Errorf("container status %+v", st)
		}
		last := st[0].LastTerminationState.Terminated
		if last == nil || last.ExitCode != 137 || last.Signal != 9 {
			return fmt.Errorf("last state %+v", st[0].LastTerminationState)
		}
		return nil
	})
	if newPID, _ := e.runner.PID(ns, "demo-0", "broker"); newPID == pid || newPID == 0 {
		t.Fatalf("PID after the restart: %d (was %d)", newPID, pid)
	}
	if b, err := os.ReadFile(filepath.Join(e.runner.PodDir(ns, "demo-0"), "broker.pid")); err != nil || strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
		t.Fatalf("pid file: %q %v", b, err)
	}
	// The topic and its message are still there: the broker recovered from the same folder.
	checkMessage := func() error {
		code, body, err := httpGet(base + "/v1/topics/orders")
		if err != nil || code != 200 {
			return fmt.Errorf("GET topic: %d %s %v", code, body, err)
		}
		var topic struct {
			Stats struct {
				Messages int64 `json:"messages"`
			} `json:"stats"`
		}
		if err := json.Unmarshal(body, &topic); err != nil || topic.Stats.Messages != 1 {
			return fmt.Errorf("topic %s: want 1 message (%v)", body, err)
		}
		return nil
	}
	if err := checkMessage(); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	// `kubectl logs` (the API server asks the runner's log endpoint), also --previous.
	for _, previous := range []bool{false, true} {
		logs, err := e.cs.CoreV1().Pods(ns).GetLogs("demo-0", &corev1.PodLogOptions{Previous: previous}).Do(ctx).Raw()
		if err != nil || !strings.Contains(string(logs), "broker ready") {
			t.Errorf("logs (previous=%v): %v\n%s", previous, err, logs)
		}
	}

	// Deleting the pod: the StatefulSet recreates it (a new UID), on the same claim.
	if err := e.cs.CoreV1().Pods(ns).Delete(ctx, "demo-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pod2 := e.waitReady(t, ns, "demo-0", string(pod.UID), 60*time.Second)
	base = "http://" + pod2.Status.PodIP + ":8080"
	if err := checkMessage(); err != nil {
		t.Fatalf("after the pod was recreated: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("process %d of the first run is still there", pid)
	}

	// Deleting the StatefulSet and then the claim: the pod's process stops, and the volume and
	// its folder are reclaimed.
	if err := e.cs.AppsV1().StatefulSets(ns).Delete(ctx, "demo", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	if err := e.cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data-demo-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "volume reclaimed", func() error {
		if _, err := e.pod(ns, "demo-0"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod: %v", err)
		}
		if _, ok := e.runner.PID(ns, "demo-0", "broker"); ok {
			return fmt.Errorf("the broker still runs")
		}
		if _, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			c, cerr := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-demo-0", metav1.GetOptions{})
			return fmt.Errorf("volume %s: %v (claim: %v %v)", pv.Name, err, cerr, c.ObjectMeta)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			return fmt.Errorf("folder %s: %v", dataDir, err)
		}
		if _, err := os.Stat(e.runner.PodDir(ns, "demo-0")); !os.IsNotExist(err) {
			return fmt.Errorf("pod folder: %v", err)
		}
		return nil
	})
}

func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	out := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// TestEnvVolumesAndToken checks what a process gets from its pod: env values (literal, expanded,
// downward API, ConfigMap and Secret keys), rewritten paths and addresses, volumes as files
// (updated when their ConfigMap changes), the hosts file, and a kubeconfig with the pod's
// ServiceAccount token that the API server accepts as that ServiceAccount.
func TestEnvVolumesAndToken(t *testing.T) {
	e := env(t)
	t.Parallel()
	ns := e.namespace(t, "envvol")
	ctx := context.Background()
	if _, err := e.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"greeting": "hello", "app.yaml": "v: 1\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"},
		Data:       map[string][]byte{"password": []byte("s3cret")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "env", Labels: map[string]string{"app": "env"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "registry.example.com/team/herald:dev", // any image named .../herald
				// A command naming herald contributes its arguments.
				Command: []string{"/usr/bin/herald", "broker"},
				Args:    []string{"--storage", "memory", "--listen", ":8080", "--data-dir", "/data"},
				Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "greeting"}}},
					{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
					{Name: "EXPANDED", Value: "$(POD_NAME)-x $$(POD_NAME)"},
					{Name: "SUBDIR", Value: "/data/sub"},
					{Name: "NOT_A_MOUNT", Value: "/database"},
					{Name: "ADDR", Value: "0.0.0.0:9000"},
					{Name: "URL", Value: "http://localhost:9000/x"},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "data", MountPath: "/data"},
					{Name: "settings", MountPath: "/etc/settings"},
					{Name: "podinfo", MountPath: "/etc/podinfo"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "settings", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
					Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
			},
		},
	}
	if _, err := e.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := e.waitReady(t, ns, "env", "", 60*time.Second)
	ip := p.Status.PodIP
	dir := e.runner.PodDir(ns, "env")
	pid, ok := e.runner.PID(ns, "env", "main")
	if !ok {
		t.Fatal("no PID")
	}
	vars := procEnviron(t, pid)
	want := map[string]string{
		"POD_NAME":          "env",
		"POD_IP":            ip,
		"GREETING":          "hello",
		"PASSWORD":          "s3cret",
		"EXPANDED":          "env-x $(POD_NAME)",
		"SUBDIR":            filepath.Join(dir, "volumes", "data", "sub"),
		"NOT_A_MOUNT":       "/database",
		"ADDR":              ip + ":9000",
		"URL":               "http://" + ip + ":9000/x",
		"HOSTNAME":          "env",
		"HERALD_HOSTS_FILE": e.runner.HostsFile(ns),
		"KUBECONFIG":        filepath.Join(dir, "kubeconfig"),
	}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("env %s = %q, want %q", k, vars[k], v)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		got := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")[1:]
		wantArgs := []string{"broker", "--storage", "memory", "--listen", ip + ":8080", "--data-dir", filepath.Join(dir, "volumes", "data")}
		if !slices.Equal(got, wantArgs) {
			t.Errorf("arguments %q, want %q", got, wantArgs)
		}
	}

	// Volumes are files in the pod's folder; a ConfigMap change reaches them.
	read := func(rel string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "volumes", rel))
		return string(b)
	}
	if got := read("settings/greeting"); got != "hello" {
		t.Errorf("settings/greeting = %q", got)
	}
	if got := read("podinfo/labels"); got != `app="env"` {
		t.Errorf("podinfo/labels = %q", got)
	}
	cm, err := e.cs.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"greeting": "bonjour"}
	if _, err := e.cs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "ConfigMap volume update", func() error {
		if g := read("settings/greeting"); g != "bonjour" {
			return fmt.Errorf("greeting %q", g)
		}
		if _, err := os.Stat(filepath.Join(dir, "volumes", "settings", "app.yaml")); !os.IsNotExist(err) {
			return fmt.Errorf("app.yaml is still there (%v)", err)
		}
		return nil
	})

	// The ServiceAccount admission plugin added a token volume; the runner filled it.
	for _, v := range p.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			if tok := read(v.Name + "/token"); len(tok) < 20 {
				t.Errorf("token volume %s: token %q", v.Name, tok)
			}
			if ca := read(v.Name + "/ca.crt"); !strings.Contains(ca, "BEGIN CERTIFICATE") {
				t.Errorf("token volume %s: ca.crt %q", v.Name, ca)
			}
		}
	}

	// KUBECONFIG authenticates as the pod's ServiceAccount.
	cfg, err := clientcmd.BuildConfigFromFlags("", vars["KUBECONFIG"])
	if err != nil {
		t.Fatal(err)
	}
	podCS, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := podCS.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rev.Status.UserInfo.Username, "system:serviceaccount:"+ns+":default"; got != want {
		t.Errorf("kubeconfig user %q, want %q", got, want)
	}
	// ... with the ServiceAccount's rights only.
	if _, err := podCS.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets with the pod's kubeconfig: %v, want Forbidden", err)
	}
}

// TestNotRunnable: a pod with another image waits with ErrImagePull and says why; a pod whose
// nodeSelector rules the node out stays unscheduled.
func TestNotRunnable(t *testing.T) {
	e := env(t)
	t.Parallel()
	ns := e.namespace(t, "notrunnable")
	ctx := context.Background()
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"}, Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"disktype": "ssd"},
			Containers:   []corev1.Container{{Name: "b", Image: heraldImage, Args: []string{"broker", "--storage", "memory"}}}}},
	} {
		if _, err := e.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "ErrImagePull", func() error {
		p, err := e.pod(ns, "nginx")
		if err != nil {
			return err
		}
		if p.Spec.NodeName != e.runner.NodeName() || p.Status.Phase != corev1.PodPending || len(p.Status.ContainerStatuses) != 1 {
			return fmt.Errorf("node %q phase %s statuses %+v", p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses)
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		if w == nil || w.Reason != "ErrImagePull" || !strings.Contains(w.Message, "nginx:1.27") || !strings.Contains(w.Message, "Herald") {
			return fmt.Errorf("state %+v", p.Status.ContainerStatuses[0].State)
		}
		return nil
	})
	eventually(t, 30*time.Second, "Unschedulable", func() error {
		p, err := e.pod(ns, "elsewhere")
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "" {
			return fmt.Errorf("bound to %s", p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", p.Status.Conditions)
	})
}

// TestLivenessAndExit: a failing liveness probe restarts the container (with backoff); a pod
// whose process exits 0 with restartPolicy Never Succeeds.
func TestLivenessAndExit(t *testing.T) {
	e := env(t)
	t.Parallel()
	ns := e.namespace(t, "liveness")
	ctx := context.Background()
	pods := []*corev1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Name: "unhealthy"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(2)),
			Containers: []corev1.Container{{
				Name: "b", Image: heraldImage, Args: []string{"broker", "--storage", "memory", "--listen", "0.0.0.0:8080"},
				LivenessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/no-such-path", Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1, FailureThreshold: 2, InitialDelaySeconds: 1,
				},
			}},
		},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: "once"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "v", Image: heraldImage, Args: []string{"help"}}},
		},
	}}
	for _, p := range pods {
		if _, err := e.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 45*time.Second, "liveness restarts", func() error {
		p, err := e.pod(ns, "unhealthy")
		if err != nil {
			return err
		}
		if st := p.Status.ContainerStatuses; len(st) != 1 || st[0].RestartCount < 2 || st[0].LastTerminationState.Terminated == nil {
			return fmt.Errorf("statuses %+v", st)
		}
		return nil
	})
	eventually(t, 30*time.Second, "Succeeded", func() error {
		p, err := e.pod(ns, "once")
		if err != nil {
			return err
		}
		st := p.Status.ContainerStatuses
		if p.Status.Phase != corev1.PodSucceeded || len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.Reason != "Completed" || st[0].RestartCount != 0 {
			return fmt.Errorf("phase %s statuses %+v", p.Status.Phase, st)
		}
		return nil
	})
}

// TestNode: the runner registered a Ready node with capacity.
func TestNode(t *testing.T) {
	e := env(t)
	n, err := e.cs.CoreV1().Nodes().Get(context.Background(), e.runner.NodeName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready || n.Status.Capacity.Cpu().IsZero() || n.Status.Capacity.Memory().IsZero() || n.Status.Allocatable.Pods().IsZero() {
		t.Fatalf("node status %+v", n.Status)
	}
}
