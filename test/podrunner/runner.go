// Package podrunner is the node of Herald's local cluster (test/cluster): a small kubelet that
// runs Herald's own image as local processes, without containers.
//
// It registers a Node (Ready, with capacity), binds unscheduled Pods to it (a one-node
// scheduler: nodeSelector is honoured, affinity is not), and for each Pod on the node:
//
//   - when every container's image is Herald's (Options.Images: by default the repository
//     ghcr.io/heraldmq/herald or any image named .../herald), runs each container as a process of
//     Options.HeraldBinary with the container's args (a command is ignored, or, when it names a
//     herald binary, its arguments come first), its env (values, $(VAR) expansion, envFrom,
//     fieldRef/resourceFieldRef, configMapKeyRef/secretKeyRef) and its volumes; other images
//     get the waiting reason ErrImagePull with a message saying why;
//   - gives the pod its own loopback address 127.A.B.C (status.podIP);
//   - materializes volumes in the pod's folder Options.StateDir/pods/<namespace>/<pod>/volumes:
//     emptyDir, configMap, secret, downwardAPI and projected (incl. serviceAccountToken, through
//     the TokenRequest API, refreshed) volumes; ConfigMap and Secret volumes are rewritten
//     (atomically, kubelet-style ..data symlinks) when their object changes; hostPath is used as
//     is; a persistentVolumeClaim is bound to a per-claim folder
//     StateDir/volumes/<namespace>/<claim>-<uid> through a hostPath PersistentVolume the runner
//     creates (and deletes with the folder when the claim is deleted);
//   - since a process cannot see a volume at its mountPath, rewrites every argument, env value
//     and workingDir that refers to a mountPath (the path itself or a path under it, after a
//     start, "=", ":", "," or space) to the volume's folder; likewise addresses meant to bind or
//     reach the pod itself: "0.0.0.0:", "[::]:", "127.0.0.1:" and "localhost:" become
//     "<podIP>:", and a value (or --flag=value) that is just ":PORT" becomes "<podIP>:PORT".
//     Files inside ConfigMaps and Secrets are never rewritten;
//   - runs startup, readiness and liveness probes (httpGet, tcpSocket; exec and grpc probes
//     always succeed) against the pod IP with the declared delays, periods, timeouts and
//     thresholds;
//   - restarts exited containers per restartPolicy, with kubelet's backoff (immediately the
//     first time, then 10s doubling to 5m; reset after 10 minutes of running);
//   - reports the Pod status: phase, podIP(s), hostIP, conditions (PodScheduled,
//     PodReadyToStartContainers, Initialized, ContainersReady, Ready), container statuses
//     (state running/waiting/terminated with reasons, lastState, restartCount, started, ready);
//   - on deletion, sends SIGTERM to each process group, SIGKILL after the grace period, removes
//     the pod's folder and deletes the Pod with grace period 0;
//   - writes hosts files (/etc/hosts format) for cluster DNS names and passes the one of the
//     pod's namespace in HERALD_HOSTS_FILE (see dns.go);
//   - gives a pod whose ServiceAccount token is automounted a kubeconfig in KUBECONFIG: the API
//     server's URL and CA, and a token of the pod's ServiceAccount (TokenRequest, bound to the
//     pod, refreshed in a tokenFile), so the pod has exactly its ServiceAccount's RBAC rights;
//   - serves the kubelet's /containerLogs API, so `kubectl logs` works.
//
// Each process runs in its own process group, dies with the runner (Linux: parent-death signal)
// and has its PID in StateDir/pods/<namespace>/<pod>/<container>.pid (also Runner.PID), so tests
// can kill -9 it: that is a container crash.
package podrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
)

// DefaultImages are the image repositories Options.Images defaults to. An entry "*/herald"
// matches any repository whose last path element is herald.
var DefaultImages = []string{"ghcr.io/heraldmq/herald", "herald", "*/herald"}

// Options configure a Runner.
type Options struct {
	// Config is the runner's client configuration; it needs broad rights (an administrator's).
	Config *rest.Config
	// HeraldBinary is the herald executable the containers run as.
	HeraldBinary string
	// StateDir holds the pods' folders, volumes, hosts files and logs.
	StateDir string
	// NodeName is the Node's name (default "herald-node").
	NodeName string
	// Images are the image repositories (without tag or digest) run as HeraldBinary; default
	// DefaultImages.
	Images []string
	// APIServerURL and CAData go into the pods' kubeconfigs; default: Config.Host and
	// Config.CAData.
	APIServerURL string
	CAData       []byte
	// ExtraEnv ("NAME=value") is added to every process's environment (before the container's
	// own variables), e.g. GOCOVERDIR.
	ExtraEnv []string
	// InitialBackoff and MaxBackoff bound the restart backoff (default 10s and 5m).
	InitialBackoff, MaxBackoff time.Duration
	// StopGrace caps the grace period of the pods stopped by Stop (default 10s).
	StopGrace time.Duration
	// Logger logs the runner's own activity (default: discarded).
	Logger *slog.Logger
	// ContainerOutput, when set, also receives every process's output, each line prefixed with
	// namespace/pod/container.
	ContainerOutput io.Writer
	// NoLogServer disables the kubelet log endpoint (`kubectl logs`).
	NoLogServer bool
}

// Runner is the node agent.
type Runner struct {
	o      Options
	cs     kubernetes.Interface
	ipam   *ipam
	events record.EventRecorder
	bcast  record.EventBroadcaster

	factory   informers.SharedInformerFactory
	pods      cache.SharedIndexInformer
	services  cache.SharedIndexInformer
	slices    cache.SharedIndexInformer
	cms       cache.SharedIndexInformer
	secrets   cache.SharedIndexInformer
	pvcs      cache.SharedIndexInformer
	logServer *logServer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	workers  map[types.UID]*worker
	byName   map[string]*worker // namespace/name → the newest worker
	binding  map[types.UID]bool
	stopped  bool
	dns      *dnsWriter
	outputMu sync.Mutex
}

// New checks the options and builds a Runner; Start starts it.
func New(o Options) (*Runner, error) {
	if o.Config == nil {
		return nil, errors.New("podrunner: no Config")
	}
	if o.HeraldBinary == "" {
		return nil, errors.New("podrunner: no HeraldBinary")
	}
	bin, err := filepath.Abs(o.HeraldBinary)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return nil, fmt.Errorf("podrunner: HeraldBinary %s: not an executable file", o.HeraldBinary)
	}
	o.HeraldBinary = bin
	if o.StateDir == "" {
		return nil, errors.New("podrunner: no StateDir")
	}
	if o.StateDir, err = filepath.Abs(o.StateDir); err != nil {
		return nil, err
	}
	if o.NodeName == "" {
		o.NodeName = "herald-node"
	}
	if len(o.Images) == 0 {
		o.Images = DefaultImages
	}
	if o.APIServerURL == "" {
		o.APIServerURL = o.Config.Host
	}
	if len(o.CAData) == 0 {
		o.CAData = o.Config.CAData
		if len(o.CAData) == 0 && o.Config.CAFile != "" {
			if o.CAData, err = os.ReadFile(o.Config.CAFile); err != nil {
				return nil, err
			}
		}
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 10 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg := rest.CopyConfig(o.Config)
	cfg.UserAgent = "herald-podrunner"
	if cfg.QPS < 100 {
		cfg.QPS, cfg.Burst = 100, 200
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"pods", "volumes", "dns"} {
		if err := os.MkdirAll(filepath.Join(o.StateDir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &Runner{
		o:       o,
		cs:      cs,
		workers: map[types.UID]*worker{},
		byName:  map[string]*worker{},
		binding: map[types.UID]bool{},
	}, nil
}

// NodeName is the Node the runner plays.
func (r *Runner) NodeName() string { return r.o.NodeName }

// StateDir is where the runner keeps its files.
func (r *Runner) StateDir() string { return r.o.StateDir }

// PodDir is the folder of pod namespace/name: volumes/, logs/, <container>.pid, kubeconfig.
func (r *Runner) PodDir(namespace, name string) string {
	return filepath.Join(r.o.StateDir, "pods", namespace, name)
}

// HostsFile is the hosts file of the processes of namespace ns (HERALD_HOSTS_FILE).
func (r *Runner) HostsFile(ns string) string {
	return filepath.Join(r.o.StateDir, "dns", ns+".hosts")
}

// ClusterHostsFile holds the fully qualified names only; for processes outside the cluster.
func (r *Runner) ClusterHostsFile() string {
	return filepath.Join(r.o.StateDir, "dns", "cluster.hosts")
}

// PID is the process ID of the running container of pod namespace/name (0, false when it is not
// running).
func (r *Runner) PID(namespace, pod, container string) (int, bool) {
	r.mu.Lock()
	w := r.byName[namespace+"/"+pod]
	r.mu.Unlock()
	if w == nil {
		return 0, false
	}
	return w.pid(container)
}

// Start registers the node, starts watching, and returns once the caches are in sync. ctx bounds
// the start only; Stop stops the runner.
func (r *Runner) Start(ctx context.Context) error {
	ip, err := newIPAM()
	if err != nil {
		return err
	}
	r.ipam = ip
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.o.Logger.Info("pod runner starting", "node", r.o.NodeName, "podNetwork", ip.network(), "stateDir", r.o.StateDir)

	r.bcast = record.NewBroadcaster(record.WithContext(r.ctx))
	r.bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.cs.CoreV1().Events("")})
	r.events = r.bcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: r.o.NodeName})

	if !r.o.NoLogServer {
		ls, err := startLogServer(r)
		if err != nil {
			return err
		}
		r.logServer = ls
	}
	if err := r.registerNode(ctx); err != nil {
		return err
	}
	r.dns = newDNSWriter(r)

	r.factory = informers.NewSharedInformerFactory(r.cs, 0)
	r.pods = r.factory.Core().V1().Pods().Informer()
	r.services = r.factory.Core().V1().Services().Informer()
	r.slices = r.factory.Discovery().V1().EndpointSlices().Informer()
	r.cms = r.factory.Core().V1().ConfigMaps().Informer()
	r.secrets = r.factory.Core().V1().Secrets().Informer()
	r.pvcs = r.factory.Core().V1().PersistentVolumeClaims().Informer()

	_, _ = r.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.onPod(o) },
		UpdateFunc: func(_, o any) { r.onPod(o) },
		DeleteFunc: func(o any) { r.onPodDelete(o) },
	})
	dnsChanged := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.dns.poke() },
		UpdateFunc: func(any, any) { r.dns.poke() },
		DeleteFunc: func(any) { r.dns.poke() },
	}
	_, _ = r.services.AddEventHandler(dnsChanged)
	_, _ = r.slices.AddEventHandler(dnsChanged)
	volChanged := func(o any) {
		if m := metaOf(o); m != nil {
			r.volumeSourceChanged(m.GetNamespace())
		}
	}
	for _, inf := range []cache.SharedIndexInformer{r.cms, r.secrets} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    volChanged,
			UpdateFunc: func(_, o any) { volChanged(o) },
			DeleteFunc: volChanged,
		})
	}
	_, _ = r.pvcs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(o any) { r.onClaimDelete(o) },
	})
	r.factory.Start(r.ctx.Done())
	synced := r.factory.WaitForCacheSync(ctx.Done())
	for typ, ok := range synced {
		if !ok {
			return fmt.Errorf("podrunner: cache of %v not synced", typ)
		}
	}
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.dns.run(r.ctx) }()
	go func() { defer r.wg.Done(); r.heartbeat(r.ctx) }()
	r.dns.poke()
	r.o.Logger.Info("pod runner started", "node", r.o.NodeName)
	return nil
}

// Stop stops every pod's processes (SIGTERM, then SIGKILL after at most StopGrace) and the
// runner. The Pods stay in the API. Safe to call more than once.
func (r *Runner) Stop() {
	r.mu.Lock()
	if r.stopped || r.cancel == nil {
		r.stopped = true
		r.mu.Unlock()
		return
	}
	r.stopped = true
	ws := make([]*worker, 0, len(r.workers))
	for _, w := range r.workers {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	for _, w := range ws {
		w.shutdown()
	}
	for _, w := range ws {
		<-w.done
	}
	r.cancel()
	if r.logServer != nil {
		r.logServer.close()
	}
	if r.bcast != nil {
		r.bcast.Shutdown()
	}
	if r.factory != nil {
		r.factory.Shutdown()
	}
	r.wg.Wait()
	r.ipam.close()
	r.o.Logger.Info("pod runner stopped")
}

// --- Node -------------------------------------------------------------------------------------

func (r *Runner) node() *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(diskTotal(r.o.StateDir), resource.BinarySI),
	}
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: r.o.NodeName,
			Labels: map[string]string{
				corev1.LabelHostname:   r.o.NodeName,
				corev1.LabelOSStable:   runtime.GOOS,
				corev1.LabelArchStable: runtime.GOARCH,
				"herald.dev/podrunner": "true",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "the pod runner does not track memory pressure"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "the pod runner does not track disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "the pod runner does not track PIDs"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "herald pod runner is posting ready status"),
			},
			// Only an InternalIP: the API server reaches the log endpoint there.
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               "herald-podrunner",
				KernelVersion:           "",
				OSImage:                 "herald pod runner (local processes)",
				ContainerRuntimeVersion: "herald-podrunner://1",
				KubeletVersion:          "v1.37.2",
				OperatingSystem:         runtime.GOOS,
				Architecture:            runtime.GOARCH,
			},
		},
	}
	if r.logServer != nil {
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(r.logServer.port)
	}
	return n
}

func (r *Runner) registerNode(ctx context.Context) error {
	want := r.node()
	nodes := r.cs.CoreV1().Nodes()
	cur, err := nodes.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, err = nodes.Get(ctx, want.Name, metav1.GetOptions{})
		if err == nil {
			cur.Labels = want.Labels
			cur, err = nodes.Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("podrunner: registering node %s: %w", want.Name, err)
	}
	cur.Status = want.Status
	if _, err := nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("podrunner: node %s status: %w", want.Name, err)
	}
	return nil
}

// heartbeat renews the node's Lease and Ready condition, as a kubelet does.
func (r *Runner) heartbeat(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	beats := 0
	for {
		r.renewLease(ctx)
		if beats%6 == 5 {
			if cur, err := r.cs.CoreV1().Nodes().Get(ctx, r.o.NodeName, metav1.GetOptions{}); err == nil {
				want := r.node()
				for i := range want.Status.Conditions {
					for _, c := range cur.Status.Conditions {
						if c.Type == want.Status.Conditions[i].Type && c.Status == want.Status.Conditions[i].Status {
							want.Status.Conditions[i].LastTransitionTime = c.LastTransitionTime
						}
					}
				}
				cur.Status = want.Status
				_, _ = r.cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			}
		}
		beats++
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) renewLease(ctx context.Context) {
	leases := r.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, r.o.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.o.NodeName, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(r.o.NodeName),
				LeaseDurationSeconds: ptr.To(int32(40)),
				RenewTime:            &now,
			},
		}
		if n, err := r.cs.CoreV1().Nodes().Get(ctx, r.o.NodeName, metav1.GetOptions{}); err == nil {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		_, _ = leases.Create(ctx, l, metav1.CreateOptions{})
		return
	}
	if err != nil {
		return
	}
	l.Spec.RenewTime = &now
	_, _ = leases.Update(ctx, l, metav1.UpdateOptions{})
}

// --- Pods ------------------------------------------------------------------------------------

func metaOf(o any) metav1.Object {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	m, _ := o.(metav1.Object)
	return m
}

func (r *Runner) onPod(o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	r.dns.poke()
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil && r.schedules(pod) {
			r.bind(pod)
		}
		return
	}
	if pod.Spec.NodeName != r.o.NodeName {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	w := r.workers[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp != nil {
				go r.deletePod(pod)
			}
			return
		}
		w = newWorker(r, pod, r.byName[podKey(pod)])
		r.workers[pod.UID] = w
		r.byName[podKey(pod)] = w
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.loop()
			r.mu.Lock()
			delete(r.workers, w.uid)
			if r.byName[w.key] == w {
				delete(r.byName, w.key)
			}
			r.mu.Unlock()
		}()
		return
	}
	w.update(pod)
}

func (r *Runner) onPodDelete(o any) {
	m := metaOf(o)
	if m == nil {
		return
	}
	r.dns.poke()
	r.mu.Lock()
	w := r.workers[m.GetUID()]
	delete(r.binding, m.GetUID())
	r.mu.Unlock()
	if w != nil {
		w.gone()
	}
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// schedules: the runner is the scheduler of pods for the default scheduler.
func (r *Runner) schedules(pod *corev1.Pod) bool {
	return pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == corev1.DefaultSchedulerName
}

// bind assigns pod to the node (the Binding subresource, as kube-scheduler does), unless its
// nodeSelector rules the node out.
func (r *Runner) bind(pod *corev1.Pod) {
	r.mu.Lock()
	if r.binding[pod.UID] || r.stopped {
		r.mu.Unlock()
		return
	}
	r.binding[pod.UID] = true
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx := r.ctx
		labels := r.node().Labels
		for k, v := range pod.Spec.NodeSelector {
			if labels[k] != v {
				msg := fmt.Sprintf("0/1 nodes are available: 1 node(s) didn't match Pod's node selector (%s=%s; the local pod runner's node has labels %v).", k, v, labels)
				r.setUnschedulable(ctx, pod, msg)
				// Retried when the pod changes.
				r.mu.Lock()
				delete(r.binding, pod.UID)
				r.mu.Unlock()
				return
			}
		}
		b := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: r.o.NodeName},
		}
		err := r.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			r.o.Logger.Warn("binding pod", "pod", podKey(pod), "err", err)
			r.mu.Lock()
			delete(r.binding, pod.UID)
			r.mu.Unlock()
			return
		}
		if err == nil {
			r.events.Eventf(pod, corev1.EventTypeNormal, "Scheduled", "Successfully assigned %s to %s", podKey(pod), r.o.NodeName)
		}
	}()
}

func (r *Runner) setUnschedulable(ctx context.Context, pod *corev1.Pod, msg string) {
	cur, err := r.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || cur.UID != pod.UID {
		return
	}
	for _, c := range cur.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message == msg {
			return
		}
	}
	setCondition(&cur.Status, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: msg})
	_, _ = r.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	r.events.Event(pod, corev1.EventTypeWarning, "FailedScheduling", msg)
}

func (r *Runner) deletePod(pod *corev1.Pod) {
	err := r.cs.CoreV1().Pods(pod.Namespace).Delete(r.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		r.o.Logger.Warn("deleting pod", "pod", podKey(pod), "err", err)
	}
}

// volumeSourceChanged: a ConfigMap or Secret of namespace ns changed; the pods there refresh
// their volumes.
func (r *Runner) volumeSourceChanged(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		if w.ns == ns {
			w.refreshVolumes()
		}
	}
}

// workerNamespaces are the namespaces of the pods on the node (they get a hosts file).
func (r *Runner) workerNamespaces() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ns []string
	for _, w := range r.workers {
		if !slices.Contains(ns, w.ns) {
			ns = append(ns, w.ns)
		}
	}
	return ns
}

// writeOutput copies a line of a process's output to ContainerOutput.
func (r *Runner) writeOutput(prefix string, line []byte) {
	r.outputMu.Lock()
	defer r.outputMu.Unlock()
	fmt.Fprintf(r.o.ContainerOutput, "%s %s", prefix, line)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		fmt.Fprintln(r.o.ContainerOutput)
	}
}

// imageIsHerald says whether image is run as the herald binary.
func (r *Runner) imageIsHerald(image string) bool {
	repo := imageRepository(image)
	for _, want := range r.o.Images {
		if want == repo {
			return true
		}
		if rest, ok := strings.CutPrefix(want, "*/"); ok && strings.HasSuffix(repo, "/"+rest) {
			return true
		}
	}
	return false
}

// imageRepository strips the tag and digest of an image reference.
func imageRepository(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		ref = ref[:i]
	}
	return ref
}
