package podrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A worker runs one pod (one UID). Its loop goroutine owns the containers' state; other
// goroutines (process waiters, probes, timers, informer handlers) post closures or set flags and
// wake the loop.
type worker struct {
	r             *Runner
	uid           types.UID
	ns, name, key string
	dir           string
	prev          *worker // an older pod of the same name, which must be gone first

	mu          sync.Mutex
	pod         *corev1.Pod
	isGone      bool
	stopReq     bool
	queue       []func()
	pids        map[string]int
	restartsPub map[string]int32 // the containers' restart counts, for other goroutines
	volRefresh  bool

	kick chan struct{}
	done chan struct{}

	// Owned by the loop goroutine.
	ctx         context.Context
	cancel      context.CancelFunc
	ip          string
	startTime   metav1.Time
	prepared    bool
	prepWaiting map[string][2]string // container → waiting reason, message (until prepared)
	prepMsg     string
	initCtrs    []*ctr
	ctrs        []*ctr
	vols        *podVolumes
	lastSent    *corev1.PodStatus
	timer       *time.Timer
	timerAt     time.Time
	kubeconfig  bool
	kcRefresh   time.Time
	nextRun     int
	failed      bool // an init container failed with restartPolicy Never
	warned      map[string]bool
}

// ctr is one container's state.
type ctr struct {
	spec      corev1.Container
	init      bool
	run       *run // the current or last run; nil before the first start
	running   bool
	restarts  int32
	terms     []corev1.ContainerStateTerminated // the last two terminations
	waiting   [2]string                         // reason, message while not running
	nextStart time.Time
	failures  int
	ready     bool
	started   bool
	done      bool // an init container that completed
}

// run is one process of a container.
type run struct {
	id         int
	pid        int
	cmd        *exec.Cmd
	startedAt  metav1.Time
	done       chan struct{} // closed once the process is reaped; exit is set before
	exit       corev1.ContainerStateTerminated
	cancel     context.CancelFunc // stops the probes
	log        *os.File
	killing    bool
	killReason string
}

func newWorker(r *Runner, pod *corev1.Pod, prev *worker) *worker {
	w := &worker{
		r:           r,
		uid:         pod.UID,
		ns:          pod.Namespace,
		name:        pod.Name,
		key:         podKey(pod),
		dir:         r.PodDir(pod.Namespace, pod.Name),
		prev:        prev,
		pod:         pod,
		pids:        map[string]int{},
		restartsPub: map[string]int32{},
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		warned:      map[string]bool{},
	}
	w.ctx, w.cancel = context.WithCancel(r.ctx)
	for _, c := range pod.Spec.InitContainers {
		w.initCtrs = append(w.initCtrs, &ctr{spec: c, init: true})
	}
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &ctr{spec: c})
	}
	return w
}

func (w *worker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) post(f func()) {
	w.mu.Lock()
	w.queue = append(w.queue, f)
	w.mu.Unlock()
	w.poke()
}

func (w *worker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.poke()
}

func (w *worker) gone() {
	w.mu.Lock()
	w.isGone = true
	w.mu.Unlock()
	w.poke()
}

func (w *worker) shutdown() {
	w.mu.Lock()
	w.stopReq = true
	w.mu.Unlock()
	w.poke()
}

func (w *worker) refreshVolumes() {
	w.mu.Lock()
	w.volRefresh = true
	w.mu.Unlock()
	w.poke()
}

func (w *worker) pid(container string) (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.pids[container]
	return p, ok
}

func (w *worker) setPID(container string, pid int) {
	w.mu.Lock()
	if pid == 0 {
		delete(w.pids, container)
	} else {
		w.pids[container] = pid
	}
	w.mu.Unlock()
	path := filepath.Join(w.dir, container+".pid")
	if pid == 0 {
		_ = os.Remove(path)
		return
	}
	_ = writeFileAtomic(path, []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// wakeAt makes the loop run again at t (the earliest of the pending wake-ups wins).
func (w *worker) wakeAt(t time.Time) {
	if w.timer != nil && !w.timerAt.IsZero() && !t.Before(w.timerAt) && time.Now().Before(w.timerAt) {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.timerAt = t
	w.timer = time.AfterFunc(time.Until(t), w.poke)
}

func (w *worker) wakeIn(d time.Duration) { w.wakeAt(time.Now().Add(d)) }

func (w *worker) log() *podLogger { return &podLogger{w} }

type podLogger struct{ w *worker }

func (l *podLogger) info(msg string, args ...any) {
	l.w.r.o.Logger.Info(msg, append([]any{"pod", l.w.key}, args...)...)
}

func (l *podLogger) warn(msg string, args ...any) {
	l.w.r.o.Logger.Warn(msg, append([]any{"pod", l.w.key}, args...)...)
}

// loop runs the pod until it is deleted or the runner stops.
func (w *worker) loop() {
	defer close(w.done)
	defer w.cancel()
	if w.prev != nil {
		// A pod of the same name (an earlier UID) is still stopping: never run both.
		select {
		case <-w.prev.done:
		case <-w.r.ctx.Done():
			return
		}
		w.prev = nil
	}
	ip, err := w.r.ipam.alloc()
	if err != nil {
		w.log().warn("no pod IP", "err", err)
		return
	}
	w.ip = ip
	defer w.r.ipam.release(ip)
	w.startTime = metav1.Now()
	w.log().info("pod accepted", "ip", ip)
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		pod, gone, stop, refresh := w.pod, w.isGone, w.stopReq, w.volRefresh
		w.volRefresh = false
		w.mu.Unlock()
		for _, f := range q {
			f()
		}
		if stop {
			grace := podGrace(pod)
			if grace > w.r.o.StopGrace {
				grace = w.r.o.StopGrace
			}
			w.stopAll(grace, "the pod runner is stopping")
			w.closeLogs()
			return
		}
		if gone || pod.DeletionTimestamp != nil {
			w.terminate(pod, gone)
			return
		}
		w.sync(pod, refresh)
		<-w.kick
	}
}

func podGrace(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// sync brings the processes in line with the pod and reports its status.
func (w *worker) sync(pod *corev1.Pod, refresh bool) {
	w.refreshSpecs(pod)
	if !w.prepared {
		if !w.prepare(pod) {
			w.wakeIn(2 * time.Second)
			w.report(pod)
			return
		}
	} else if refresh || (!w.vols.refreshAt.IsZero() && !time.Now().Before(w.vols.refreshAt)) {
		if err := w.updateVolumes(pod); err != nil {
			w.log().warn("refreshing volumes", "err", err)
			w.wakeIn(5 * time.Second)
		}
	}
	if w.kubeconfig && !time.Now().Before(w.kcRefresh) {
		if err := w.writeKubeconfig(pod); err != nil {
			w.log().warn("refreshing the service account token", "err", err)
			w.wakeIn(5 * time.Second)
		}
	}
	if !w.vols.refreshAt.IsZero() {
		w.wakeAt(w.vols.refreshAt)
	}
	if w.kubeconfig {
		w.wakeAt(w.kcRefresh)
	}
	if w.runInit(pod) {
		for _, c := range w.ctrs {
			w.reconcile(pod, c, pod.Spec.RestartPolicy)
		}
	}
	w.report(pod)
}

// refreshSpecs picks up container image changes (the only container field a pod update may
// change).
func (w *worker) refreshSpecs(pod *corev1.Pod) {
	for i, c := range pod.Spec.Containers {
		if i < len(w.ctrs) && w.ctrs[i].spec.Name == c.Name && w.ctrs[i].spec.Image != c.Image {
			w.ctrs[i].spec.Image = c.Image
		}
	}
	for i, c := range pod.Spec.InitContainers {
		if i < len(w.initCtrs) && w.initCtrs[i].spec.Name == c.Name && w.initCtrs[i].spec.Image != c.Image {
			w.initCtrs[i].spec.Image = c.Image
		}
	}
}

// prepare checks the images and sets up the volumes and the kubeconfig; false: not yet (the
// reasons are in prepWaiting).
func (w *worker) prepare(pod *corev1.Pod) bool {
	w.prepWaiting = map[string][2]string{}
	all := append(append([]*ctr{}, w.initCtrs...), w.ctrs...)
	foreign := false
	for _, c := range all {
		if !w.r.imageIsHerald(c.spec.Image) {
			foreign = true
			msg := fmt.Sprintf("image %q cannot run here: the local pod runner runs only Herald's image (repositories %v) as local processes of %s",
				c.spec.Image, w.r.o.Images, w.r.o.HeraldBinary)
			w.prepWaiting[c.spec.Name] = [2]string{"ErrImagePull", msg}
			w.warnOnce("image:"+c.spec.Image, corev1.EventTypeWarning, "Failed", fmt.Sprintf("Failed to pull image %q: %s", c.spec.Image, msg))
		}
	}
	if foreign {
		for _, c := range all {
			if _, ok := w.prepWaiting[c.spec.Name]; !ok {
				w.prepWaiting[c.spec.Name] = [2]string{"ContainerCreating", "another image of the pod cannot run on the local pod runner"}
			}
		}
		return false
	}
	if err := os.MkdirAll(filepath.Join(w.dir, "logs"), 0o755); err != nil {
		w.setPrepError("ContainerCreating", err.Error())
		return false
	}
	if err := w.setupVolumes(pod); err != nil {
		w.setPrepError("ContainerCreating", err.Error())
		w.warnOnce("mount:"+err.Error(), corev1.EventTypeWarning, "FailedMount", err.Error())
		return false
	}
	auto, err := w.automount(pod)
	if err != nil {
		w.setPrepError("CreateContainerConfigError", err.Error())
		return false
	}
	if auto {
		w.kubeconfig = true
		if err := w.writeKubeconfig(pod); err != nil {
			w.setPrepError("CreateContainerConfigError", "service account token: "+err.Error())
			return false
		}
	}
	if err := w.r.dns.ensure(w.ns); err != nil {
		w.setPrepError("ContainerCreating", err.Error())
		return false
	}
	w.prepared = true
	w.prepWaiting = nil
	return true
}

func (w *worker) setPrepError(reason, msg string) {
	for _, c := range append(append([]*ctr{}, w.initCtrs...), w.ctrs...) {
		w.prepWaiting[c.spec.Name] = [2]string{reason, msg}
	}
}

func (w *worker) warnOnce(key, typ, reason, msg string) {
	if w.warned[key] {
		return
	}
	w.warned[key] = true
	w.r.events.Event(w.podRef(), typ, reason, msg)
}

func (w *worker) podRef() *corev1.ObjectReference {
	w.mu.Lock()
	pod := w.pod
	w.mu.Unlock()
	return &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion}
}

func (w *worker) ctrRef(c *ctr) *corev1.ObjectReference {
	ref := w.podRef()
	if c.init {
		ref.FieldPath = "spec.initContainers{" + c.spec.Name + "}"
	} else {
		ref.FieldPath = "spec.containers{" + c.spec.Name + "}"
	}
	return ref
}

// runInit runs the init containers one after the other; true once all completed.
func (w *worker) runInit(pod *corev1.Pod) bool {
	policy := pod.Spec.RestartPolicy
	if policy == corev1.RestartPolicyAlways || policy == "" {
		policy = corev1.RestartPolicyOnFailure
	}
	for _, c := range w.initCtrs {
		if c.done {
			continue
		}
		if !c.running && c.run != nil && c.run.exit.ExitCode == 0 {
			c.done = true
			continue
		}
		if !c.running && c.run != nil && policy == corev1.RestartPolicyNever {
			w.failed = true
			return false
		}
		w.reconcile(pod, c, policy)
		return false
	}
	return true
}

// reconcile starts, restarts or kills one container.
func (w *worker) reconcile(pod *corev1.Pod, c *ctr, policy corev1.RestartPolicy) {
	if c.running {
		if c.run.killReason != "" && !c.run.killing {
			c.run.killing = true
			rn := c.run
			grace := podGrace(pod)
			w.r.events.Event(w.ctrRef(c), corev1.EventTypeNormal, "Killing",
				fmt.Sprintf("Container %s %s, will be restarted", c.spec.Name, rn.killReason))
			go stopRun(rn, grace)
		}
		return
	}
	if c.run != nil {
		code := c.run.exit.ExitCode
		switch {
		case policy == corev1.RestartPolicyNever:
			return
		case policy == corev1.RestartPolicyOnFailure && code == 0:
			return
		}
		if wait := time.Until(c.nextStart); wait > 0 {
			c.waiting = [2]string{"CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
				roundBackoff(c), c.spec.Name, w.name, w.ns, w.uid)}
			w.wakeAt(c.nextStart)
			return
		}
	}
	if !c.nextStart.IsZero() && time.Now().Before(c.nextStart) {
		w.wakeAt(c.nextStart)
		return
	}
	w.start(pod, c)
}

func roundBackoff(c *ctr) time.Duration {
	if c.run == nil {
		return 0
	}
	d := c.nextStart.Sub(c.run.exit.FinishedAt.Time)
	return d.Round(time.Second)
}

// start starts a process for c.
func (w *worker) start(pod *corev1.Pod, c *ctr) {
	rw := w.rewriterFor(&c.spec)
	env, vars, err := w.containerEnv(pod, &c.spec, rw)
	if err != nil {
		c.waiting = [2]string{"CreateContainerConfigError", err.Error()}
		w.warnOnce("config:"+c.spec.Name+err.Error(), corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
		c.nextStart = time.Now().Add(2 * time.Second)
		w.wakeAt(c.nextStart)
		return
	}
	args := containerArgs(&c.spec, vars, rw)
	restarts := c.restarts
	if c.run != nil {
		restarts++
	}
	logPath := w.logPath(c.spec.Name, restarts)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		c.waiting = [2]string{"RunContainerError", err.Error()}
		return
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.waiting = [2]string{"RunContainerError", err.Error()}
		return
	}
	cmd := exec.Command(w.r.o.HeraldBinary, args...)
	cmd.Env = env
	cmd.Dir = w.workingDir(&c.spec, rw)
	cmd.SysProcAttr = procAttr()
	var out io.Writer = logf
	if w.r.o.ContainerOutput != nil {
		out = io.MultiWriter(logf, &lineWriter{prefix: w.key + "/" + c.spec.Name, r: w.r})
	}
	cmd.Stdout, cmd.Stderr = out, out
	if c.run != nil {
		c.restarts++
		w.mu.Lock()
		w.restartsPub[c.spec.Name] = c.restarts
		w.mu.Unlock()
	}
	w.nextRun++
	rn := &run{id: w.nextRun, cmd: cmd, done: make(chan struct{}), log: logf}
	now := metav1.Now()
	rn.startedAt = now
	if err := cmd.Start(); err != nil {
		logf.Close()
		rn.exit = corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now}
		close(rn.done)
		c.run = rn
		w.onExit(pod, c, rn)
		return
	}
	rn.pid = cmd.Process.Pid
	c.run, c.running = rn, true
	c.waiting = [2]string{}
	c.ready = false
	c.started = c.spec.StartupProbe == nil
	w.setPID(c.spec.Name, rn.pid)
	w.log().info("container started", "container", c.spec.Name, "pid", rn.pid, "restarts", c.restarts)
	w.r.events.Event(w.ctrRef(c), corev1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s (pid %d)", c.spec.Name, rn.pid))
	go func() {
		err := cmd.Wait()
		rn.exit = terminationOf(cmd, err, rn)
		close(rn.done)
		w.post(func() { w.onExit(w.currentPod(), c, rn) })
	}()
	var pctx context.Context
	pctx, rn.cancel = context.WithCancel(w.ctx)
	if !c.init {
		go w.probe(pctx, c, rn, *c.spec.DeepCopy())
	}
}

func (w *worker) currentPod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func terminationOf(cmd *exec.Cmd, err error, rn *run) corev1.ContainerStateTerminated {
	t := corev1.ContainerStateTerminated{
		StartedAt:   rn.startedAt,
		FinishedAt:  metav1.Now(),
		ContainerID: fmt.Sprintf("herald://%d", rn.pid),
	}
	if cmd.ProcessState == nil {
		t.ExitCode, t.Reason = 128, "Error"
		if err != nil {
			t.Message = err.Error()
		}
		return t
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Signal = int32(ws.Signal())
		t.ExitCode = 128 + int32(ws.Signal())
	} else {
		t.ExitCode = int32(cmd.ProcessState.ExitCode())
	}
	t.Reason = "Error"
	if t.ExitCode == 0 {
		t.Reason = "Completed"
	}
	return t
}

// onExit records the end of rn and schedules the restart.
func (w *worker) onExit(pod *corev1.Pod, c *ctr, rn *run) {
	if c.run != rn {
		return
	}
	if rn.cancel != nil {
		rn.cancel()
	}
	if rn.log != nil {
		if rn.exit.ExitCode != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
			rn.exit.Message = tailFile(rn.log.Name(), 80, 2048)
		}
		rn.log.Close()
	}
	c.running, c.ready, c.started = false, false, false
	c.terms = append(c.terms, rn.exit)
	if len(c.terms) > 2 {
		c.terms = c.terms[len(c.terms)-2:]
	}
	w.setPID(c.spec.Name, 0)
	ran := rn.exit.FinishedAt.Sub(rn.exit.StartedAt.Time)
	if ran > 10*time.Minute {
		c.failures = 0
	}
	var delay time.Duration
	if c.failures > 0 {
		delay = w.r.o.InitialBackoff << (c.failures - 1)
		if delay > w.r.o.MaxBackoff || delay <= 0 {
			delay = w.r.o.MaxBackoff
		}
	}
	c.failures++
	c.nextStart = time.Now().Add(delay)
	w.log().info("container exited", "container", c.spec.Name, "exitCode", rn.exit.ExitCode, "signal", rn.exit.Signal, "restartIn", delay)
	if delay > 0 {
		w.r.events.Event(w.ctrRef(c), corev1.EventTypeWarning, "BackOff", fmt.Sprintf("Back-off restarting failed container %s in pod %s", c.spec.Name, w.name))
	}
}

// stopRun stops a process: SIGTERM to its process group, SIGKILL after grace.
func stopRun(rn *run, grace time.Duration) {
	select {
	case <-rn.done:
		return
	default:
	}
	_ = signalGroup(rn.pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-rn.done:
	case <-t.C:
		_ = signalGroup(rn.pid, syscall.SIGKILL)
		<-rn.done
	}
	// Anything left in the group goes too.
	_ = syscall.Kill(-rn.pid, syscall.SIGKILL)
}

// stopAll stops every running process, in parallel, and waits.
func (w *worker) stopAll(grace time.Duration, why string) {
	var wg sync.WaitGroup
	for _, c := range append(append([]*ctr{}, w.initCtrs...), w.ctrs...) {
		if !c.running || c.run == nil {
			continue
		}
		rn := c.run
		w.r.events.Event(w.ctrRef(c), corev1.EventTypeNormal, "Killing", fmt.Sprintf("Stopping container %s: %s", c.spec.Name, why))
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopRun(rn, grace)
		}()
	}
	wg.Wait()
	for _, c := range append(append([]*ctr{}, w.initCtrs...), w.ctrs...) {
		if c.run != nil && c.run.cancel != nil {
			c.run.cancel()
		}
		if c.running {
			c.running = false
			w.setPID(c.spec.Name, 0)
		}
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *worker) closeLogs() {
	for _, c := range append(append([]*ctr{}, w.initCtrs...), w.ctrs...) {
		if c.run != nil && c.run.log != nil {
			c.run.log.Close()
		}
	}
}

// terminate stops the pod's processes, removes its folder and, unless the Pod is already gone,
// deletes it for good (grace period 0): the kubelet's part of a graceful deletion.
func (w *worker) terminate(pod *corev1.Pod, gone bool) {
	grace := podGrace(pod)
	w.log().info("stopping pod", "grace", grace, "gone", gone)
	w.stopAll(grace, "the pod is being deleted")
	w.closeLogs()
	if err := os.RemoveAll(w.dir); err != nil {
		w.log().warn("removing the pod folder", "err", err)
	}
	if !gone {
		w.r.deletePod(pod)
	}
	w.log().info("pod stopped")
}

func (w *worker) logPath(container string, restarts int32) string {
	return filepath.Join(w.dir, "logs", container, fmt.Sprintf("%d.log", restarts))
}

// report computes the pod's status and writes it when it changed.
func (w *worker) report(pod *corev1.Pod) {
	st := w.status(pod)
	if w.lastSent != nil && equality.Semantic.DeepEqual(*w.lastSent, st) {
		return
	}
	cur := pod
	for attempt := 0; attempt < 4; attempt++ {
		next := cur.DeepCopy()
		next.Status = st
		_, err := w.r.cs.CoreV1().Pods(w.ns).UpdateStatus(w.ctx, next, metav1.UpdateOptions{})
		if err == nil {
			w.lastSent = &st
			return
		}
		if apierrors.IsNotFound(err) || errors.Is(err, context.Canceled) {
			return
		}
		if !apierrors.IsConflict(err) {
			w.log().warn("updating pod status", "err", err)
			break
		}
		fresh, err := w.r.cs.CoreV1().Pods(w.ns).Get(w.ctx, w.name, metav1.GetOptions{})
		if err != nil || fresh.UID != w.uid {
			return
		}
		cur = fresh
		st = w.status(fresh)
	}
	w.wakeIn(time.Second)
}
