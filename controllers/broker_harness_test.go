package controllers_test

// The brokers of the Topic and Subscription tests: real `herald broker` processes (the binary
// TestMain builds) on loopback ports, which the operator reaches through its broker URL override
// (the clusters' pods never run: no kubelet in envtest), and real HTTP servers as push endpoints.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
)

// heraldBin is the herald binary TestMain builds (envtest runs only).
var heraldBin string

// buildHerald builds the herald binary into dir.
func buildHerald(dir string) (string, error) {
	bin := filepath.Join(dir, "herald")
	goBin := "go"
	if p, err := exec.LookPath("go"); err == nil {
		goBin = p
	} else if r := os.Getenv("GOROOT"); r != "" {
		goBin = filepath.Join(r, "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -o %s .: %v\n%s", bin, err, out)
	}
	return bin, nil
}

// urlTable is the operator's broker URL override in the tests: each test registers its
// BrokerClusters' brokers.
type urlTable struct{ m sync.Map }

func (u *urlTable) BrokerURL(namespace, name string) (string, bool) {
	v, ok := u.m.Load(namespace + "/" + name)
	if !ok {
		return "", false
	}
	return v.(string), true
}

func (u *urlTable) set(namespace, name, url string) { u.m.Store(namespace+"/"+name, url) }

var brokerURLs = &urlTable{}

// brokerProc is one `herald broker` process on a fixed loopback address and data folder; it can
// be killed and started again on the same address.
type brokerProc struct {
	t         *testing.T
	addr      string
	dataDir   string
	hostsFile string
	logDir    string
	starts    int
	cmd       *exec.Cmd
	exited    chan struct{}
	client    *brokerclient.Client
	// extraArgs are added to the command line (a cluster node's --node-id and --cluster-peers).
	extraArgs []string
}

// startBroker starts a broker for the test; it is killed when the test ends. Names written with
// addHost resolve for its push deliveries (HERALD_HOSTS_FILE).
func startBroker(t *testing.T) *brokerProc {
	t.Helper()
	b := newBrokerProc(t, "broker")
	b.start()
	return b
}

// newBrokerProc prepares a broker on a free loopback port (not started), killed when the test
// ends; its logs are shown, named after what, when the test fails.
func newBrokerProc(t *testing.T, what string) *brokerProc {
	t.Helper()
	if heraldBin == "" {
		t.Fatal("the herald binary was not built")
	}
	dir := t.TempDir()
	b := &brokerProc{t: t, dataDir: filepath.Join(dir, "data"), hostsFile: filepath.Join(dir, "hosts"), logDir: dir}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	l.Close()
	if err := os.WriteFile(b.hostsFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.client, err = brokerclient.New("http://"+b.addr, brokerclient.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.kill()
		if t.Failed() {
			for i := 1; i <= b.starts; i++ {
				t.Logf("---- %s log %d (tail) ----\n%s", what, i, tail(b.logPath(i), 40))
			}
		}
	})
	return b
}

// startBrokerCluster starts a cluster of n brokers whose node ids are the pod names of
// BrokerCluster bcName (<bcName>-0 …), as under the operator, founded together with
// --cluster-peers; it returns when every one is ready.
func startBrokerCluster(t *testing.T, bcName string, n int) []*brokerProc {
	t.Helper()
	nodes := make([]*brokerProc, n)
	var peers []string
	for i := range nodes {
		nodes[i] = newBrokerProc(t, fmt.Sprintf("%s-%d", bcName, i))
		peers = append(peers, fmt.Sprintf("%s-%d=%s", bcName, i, nodes[i].addr))
	}
	for i, b := range nodes {
		b.extraArgs = []string{"--node-id", fmt.Sprintf("%s-%d", bcName, i), "--cluster-peers", strings.Join(peers, ",")}
		if err := b.launch(); err != nil {
			t.Fatalf("starting %s-%d: %v", bcName, i, err)
		}
	}
	// A node is ready once it is a member and knows the controller: all must be up for that.
	for i, b := range nodes {
		if err := b.awaitReady(90 * time.Second); err != nil {
			t.Fatalf("%s-%d: %v", bcName, i, err)
		}
	}
	return nodes
}

func (b *brokerProc) url() string { return "http://" + b.addr }

func (b *brokerProc) logPath(n int) string {
	return filepath.Join(b.logDir, fmt.Sprintf("broker-%d.log", n))
}

func (b *brokerProc) running() bool {
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// start runs the broker and waits until it answers /readyz. The address may still be held for a
// moment after a kill: it tries again.
func (b *brokerProc) start() {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := b.spawn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("broker on %s: %v", b.addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *brokerProc) spawn() error {
	if err := b.launch(); err != nil {
		return err
	}
	return b.awaitReady(30 * time.Second)
}

// launch starts the broker process, without waiting for it.
func (b *brokerProc) launch() error {
	b.starts++
	logf, err := os.Create(b.logPath(b.starts))
	if err != nil {
		return err
	}
	cmd := exec.Command(heraldBin, append([]string{"broker", "--data-dir", b.dataDir, "--listen", b.addr, "--fsync", "always"}, b.extraArgs...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HERALD_HOSTS_FILE="+b.hostsFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.cmd, b.exited = cmd, exited
	return nil
}

// awaitReady waits until the launched broker answers /readyz; it kills it after timeout.
func (b *brokerProc) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-b.exited:
			return fmt.Errorf("exited before ready:\n%s", tail(b.logPath(b.starts), 20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := b.client.Readyz(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.kill()
	return fmt.Errorf("not ready within %s:\n%s", timeout, tail(b.logPath(b.starts), 20))
}

// kill SIGKILLs the broker and waits for it to be gone.
func (b *brokerProc) kill() {
	if !b.running() {
		return
	}
	_ = b.cmd.Process.Kill()
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.t.Errorf("broker pid %d did not exit after SIGKILL", b.cmd.Process.Pid)
	}
}

// addHost makes name resolve to 127.0.0.1 for the broker's push deliveries (the local cluster's
// stand-in for cluster DNS).
func (b *brokerProc) addHost(name string) {
	b.t.Helper()
	f, err := os.OpenFile(b.hostsFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "127.0.0.1 %s\n", name); err != nil {
		b.t.Fatal(err)
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// newReadyCluster creates a BrokerCluster of replicas brokers whose pods the test marks running
// and ready (envtest has no kubelet), so it becomes Available; the operator reaches it at b.
func newReadyCluster(t *testing.T, g *WithT, ns, name string, replicas int32, b *brokerProc) *heraldv1.BrokerCluster {
	t.Helper()
	bc := createCluster(t, g, ns, name, replicas, b)
	markPodsReady(g, ns, name, int(replicas))
	return bc
}

// createCluster creates a BrokerCluster (ephemeral storage: nothing to protect on deletion)
// reached at b (nil: not reachable yet); its pods stay Pending until markPodsReady.
func createCluster(t *testing.T, g *WithT, ns, name string, replicas int32, b *brokerProc) *heraldv1.BrokerCluster {
	t.Helper()
	if b != nil {
		brokerURLs.set(ns, name, b.url())
	}
	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: heraldv1.BrokerClusterSpec{Replicas: ptr.To(replicas), Storage: heraldv1.BrokerStorage{Ephemeral: true}}}
	g.Expect(k8s.Create(context.Background(), bc)).To(Succeed())
	return bc
}

// markPodsReady does the kubelet's part: the cluster's n pods run and are ready.
func markPodsReady(g *WithT, ns, name string, n int) {
	ctx := context.Background()
	g.Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": name})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(n))
		now := metav1.Now()
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodRunning {
				continue
			}
			p.Status.Phase = corev1.PodRunning
			p.Status.StartTime = &now
			p.Status.Conditions = []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			}
			g.Expect(k8s.Status().Update(ctx, p)).To(Succeed())
		}
	}).Should(Succeed())
	g.Eventually(func(g Gomega) {
		bc := &heraldv1.BrokerCluster{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, bc)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(bc.Status.Conditions, heraldv1.ConditionAvailable)).To(BeTrue(), "%v", bc.Status.Conditions)
	}).Should(Succeed())
}

// received is one request a push endpoint got.
type received struct {
	Body   string
	Header http.Header
}

// pushEndpoint is a real HTTP server on a loopback port that acknowledges every push (200) and
// records it.
type pushEndpoint struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []received
}

func newPushEndpoint(t *testing.T) *pushEndpoint {
	p := &pushEndpoint{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.got = append(p.got, received{Body: string(body), Header: r.Header.Clone()})
		p.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pushEndpoint) port() int32 { return int32(p.srv.Listener.Addr().(*net.TCPAddr).Port) }

// bodies returns the bodies received so far.
func (p *pushEndpoint) bodies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.got))
	for _, r := range p.got {
		out = append(out, r.Body)
	}
	return out
}

// find returns the request with body, if it came.
func (p *pushEndpoint) find(body string) (received, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.got {
		if r.Body == body {
			return r, true
		}
	}
	return received{}, false
}

// publish publishes one text message through the broker client.
func publish(g Gomega, b *brokerProc, topic, text string) {
	_, err := b.client.Publish(context.Background(), topic, []api.PublishMessage{{Text: ptr.To(text)}})
	g.Expect(err).NotTo(HaveOccurred())
}
