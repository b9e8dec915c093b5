package e2e_test

// The rolling restart test of the replication issue: "A rolling restart moves leadership off each
// pod before it stops (preStop / the operator), so producers see no errors beyond retries."
//
// A BrokerCluster of 3 brokers (persistent volumes, fsync always), a Topic with 3 partitions and
// replicationFactor 3, a push Subscription to an HTTP endpoint of this test and an audit pull
// Subscription nobody reads until the end. Two producers publish batches of unique ids through
// the broker pods a client Service would send them to (Ready, not terminating), retrying a failed
// batch with the same ids as a client would. Then the test restarts the brokers the way a user
// does: it changes an annotation of the BrokerCluster's spec.podTemplate, the operator updates
// the StatefulSet and the StatefulSet controller replaces the pods one at a time (deletion →
// SIGTERM → the broker hands its leaderships over → it stops → a new pod on the same volume).
// Meanwhile the test follows every pod closely: a watch sees each old pod's deletion, its broker
// process is polled every 10ms until it exits, and GET /v1/cluster is sampled every 50ms from a
// pod that is not stopping.
//
// It requires: every pod replaced (new UID, new process, no restart of it), highest ordinal first,
// never fewer than 2 ready; the StatefulSet rolled out (updateRevision == currentRevision, 3
// updated and ready) and the BrokerCluster Running and Ready again, every partition fully in sync;
// each stopping pod leading, once its process had exited, none of the partitions it led before
// its deletion with the same leader epoch (a handoff elects another leader, a new epoch; a
// leadership left behind keeps its epoch until the failure detector moves it, or, when the new
// process comes back first, for good), no partition ever without a leader during its restart (a
// failure election), and no failed handoff in its log; the producers seeing nothing but
// retryable failures (503, connection refused or closed) and every batch acknowledged in the end;
// and no acknowledged message lost (checkDelivery: each pushed, and in the topic at its offset).
// Retries, duplicates and the time each pod took are logged.
//
// Knobs (environment): HERALD_ROLLING_LOGS (a folder the brokers' logs, old pods' included, the
// operator's and the pod runner's logs, each broker's GET /v1/cluster and a summary are copied
// to at the end). Skipped with -short.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

const (
	rollBC         = "rolling"
	rollTopic      = "rolling"
	rollPush       = "rolling-push"
	rollAudit      = "rolling-audit"
	rollPartitions = 3
	rollRF         = 3
	rollProducers  = 2
	rollBatch      = 5
	// rollAnnotation is what the test changes in spec.podTemplate (as `kubectl rollout restart`
	// does in a Deployment's pod template).
	rollAnnotation = "kubectl.kubernetes.io/restartedAt"
)

var (
	rollPods  = []string{"rolling-0", "rolling-1", "rolling-2"}
	rollShape = topicShape{name: rollTopic, partitions: rollPartitions, rf: rollRF}
)

const rollBrokerManifest = `apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: rolling
spec:
  replicas: 3
  storage:
    size: 256Mi
  config:
    fsync: always
`

const rollTopicManifest = `apiVersion: herald.dev/v1alpha1
kind: Topic
metadata:
  name: rolling
spec:
  clusterRef:
    name: rolling
  partitions: 3
  replicationFactor: 3
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: rolling-push
spec:
  clusterRef:
    name: rolling
  topic: rolling
  startAt: earliest
  push:
    uri: %[1]s/push
    format: raw
    timeout: 5s
    maxInFlight: 64
  retry:
    policy: exponential
    minBackoff: 100ms
    maxBackoff: 2s
    maxAttempts: 100
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: rolling-audit
spec:
  clusterRef:
    name: rolling
  topic: rolling
  startAt: earliest
  ackDeadline: 600s
`

// podStop is how one broker pod was stopped and replaced during the roll; zero times: not seen.
type podStop struct {
	pod    string
	oldUID string
	oldPID int
	log    *os.File // the old broker's log, held open: the runner removes the pod's folder

	deleted time.Time // deletionTimestamp set (the StatefulSet controller deleted it): a watch saw it
	exited  time.Time // its process is gone (polled every 10ms)
	created time.Time // the new pod (new UID) exists
	started time.Time // the new pod's broker process runs
	newPID  int
	ready   time.Time // the new pod is Ready
	inSync  time.Time // every member ready and every partition fully in sync again, after ready
}

func (s *podStop) since(t time.Time) string {
	if t.IsZero() || s.deleted.IsZero() {
		return "-"
	}
	return fmtDur(t.Sub(s.deleted))
}

// viewSample is GET /v1/cluster from a pod that was not stopping.
type viewSample struct {
	at   time.Time // when the request was sent: the view's metadata is from after this
	from string
	v    *clusterView
}

// rollWatcher follows the roll closely, in the background: when each old pod was deleted (a
// watch), when its process exited (polled every 10ms), and GET /v1/cluster every 50ms from a
// Ready pod that is not stopping.
type rollWatcher struct {
	mu      sync.Mutex
	deleted map[string]time.Time // by old UID
	exited  map[int]time.Time    // by old pid
	views   []viewSample
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func watchRollClosely(e *env, eps *endpoints, stops []*podStop) *rollWatcher {
	w := &rollWatcher{deleted: map[string]time.Time{}, exited: map[int]time.Time{}, done: make(chan struct{})}
	uids := map[string]bool{}
	for _, s := range stops {
		uids[s.oldUID] = true
	}
	pw, err := e.cs.CoreV1().Pods(ns).Watch(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + rollBC})
	if err != nil {
		e.t.Fatal(err)
	}
	w.wg.Add(3)
	go func() {
		defer w.wg.Done()
		defer pw.Stop()
		for {
			select {
			case <-w.done:
				return
			case ev, ok := <-pw.ResultChan():
				if !ok {
					return
				}
				p, isPod := ev.Object.(*corev1.Pod)
				if !isPod || !uids[string(p.UID)] || (p.DeletionTimestamp == nil && ev.Type != watch.Deleted) {
					continue
				}
				now := time.Now()
				w.mu.Lock()
				if _, seen := w.deleted[string(p.UID)]; !seen {
					w.deleted[string(p.UID)] = now
				}
				w.mu.Unlock()
			}
		}
	}()
	go func() {
		defer w.wg.Done()
		for {
			for _, s := range stops {
				w.mu.Lock()
				_, gone := w.exited[s.oldPID]
				w.mu.Unlock()
				if !gone && processGone(s.oldPID) {
					now := time.Now()
					w.mu.Lock()
					w.exited[s.oldPID] = now
					w.mu.Unlock()
				}
			}
			select {
			case <-w.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer w.wg.Done()
		for {
			// From the first pod that answers, skipping one that is stopping (the endpoints lag
			// the pods a little).
			names, bases := eps.list()
			for i, name := range names {
				stopping := false
				w.mu.Lock()
				for _, s := range stops {
					_, deleted := w.deleted[s.oldUID]
					_, exited := w.exited[s.oldPID]
					stopping = stopping || s.pod == name && deleted && !exited
				}
				w.mu.Unlock()
				if stopping {
					continue
				}
				at := time.Now()
				if v, err := getView(bases[i]); err == nil {
					w.mu.Lock()
					w.views = append(w.views, viewSample{at: at, from: name, v: v})
					w.mu.Unlock()
					break
				}
			}
			select {
			case <-w.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *rollWatcher) stop() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}

func (w *rollWatcher) times(s *podStop) (deleted, exited time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deleted[s.oldUID], w.exited[s.oldPID]
}

func (w *rollWatcher) samples() []viewSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.views)
}

// partEpoch is a partition's leader and leader epoch in one view.
type partEpoch struct {
	leader string
	epoch  uint64
}

func epochs(v *clusterView) map[int]partEpoch {
	out := map[int]partEpoch{}
	for _, p := range v.Partitions {
		if p.Topic == rollTopic {
			out[p.Partition] = partEpoch{p.Leader, p.Epoch}
		}
	}
	return out
}

// handoff is what the views say of one pod's stop.
type handoff struct {
	ledBefore  map[int]partEpoch // the partitions it led in the last view before its deletion
	before     time.Time         // that view's time
	leaving    bool              // a view showed it Leaving while it stopped
	handedOff  time.Time         // the first view after the deletion in which it led nothing
	firstAfter *viewSample       // the first view after its exit
	stillLed   []string          // views after its exit in which it led a partition it led before, same epoch
	reled      []string          // views after its exit in which it led a partition with a new epoch
	leaderless []string          // views between its deletion and its new pod in sync with a partition without leader
}

// analyse reads the views around the stop of s.
func (s *podStop) analyse(views []viewSample) handoff {
	var h handoff
	for i := range views {
		vs := &views[i]
		switch {
		case vs.at.Before(s.deleted):
			h.ledBefore, h.before = map[int]partEpoch{}, vs.at
			for p, pe := range epochs(vs.v) {
				if pe.leader == s.pod {
					h.ledBefore[p] = pe
				}
			}
			continue
		case !s.inSync.IsZero() && vs.at.After(s.inSync):
			continue
		}
		cur := epochs(vs.v)
		for p, pe := range cur {
			if pe.leader == "" && len(h.leaderless) < 5 {
				h.leaderless = append(h.leaderless, fmt.Sprintf("partition %d at +%s after the deletion (epoch %d, from %s)", p, fmtDur(vs.at.Sub(s.deleted)), pe.epoch, vs.from))
			}
		}
		if s.exited.IsZero() || vs.at.Before(s.exited) {
			for _, m := range vs.v.Members {
				if m.ID == s.pod && m.Leaving {
					h.leaving = true
				}
			}
			if h.handedOff.IsZero() && len(vs.v.ledBy(rollTopic, s.pod)) == 0 {
				h.handedOff = vs.at
			}
			continue
		}
		if h.firstAfter == nil {
			h.firstAfter = vs
		}
		for p, pe := range cur {
			if pe.leader != s.pod {
				continue
			}
			what := fmt.Sprintf("+%s after the exit (from %s): leads %d, epoch %d", fmtDur(vs.at.Sub(s.exited)), vs.from, p, pe.epoch)
			if b, ok := h.ledBefore[p]; ok && b.epoch == pe.epoch {
				if len(h.stillLed) < 5 {
					h.stillLed = append(h.stillLed, what+fmt.Sprintf(" as before its deletion; %s", vs.v))
				}
			} else if len(h.reled) < 3 {
				h.reled = append(h.reled, what)
			}
		}
	}
	return h
}

// openBrokerLog opens the current log file of pod's broker container.
func openBrokerLog(e *env, pod string) (*os.File, error) {
	logs, _ := filepath.Glob(filepath.Join(e.r.PodDir(ns, pod), "logs", "broker", "*.log"))
	if len(logs) == 0 {
		return nil, fmt.Errorf("no log file of %s's broker", pod)
	}
	sort.Slice(logs, func(i, j int) bool {
		return len(logs[i]) < len(logs[j]) || len(logs[i]) == len(logs[j]) && logs[i] < logs[j]
	})
	return os.Open(logs[len(logs)-1])
}

// processGone reports whether process pid has exited (and was reaped by the pod runner).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestRollingRestart restarts a replicated BrokerCluster's pods by changing its pod template, under
// load, and checks that each pod hands its leaderships over before it stops: the producers only
// retry, and nothing acknowledged is lost.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("the rolling restart test takes minutes; skipped with -short")
	}
	began := time.Now()
	e := startWithin(t, 8*time.Minute)
	t.Logf("cluster up in %s", fmtDur(time.Since(began)))
	var report []string // the summary, also written to the logs folder
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf(format, args...)
		report = append(report, fmt.Sprintf(format, args...))
	}
	stops := make([]*podStop, len(rollPods))
	t.Cleanup(func() { // after the copy below (cleanups run last first)
		for _, s := range stops {
			if s != nil && s.log != nil {
				s.log.Close()
			}
		}
	})
	if dir := os.Getenv("HERALD_ROLLING_LOGS"); dir != "" {
		t.Cleanup(func() {
			_ = os.MkdirAll(dir, 0o755)
			e.keepLogs(dir, rollPods)
			for _, s := range stops {
				if s == nil || s.log == nil {
					continue
				}
				if _, err := s.log.Seek(0, io.SeekStart); err == nil {
					b, _ := io.ReadAll(s.log)
					_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-before-roll-%s.log", s.pod, s.oldUID)), b, 0o644)
				}
			}
			_ = os.WriteFile(filepath.Join(dir, "rolling-summary.txt"), []byte(strings.Join(report, "\n")+"\n"), 0o644)
		})
	}
	crc := e.heraldClient()

	// The brokers, then the Topic once all three are members (its placement needs three).
	e.installWithBrokers(t, rollBC, rollBrokerManifest)
	step := time.Now()
	eps := &endpoints{instance: rollBC}
	eventually(t, 60*time.Second, "3 cluster members", func() error {
		if err := eps.refresh(e); err != nil {
			return err
		}
		_, base := eps.pick(0)
		v, err := getView(base)
		if err != nil {
			return err
		}
		return v.membersOK(3)
	})
	t.Logf("3 brokers Ready, one cluster: %s", fmtDur(time.Since(step)))

	step = time.Now()
	rc := newPushReceiver(t)
	topics := filepath.Join(e.dir, "rolling-topic.yaml")
	if err := os.WriteFile(topics, []byte(fmt.Sprintf(rollTopicManifest, rc.srv.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustK("apply", "-n", ns, "-f", topics)
	e.waitReady("topic", rollTopic, 90*time.Second)
	e.waitReady("subscription", rollPush, 90*time.Second)
	e.waitReady("subscription", rollAudit, 90*time.Second)
	var view *clusterView
	eventually(t, 60*time.Second, "topic placed with 3 in-sync replicas per partition", func() error {
		var err error
		_, base := eps.pick(0)
		if view, err = getView(base); err != nil {
			return err
		}
		return view.healthy(rollShape, 3)
	})
	t.Logf("Topic and Subscriptions Ready: %s; %s", fmtDur(time.Since(step)), view)

	// The load, through the pods a Service would pick.
	stopRefresh := eps.follow(e)
	t.Cleanup(stopRefresh)
	led := newLedger(rollShape, rollBatch)
	led.finish = 30 * time.Second // once stopped, a producer still publishes the batch it has
	loadStart, stopLoad := startLoad(t, led, rollProducers, eps.pick)
	time.Sleep(3 * time.Second)

	// Before the roll: each pod's UID, process and log.
	sts0, err := e.cs.AppsV1().StatefulSets(ns).Get(e.ctx, rollBC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldRevision := sts0.Status.UpdateRevision
	for i, name := range rollPods {
		p, err := e.cs.CoreV1().Pods(ns).Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pid, ok := e.r.PID(ns, name, "broker")
		if !ok {
			t.Fatalf("no broker process in pod %s", name)
		}
		s := &podStop{pod: name, oldUID: string(p.UID), oldPID: pid}
		if s.log, err = openBrokerLog(e, name); err != nil {
			t.Logf("the log of %s will not be checked: %v", name, err)
		}
		stops[i] = s
	}
	if _, base := eps.pick(0); base != "" {
		if v, err := getView(base); err == nil {
			t.Logf("before the roll: %s", v)
		}
	}

	// The roll, as a user starts it: a new annotation in the pod template.
	roll := watchRoll(e, rollBC)
	closely := watchRollClosely(e, eps, stops)
	t.Cleanup(closely.stop)
	rollStart := time.Now()
	ackedBefore := led.count()
	patch := fmt.Sprintf(`{"spec":{"podTemplate":{"annotations":{%q:%q}}}}`, rollAnnotation, rollStart.UTC().Format(time.RFC3339))
	e.mustK("patch", "-n", ns, "brokercluster", rollBC, "--type=merge", "-p", patch)
	logf("pod template changed at +%s (%s)", fmtDur(rollStart.Sub(loadStart)), patch)

	// Follow the roll until every pod was replaced, the StatefulSet rolled out, the BrokerCluster
	// is Running and Ready, and the cluster is whole again.
	var phases []string
	lastPhase := ""
	var doneErr error
	rollDone := time.Time{}
	for {
		now := time.Now()
		if now.Sub(rollStart) > 150*time.Second {
			roll.stop()
			var b strings.Builder
			for _, s := range stops {
				fmt.Fprintf(&b, "\n  %s: deleted %v, exited %s, new pod %s, started %s, ready %s, in sync %s",
					s.pod, !s.deleted.IsZero(), s.since(s.exited), s.since(s.created), s.since(s.started), s.since(s.ready), s.since(s.inSync))
			}
			if view != nil {
				t.Logf("last GET /v1/cluster: %s", view)
			}
			t.Fatalf("the rolling restart did not complete within 150s: %v%s", doneErr, b.String())
		}
		pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + rollBC})
		if err != nil {
			time.Sleep(150 * time.Millisecond)
			continue
		}
		byName := map[string]*corev1.Pod{}
		for i := range pods.Items {
			byName[pods.Items[i].Name] = &pods.Items[i]
		}
		for _, s := range stops {
			p := byName[s.pod]
			s.deleted, s.exited = closely.times(s)
			if s.deleted.IsZero() && (p == nil || string(p.UID) != s.oldUID) {
				s.deleted = now // the watch missed it
			}
			if p == nil || string(p.UID) == s.oldUID {
				continue
			}
			if s.created.IsZero() {
				s.created = now
			}
			if s.started.IsZero() {
				if pid, ok := e.r.PID(ns, s.pod, "broker"); ok && pid != s.oldPID {
					s.started, s.newPID = now, pid
				}
			}
			if s.ready.IsZero() && p.DeletionTimestamp == nil && podReady(p) {
				s.ready = now
			}
		}
		// GET /v1/cluster from a Ready pod that is not stopping.
		var v *clusterView
		var vAt time.Time
		for _, name := range rollPods {
			p := byName[name]
			if p == nil || p.DeletionTimestamp != nil || !podReady(p) || p.Status.PodIP == "" {
				continue
			}
			vAt = time.Now()
			if got, err := getView("http://" + p.Status.PodIP + ":8080"); err == nil {
				v = got
				break
			}
		}
		if v != nil {
			view = v
			healthyErr := v.healthy(rollShape, 3)
			for _, s := range stops {
				if !s.ready.IsZero() && s.inSync.IsZero() && healthyErr == nil && vAt.After(s.ready) {
					s.inSync = vAt
				}
			}
		}
		bc := &heraldv1.BrokerCluster{}
		if err := crc.Get(e.ctx, client.ObjectKey{Namespace: ns, Name: rollBC}, bc); err == nil && string(bc.Status.Phase) != lastPhase {
			lastPhase = string(bc.Status.Phase)
			phases = append(phases, fmt.Sprintf("%s at +%s", lastPhase, fmtDur(now.Sub(rollStart))))
		}
		// Done?
		doneErr = func() error {
			for _, s := range stops {
				if s.inSync.IsZero() {
					return fmt.Errorf("%s not replaced and in sync yet", s.pod)
				}
			}
			if v == nil {
				return errors.New("no GET /v1/cluster")
			}
			if err := v.healthy(rollShape, 3); err != nil {
				return err
			}
			for _, m := range v.Members {
				if m.Leaving || m.Draining {
					return fmt.Errorf("member %s: leaving %v, draining %v", m.ID, m.Leaving, m.Draining)
				}
			}
			sts, err := e.cs.AppsV1().StatefulSets(ns).Get(e.ctx, rollBC, metav1.GetOptions{})
			if err != nil {
				return err
			}
			st := sts.Status
			if st.ObservedGeneration != sts.Generation || st.UpdateRevision == oldRevision || st.UpdateRevision != st.CurrentRevision ||
				st.Replicas != 3 || st.UpdatedReplicas != 3 || st.ReadyReplicas != 3 {
				return fmt.Errorf("StatefulSet: observedGeneration %d of %d, revision %s → %s (was %s), %d pods, %d updated, %d ready",
					st.ObservedGeneration, sts.Generation, st.CurrentRevision, st.UpdateRevision, oldRevision, st.Replicas, st.UpdatedReplicas, st.ReadyReplicas)
			}
			if bc.Status.ObservedGeneration != bc.Generation || bc.Status.Phase != heraldv1.PhaseRunning || bc.Status.ReadyReplicas != 3 ||
				!meta.IsStatusConditionTrue(bc.Status.Conditions, heraldv1.ConditionReady) {
				return fmt.Errorf("BrokerCluster: observedGeneration %d of %d, phase %s, %d ready, conditions %+v",
					bc.Status.ObservedGeneration, bc.Generation, bc.Status.Phase, bc.Status.ReadyReplicas, bc.Status.Conditions)
			}
			return nil
		}()
		if doneErr == nil {
			rollDone = time.Now()
			break
		}
		time.Sleep(150 * time.Millisecond)
	}
	roll.stop()
	closely.stop()
	views := closely.samples()
	logf("rolling restart done in %s (pods replaced, StatefulSet rolled out, BrokerCluster Running and Ready, every partition fully in sync); BrokerCluster phases: %v; %d messages acknowledged meanwhile",
		fmtDur(rollDone.Sub(rollStart)), phases, led.count()-ackedBefore)

	// Some load after the roll, then stop it: every batch still gets published.
	time.Sleep(2 * time.Second)
	stopLoad()
	loadEnd := time.Now()
	stopRefresh()

	// Every pod was replaced, one at a time, highest ordinal first.
	if order := roll.order(); !slices.Equal(order, []string{"rolling-2", "rolling-1", "rolling-0"}) {
		t.Errorf("pods replaced in order %v, want rolling-2, rolling-1, rolling-0", order)
	}
	if roll.minReady < 2 {
		t.Errorf("only %d ready pods at one point of the roll; want one at a time (at least 2)", roll.minReady)
	}
	for _, s := range stops {
		if s.newPID == 0 || s.newPID == s.oldPID {
			t.Errorf("%s: its broker process was not replaced (pid %d, was %d)", s.pod, s.newPID, s.oldPID)
		}
		if p, err := e.cs.CoreV1().Pods(ns).Get(e.ctx, s.pod, metav1.GetOptions{}); err != nil {
			t.Errorf("%s: %v", s.pod, err)
		} else if string(p.UID) == s.oldUID {
			t.Errorf("%s: not replaced (same UID %s)", s.pod, s.oldUID)
		} else if p.Annotations[rollAnnotation] == "" {
			t.Errorf("%s: the new pod has no %s annotation", s.pod, rollAnnotation)
		} else if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("%s: the new pod's broker restarted %d times: %s", s.pod, p.Status.ContainerStatuses[0].RestartCount, e.lastTermination(s.pod))
		}
	}

	// Each pod handed its leaderships over before its process exited.
	sorted := slices.Clone(stops)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].deleted.Before(sorted[j].deleted) })
	led.mu.Lock()
	failed := slices.Clone(led.failed)
	led.mu.Unlock()
	for i, s := range sorted {
		// What it led just before its deletion it no longer led, with that epoch, once its
		// process had exited: a partition handed over has a new leader (and epoch); one left
		// behind keeps its leader and epoch until the failure detector elects another, or,
		// if the new process comes back first, for good.
		h := s.analyse(views)
		atExit := "-"
		switch {
		case s.exited.IsZero():
			t.Errorf("%s: its process (pid %d) was never seen exiting", s.pod, s.oldPID)
		case h.firstAfter == nil:
			t.Errorf("%s: no GET /v1/cluster after its process exited", s.pod)
		default:
			atExit = fmt.Sprintf("led %v in the first view after its exit (+%s, from %s)", h.firstAfter.v.ledBy(rollTopic, s.pod), fmtDur(h.firstAfter.at.Sub(s.exited)), h.firstAfter.from)
		}
		if h.before.IsZero() {
			t.Errorf("%s: no GET /v1/cluster before its deletion", s.pod)
		}
		if len(h.stillLed) > 0 {
			t.Errorf("%s still led partitions it led before its deletion, with the same leader epoch, after its process exited (%d views): its leaderships were not handed over, e.g.\n  %s",
				s.pod, len(h.stillLed), strings.Join(h.stillLed, "\n  "))
		}
		if len(h.leaderless) > 0 {
			t.Errorf("%s: a partition had no leader during its restart (a failure election, not a handoff): %v", s.pod, h.leaderless)
		}
		if len(h.reled) > 0 {
			t.Logf("  %s led partitions again, with a new epoch, after its exit (its new process, back as preferred leader): %v", s.pod, h.reled)
		}
		var ledBefore []string
		for _, p := range slices.Sorted(maps.Keys(h.ledBefore)) {
			ledBefore = append(ledBefore, fmt.Sprintf("%d (epoch %d)", p, h.ledBefore[p].epoch))
		}
		handoffLog := "-"
		if s.log != nil {
			if _, err := s.log.Seek(0, io.SeekStart); err == nil {
				b, _ := io.ReadAll(s.log)
				var lines []string
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, `msg="handing leaderships over"`) {
						t.Errorf("%s: the handoff failed: %s", s.pod, l)
					}
					if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
						lines = append(lines, l)
					}
				}
				handoffLog = fmt.Sprintf("%d warnings/errors in its log", len(lines))
				for _, l := range lines[:min(5, len(lines))] {
					t.Logf("  %s log: %s", s.pod, l)
				}
			}
		}
		// The window of this pod: from its deletion until the next pod's (or the end of the load).
		end := loadEnd
		if i+1 < len(sorted) && !sorted[i+1].deleted.IsZero() {
			end = sorted[i+1].deleted
		}
		retries := map[string]int{}
		n := 0
		for _, f := range failed {
			if !f.at.Before(s.deleted) && f.at.Before(end) {
				retries[f.class]++
				n++
			}
		}
		gapEnd := end
		if !s.inSync.IsZero() && s.inSync.Before(end) {
			gapEnd = s.inSync
		}
		var gaps []string
		for p := range rollPartitions {
			gaps = append(gaps, fmtDur(led.maxGap(p, s.deleted, gapEnd)))
		}
		logf("%s (pid %d → %d; led %v just before its deletion): deleted at +%s; Leaving seen %v; led nothing %s after the deletion; process exited %s; %s; new pod %s, new process %s, Ready %s, every partition in sync %s; %d retried publishes %v; longest wait for an acknowledged publish per partition until in sync %v; %s",
			s.pod, s.oldPID, s.newPID, ledBefore, fmtDur(s.deleted.Sub(loadStart)), h.leaving, s.since(h.handedOff), s.since(s.exited), atExit,
			s.since(s.created), s.since(s.started), s.since(s.ready), s.since(s.inSync), n, retries, gaps, handoffLog)
	}

	// The producers: nothing but retryable failures, every batch acknowledged in the end.
	led.mu.Lock()
	acked := maps.Clone(led.acked)
	attempts := maps.Clone(led.attempts)
	failures, samples, batches, abandoned := maps.Clone(led.failures), maps.Clone(led.samples), led.batches, slices.Clone(led.abandoned)
	led.mu.Unlock()
	retried := 0
	for _, n := range failures {
		retried += n
	}
	logf("load: %d messages acknowledged in %s (%d publish requests, %d of them failed and were retried: %v)",
		len(acked), fmtDur(loadEnd.Sub(loadStart)), batches, retried, failures)
	for _, c := range slices.Sorted(maps.Keys(samples)) {
		t.Logf("  e.g. %s: %s", c, samples[c])
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged")
	}
	for c, n := range failures {
		if !strings.HasPrefix(c, "503 ") && c != "transport: connection refused" && c != "transport: connection closed" {
			t.Errorf("%d publish requests failed with %s, which is not a retry of a rolling restart (503, connection refused or closed), e.g. %s", n, c, samples[c])
		}
	}
	if len(abandoned) > 0 {
		t.Errorf("%d messages were never acknowledged although their producer retried them for %s after the load stopped, e.g. %v",
			len(abandoned), led.finish, abandoned[:min(5, len(abandoned))])
	}
	for p := range rollPartitions {
		t.Logf("partition %d: longest stretch without an acknowledged publish during the load: %s", p, fmtDur(led.maxGap(p, loadStart, loadEnd)))
	}

	// Nothing acknowledged is lost.
	if err := eps.refresh(e); err != nil {
		t.Fatal(err)
	}
	_, base := eps.pick(0)
	res := checkDelivery(t, deliveryCheck{base: base, topic: rollTopic, push: rollPush, audit: rollAudit,
		acked: acked, attempts: attempts, rc: rc, origin: loadStart})
	logf("delivery: %d acknowledged messages, %d pushes of %d distinct messages, %d pushed more than once (%d extra pushes); topic: %d messages, %d acknowledged once from one request, %d retried and present once or more, %d copies of unacknowledged publishes",
		len(acked), res.deliveries, res.distinct, res.dupIDs, res.extra, res.inTopic, res.exactlyOnce, res.retried, res.unackedInTopic)
	logf("rolling restart test: %s in all", fmtDur(time.Since(began)))
}
