package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/controllers"
)

func TestOperatorFlags(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"operator", "-h"}, 0, "-watch-namespaces"},
		{[]string{"operator", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"operator", "extra"}, 2, "unexpected arguments"},
		{[]string{"operator", "--broker-image="}, 2, "--broker-image must not be empty"},
		{[]string{"operator", "-h"}, 0, "-broker-url-override"},
		{[]string{"operator", "-h"}, 0, "-resync-interval"},
		{[]string{"operator", "--broker-url-override=ftp://x"}, 2, "--broker-url-override: broker URL override \"ftp://x\": want an absolute http or https URL"},
		{[]string{"operator", "--broker-url-override=a/b=http://x:1,http://y:1,http://z:1"}, 2, "two default URLs"},
		{[]string{"operator", "--broker-url-override=a=http://x:1"}, 2, "want NAMESPACE/NAME=URL or URL"},
		{[]string{"operator", "--resync-interval=0s"}, 2, "--resync-interval must be positive"},
		{[]string{"operator", "--max-concurrent-reconciles=0"}, 2, "--max-concurrent-reconciles must be positive"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := Main(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("herald %s: exit %d, want %d; stderr:\n%s", strings.Join(tt.args, " "), code, tt.code, stderr.String())
		}
	}
}

func operatorTestAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestOperatorCommand runs `herald operator` in-process against a real API server (envtest) and
// checks its probes and metrics, then stops it with SIGTERM.
func TestOperatorCommand(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: skipping the envtest test (`make test` sets it from hack/build-control-plane.sh)")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	_, err := env.Start()
	defer func() { _ = env.Stop() }() // also after a failed start, which leaves processes running
	if err != nil {
		t.Fatal(err)
	}
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kcfg := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kcfg, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}

	metrics, probes := operatorTestAddr(t), operatorTestAddr(t)
	var stderr operatorLogBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main([]string{"operator", "--kubeconfig=" + kcfg,
			"--metrics-bind-address=" + metrics, "--health-probe-bind-address=" + probes,
			"--leader-elect", "--leader-election-namespace=default",
			"--watch-namespaces=default,kube-system"}, io.Discard, &stderr)
	}()

	get := func(url string) (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	// Wait (no deadline asserted; the test binary's -timeout bounds it) until it serves.
	for _, url := range []string{"http://" + probes + "/healthz", "http://" + probes + "/readyz", "http://" + metrics + "/metrics"} {
		for {
			code, body, err := get(url)
			if err == nil && code == http.StatusOK && (!strings.HasSuffix(url, "/metrics") ||
				strings.Contains(body, `controller_runtime_active_workers{controller="brokercluster"}`)) {
				break
			}
			select {
			case c := <-done:
				t.Fatalf("herald operator exited with %d:\n%s", c, stderr.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	// It holds the leader-election Lease.
	k8s, err := client.New(admin.Config(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		lease := &coordinationv1.Lease{}
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "herald-operator.herald.dev"}, lease)
		if err == nil && ptr.Deref(lease.Spec.HolderIdentity, "") != "" {
			break
		}
		select {
		case c := <-done:
			t.Fatalf("herald operator exited with %d:\n%s", c, stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Its logs (client-go's too) are structured and go to stderr.
	if !strings.Contains(stderr.String(), `"msg":"starting"`) {
		t.Errorf("no start message in the log:\n%s", stderr.String())
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 0 {
		t.Fatalf("herald operator exited with %d after SIGTERM:\n%s", code, stderr.String())
	}
}

// operatorLogBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type operatorLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *operatorLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *operatorLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestOperatorBrokerConfigIsReadByBroker: the broker.yaml the operator writes into the ConfigMap
// is accepted (strictly) by `herald broker --config` and means what the BrokerCluster says.
func TestOperatorBrokerConfigIsReadByBroker(t *testing.T) {
	bc := &heraldv1.BrokerCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop"},
		Spec: heraldv1.BrokerClusterSpec{
			Config: heraldv1.BrokerConfig{
				Fsync:           heraldv1.FsyncInterval,
				MaxMessageBytes: ptr.To[int32](4096),
				Retention:       heraldv1.RetentionDefaults{MaxAge: ptr.To(heraldv1.Duration("36h")), MaxBytes: ptr.To[int64](1 << 20)},
			},
			Listeners: heraldv1.BrokerListeners{HTTP: heraldv1.HTTPListener{Port: 9443, TLS: &heraldv1.ListenerTLS{SecretName: "t"}}},
		},
	}
	cm, _, err := controllers.BuildConfigMap(bc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), controllers.ConfigFileName)
	if err := os.WriteFile(path, []byte(cm.Data[controllers.ConfigFileName]), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) (string, bool) { return "", false }
	cfg, err := resolveBrokerConfig(flag.NewFlagSet("broker", flag.ContinueOnError), brokerFlags{configFile: path}, noEnv)
	if err != nil {
		t.Fatalf("the broker rejects the operator's configuration: %v\n%s", err, cm.Data[controllers.ConfigFileName])
	}
	if cfg.Listen != "0.0.0.0:9443" || cfg.DataDir != controllers.DataDir || cfg.Fsync != "interval" || cfg.MaxMessageBytes != 4096 {
		t.Errorf("listen %q dataDir %q fsync %q maxMessageBytes %d", cfg.Listen, cfg.DataDir, cfg.Fsync, cfg.MaxMessageBytes)
	}
	if cfg.Retention == nil || cfg.Retention.MaxAge == nil || time.Duration(*cfg.Retention.MaxAge) != 36*time.Hour || cfg.Retention.MaxBytes != 1<<20 {
		t.Errorf("retention %+v", cfg.Retention)
	}
	if cfg.TLS == nil || cfg.TLS.CertFile != controllers.TLSCertFile || cfg.TLS.KeyFile != controllers.TLSKeyFile {
		t.Errorf("tls %+v", cfg.TLS)
	}
	if cfg.Cluster == nil || cfg.Cluster.PeerDomain != "orders-headless.shop.svc" || cfg.Cluster.Port != 9443 {
		t.Errorf("cluster %+v", cfg.Cluster)
	}
}
