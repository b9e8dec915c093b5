// Package e2e tests the whole product as a user drives it, against Herald's local cluster started
// in-process (test/cluster: etcd, kube-apiserver, kube-controller-manager; test/podrunner: the
// node, running Herald's pods as local processes of a freshly built herald binary, each on its own
// 127.x address). Everything goes through the kubectl and helm binaries: install the chart, apply
// a BrokerCluster, a Topic, a push and a pull Subscription; publish over HTTP to a broker pod;
// receive pushes on an HTTP server of this test process; read the printer columns; SIGKILL the
// broker mid-traffic and check nothing acknowledged is lost; change the config and watch the pods
// roll; re-apply (no changes); delete the namespace and uninstall the chart (nothing left).
// chaos_test.go kills the brokers of a replicated BrokerCluster under load (issue 7).
// scale_test.go scales one 3 → 5 → 3, and rolling_test.go restarts its pods by changing the pod
// template, both under load; replicated_test.go holds their shared helpers.
//
// Needs KUBEBUILDER_ASSETS (hack/build-control-plane.sh: etcd, kube-apiserver,
// kube-controller-manager, kubectl) and HELM (the helm binary); `make test` and `make e2e` set
// both. Without them the test is skipped.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/heraldmq/herald/test/cluster"
	"github.com/heraldmq/herald/test/podrunner"
)

const (
	operatorNS = "herald-system"
	ns         = "e2e"
	bcName     = "e2e"
	broker0    = "e2e-0"
)

// root is the repository root (tests run in test/e2e).
var root = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// env is the running local cluster and the tools to drive it.
type env struct {
	t          *testing.T
	ctx        context.Context
	c          *cluster.Cluster
	r          *podrunner.Runner
	cs         kubernetes.Interface
	kubectl    string
	helm       string
	kubeconfig string
	toolEnv    []string
	dir        string
}

// run runs a command (kubectl or helm) with the cluster's kubeconfig; it returns its combined output.
func (e *env) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), e.toolEnv...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (e *env) k(args ...string) (string, error) { return e.run(60*time.Second, e.kubectl, args...) }

func (e *env) mustK(args ...string) string {
	e.t.Helper()
	out, err := e.k(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// eventually retries cond every 250ms until it returns nil, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := within(timeout, cond); err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, err)
	}
}

func within(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// start builds herald, starts the control plane and the pod runner, and registers their cleanup.
func start(t *testing.T) *env { return startWithin(t, 6*time.Minute) }

// startWithin is start with the time the whole test may take (e.ctx's deadline).
func startWithin(t *testing.T, budget time.Duration) *env {
	assets, helm := os.Getenv("KUBEBUILDER_ASSETS"), os.Getenv("HELM")
	if assets == "" || helm == "" {
		t.Skip("KUBEBUILDER_ASSETS or HELM unset: run `make e2e` (or `make test`), which set both")
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	t.Cleanup(cancel)
	dir := t.TempDir()
	bin := filepath.Join(dir, "herald")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	c, err := cluster.Start(ctx, cluster.Options{AssetsDir: assets, Dir: filepath.Join(dir, "cluster")})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, c: c, kubectl: c.Kubectl(), helm: helm, dir: dir}
	e.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := c.WriteKubeconfig(e.kubeconfig); err != nil {
		c.Stop()
		t.Fatal(err)
	}
	e.toolEnv = []string{
		"KUBECONFIG=" + e.kubeconfig,
		"HELM_CACHE_HOME=" + filepath.Join(dir, "helm", "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "helm", "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "helm", "data"),
	}
	logf, err := os.Create(filepath.Join(dir, "podrunner.log"))
	if err != nil {
		c.Stop()
		t.Fatal(err)
	}
	r, err := podrunner.New(podrunner.Options{
		Config:         c.Config,
		HeraldBinary:   bin,
		StateDir:       filepath.Join(dir, "node"),
		Logger:         slog.New(slog.NewTextHandler(logf, nil)),
		InitialBackoff: time.Second,
		MaxBackoff:     5 * time.Second,
		StopGrace:      5 * time.Second,
	})
	if err == nil {
		err = r.Start(ctx)
	}
	// Cleanup runs last-registered first: the pods stop before the control plane.
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
		logf.Close()
	})
	if r != nil {
		t.Cleanup(func() {
			if t.Failed() {
				e.diagnose()
			}
			r.Stop()
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	if e.cs, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatal(err)
	}
	return e
}

// diagnose logs the cluster's state and the end of every pod's log.
func (e *env) diagnose() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, args := range [][]string{{"get", "pods", "-A", "-o", "wide"}, {"get", "herald", "-A"}, {"get", "events", "-A", "--sort-by=.lastTimestamp"}} {
		cmd := exec.CommandContext(ctx, e.kubectl, args...)
		cmd.Env = append(os.Environ(), e.toolEnv...)
		out, _ := cmd.CombinedOutput()
		e.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), tail(string(out), 40))
	}
	logs, _ := filepath.Glob(filepath.Join(e.r.StateDir(), "pods", "*", "*", "logs", "*", "*.log"))
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		e.t.Logf("%s:\n%s", strings.TrimPrefix(f, e.r.StateDir()), tail(string(b), 15))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// receiver is the push endpoint: an HTTP server in this process, on 127.0.0.1.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen map[string]int // body → deliveries
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{seen: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad push", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.seen[string(b)]++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) missing(want []string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, w := range want {
		if rc.seen[w] == 0 {
			out = append(out, w)
		}
	}
	return out
}

var httpc = &http.Client{Timeout: 10 * time.Second}

// call does a JSON request to a broker and decodes the answer into out (if not nil).
func call(method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// offsets records, per partition, the highest offset the broker acknowledged.
var (
	offsetsMu sync.Mutex
	offsets   = map[int]int64{}
)

// publish publishes one text message; nil means the broker acknowledged it (durable). It returns
// the partition and offset the broker gave it.
func publish(base, topic, text string) (partition int, offset int64, err error) {
	var res struct {
		Results []struct {
			ID        string `json:"id"`
			Partition int    `json:"partition"`
			Offset    int64  `json:"offset"`
		} `json:"results"`
	}
	err = call(http.MethodPost, base+"/v1/topics/"+topic+"/messages",
		map[string]any{"messages": []map[string]any{{"text": text, "key": text}}}, &res)
	if err == nil && len(res.Results) != 1 {
		err = fmt.Errorf("publish: %d results", len(res.Results))
	}
	if err != nil {
		return 0, 0, err
	}
	r := res.Results[0]
	offsetsMu.Lock()
	defer offsetsMu.Unlock()
	if o, ok := offsets[r.Partition]; !ok || r.Offset > o {
		offsets[r.Partition] = r.Offset
	}
	return r.Partition, r.Offset, nil
}

// pullAll pulls (and acks) from a pull subscription until every text in want was received or
// timeout; it returns the texts still missing.
func pullAll(base, sub string, want []string, timeout time.Duration) []string {
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	deadline := time.Now().Add(timeout)
	for len(missing) > 0 && time.Now().Before(deadline) {
		var res struct {
			Messages []struct {
				ReceiptHandle string `json:"receiptHandle"`
				Data          []byte `json:"data"`
			} `json:"messages"`
		}
		if err := call(http.MethodPost, base+"/v1/subscriptions/"+sub+"/pull", map[string]any{"max": 100, "wait": "1s", "visibility": "60s"}, &res); err != nil {
			time.Sleep(250 * time.Millisecond)
			continue
		}
		var handles []string
		for _, m := range res.Messages {
			delete(missing, string(m.Data))
			handles = append(handles, m.ReceiptHandle)
		}
		if len(handles) > 0 {
			_ = call(http.MethodPost, base+"/v1/subscriptions/"+sub+"/ack", map[string]any{"receiptHandles": handles}, nil)
		}
	}
	var out []string
	for m := range missing {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

const manifestTemplate = `apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: e2e
spec:
  replicas: 1
  storage:
    size: 64Mi
  config:
    fsync: %[1]s
---
# Three brokers, to watch a config change roll them one at a time.
apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: roll3
spec:
  replicas: 3
  storage:
    ephemeral: true
    size: 16Mi
  config:
    fsync: %[1]s
---
apiVersion: herald.dev/v1alpha1
kind: Topic
metadata:
  name: events
spec:
  clusterRef:
    name: e2e
  partitions: 2
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: events-push
spec:
  clusterRef:
    name: e2e
  topic: events
  startAt: earliest
  push:
    uri: %[2]s/push
    format: raw
    timeout: 5s
  retry:
    policy: exponential
    minBackoff: 200ms
    maxBackoff: 2s
    maxAttempts: 100
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: events-pull
spec:
  clusterRef:
    name: e2e
  topic: events
  startAt: earliest
  ackDeadline: 60s
`

func (e *env) writeManifests(fsync, pushBase string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, "manifests-"+fsync+".yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(manifestTemplate, fsync, pushBase)), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// jsonpath reads one field of an object with kubectl.
func (e *env) jsonpath(kind, name, path string) (string, error) {
	out, err := e.k("get", "-n", ns, kind, name, "-o", "jsonpath={"+path+"}")
	return strings.TrimSpace(out), err
}

func (e *env) podIP(pod string) string {
	e.t.Helper()
	var ip string
	eventually(e.t, 60*time.Second, "pod IP of "+pod, func() error {
		var err error
		ip, err = e.jsonpath("pod", pod, ".status.podIP")
		if err == nil && ip == "" {
			err = fmt.Errorf("no pod IP yet")
		}
		return err
	})
	if !strings.HasPrefix(ip, "127.") {
		e.t.Fatalf("pod IP %s is not a loopback address", ip)
	}
	return ip
}

// waitReady waits for a herald.dev object's Ready condition to be True.
func (e *env) waitReady(kind, name string, timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, kind+" "+name+" Ready", func() error {
		st, err := e.jsonpath(kind, name, `.status.conditions[?(@.type=="Ready")].status`)
		if err != nil {
			return err
		}
		if st != "True" {
			msg, _ := e.jsonpath(kind, name, `.status.conditions[?(@.type=="Ready")].message`)
			return fmt.Errorf("Ready=%q: %s", st, msg)
		}
		return nil
	})
}

// TestEndToEnd runs the product's life cycle in one local cluster (steps depend on each other).
func TestEndToEnd(t *testing.T) {
	began := time.Now()
	e := start(t)
	t.Logf("cluster up in %s", time.Since(began).Round(100*time.Millisecond))

	// The chart, installed with helm as a user would. The resync interval is shortened so the
	// Subscriptions' statistics (BACKLOG) follow the brokers quickly.
	step := time.Now()
	if _, err := e.run(3*time.Minute, e.helm, "install", "herald", filepath.Join(root, "charts", "herald"),
		"--namespace", operatorNS, "--create-namespace", "--wait", "--timeout", "150s",
		"--set", "extraArgs={--resync-interval=2s}"); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install --wait: %s", time.Since(step).Round(100*time.Millisecond))

	e.mustK("create", "namespace", ns)
	if err := cluster.WaitServiceAccount(e.ctx, e.cs, ns, "default"); err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t)
	manifests := e.writeManifests("always", rc.srv.URL)
	e.mustK("apply", "-n", ns, "-f", manifests)

	step = time.Now()
	eventually(t, 120*time.Second, "broker pod", func() error {
		_, err := e.k("get", "-n", ns, "pod", broker0)
		return err
	})
	if _, err := e.run(150*time.Second, e.kubectl, "wait", "-n", ns, "pod/"+broker0, "--for=condition=Ready", "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "BrokerCluster Running", func() error {
		if p, err := e.jsonpath("brokercluster", bcName, ".status.phase"); err != nil || p != "Running" {
			return fmt.Errorf("phase %q (%v)", p, err)
		}
		return nil
	})
	eventually(t, 120*time.Second, "BrokerCluster roll3: 3 ready brokers", func() error {
		if r, err := e.jsonpath("brokercluster", "roll3", ".status.readyReplicas"); err != nil || r != "3" {
			return fmt.Errorf("readyReplicas %q (%v)", r, err)
		}
		return nil
	})
	t.Logf("brokers Ready and BrokerClusters Running: %s", time.Since(step).Round(100*time.Millisecond))
	base := "http://" + e.podIP(broker0) + ":8080"

	// Topic and Subscriptions: the operator creates them on the broker.
	step = time.Now()
	e.waitReady("topic", "events", 90*time.Second)
	e.waitReady("subscription", "events-push", 90*time.Second)
	e.waitReady("subscription", "events-pull", 90*time.Second)
	if ep, err := e.jsonpath("subscription", "events-push", ".status.endpoint"); err != nil || ep != rc.srv.URL+"/push" {
		t.Errorf("events-push status.endpoint = %q (%v), want %s/push", ep, err, rc.srv.URL)
	}
	t.Logf("Topic and Subscriptions Ready: %s", time.Since(step).Round(100*time.Millisecond))

	// Publish over HTTP to the broker pod; the push Subscription delivers to the receiver.
	var acked []string
	for i := range 20 {
		m := fmt.Sprintf("before-%02d", i)
		if _, _, err := publish(base, "events", m); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, m)
	}
	eventually(t, 60*time.Second, "pushes of the first messages", func() error {
		if m := rc.missing(acked); len(m) > 0 {
			return fmt.Errorf("%d not delivered, e.g. %s", len(m), m[0])
		}
		return nil
	})

	// kubectl get shows the printer columns with real values: the pull Subscription's backlog is
	// the 20 messages nobody pulled yet, the push one's is 0 (all delivered).
	step = time.Now()
	eventually(t, 60*time.Second, "printer columns", func() error {
		out, err := e.k("get", "herald", "-n", ns)
		if err != nil {
			return err
		}
		for _, col := range []string{"READY", "PHASE", "BACKLOG", "PARTITIONS", "MODE"} {
			if !strings.Contains(out, col) {
				return fmt.Errorf("no column %s in:\n%s", col, out)
			}
		}
		row := func(prefix string) []string {
			for _, l := range strings.Split(out, "\n") {
				var f []string
				for _, c := range strings.Fields(l) {
					if c != "<none>" { // an empty column (the pull Subscription's endpoint)
						f = append(f, c)
					}
				}
				if len(f) > 0 && f[0] == prefix {
					return f
				}
			}
			return nil
		}
		// NAME REPLICAS READY PHASE ENDPOINT AGE
		if f := row("brokercluster.herald.dev/" + bcName); len(f) < 4 || f[1] != "1" || f[2] != "1" || f[3] != "Running" {
			return fmt.Errorf("brokercluster row %q:\n%s", f, out)
		}
		if f := row("brokercluster.herald.dev/roll3"); len(f) < 4 || f[1] != "3" || f[2] != "3" || f[3] != "Running" {
			return fmt.Errorf("brokercluster roll3 row %q:\n%s", f, out)
		}
		// NAME TOPIC MODE ENDPOINT BACKLOG READY AGE (the pull one has no endpoint: <none>, dropped)
		if f := row("subscription.herald.dev/events-pull"); len(f) < 5 || f[2] != "Pull" || f[3] != "20" || f[4] != "True" {
			return fmt.Errorf("events-pull row %q:\n%s", f, out)
		}
		if f := row("subscription.herald.dev/events-push"); len(f) < 6 || f[2] != "Push" || f[4] != "0" || f[5] != "True" {
			return fmt.Errorf("events-push row %q:\n%s", f, out)
		}
		if f := row("topic.herald.dev/events"); len(f) < 5 || f[1] != bcName || f[2] != "2" || f[4] != "True" {
			return fmt.Errorf("topic row %q:\n%s", f, out)
		}
		t.Logf("kubectl get herald -n %s:\n%s", ns, out)
		return nil
	})
	t.Logf("printer columns: %s", time.Since(step).Round(100*time.Millisecond))
	if m := pullAll(base, "events-pull", acked, 30*time.Second); len(m) > 0 {
		t.Fatalf("pull: %d of the first messages missing: %v", len(m), m)
	}

	// SIGKILL the broker mid-traffic: the runner restarts the container on the same volume;
	// every message the broker acknowledged is delivered (push) and pullable; push resumes.
	step = time.Now()
	pid, ok := e.r.PID(ns, broker0, "broker")
	if !ok {
		t.Fatal("no PID for the broker container")
	}
	var (
		mu       sync.Mutex
		during   []string
		failures int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	var stopOnce sync.Once
	stopTraffic := func() {
		stopOnce.Do(func() { close(stop) })
		<-done
	}
	t.Cleanup(stopTraffic) // also when a step below fails
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := fmt.Sprintf("during-%04d", i)
			_, _, err := publish(base, "events", m)
			mu.Lock()
			if err == nil {
				during = append(during, m)
			} else {
				failures++
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(100 * time.Millisecond)
			} else {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	time.Sleep(time.Second)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		stopTraffic()
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	t.Logf("killed the broker (pid %d) mid-traffic", pid)
	eventually(t, 90*time.Second, "broker restarted and Ready", func() error {
		rs, err := e.jsonpath("pod", broker0, ".status.containerStatuses[0].restartCount")
		if err != nil || rs == "0" || rs == "" {
			return fmt.Errorf("restartCount %q (%v)", rs, err)
		}
		ready, err := e.jsonpath("pod", broker0, ".status.containerStatuses[0].ready")
		if err != nil || ready != "true" {
			return fmt.Errorf("ready %q (%v)", ready, err)
		}
		if newPID, ok := e.r.PID(ns, broker0, "broker"); !ok || newPID == pid {
			return fmt.Errorf("still the old process")
		}
		return nil
	})
	// Keep publishing a little after the restart, then stop.
	eventually(t, 30*time.Second, "publishing after the restart", func() error {
		mu.Lock()
		n := len(during)
		mu.Unlock()
		time.Sleep(time.Second)
		mu.Lock()
		defer mu.Unlock()
		if len(during) <= n {
			return fmt.Errorf("no successful publish")
		}
		return nil
	})
	stopTraffic()
	mu.Lock()
	acked2 := slices.Clone(during)
	mu.Unlock()
	if ip := e.podIP(broker0); "http://"+ip+":8080" != base {
		t.Errorf("the restarted pod has a new IP %s (base %s)", ip, base)
	}
	t.Logf("%d messages acknowledged around the crash, %d publish attempts failed", len(acked2), failures)
	eventually(t, 90*time.Second, "pushes resumed after the crash", func() error {
		if m := rc.missing(append(slices.Clone(acked), acked2...)); len(m) > 0 {
			return fmt.Errorf("%d acknowledged messages not pushed, e.g. %s", len(m), m[0])
		}
		return nil
	})
	if m := pullAll(base, "events-pull", acked2, 60*time.Second); len(m) > 0 {
		t.Fatalf("pull after the crash: %d acknowledged messages missing, e.g. %v", len(m), m[:min(5, len(m))])
	}
	t.Logf("crash and recovery: %s", time.Since(step).Round(100*time.Millisecond))

	// Change the BrokerCluster's config: the pod rolls (new UID), on the same data.
	step = time.Now()
	oldUID, err := e.jsonpath("pod", broker0, ".metadata.uid")
	if err != nil {
		t.Fatal(err)
	}
	obs := watchRoll(e, "roll3")
	manifests = e.writeManifests("interval", rc.srv.URL)
	e.mustK("apply", "-n", ns, "-f", manifests)
	eventually(t, 120*time.Second, "pod rolled after the config change", func() error {
		uid, err := e.jsonpath("pod", broker0, ".metadata.uid")
		if err != nil || uid == oldUID || uid == "" {
			return fmt.Errorf("uid %q (%v)", uid, err)
		}
		ready, err := e.jsonpath("pod", broker0, `.status.conditions[?(@.type=="Ready")].status`)
		if err != nil || ready != "True" {
			return fmt.Errorf("new pod not Ready (%q, %v)", ready, err)
		}
		return nil
	})
	eventually(t, 60*time.Second, "BrokerCluster Running after the roll", func() error {
		p, err := e.jsonpath("brokercluster", bcName, ".status.phase")
		if err != nil || p != "Running" {
			return fmt.Errorf("phase %q (%v)", p, err)
		}
		og, _ := e.jsonpath("brokercluster", bcName, ".status.observedGeneration")
		g, _ := e.jsonpath("brokercluster", bcName, ".metadata.generation")
		if og != g {
			return fmt.Errorf("observedGeneration %s, generation %s", og, g)
		}
		return nil
	})
	// roll3's three brokers: replaced one at a time, highest ordinal first, never fewer than two
	// ready.
	eventually(t, 150*time.Second, "roll3's pods replaced", func() error {
		if order := obs.order(); len(order) < 3 {
			return fmt.Errorf("replaced so far: %v", order)
		}
		if r, err := e.jsonpath("brokercluster", "roll3", ".status.readyReplicas"); err != nil || r != "3" {
			return fmt.Errorf("readyReplicas %q (%v)", r, err)
		}
		return nil
	})
	obs.stop()
	if order := obs.order(); !slices.Equal(order, []string{"roll3-2", "roll3-1", "roll3-0"}) {
		t.Errorf("roll3 pods replaced in order %v, want roll3-2, roll3-1, roll3-0", order)
	}
	if obs.minReady < 2 {
		t.Errorf("roll3: only %d ready pods at one point of the roll; want one at a time (at least 2)", obs.minReady)
	}
	t.Logf("roll3: replaced %v, at least %d of 3 ready throughout", obs.order(), obs.minReady)
	base = "http://" + e.podIP(broker0) + ":8080"
	after := "after-roll"
	offsetsMu.Lock()
	highest := maps.Clone(offsets)
	offsetsMu.Unlock()
	eventually(t, 30*time.Second, "publish after the roll", func() error {
		p, o, err := publish(base, "events", after)
		if err != nil {
			return err
		}
		// Same data: the partition's log goes on after what was acknowledged before the roll.
		if h, ok := highest[p]; ok && o <= h {
			t.Errorf("after the roll, partition %d gave offset %d, but offset %d was acknowledged before: the data is gone", p, o, h)
		}
		return nil
	})
	eventually(t, 60*time.Second, "push after the roll", func() error {
		if m := rc.missing([]string{after}); len(m) > 0 {
			return fmt.Errorf("not pushed")
		}
		return nil
	})
	if m := pullAll(base, "events-pull", []string{after}, 30*time.Second); len(m) > 0 {
		t.Errorf("pull after the roll: %v missing", m)
	}
	t.Logf("config roll: %s", time.Since(step).Round(100*time.Millisecond))

	// Re-applying the same manifests changes nothing: kubectl says unchanged, and no resourceVersion
	// moves (neither the applied objects, their status included, nor what the operator built).
	step = time.Now()
	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, kind := range []string{"brokercluster", "topic", "subscription", "statefulset", "service", "configmap", "poddisruptionbudget"} {
			s, err := e.k("get", "-n", ns, kind, "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.generation}/{.metadata.resourceVersion}{"\n"}{end}`)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
				if name, v, ok := strings.Cut(l, "="); ok {
					out[kind+"/"+name] = v
				}
			}
		}
		return out
	}
	// First wait for the end of the roll's own status updates: two snapshots 2s apart agree.
	var before map[string]string
	eventually(t, 40*time.Second, "objects settled after the roll", func() error {
		a := snapshot()
		time.Sleep(2 * time.Second)
		before = snapshot()
		if !mapsEqual(a, before) {
			return fmt.Errorf("still changing:\n%v\n%v", a, before)
		}
		return nil
	})
	out := e.mustK("apply", "-n", ns, "-f", manifests)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(l, " unchanged") {
			t.Errorf("re-apply changed something: %q", l)
		}
	}
	time.Sleep(3 * time.Second) // a resync period or so
	if afterSnap := snapshot(); !mapsEqual(before, afterSnap) {
		t.Errorf("re-apply changed objects:\nbefore %v\nafter  %v", before, afterSnap)
	}
	t.Logf("re-apply: %s", time.Since(step).Round(100*time.Millisecond))

	// Deleting the namespace (with its BrokerCluster, Topic and Subscriptions inside) completes:
	// no finalizer hangs. Then helm uninstall leaves no pod and no release object behind.
	step = time.Now()
	e.mustK("delete", "namespace", ns, "--wait=false")
	eventually(t, 120*time.Second, "namespace deleted", func() error {
		out, err := e.k("get", "namespace", ns, "--ignore-not-found", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			left, _ := e.k("get", "herald", "-n", ns, "-o", "custom-columns=NAME:.metadata.name,FINALIZERS:.metadata.finalizers")
			return fmt.Errorf("still there; herald objects left:\n%s", left)
		}
		return nil
	})
	t.Logf("namespace deletion: %s", time.Since(step).Round(100*time.Millisecond))
	step = time.Now()
	if _, err := e.run(2*time.Minute, e.helm, "uninstall", "herald", "--namespace", operatorNS, "--wait", "--timeout", "90s"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "nothing left after helm uninstall", func() error {
		out, err := e.k("get", "pods,statefulsets,deployments,services,configmaps,secrets,serviceaccounts", "-n", operatorNS, "-o", "name")
		if err != nil {
			return err
		}
		var left []string
		for _, l := range strings.Fields(out) {
			// The namespace's own objects, made by the control plane, stay with it.
			if l == "configmap/kube-root-ca.crt" || l == "serviceaccount/default" {
				continue
			}
			left = append(left, l)
		}
		pods, err := e.k("get", "pods", "-A", "-o", "name")
		if err != nil {
			return err
		}
		if len(left) > 0 || strings.TrimSpace(pods) != "" {
			return fmt.Errorf("left in %s: %v; pods: %s", operatorNS, left, pods)
		}
		// The brokers' volumes went with their claims; no herald object is left anywhere; the
		// CRDs stay (the chart keeps them on uninstall).
		if pvs, err := e.k("get", "pv", "-o", "name"); err != nil || strings.TrimSpace(pvs) != "" {
			return fmt.Errorf("PersistentVolumes left: %s (%v)", pvs, err)
		}
		if objs, err := e.k("get", "herald", "-A", "-o", "name"); err != nil || strings.TrimSpace(objs) != "" {
			return fmt.Errorf("herald objects left: %s (%v)", objs, err)
		}
		for _, kind := range []string{"clusterroles", "clusterrolebindings", "validatingwebhookconfigurations"} {
			out, err := e.k("get", kind, "-l", "app.kubernetes.io/instance=herald", "-o", "name")
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("left: %s", out)
			}
		}
		return nil
	})
	t.Logf("helm uninstall: %s (total %s)", time.Since(step).Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
}

// rollWatch observes a StatefulSet's pods during a roll through the API (every 100ms): the order
// in which pods got a new UID, and the fewest ready pods seen.
type rollWatch struct {
	mu       sync.Mutex
	replaced []string
	minReady int
	done     chan struct{}
	stopped  chan struct{}
}

func watchRoll(e *env, instance string) *rollWatch {
	w := &rollWatch{minReady: 1 << 30, done: make(chan struct{}), stopped: make(chan struct{})}
	initial := map[string]string{}
	pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + instance})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pods.Items {
		initial[p.Name] = string(p.UID)
	}
	go func() {
		defer close(w.stopped)
		for {
			select {
			case <-w.done:
				return
			case <-e.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + instance})
			if err != nil {
				continue
			}
			ready := 0
			w.mu.Lock()
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
					return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
				}) {
					ready++
				}
				if string(p.UID) != initial[p.Name] && !slices.Contains(w.replaced, p.Name) {
					w.replaced = append(w.replaced, p.Name)
				}
			}
			w.minReady = min(w.minReady, ready)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *rollWatch) order() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.replaced)
}

func (w *rollWatch) stop() {
	close(w.done)
	<-w.stopped
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
