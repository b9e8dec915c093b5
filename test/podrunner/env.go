package podrunner

import (
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

// EnvHostsFile names the hosts file (/etc/hosts format) of the cluster's DNS names.
const EnvHostsFile = "HERALD_HOSTS_FILE"

// --- Rewriting container paths and addresses ---------------------------------------------------

// rewriter rewrites the paths and addresses of one container's args and env values (see the
// package documentation).
type rewriter struct {
	ip     string
	mounts []mountMap // longest mountPath first
}

type mountMap struct{ from, to string }

var loopbackPrefixes = []string{"0.0.0.0:", "[::]:", "127.0.0.1:", "localhost:", "[::1]:"}

var barePort = regexp.MustCompile(`^(-{1,2}[A-Za-z0-9._-]+=)?:([0-9]{1,5})$`)

func (w *worker) rewriterFor(c *corev1.Container) rewriter {
	rw := rewriter{ip: w.ip}
	for _, m := range c.VolumeMounts {
		dir, ok := w.vols.dirs[m.Name]
		if !ok {
			continue
		}
		from := path.Clean(m.MountPath)
		if from == "/" || from == "." || !path.IsAbs(from) {
			continue
		}
		to := dir
		if m.SubPath != "" {
			to = filepath.Join(dir, filepath.FromSlash(path.Clean("/" + m.SubPath)[1:]))
			if _, err := os.Stat(to); os.IsNotExist(err) {
				_ = os.MkdirAll(to, 0o777) // as the kubelet does for a missing subPath
			}
		}
		rw.mounts = append(rw.mounts, mountMap{from, to})
	}
	sort.SliceStable(rw.mounts, func(i, j int) bool { return len(rw.mounts[i].from) > len(rw.mounts[j].from) })
	return rw
}

func isAddrChar(b byte) bool {
	return b == '.' || b == '-' || b == '_' || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
}

func isPathStart(b byte) bool { return strings.IndexByte("=:, ;\"'", b) >= 0 }
func isPathEnd(b byte) bool   { return strings.IndexByte("/:, ;\"'", b) >= 0 }

// apply rewrites s in one pass (a replacement is never rewritten again).
func (rw rewriter) apply(s string) string {
	if rw.ip != "" {
		if m := barePort.FindStringSubmatch(s); m != nil {
			return m[1] + rw.ip + ":" + m[2]
		}
	}
	var b strings.Builder
	i := 0
outer:
	for i < len(s) {
		if rw.ip != "" && (i == 0 || !isAddrChar(s[i-1])) {
			for _, p := range loopbackPrefixes {
				if strings.HasPrefix(s[i:], p) {
					b.WriteString(rw.ip + ":")
					i += len(p)
					continue outer
				}
			}
		}
		if s[i] == '/' && (i == 0 || isPathStart(s[i-1])) {
			for _, m := range rw.mounts {
				j := i + len(m.from)
				if strings.HasPrefix(s[i:], m.from) && (j == len(s) || isPathEnd(s[j])) {
					b.WriteString(m.to)
					i = j
					continue outer
				}
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

func (w *worker) workingDir(c *corev1.Container, rw rewriter) string {
	if c.WorkingDir != "" {
		if d := rw.apply(c.WorkingDir); d != c.WorkingDir {
			return d
		}
	}
	return w.dir
}

// --- Environment -----------------------------------------------------------------------------

// containerEnv is the process environment of container c: a small base (PATH, HOME, HOSTNAME,
// TMPDIR, HERALD_HOSTS_FILE, KUBECONFIG when the token is automounted), Options.ExtraEnv, then
// the container's envFrom and env, expanded and rewritten. vars are the container's own
// variables (for $(VAR) in args).
func (w *worker) containerEnv(pod *corev1.Pod, c *corev1.Container, rw rewriter) (env []string, vars map[string]string, err error) {
	type kv struct{ k, v string }
	var list []kv
	home := filepath.Join(w.dir, "home")
	tmp := filepath.Join(w.dir, "tmp")
	for _, m := range rw.mounts {
		if m.from == "/tmp" {
			tmp = m.to
		}
	}
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	pathEnv := os.Getenv("PATH")
	if pathEnv == "" {
		pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	list = append(list,
		kv{"PATH", pathEnv},
		kv{"HOME", home},
		kv{"HOSTNAME", podHostname(pod)},
		kv{"TMPDIR", tmp},
		kv{EnvHostsFile, w.r.HostsFile(pod.Namespace)},
	)
	if w.kubeconfig {
		list = append(list, kv{"KUBECONFIG", filepath.Join(w.dir, "kubeconfig")})
	}
	for _, e := range w.r.o.ExtraEnv {
		if k, v, ok := strings.Cut(e, "="); ok {
			list = append(list, kv{k, v})
		}
	}

	vars = map[string]string{}
	var own []kv
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.configMap(pod.Namespace, from.ConfigMapRef.Name)
			if apierrors.IsNotFound(err) && ptr.Deref(from.ConfigMapRef.Optional, false) {
				continue
			}
			if apierrors.IsNotFound(err) {
				return nil, nil, fmt.Errorf("configmap %q not found", from.ConfigMapRef.Name)
			}
			if err != nil {
				return nil, nil, err
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := w.secret(pod.Namespace, from.SecretRef.Name)
			if apierrors.IsNotFound(err) && ptr.Deref(from.SecretRef.Optional, false) {
				continue
			}
			if apierrors.IsNotFound(err) {
				return nil, nil, fmt.Errorf("secret %q not found", from.SecretRef.Name)
			}
			if err != nil {
				return nil, nil, err
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			own = append(own, kv{from.Prefix + k, data[k]})
			vars[from.Prefix+k] = data[k]
		}
	}
	for _, e := range c.Env {
		var val string
		switch {
		case e.ValueFrom == nil:
			val = expand(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			val, err = w.fieldValue(pod, e.ValueFrom.FieldRef.FieldPath)
		case e.ValueFrom.ResourceFieldRef != nil:
			val, err = w.resourceValue(pod, e.ValueFrom.ResourceFieldRef, c.Name)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, gerr := w.configMap(pod.Namespace, ref.Name)
			switch {
			case apierrors.IsNotFound(gerr) && ptr.Deref(ref.Optional, false):
				continue
			case apierrors.IsNotFound(gerr):
				err = fmt.Errorf("configmap %q not found", ref.Name)
			case gerr != nil:
				err = gerr
			default:
				v, ok := cm.Data[ref.Key]
				if !ok && ptr.Deref(ref.Optional, false) {
					continue
				}
				if !ok {
					err = fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
				}
				val = v
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, gerr := w.secret(pod.Namespace, ref.Name)
			switch {
			case apierrors.IsNotFound(gerr) && ptr.Deref(ref.Optional, false):
				continue
			case apierrors.IsNotFound(gerr):
				err = fmt.Errorf("secret %q not found", ref.Name)
			case gerr != nil:
				err = gerr
			default:
				v, ok := s.Data[ref.Key]
				if !ok && ptr.Deref(ref.Optional, false) {
					continue
				}
				if !ok {
					err = fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
				}
				val = string(v)
			}
		default:
			err = fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
		if err != nil {
			return nil, nil, err
		}
		own = append(own, kv{e.Name, val})
		vars[e.Name] = val
	}
	for i := range own {
		own[i].v = rw.apply(own[i].v)
		vars[own[i].k] = own[i].v
	}
	list = append(list, own...)

	// The last definition of a name wins, in the position of its first.
	idx := map[string]int{}
	for _, e := range list {
		if i, ok := idx[e.k]; ok {
			env[i] = e.k + "=" + e.v
			continue
		}
		idx[e.k] = len(env)
		env = append(env, e.k+"="+e.v)
	}
	return env, vars, nil
}

// containerArgs are the herald binary's arguments: the container's args, after the command's
// own arguments when the command runs a herald binary (any other command is ignored), expanded
// and rewritten.
func containerArgs(c *corev1.Container, vars map[string]string, rw rewriter) []string {
	var argv []string
	if len(c.Command) > 0 && filepath.Base(c.Command[0]) == "herald" {
		argv = append(argv, c.Command[1:]...)
	}
	argv = append(argv, c.Args...)
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = rw.apply(expand(a, vars))
	}
	return out
}

// expand replaces $(VAR) with the variable's value when defined ($$ escapes a $), as Kubernetes
// does in env values, command and args.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func podHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	return pod.Name
}

var fieldSubscript = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.*)'\]$`)

// fieldValue is a downward API field.
func (w *worker) fieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	if m := fieldSubscript.FindStringSubmatch(fieldPath); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return w.r.o.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return w.ip, nil
	case "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", fieldPath)
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// resourceValue is a resourceFieldRef: the container's limit (the node's allocatable when none)
// or request, divided by the divisor and rounded up.
func (w *worker) resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector, self string) (string, error) {
	name := ref.ContainerName
	if name == "" {
		name = self
	}
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			c = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			c = &pod.Spec.InitContainers[i]
		}
	}
	if c == nil {
		return "", fmt.Errorf("resourceFieldRef: no container %q", name)
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	rn := corev1.ResourceName(res)
	var q resource.Quantity
	var found bool
	switch kind {
	case "limits":
		q, found = c.Resources.Limits[rn]
		if !found {
			q, found = w.r.node().Status.Allocatable[rn]
		}
	case "requests":
		q, found = c.Resources.Requests[rn]
	}
	if !found {
		q = resource.Quantity{}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(div.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(div.Value())))), nil
}
