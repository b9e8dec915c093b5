package controllers_test

// The envtest suite: a real kube-apiserver and etcd (envtest), kube-controller-manager (the
// StatefulSet and garbage-collector controllers) as a process, and the operator's manager built by
// internal/operator, running as a user that has exactly the ClusterRole of config/rbac/role.yaml.
// Everything comes from KUBEBUILDER_ASSETS (`make test` sets it from hack/build-control-plane.sh);
// without it these tests skip.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/heraldmq/herald/internal/operator"
)

const testImage = "registry.test/heraldmq/herald:v9.9.9"

var (
	testEnv     *envtest.Environment
	k8s         client.Client // admin client of the tests (its writes are not counted)
	adminUser   *envtest.AuthenticatedUser
	writes      = &writeCounter{}
	recons      = &reconcileCounter{counts: map[types.NamespacedName]int{}} // BrokerClusters
	topicRecons = &reconcileCounter{counts: map[types.NamespacedName]int{}}
	subRecons   = &reconcileCounter{counts: map[types.NamespacedName]int{}}
	setupErr    error
	assetsDir   = os.Getenv("KUBEBUILDER_ASSETS")
	// scaleRun: HERALD_SCALE=1 runs the scale benchmark (scale_test.go) against an operator with
	// the production settings (resync interval, concurrency); the other tests then take longer.
	scaleRun = os.Getenv("HERALD_SCALE") == "1"
)

// testResync is the operator's resync interval in the tests: short, so that drift is corrected
// and a dead broker noticed within seconds.
const testResync = 2 * time.Second

// testDrainStall: a drain that moves nothing for this long is reported blocked (TestDrainStall).
const testDrainStall = 20 * time.Second

func TestMain(m *testing.M) {
	if assetsDir == "" {
		os.Exit(m.Run()) // unit tests run; envtest tests skip
	}
	// The operator logs errors only, unless HERALD_TEST_VERBOSE is set.
	logOpts := []zap.Opts{zap.WriteTo(os.Stderr)}
	if os.Getenv("HERALD_TEST_VERBOSE") == "" {
		logOpts = append(logOpts, zap.Level(zapcore.ErrorLevel))
	}
	logf.SetLogger(zap.New(logOpts...))
	binDir, err := os.MkdirTemp("", "herald-controllers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if heraldBin, err = buildHerald(binDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(binDir)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := startEnvironment(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "envtest setup failed: %v\n", err)
		setupErr = err
	}
	code := m.Run()
	cancel()
	if stop != nil {
		stop()
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

// requireEnv skips the test without KUBEBUILDER_ASSETS and fails it when the environment could not
// start.
func requireEnv(t *testing.T) *WithT {
	t.Helper()
	if assetsDir == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: skipping the envtest tests (`make test` sets it from hack/build-control-plane.sh)")
	}
	if setupErr != nil {
		t.Fatalf("envtest environment: %v", setupErr)
	}
	return gt(t)
}

// gt is a Gomega for t with generous Eventually timeouts (a slow machine must not fail a test;
// nothing here asserts timings).
func gt(t *testing.T) *WithT {
	g := NewWithT(t)
	g.SetDefaultEventuallyTimeout(2 * time.Minute)
	g.SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	return g
}

func startEnvironment(ctx context.Context) (_ func(), err error) {
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stopAll()
		}
	}()

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assetsDir,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		_ = testEnv.Stop() // a failed start (say, a CRD rejected) leaves the processes running
		return nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assetsDir, err)
	}
	stops = append(stops, func() { _ = testEnv.Stop() })

	scheme := operator.NewScheme()
	adminUser, err = testEnv.AddUser(envtest.User{Name: "herald-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	if k8s, err = client.New(adminUser.Config(), client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}

	// kube-controller-manager: StatefulSets create pods (they stay Pending: no node runs them) and
	// the garbage collector deletes children of deleted owners.
	kcmStop, err := startControllerManager(ctx)
	if err != nil {
		return nil, err
	}
	stops = append(stops, kcmStop)

	// The operator runs as a user with only the generated ClusterRole.
	opCfg, err := operatorConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	opCfg.WrapTransport = writes.wrap
	// As `herald operator` (ctrl.GetConfig): no client-side rate limit, the API server's priority
	// and fairness decide.
	opCfg.QPS = -1
	opts := operator.Options{
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
		BrokerImage:            testImage,
		AfterReconcile: func(req ctrl.Request, _ ctrl.Result, _ error) {
			recons.observe(req.NamespacedName)
		},
		AfterTopicReconcile: func(req ctrl.Request, _ ctrl.Result, _ error) {
			topicRecons.observe(req.NamespacedName)
		},
		AfterSubscriptionReconcile: func(req ctrl.Request, _ ctrl.Result, _ error) {
			subRecons.observe(req.NamespacedName)
		},
		BrokerURLOverride: brokerURLs,
		ResyncInterval:    testResync,
		// Short, for TestDrainStall; the other drains here move a few messages in seconds.
		DrainStallTimeout: testDrainStall,
	}
	if scaleRun {
		opts.ResyncInterval = 0 // the default
		opts.MaxConcurrentReconciles = envInt("HERALD_SCALE_CONCURRENCY", 0)
	}
	mgr, err := operator.NewManager(opCfg, opts)
	if err != nil {
		return nil, err
	}
	mgrCtx, mgrCancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	stops = append(stops, func() {
		mgrCancel()
		if err := <-done; err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		}
	})
	syncCtx, syncCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		return nil, fmt.Errorf("the operator's caches did not sync")
	}
	return stopAll, nil
}

// operatorConfig provisions the user "herald-operator" bound to config/rbac/role.yaml, so the
// tests fail when a +kubebuilder:rbac marker is missing.
func operatorConfig(ctx context.Context, _ *rest.Config) (*rest.Config, error) {
	b, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(b, role); err != nil {
		return nil, fmt.Errorf("config/rbac/role.yaml: %w", err)
	}
	role.Name = "herald-operator-test"
	if err := k8s.Create(ctx, role); err != nil {
		return nil, err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "herald-operator-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "herald-operator"}},
	}
	if err := k8s.Create(ctx, binding); err != nil {
		return nil, err
	}
	user, err := testEnv.AddUser(envtest.User{Name: "herald-operator"}, nil)
	if err != nil {
		return nil, err
	}
	return rest.CopyConfig(user.Config()), nil
}

func startControllerManager(ctx context.Context) (func(), error) {
	bin := filepath.Join(assetsDir, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("kube-controller-manager is not in KUBEBUILDER_ASSETS: %w", err)
	}
	user, err := testEnv.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "herald-kcm-")
	if err != nil {
		return nil, err
	}
	kcfg := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcfg, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return nil, err
	}
	kcmCtx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(kcmCtx, bin,
		"--kubeconfig="+kcfg,
		"--controllers=statefulset-controller,garbage-collector-controller,namespace-controller,persistentvolumeclaim-protection-controller",
		"--leader-elect=false",
		"--secure-port=0",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return func() {
		cancel()
		<-exited
		logFile.Close()
		if os.Getenv("HERALD_TEST_KEEP_LOGS") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "kube-controller-manager log: %s\n", logFile.Name())
		}
	}, nil
}

// writeCounter records every write request (POST, PUT, PATCH, DELETE) the operator sends to the
// API server, except Events.
type writeCounter struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		switch req.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			if !strings.HasSuffix(req.URL.Path, "/events") && !strings.Contains(req.URL.Path, "/events/") {
				w.mu.Lock()
				w.writes = append(w.writes, req.Method+" "+req.URL.Path)
				w.mu.Unlock()
			}
		}
		return rt.RoundTrip(req)
	})
}

// in returns the writes so far to objects in namespace ns.
func (w *writeCounter) in(ns string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.writes {
		if strings.Contains(s, "/namespaces/"+ns+"/") {
			out = append(out, s)
		}
	}
	return out
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// reconcileCounter counts finished reconciles per object.
type reconcileCounter struct {
	mu     sync.Mutex
	counts map[types.NamespacedName]int
}

func (r *reconcileCounter) observe(key types.NamespacedName) {
	r.mu.Lock()
	r.counts[key]++
	r.mu.Unlock()
}

func (r *reconcileCounter) get(key types.NamespacedName) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

// inNamespace sums the reconciles of the objects of namespace ns.
func (r *reconcileCounter) inNamespace(ns string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.counts {
		if k.Namespace == ns {
			n += c
		}
	}
	return n
}

// newNamespace creates a namespace for one test (they are left behind; every test uses its own).
func newNamespace(t *testing.T, g *WithT) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "herald-test-"}}
	g.Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// kubectl runs the kubectl of KUBEBUILDER_ASSETS as the admin user.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	k, err := adminUser.Kubectl()
	if err != nil {
		return "", err
	}
	stdout, stderr, err := k.Run(args...)
	var out, errOut bytes.Buffer
	if stdout != nil {
		_, _ = out.ReadFrom(stdout)
	}
	if stderr != nil {
		_, _ = errOut.ReadFrom(stderr)
	}
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}
