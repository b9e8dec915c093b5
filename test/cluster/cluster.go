// Package cluster starts a local Kubernetes control plane without Docker: etcd and kube-apiserver
// (through controller-runtime's envtest package, used as a library) plus kube-controller-manager
// with the controllers a workload needs (StatefulSet, Deployment, ReplicaSet, garbage collector,
// EndpointSlice, namespace, ServiceAccount and its tokens, PVC/PV protection, ...). There is no
// scheduler and no kubelet: the pod runner (test/podrunner) plays the node.
//
// The binaries come from KUBEBUILDER_ASSETS (the folder hack/build-control-plane.sh prints).
// Everything listens on 127.0.0.1 only. Unlike plain envtest, the API server runs with the
// ServiceAccount admission plugin (the controller that creates the "default" ServiceAccounts is
// running), so pods get their ServiceAccount token volume as on a real cluster.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// DefaultControllers are the kube-controller-manager controllers Start enables.
var DefaultControllers = []string{
	"statefulset-controller",
	"deployment-controller",
	"replicaset-controller",
	"garbage-collector-controller",
	"endpointslice-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
	// The kube-root-ca.crt ConfigMap of every namespace: the ca.crt of ServiceAccount token volumes.
	"root-ca-certificate-publisher-controller",
	// PodDisruptionBudget status.
	"disruption-controller",
	// Fills ClusterRoles with aggregationRule (admin, edit, view and the chart's aggregated roles).
	"clusterrole-aggregation-controller",
}

// Options configure Start. The zero value works when KUBEBUILDER_ASSETS is set.
type Options struct {
	// AssetsDir holds etcd, kube-apiserver, kube-controller-manager and kubectl. Default:
	// $KUBEBUILDER_ASSETS.
	AssetsDir string
	// Dir holds the cluster's files: kubeconfigs, the API server's CA, control plane logs.
	// Default: a temporary folder that Stop removes.
	Dir string
	// CRDDirectoryPaths are folders (or files) of CRDs to install once the API server is up.
	CRDDirectoryPaths []string
	// Controllers overrides DefaultControllers.
	Controllers []string
	// NoControllerManager starts etcd and kube-apiserver only.
	NoControllerManager bool
	// LogOutput receives the control plane's logs; default: files in Dir/logs.
	LogOutput io.Writer
	// StartTimeout bounds each component's start (default 90s; the machine may be busy).
	StartTimeout time.Duration
}

// Cluster is a running local control plane.
type Cluster struct {
	// Config is an administrator's (system:masters) client configuration.
	Config *rest.Config
	// URL is the API server's URL (https://127.0.0.1:PORT/).
	URL string
	// CAData is the PEM certificate of the CA that signed the API server's serving certificate.
	CAData []byte
	// Dir holds the cluster's files.
	Dir string
	// AdminKubeconfig is a kubeconfig file for an administrator (system:masters).
	AdminKubeconfig string
	// AssetsDir holds the binaries, kubectl among them.
	AssetsDir string

	env      *envtest.Environment
	tempDir  bool
	kcm      *exec.Cmd
	kcmDone  chan struct{}
	logFiles []*os.File
}

// Kubectl is the path of kubectl.
func (c *Cluster) Kubectl() string { return filepath.Join(c.AssetsDir, "kubectl") }

// Start starts etcd, kube-apiserver and (unless disabled) kube-controller-manager, and waits
// until the controller manager has created the "default" ServiceAccount of namespace default.
// Call Stop when done, also after an error.
func Start(ctx context.Context, o Options) (c *Cluster, err error) {
	assets := o.AssetsDir
	if assets == "" {
		assets = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if assets == "" {
		return nil, errors.New("no control plane binaries: set KUBEBUILDER_ASSETS to the folder hack/build-control-plane.sh prints")
	}
	bins := []string{"etcd", "kube-apiserver", "kubectl"}
	if !o.NoControllerManager {
		bins = append(bins, "kube-controller-manager")
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(assets, b)); err != nil {
			return nil, fmt.Errorf("control plane binary missing (run hack/build-control-plane.sh): %w", err)
		}
	}
	c = &Cluster{AssetsDir: assets, Dir: o.Dir}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "herald-cluster-")
		if err != nil {
			return nil, err
		}
		c.Dir, c.tempDir = d, true
	}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()
	if err := os.MkdirAll(filepath.Join(c.Dir, "logs"), 0o755); err != nil {
		return c, err
	}
	out := func(name string) io.Writer {
		if o.LogOutput != nil {
			return o.LogOutput
		}
		f, err := os.Create(filepath.Join(c.Dir, "logs", name+".log"))
		if err != nil {
			return io.Discard
		}
		c.logFiles = append(c.logFiles, f)
		return f
	}
	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}

	apiLog, etcdLog := out("kube-apiserver"), out("etcd")
	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        o.CRDDirectoryPaths,
		ErrorIfCRDPathMissing:    len(o.CRDDirectoryPaths) > 0,
		ControlPlaneStartTimeout: timeout,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	// etcd's data and the API server's certificates live in Dir too, so nothing is left in the
	// temporary folder even when this process is killed.
	for _, d := range []string{"etcd", "pki"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return c, err
		}
	}
	c.env.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog, DataDir: filepath.Join(c.Dir, "etcd")}
	api := &envtest.APIServer{Out: apiLog, Err: apiLog, CertDir: filepath.Join(c.Dir, "pki")}
	// envtest disables the ServiceAccount admission plugin because it runs no controller manager;
	// this cluster does, so pods get their token volume as on any cluster.
	api.Configure().Disable("disable-admission-plugins")
	c.env.ControlPlane.APIServer = api
	cfg, err := c.env.Start()
	if err != nil {
		return c, fmt.Errorf("starting etcd and kube-apiserver: %w", err)
	}
	c.Config = rest.CopyConfig(cfg)
	c.URL = strings.TrimSuffix(cfg.Host, "/")
	c.CAData = api.SecureServing.CA
	if err := os.WriteFile(filepath.Join(c.Dir, "ca.crt"), c.CAData, 0o644); err != nil {
		return c, err
	}
	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.writeUserKubeconfig(c.AdminKubeconfig, envtest.User{Name: "admin", Groups: []string{"system:masters"}}); err != nil {
		return c, err
	}
	if o.NoControllerManager {
		return c, nil
	}
	if err := c.startControllerManager(o, out("kube-controller-manager"), api.CertDir); err != nil {
		return c, err
	}
	if err := c.waitControllers(ctx, timeout); err != nil {
		return c, err
	}
	return c, nil
}

// WriteKubeconfig writes an administrator's (system:masters) kubeconfig to path.
func (c *Cluster) WriteKubeconfig(path string) error {
	b, err := os.ReadFile(c.AdminKubeconfig)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func (c *Cluster) writeUserKubeconfig(path string, u envtest.User) error {
	user, err := c.env.AddUser(u, &rest.Config{QPS: 200, Burst: 400})
	if err != nil {
		return fmt.Errorf("adding user %s: %w", u.Name, err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, kc, 0o600)
}

func (c *Cluster) startControllerManager(o Options, log io.Writer, certDir string) error {
	kubeconfig := filepath.Join(c.Dir, "kube-controller-manager.kubeconfig")
	// The controllers use this one identity (--use-service-account-credentials=false); an
	// administrator keeps the setup short.
	if err := c.writeUserKubeconfig(kubeconfig, envtest.User{Name: "system:kube-controller-manager", Groups: []string{"system:masters"}}); err != nil {
		return err
	}
	controllers := o.Controllers
	if len(controllers) == 0 {
		controllers = DefaultControllers
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--leader-elect=false",
		// No serving at all: nothing listens but etcd and the API server, on 127.0.0.1.
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// The key envtest signs ServiceAccount tokens with (legacy token Secrets need it too).
		"--service-account-private-key-file=" + filepath.Join(certDir, "sa-signer.key"),
		"--root-ca-file=" + filepath.Join(c.Dir, "ca.crt"),
		"--cluster-name=herald-local",
		"--controller-start-interval=0s",
		"--concurrent-statefulset-syncs=5",
		"--v=1",
	}
	cmd := exec.Command(filepath.Join(c.AssetsDir, "kube-controller-manager"), args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	c.kcm = cmd
	c.kcmDone = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(c.kcmDone)
	}()
	return nil
}

// waitControllers waits until the ServiceAccount controller created default/default and the root
// CA publisher the kube-root-ca.crt ConfigMap: the controller manager is up.
func (c *Cluster) waitControllers(ctx context.Context, timeout time.Duration) error {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		_, errSA := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		_, errCM := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if errSA == nil && errCM == nil {
			return nil
		}
		select {
		case <-c.kcmDone:
			return fmt.Errorf("kube-controller-manager exited: %v (log: %s)", c.kcm.ProcessState, filepath.Join(c.Dir, "logs", "kube-controller-manager.log"))
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager did not create the default ServiceAccount in time (sa: %v, configmap: %v)", errSA, errCM)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitServiceAccount waits for ServiceAccount ns/name (e.g. a new namespace's "default", which
// the ServiceAccount admission plugin requires before pods can be created there).
func WaitServiceAccount(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ServiceAccount %s/%s: %w", ns, name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CreateNamespace creates namespace ns and waits for its default ServiceAccount.
func CreateNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return WaitServiceAccount(ctx, cs, ns, "default")
}

// Stop stops the controller manager, kube-apiserver and etcd, and removes Dir if Start made it.
// Safe to call more than once.
func (c *Cluster) Stop() error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.kcm != nil && c.kcm.Process != nil {
		_ = c.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.kcmDone:
		case <-time.After(10 * time.Second):
			_ = c.kcm.Process.Kill()
			<-c.kcmDone
		}
		c.kcm = nil
	}
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, err)
		}
		c.env = nil
	}
	for _, f := range c.logFiles {
		f.Close()
	}
	c.logFiles = nil
	if c.tempDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.tempDir = false
	}
	return errors.Join(errs...)
}
