// Package chart_test checks Herald's packaging: the Helm chart in charts/herald, the kustomize
// configuration in config/ and the samples in config/samples. It lints and renders the chart, and
// applies what the chart and kustomize produce to a real kube-apiserver (envtest): the CRDs for
// real, everything else with a server-side dry run, so the API server's own validation (schemas,
// CEL rules, RBAC escalation checks, admission) judges every object.
//
// Needs helm (HELM, or the cache folder hack/tools.sh builds into) and KUBEBUILDER_ASSETS (the
// folder hack/build-control-plane.sh prints: kube-apiserver, etcd, kubectl). `make test` provides
// both; without them the tests that need them are skipped.
package chart_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const (
	releaseName = "herald"
	releaseNS   = "herald-system"
)

// root is the repository root (tests run in their package folder, test/chart).
var root = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

var chartDir = filepath.Join(root, "charts", "herald")

// versions reads hack/versions.env, the one place tool versions are pinned.
func versions(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vs := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			vs[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

// kubeVersion is the Kubernetes version the control plane is built at; helm renders for it.
func kubeVersion(t *testing.T) string {
	v := versions(t)["KUBE_VERSION"]
	if v == "" {
		t.Fatal("hack/versions.env has no KUBE_VERSION")
	}
	return "v" + v
}

// findHelm finds helm: $HELM, else the folder hack/tools.sh builds into, else PATH.
func findHelm(t *testing.T) (string, bool) {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		if !isExecutable(h) {
			t.Fatalf("HELM=%s is not an executable file", h)
		}
		return h, true
	}
	dir := os.Getenv("HERALD_TOOLS")
	if dir == "" {
		cache := os.Getenv("HERALD_CACHE")
		if cache == "" {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home, _ := os.UserHomeDir()
				base = filepath.Join(home, ".cache")
			}
			cache = filepath.Join(base, "herald")
		}
		vs := versions(t)
		dir = filepath.Join(cache, "tools",
			fmt.Sprintf("controller-gen-%s-helm-%s", vs["CONTROLLER_GEN_VERSION"], vs["HELM_VERSION"]))
	}
	if p := filepath.Join(dir, "helm"); isExecutable(p) {
		return p, true
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p, true
	}
	return "", false
}

// helmBin is findHelm, skipping the test when there is no helm.
func helmBin(t *testing.T) string {
	t.Helper()
	h, ok := findHelm(t)
	if !ok {
		t.Skip("helm not found: set HELM, or run `make helm` (hack/tools.sh helm); `make test` does it")
	}
	return h
}

// kubectlBin is the kubectl next to envtest's kube-apiserver.
func kubectlBin(t *testing.T) string {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test`, or " +
			"KUBEBUILDER_ASSETS=$(hack/build-control-plane.sh) go test ./test/chart/")
	}
	p := filepath.Join(assets, "kubectl")
	if !isExecutable(p) {
		t.Skipf("no kubectl in KUBEBUILDER_ASSETS=%s: rebuild it with hack/build-control-plane.sh", assets)
	}
	return p
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// run runs a command with stdin and returns its stdout; stderr goes into the error.
func run(stdin []byte, name string, args ...string) ([]byte, error) {
	stdout, _, err := run3(stdin, name, args...)
	return stdout, err
}

// run3 runs a command with stdin and returns its stdout and stderr.
func run3(stdin []byte, name string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.Bytes(), e.Bytes(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(name), strings.Join(args, " "),
			err, e.String(), o.String())
	}
	return o.Bytes(), e.Bytes(), nil
}

func mustRun(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	out, err := run(stdin, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// object is one decoded manifest; doc is its YAML.
type object struct {
	kind, apiVersion, name, namespace string
	body                              map[string]any
	doc                               []byte
}

func (o object) String() string {
	if o.namespace != "" {
		return o.kind + " " + o.namespace + "/" + o.name
	}
	return o.kind + " " + o.name
}

// parse splits a multi-document YAML stream into objects, dropping empty documents.
func parse(t *testing.T, manifests []byte) []object {
	t.Helper()
	var objs []object
	for _, doc := range splitYAML(manifests) {
		var body map[string]any
		if err := yaml.Unmarshal(doc, &body); err != nil {
			t.Fatalf("invalid YAML: %v\n%s", err, doc)
		}
		if len(body) == 0 {
			continue
		}
		o := object{body: body, doc: doc}
		o.kind, _ = body["kind"].(string)
		o.apiVersion, _ = body["apiVersion"].(string)
		o.name = str(body, "metadata", "name")
		o.namespace = str(body, "metadata", "namespace")
		if o.kind == "" || o.apiVersion == "" || o.name == "" {
			t.Fatalf("manifest without kind, apiVersion or metadata.name:\n%s", doc)
		}
		objs = append(objs, o)
	}
	return objs
}

func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "---" || strings.HasPrefix(line, "--- ") {
			docs = append(docs, slices.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(docs, cur.Bytes())
}

func join(objs []object) []byte {
	var b bytes.Buffer
	for _, o := range objs {
		b.WriteString("---\n")
		b.Write(o.doc)
	}
	return b.Bytes()
}

// get walks maps (string keys) and lists (int keys).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func strs(v any, path ...any) []string {
	var out []string
	l, _ := get(v, path...).([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			return o, true
		}
	}
	return object{}, false
}

func mustFind(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	o, ok := find(objs, kind, name)
	if !ok {
		var have []string
		for _, o := range objs {
			have = append(have, o.String())
		}
		t.Fatalf("no %s %q among:\n  %s", kind, name, strings.Join(have, "\n  "))
	}
	return o
}

func ofKind(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// generatedCRDs are the CRDs controller-gen writes into config/crd/bases.
func generatedCRDs(t *testing.T) []object {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("config/crd/bases has no CRDs: run `make manifests`")
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, parse(t, b)...)
	}
	return objs
}

var wantCRDs = []string{"brokerclusters.herald.dev", "subscriptions.herald.dev", "topics.herald.dev"}

// helmTemplate renders the chart as `helm install herald charts/herald -n herald-system` would.
func helmTemplate(t *testing.T, args ...string) []object {
	t.Helper()
	base := []string{"template", releaseName, chartDir, "--namespace", releaseNS, "--kube-version", kubeVersion(t)}
	return parse(t, mustRun(t, nil, helmBin(t), append(base, args...)...))
}

// The chart's CRD and ClusterRole templates are what hack/sync-chart-crds.sh makes of the files
// controller-gen writes, so the chart cannot drift from the API types and RBAC markers.
func TestChartInSyncWithConfig(t *testing.T) {
	generatedCRDs(t)
	if _, err := os.Stat(filepath.Join(root, "config", "rbac", "role.yaml")); err != nil {
		t.Fatal("config/rbac/role.yaml is missing: run `make manifests`")
	}
	if _, err := run(nil, filepath.Join(root, "hack", "sync-chart-crds.sh"), "--check"); err != nil {
		t.Fatalf("%v\nrun `make chart-crds`", err)
	}
}

func TestHelmLint(t *testing.T) {
	h := helmBin(t)
	for name, args := range map[string][]string{
		"defaults":         nil,
		"no CRDs":          {"--set", "crds.enabled=false"},
		"watch namespaces": {"--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=2"},
		"no RBAC, own SA":  {"--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=herald"},
	} {
		t.Run(name, func(t *testing.T) {
			base := []string{"lint", "--strict", chartDir, "--namespace", releaseNS, "--kube-version", kubeVersion(t)}
			out := mustRun(t, nil, h, append(base, args...)...)
			if !bytes.Contains(out, []byte("0 chart(s) failed")) {
				t.Fatalf("helm lint:\n%s", out)
			}
		})
	}
}

func TestHelmTemplateDefaults(t *testing.T) {
	objs := helmTemplate(t)

	// Every generated CRD, kept on uninstall, labelled like the rest of the release.
	crds := ofKind(objs, "CustomResourceDefinition")
	var names []string
	for _, c := range crds {
		names = append(names, c.name)
		if got := str(c.body, "metadata", "annotations", "helm.sh/resource-policy"); got != "keep" {
			t.Errorf("CRD %s: helm.sh/resource-policy = %q, want keep", c.name, got)
		}
		if got := str(c.body, "metadata", "labels", "app.kubernetes.io/managed-by"); got != "Helm" {
			t.Errorf("CRD %s: app.kubernetes.io/managed-by = %q, want Helm", c.name, got)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, wantCRDs) {
		t.Errorf("CRDs = %v, want %v", names, wantCRDs)
	}
	// The same schemas as controller-gen's.
	for _, g := range generatedCRDs(t) {
		c := mustFind(t, objs, "CustomResourceDefinition", g.name)
		a, _ := yaml.Marshal(g.body["spec"])
		b, _ := yaml.Marshal(c.body["spec"])
		if !bytes.Equal(a, b) {
			t.Errorf("CRD %s: the chart's spec differs from config/crd/bases; run `make chart-crds`", g.name)
		}
	}

	// The operator's ClusterRole carries exactly the rules controller-gen generated.
	roleYAML, err := os.ReadFile(filepath.Join(root, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	genRole := parse(t, roleYAML)[0]
	cr := mustFind(t, objs, "ClusterRole", "herald-manager")
	a, _ := yaml.Marshal(genRole.body["rules"])
	b, _ := yaml.Marshal(cr.body["rules"])
	if !bytes.Equal(a, b) {
		t.Errorf("ClusterRole herald-manager rules differ from config/rbac/role.yaml:\n%s\nvs\n%s", b, a)
	}
	crb := mustFind(t, objs, "ClusterRoleBinding", "herald-manager")
	if got := str(crb.body, "roleRef", "name"); got != "herald-manager" {
		t.Errorf("ClusterRoleBinding roleRef = %q", got)
	}
	if got := str(crb.body, "subjects", 0, "name"); got != "herald" {
		t.Errorf("ClusterRoleBinding subject = %q, want the ServiceAccount herald", got)
	}
	mustFind(t, objs, "ServiceAccount", "herald")
	mustFind(t, objs, "Role", "herald-leader-election")
	mustFind(t, objs, "RoleBinding", "herald-leader-election")
	svc := mustFind(t, objs, "Service", "herald-metrics")
	if got := get(svc.body, "spec", "ports", 0, "port"); fmt.Sprint(got) != "8080" {
		t.Errorf("metrics Service port = %v", got)
	}
	for _, o := range objs {
		if o.kind != "CustomResourceDefinition" && o.kind != "ClusterRole" && o.kind != "ClusterRoleBinding" &&
			o.namespace != releaseNS {
			t.Errorf("%s: namespace %q, want %q", o, o.namespace, releaseNS)
		}
	}

	// The operator: one image for operator and brokers (appVersion by default), leader election,
	// probes, and a locked-down container.
	chart := map[string]any{}
	cb, _ := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err := yaml.Unmarshal(cb, &chart); err != nil {
		t.Fatal(err)
	}
	dep := mustFind(t, objs, "Deployment", "herald")
	c := get(dep.body, "spec", "template", "spec", "containers", 0)
	image := str(c, "image")
	if want := "ghcr.io/heraldmq/herald:" + str(chart, "appVersion"); image != want {
		t.Errorf("image = %q, want %q", image, want)
	}
	args := strs(c, "args")
	for _, want := range []string{
		"operator", "--leader-elect", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
		"--broker-image=" + image, "--zap-log-level=info",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if args[0] != "operator" {
		t.Errorf("args[0] = %q, want the subcommand operator", args[0])
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--watch-namespaces") {
			t.Errorf("args %q: --watch-namespaces without watchNamespaces", args)
		}
	}
	if got := str(c, "livenessProbe", "httpGet", "path"); got != "/healthz" {
		t.Errorf("livenessProbe path = %q", got)
	}
	if got := str(c, "readinessProbe", "httpGet", "path"); got != "/readyz" {
		t.Errorf("readinessProbe path = %q", got)
	}
	if get(c, "securityContext", "readOnlyRootFilesystem") != true ||
		get(c, "securityContext", "allowPrivilegeEscalation") != false ||
		!slices.Equal(strs(c, "securityContext", "capabilities", "drop"), []string{"ALL"}) {
		t.Errorf("container securityContext = %v", get(c, "securityContext"))
	}
	ps := get(dep.body, "spec", "template", "spec", "securityContext")
	if get(ps, "runAsNonRoot") != true || str(ps, "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("pod securityContext = %v", ps)
	}
	if got := str(dep.body, "spec", "template", "spec", "serviceAccountName"); got != "herald" {
		t.Errorf("serviceAccountName = %q", got)
	}
	if get(c, "resources", "limits", "memory") == nil {
		t.Errorf("no memory limit: %v", get(c, "resources"))
	}
}

func TestHelmTemplateValues(t *testing.T) {
	t.Run("crds.enabled=false", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "crds.enabled=false")
		if crds := ofKind(objs, "CustomResourceDefinition"); len(crds) != 0 {
			t.Errorf("%d CRDs rendered with crds.enabled=false", len(crds))
		}
		mustFind(t, objs, "Deployment", "herald")
	})
	t.Run("crds.keep=false", func(t *testing.T) {
		for _, c := range ofKind(helmTemplate(t, "--set", "crds.keep=false"), "CustomResourceDefinition") {
			if _, ok := get(c.body, "metadata", "annotations").(map[string]any)["helm.sh/resource-policy"]; ok {
				t.Errorf("CRD %s keeps helm.sh/resource-policy with crds.keep=false", c.name)
			}
		}
	})
	t.Run("watchNamespaces", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "watchNamespaces={team-a,team-b}")
		if _, ok := find(objs, "ClusterRoleBinding", "herald-manager"); ok {
			t.Error("ClusterRoleBinding rendered although watchNamespaces is set")
		}
		var nss []string
		for _, rb := range ofKind(objs, "RoleBinding") {
			if rb.name == "herald-manager" {
				nss = append(nss, rb.namespace)
				if got := str(rb.body, "roleRef", "kind") + "/" + str(rb.body, "roleRef", "name"); got != "ClusterRole/herald-manager" {
					t.Errorf("RoleBinding %s roleRef = %s", rb.namespace, got)
				}
			}
		}
		if !slices.Equal(nss, []string{"team-a", "team-b"}) {
			t.Errorf("manager RoleBindings in %v, want [team-a team-b]", nss)
		}
		dep := mustFind(t, objs, "Deployment", "herald")
		if args := strs(dep.body, "spec", "template", "spec", "containers", 0, "args"); !slices.Contains(args, "--watch-namespaces=team-a,team-b") {
			t.Errorf("args %q lack --watch-namespaces=team-a,team-b", args)
		}
	})
	t.Run("image", func(t *testing.T) {
		digest := "sha256:" + strings.Repeat("ab", 32)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--set", "image.repository=registry.example/herald", "--set", "image.tag=v9.9.9"}, "registry.example/herald:v9.9.9"},
			{[]string{"--set", "image.digest=" + digest}, "ghcr.io/heraldmq/herald@" + digest},
		} {
			dep := mustFind(t, helmTemplate(t, tc.args...), "Deployment", "herald")
			c := get(dep.body, "spec", "template", "spec", "containers", 0)
			if got := str(c, "image"); got != tc.want {
				t.Errorf("%v: image = %q, want %q", tc.args, got, tc.want)
			}
			if args := strs(c, "args"); !slices.Contains(args, "--broker-image="+tc.want) {
				t.Errorf("%v: args %q lack --broker-image=%s", tc.args, args, tc.want)
			}
		}
	})
	t.Run("release name and fullnameOverride", func(t *testing.T) {
		base := []string{"template", "mq", chartDir, "--namespace", "ops", "--kube-version", kubeVersion(t)}
		objs := parse(t, mustRun(t, nil, helmBin(t), base...))
		mustFind(t, objs, "Deployment", "mq-herald")
		crb := mustFind(t, objs, "ClusterRoleBinding", "mq-herald-manager")
		if got := str(crb.body, "subjects", 0, "namespace"); got != "ops" {
			t.Errorf("subject namespace = %q, want ops", got)
		}
		objs = helmTemplate(t, "--set", "fullnameOverride=hq")
		mustFind(t, objs, "Deployment", "hq")
		mustFind(t, objs, "ClusterRole", "hq-manager")
	})
	t.Run("metrics disabled", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "metrics.enabled=false")
		if _, ok := find(objs, "Service", "herald-metrics"); ok {
			t.Error("metrics Service rendered with metrics.enabled=false")
		}
		dep := mustFind(t, objs, "Deployment", "herald")
		if args := strs(dep.body, "spec", "template", "spec", "containers", 0, "args"); !slices.Contains(args, "--metrics-bind-address=0") {
			t.Errorf("args %q lack --metrics-bind-address=0", args)
		}
	})
}

// values.schema.json rejects values of the wrong type, unknown keys and bad enums, naming the value.
func TestValuesSchemaRejectsBadValues(t *testing.T) {
	h := helmBin(t)
	for _, tc := range []struct{ values, want string }{
		{"replicaCount: x\n", "replicaCount"},
		{"replicaCount: -1\n", "replicaCount"},
		{"image:\n  pullPolicy: Sometimes\n", "pullPolicy"},
		{"image:\n  digest: latest\n", "digest"},
		{"crds:\n  enabled: \"yes\"\n", "enabled"},
		{"replicas: 2\n", "replicas"}, // a typo of replicaCount
		{"watchNamespaces: [Team_A]\n", "watchNamespaces"},
		{"metrics:\n  port: 70000\n", "port"},
		{"resources:\n  limits:\n    memory: lots\n", "memory"},
		{"logLevel: verbose\n", "logLevel"},
	} {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(tc.values), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := run(nil, h, "template", releaseName, chartDir, "--namespace", releaseNS,
			"--kube-version", kubeVersion(t), "-f", f)
		if err == nil {
			t.Errorf("values %q: accepted", tc.values)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "values don't meet the specifications of the schema") ||
			!strings.Contains(msg, tc.want) {
			t.Errorf("values %q: error does not come from the schema or does not name %q:\n%v", tc.values, tc.want, err)
		}
	}
	// --set turns a non-number into a string, which the schema refuses too.
	if _, err := run(nil, h, "template", releaseName, chartDir, "--kube-version", kubeVersion(t),
		"--set", "replicaCount=x"); err == nil || !strings.Contains(err.Error(), "replicaCount") {
		t.Errorf("--set replicaCount=x: %v", err)
	}
	// The template's own checks.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "replicaCount=2", "--set", "leaderElection.enabled=false"}, "leaderElection"},
		{[]string{"--set", "metrics.port=8081"}, "must differ"},
		{[]string{"--set", "serviceAccount.create=false"}, "serviceAccount.name"},
	} {
		base := []string{"template", releaseName, chartDir, "--kube-version", kubeVersion(t)}
		if _, err := run(nil, h, append(base, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// cluster is a running envtest kube-apiserver and a kubectl bound to it as a cluster admin.
type cluster struct {
	kubectl, kubeconfig string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	kubectl := kubectlBin(t)
	env := &envtest.Environment{}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "chart-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return &cluster{kubectl: kubectl, kubeconfig: path}
}

func (c *cluster) run(stdin []byte, args ...string) ([]byte, error) {
	return run(stdin, c.kubectl, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
}

func (c *cluster) mustRun(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply applies objects with server-side apply; dryRun leaves the cluster unchanged but still
// runs every validation and admission step. A warning from the API server (a deprecated API, a
// pod template that would violate the namespace's Pod Security level, ...) fails the test.
func (c *cluster) apply(t *testing.T, objs []object, dryRun bool, extra ...string) {
	t.Helper()
	if len(objs) == 0 {
		return
	}
	args := []string{"--kubeconfig", c.kubeconfig, "apply", "--server-side", "--force-conflicts",
		"--field-manager=chart-test", "--validate=strict", "-f", "-"}
	if dryRun {
		args = append(args, "--dry-run=server")
	}
	args = append(args, extra...)
	out, stderr, err := run3(join(objs), c.kubectl, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl %s:\n%s", strings.Join(args[2:], " "), out)
	if bytes.Contains(stderr, []byte("Warning")) {
		t.Errorf("kubectl %s: warnings:\n%s", strings.Join(args[2:], " "), stderr)
	}
}

// installCRDs applies the CRDs for real and waits until the API server serves them.
func (c *cluster) installCRDs(t *testing.T, crds []object) {
	t.Helper()
	if len(crds) == 0 {
		t.Fatal("no CRDs to install")
	}
	c.apply(t, crds, false)
	args := []string{"wait", "--for=condition=Established", "--timeout=60s"}
	for _, crd := range crds {
		args = append(args, "crd/"+crd.name)
	}
	c.mustRun(t, nil, args...)
}

// split separates the CRDs and Namespaces (which must exist for real before anything can be
// dry-run against them) from the rest.
func split(objs []object) (crds, namespaces, rest []object) {
	for _, o := range objs {
		switch o.kind {
		case "CustomResourceDefinition":
			crds = append(crds, o)
		case "Namespace":
			namespaces = append(namespaces, o)
		default:
			rest = append(rest, o)
		}
	}
	return crds, namespaces, rest
}

func (c *cluster) createNamespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		if _, err := c.run(nil, "get", "namespace", ns); err == nil {
			continue
		}
		c.mustRun(t, nil, "create", "namespace", ns)
	}
}

// The rendered chart is accepted by a real API server: CRDs installed for real, then every other
// object server-side dry-run, for the default values and for a few variants.
func TestHelmManifestsApplyToAPIServer(t *testing.T) {
	helmBin(t)
	c := startCluster(t)
	c.createNamespaces(t, releaseNS)
	// The operator's pod meets the restricted Pod Security Standard (else the API server warns).
	c.mustRun(t, nil, "label", "namespace", releaseNS, "pod-security.kubernetes.io/enforce=restricted")

	crds, nss, rest := split(helmTemplate(t))
	if len(nss) != 0 {
		t.Errorf("the chart renders Namespaces %v; the release namespace comes from --create-namespace", nss)
	}
	c.installCRDs(t, crds)
	c.apply(t, rest, true)

	for name, args := range map[string][]string{
		"crds.enabled=false": {"--set", "crds.enabled=false"},
		"watchNamespaces":    {"--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=2"},
		"no metrics, no aggregated roles, digest": {"--set", "metrics.enabled=false",
			"--set", "rbac.aggregateToDefaultRoles=false", "--set", "image.digest=sha256:" + strings.Repeat("0f", 32)},
	} {
		t.Run(name, func(t *testing.T) {
			c.createNamespaces(t, "team-a", "team-b")
			crds, _, rest := split(helmTemplate(t, args...))
			c.apply(t, crds, true)
			c.apply(t, rest, true)
		})
	}
}

// `helm install herald charts/herald -n herald-system --create-namespace` works against a real
// API server, and `helm uninstall` leaves the CRDs (crds.keep).
func TestHelmInstallAndUninstall(t *testing.T) {
	h := helmBin(t)
	c := startCluster(t)
	helm := func(args ...string) []byte {
		t.Helper()
		out := mustRun(t, nil, h, append(args, "--kubeconfig", c.kubeconfig)...)
		t.Logf("helm %s:\n%s", strings.Join(args, " "), out)
		return out
	}
	// Keep helm's caches and config out of the user's home.
	tmp := t.TempDir()
	for k, v := range map[string]string{"HELM_CACHE_HOME": "cache", "HELM_CONFIG_HOME": "config", "HELM_DATA_HOME": "data"} {
		t.Setenv(k, filepath.Join(tmp, v))
	}

	out := helm("install", releaseName, chartDir, "-n", releaseNS, "--create-namespace")
	if !bytes.Contains(out, []byte("STATUS: deployed")) {
		t.Fatalf("helm install:\n%s", out)
	}
	for _, crd := range wantCRDs {
		c.mustRun(t, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd)
	}
	c.mustRun(t, nil, "-n", releaseNS, "get", "deployment/herald", "serviceaccount/herald", "service/herald-metrics",
		"role/herald-leader-election", "rolebinding/herald-leader-election")
	c.mustRun(t, nil, "get", "clusterrole/herald-manager", "clusterrolebinding/herald-manager")

	// An upgrade with changed values goes through too (a re-render applied over the release).
	helm("upgrade", releaseName, chartDir, "-n", releaseNS, "--set", "watchNamespaces={default}")
	c.mustRun(t, nil, "-n", "default", "get", "rolebinding/herald-manager")
	if _, err := c.run(nil, "get", "clusterrolebinding/herald-manager"); err == nil {
		t.Error("ClusterRoleBinding still there after the upgrade to watchNamespaces")
	}

	helm("uninstall", releaseName, "-n", releaseNS)
	if _, err := c.run(nil, "-n", releaseNS, "get", "deployment/herald"); err == nil {
		t.Error("Deployment still there after helm uninstall")
	}
	for _, crd := range wantCRDs {
		if _, err := c.run(nil, "get", "crd/"+crd); err != nil {
			t.Errorf("CRD %s deleted by helm uninstall despite crds.keep: %v", crd, err)
		}
	}
}

// kustomize builds config/default, and the API server accepts all of it.
func TestKustomizeDefaultApplyToAPIServer(t *testing.T) {
	kubectl := kubectlBin(t)
	objs := parse(t, mustRun(t, nil, kubectl, "kustomize", filepath.Join(root, "config", "default")))

	mustFind(t, objs, "Namespace", releaseNS)
	for _, o := range objs {
		switch o.kind {
		case "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace":
		default:
			if o.namespace != releaseNS {
				t.Errorf("%s: namespace %q, want %q", o, o.namespace, releaseNS)
			}
		}
		if o.kind != "CustomResourceDefinition" && o.kind != "Namespace" && !strings.HasPrefix(o.name, "herald-") {
			t.Errorf("%s: name lacks the prefix herald-", o)
		}
	}
	var crdNames []string
	for _, c := range ofKind(objs, "CustomResourceDefinition") {
		crdNames = append(crdNames, c.name)
	}
	slices.Sort(crdNames)
	if !slices.Equal(crdNames, wantCRDs) {
		t.Errorf("CRDs = %v, want %v", crdNames, wantCRDs)
	}
	role := mustFind(t, objs, "ClusterRole", "herald-manager-role")
	crb := mustFind(t, objs, "ClusterRoleBinding", "herald-manager-rolebinding")
	if got := str(crb.body, "roleRef", "name"); got != role.name {
		t.Errorf("ClusterRoleBinding roleRef = %q, want %q", got, role.name)
	}
	rb := mustFind(t, objs, "RoleBinding", "herald-leader-election-rolebinding")
	if got := str(rb.body, "roleRef", "name"); got != "herald-leader-election-role" {
		t.Errorf("leader-election RoleBinding roleRef = %q", got)
	}
	dep := mustFind(t, objs, "Deployment", "herald-controller-manager")
	if got := str(dep.body, "spec", "template", "spec", "serviceAccountName"); got != "herald-controller-manager" {
		t.Errorf("serviceAccountName = %q", got)
	}
	c := get(dep.body, "spec", "template", "spec", "containers", 0)
	image := str(c, "image")
	args := strs(c, "args")
	for _, want := range []string{
		"operator", "--leader-elect", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
		"--broker-image=" + image,
	} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if strings.HasPrefix(image, "controller") {
		t.Errorf("image %q: the kustomize images transformer did not apply", image)
	}

	cl := startCluster(t)
	crds, nss, rest := split(objs)
	cl.apply(t, nss, false)
	cl.installCRDs(t, crds)
	cl.apply(t, rest, true)
}

// Every sample in config/samples applies as is against the CRDs, and there is one per kind and
// subscription mode.
func TestSamplesApplyToAPIServer(t *testing.T) {
	kubectl := kubectlBin(t)
	samples := parse(t, mustRun(t, nil, kubectl, "kustomize", filepath.Join(root, "config", "samples")))

	bc := mustFind(t, samples, "BrokerCluster", "demo")
	if got := fmt.Sprint(get(bc.body, "spec", "replicas")); got != "1" {
		t.Errorf("BrokerCluster demo: replicas = %s, want 1", got)
	}
	topic := mustFind(t, samples, "Topic", "orders")
	if got := str(topic.body, "spec", "clusterRef", "name"); got != "demo" {
		t.Errorf("Topic orders: clusterRef.name = %q, want demo", got)
	}
	if got := fmt.Sprint(get(topic.body, "spec", "partitions")); got != "3" {
		t.Errorf("Topic orders: partitions = %s, want 3", got)
	}
	var pull, push int
	for _, s := range ofKind(samples, "Subscription") {
		if got := str(s.body, "spec", "clusterRef", "name"); got != "demo" {
			t.Errorf("Subscription %s: clusterRef.name = %q, want demo", s.name, got)
		}
		if got := str(s.body, "spec", "topic"); got != "orders" {
			t.Errorf("Subscription %s: topic = %q, want orders", s.name, got)
		}
		if get(s.body, "spec", "push") == nil {
			pull++
		} else {
			push++
		}
	}
	if pull == 0 || push == 0 {
		t.Errorf("samples have %d pull and %d push Subscriptions; want at least one of each", pull, push)
	}
	for _, s := range samples {
		if s.namespace != "" {
			t.Errorf("%s: samples should not set a namespace (they go where the user applies them)", s)
		}
		if !strings.HasPrefix(s.apiVersion, "herald.dev/") {
			t.Errorf("%s: apiVersion %q", s, s.apiVersion)
		}
	}

	c := startCluster(t)
	c.installCRDs(t, generatedCRDs(t))
	c.apply(t, samples, true, "--namespace", "default")
	// Each sample file on its own too, as the README tells users to apply them.
	files, _ := filepath.Glob(filepath.Join(root, "config", "samples", "*.yaml"))
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		c.mustRun(t, nil, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-n", "default", "-f", f)
	}
	// And for real: what the API server stores still holds every field of the samples (nothing
	// pruned or rewritten).
	c.apply(t, samples, false, "--namespace", "default")
	for _, s := range samples {
		live := parse(t, c.mustRun(t, nil, "get", "-n", "default", s.kind+"."+strings.Split(s.apiVersion, "/")[0], s.name, "-o", "yaml"))
		if len(live) != 1 {
			t.Fatalf("%s: got %d objects", s, len(live))
		}
		if diff := subset(s.body["spec"], live[0].body["spec"], "spec"); diff != "" {
			t.Errorf("%s: stored object differs from the sample: %s", s, diff)
		}
	}
}

// subset reports the first place where want has something got lacks or holds differently.
func subset(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %v, want an object", path, got)
		}
		for k, wv := range w {
			if d := subset(wv, g[k], path+"."+k); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: %v, want %v", path, got, want)
		}
		for i := range w {
			if d := subset(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Sprintf("%s: %v, want %v", path, got, want)
		}
	}
	return ""
}

// The herald binary accepts the arguments the chart and kustomize give the operator: flags are
// parsed before -h, so an unknown or malformed flag fails the run.
func TestOperatorAcceptsDeploymentArgs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the herald binary")
	}
	var cases [][]string
	argsOf := func(objs []object, name string) []string {
		dep := mustFind(t, objs, "Deployment", name)
		return strs(dep.body, "spec", "template", "spec", "containers", 0, "args")
	}
	if _, ok := findHelm(t); ok {
		cases = append(cases,
			argsOf(helmTemplate(t), "herald"),
			argsOf(helmTemplate(t, "--set", "watchNamespaces={a,b}", "--set", "metrics.enabled=false",
				"--set", "logLevel=debug", "--set", "image.digest=sha256:"+strings.Repeat("1", 64)), "herald"))
	}
	if assets := os.Getenv("KUBEBUILDER_ASSETS"); assets != "" {
		objs := parse(t, mustRun(t, nil, filepath.Join(assets, "kubectl"), "kustomize", filepath.Join(root, "config", "default")))
		cases = append(cases, argsOf(objs, "herald-controller-manager"))
	}
	if len(cases) == 0 {
		t.Skip("neither helm nor KUBEBUILDER_ASSETS (kubectl) is available to render the Deployments")
	}
	bin := filepath.Join(t.TempDir(), "herald")
	mustRun(t, nil, "go", "build", "-o", bin, ".")
	for _, args := range cases {
		if _, err := run(nil, bin, append(args, "-h")...); err != nil {
			t.Errorf("herald %s -h: %v", strings.Join(args, " "), err)
		}
	}
}
