package e2e_test

// The chaos test of issue 7: a replicated BrokerCluster (3 brokers, persistent volumes), a Topic
// with 3 partitions and replicationFactor 3, a push Subscription to an HTTP endpoint of this
// test, two producers under load (through the pods' addresses, retrying every failure with the
// same message ids), and the broker processes SIGKILLed one at a time, waiting after each kill
// until the cluster is whole again (every member ready, every partition with 3 in sync). Every
// other kill first freezes the broker (SIGSTOP) until the others have failed its partitions over,
// so leaders really move; the others restart before the failure detector notices. Before and
// after those, the whole cluster is killed at once.
//
// At the end no acknowledged message may be missing: each was pushed at least once, is in the
// topic (read back through a pull Subscription nobody consumed) at the offset its publish was
// given, and is there at most once per publish request that carried it. Publishes must only fail
// in ways a client retries (503, connection errors). Duplicate pushes are reported, failover
// times logged.
//
// Knobs (environment): HERALD_CHAOS_KILLS (one-at-a-time kills, default 10), HERALD_CHAOS_LOGS
// (a folder the brokers' logs, the pod runner's log and each broker's GET /v1/cluster are copied
// to at the end, for post-mortems). Skipped with -short.

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	chaosBC         = "chaos"
	chaosTopic      = "chaos"
	chaosPush       = "chaos-push"
	chaosAudit      = "chaos-audit"
	chaosPartitions = 3
	chaosRF         = 3
	chaosProducers  = 2
	chaosBatch      = 5
	// chaosFreeze bounds how long a broker stays frozen before its SIGKILL.
	chaosFreeze = 12 * time.Second
)

var chaosPods = []string{"chaos-0", "chaos-1", "chaos-2"}

const chaosBrokerManifest = `apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: chaos
spec:
  replicas: 3
  storage:
    size: 256Mi
  config:
    fsync: always
`

// The Topic and the Subscriptions. chaos-audit is a pull Subscription nobody reads until the
// end: then it is drained to see what the topic holds.
const chaosTopicManifest = `apiVersion: herald.dev/v1alpha1
kind: Topic
metadata:
  name: chaos
spec:
  clusterRef:
    name: chaos
  partitions: 3
  replicationFactor: 3
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: chaos-push
spec:
  clusterRef:
    name: chaos
  topic: chaos
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
  name: chaos-audit
spec:
  clusterRef:
    name: chaos
  topic: chaos
  startAt: earliest
  ackDeadline: 600s
`

// chaosShape is the chaos topic.
var chaosShape = topicShape{name: chaosTopic, partitions: chaosPartitions, rf: chaosRF}

// killRecord is one kill and how the cluster recovered.
type killRecord struct {
	n         int
	pod       string
	pid       int
	led       []int
	ctl       bool
	restarted time.Duration // new process
	podReady  time.Duration // the pod's readiness probe passed
	leaders   time.Duration // every partition led by a ready member with a quorum in sync
	writes    time.Duration // every partition took an acknowledged publish again
	healthy   time.Duration // back to 3 members ready and every partition fully in sync
	freeze    bool          // SIGSTOP until the cluster failed over, then SIGKILL
}

// TestChaos kills the brokers of a replicated cluster one at a time under load and checks that
// no acknowledged message is lost.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos test takes minutes; skipped with -short")
	}
	kills := 10
	if s := os.Getenv("HERALD_CHAOS_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("HERALD_CHAOS_KILLS=%q: want a number", s)
		}
		kills = n
	}
	began := time.Now()
	e := startWithin(t, 14*time.Minute)
	t.Logf("cluster up in %s", time.Since(began).Round(100*time.Millisecond))
	if dir := os.Getenv("HERALD_CHAOS_LOGS"); dir != "" {
		t.Cleanup(func() { e.keepLogs(dir, chaosPods) })
	}

	// The brokers first, and the Topic once all three are members: the topic's placement needs
	// three brokers.
	e.installWithBrokers(t, chaosBC, chaosBrokerManifest)
	step := time.Now()
	bases := make([]string, len(chaosPods))
	for i, p := range chaosPods {
		bases[i] = "http://" + e.podIP(p) + ":8080"
	}
	eventually(t, 60*time.Second, "3 cluster members", func() error {
		v, err := getView(bases[0])
		if err != nil {
			return err
		}
		return v.membersOK(3)
	})
	t.Logf("3 brokers Ready, one cluster: %s", time.Since(step).Round(100*time.Millisecond))

	step = time.Now()
	rc := newPushReceiver(t)
	topics := filepath.Join(e.dir, "chaos-topic.yaml")
	if err := os.WriteFile(topics, []byte(fmt.Sprintf(chaosTopicManifest, rc.srv.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustK("apply", "-n", ns, "-f", topics)
	e.waitReady("topic", chaosTopic, 90*time.Second)
	e.waitReady("subscription", chaosPush, 90*time.Second)
	e.waitReady("subscription", chaosAudit, 90*time.Second)
	var view *clusterView
	eventually(t, 60*time.Second, "topic placed with 3 in-sync replicas per partition", func() error {
		var err error
		if view, err = getView(bases[0]); err != nil {
			return err
		}
		return view.healthy(chaosShape, 3)
	})
	t.Logf("Topic and Subscriptions Ready: %s; %s", time.Since(step).Round(100*time.Millisecond), view)

	// Load.
	led := newLedger(chaosShape, chaosBatch)
	pick := func(n int) (string, string) { return chaosPods[n%len(bases)], bases[n%len(bases)] }
	loadStart, stopLoad := startLoad(t, led, chaosProducers, pick)
	time.Sleep(2 * time.Second)

	var recs []killRecord
	pids := map[string]int{}
	for _, p := range chaosPods {
		pids[p], _ = e.r.PID(ns, p, "broker")
	}
	// crashAll kills every broker at once (a power cut): each comes back from its disk alone,
	// with no controller until they elect one.
	crashAll := func(when string) {
		for _, p := range chaosPods {
			if cur, _ := e.r.PID(ns, p, "broker"); cur != pids[p] {
				t.Errorf("broker %s restarted on its own (pid %d, was %d): %s", p, cur, pids[p], e.lastTermination(p))
				pids[p] = cur
			}
		}
		killedAt := time.Now()
		for _, p := range chaosPods {
			e.signal(pids[p], p, syscall.SIGKILL)
		}
		var lastErr error
		var last *clusterView
		restarted, healthy := time.Duration(-1), time.Duration(-1)
		for time.Since(killedAt) < 90*time.Second {
			if restarted < 0 {
				n := 0
				for _, p := range chaosPods {
					if cur, ok := e.r.PID(ns, p, "broker"); ok && cur != pids[p] {
						n++
					}
				}
				if n == len(chaosPods) {
					restarted = time.Since(killedAt)
				}
			}
			if restarted >= 0 {
				if v, err := getView(bases[0]); err != nil {
					lastErr = err
				} else if last, lastErr = v, v.healthy(chaosShape, 3); lastErr == nil {
					healthy = time.Since(killedAt)
					break
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The producers may still be backing off: give them a few seconds.
		writes := time.Duration(-1)
		for wait := time.Now().Add(10 * time.Second); writes < 0 && time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
			var latest time.Time
			for _, at := range led.firstAckAfter(killedAt) {
				if at.IsZero() {
					latest = time.Time{}
					break
				}
				latest = maxTime(latest, at)
			}
			if !latest.IsZero() {
				writes = latest.Sub(killedAt)
			}
		}
		t.Logf("all brokers killed at once %s, at %s: all restarted %s, every partition written %s, fully in sync %s (times since the kill)",
			when, killedAt.UTC().Format("15:04:05.000"), fmtDur(restarted), fmtDur(writes), fmtDur(healthy))
		if healthy < 0 {
			if last != nil {
				t.Logf("last GET /v1/cluster: %s", last)
			}
			t.Fatalf("the cluster did not recover within 90s of the crash of every broker (%s): %v", when, lastErr)
		}
		for _, p := range chaosPods {
			pids[p], _ = e.r.PID(ns, p, "broker")
		}
	}

	// First the whole cluster crashes, shortly after the topic was created (no Raft snapshot
	// yet: every broker rebuilds the metadata from the Raft log).
	if kills > 0 {
		crashAll("early")
		time.Sleep(2 * time.Second)
	}

	// Then SIGKILL one broker at a time, waiting until the cluster is whole again.
	for i := range kills {
		// A broker that restarted although this test did not kill it (a liveness probe, a crash,
		// or a process outside the test that signalled it) is worth knowing about.
		for _, p := range chaosPods {
			if cur, _ := e.r.PID(ns, p, "broker"); cur != pids[p] {
				t.Errorf("broker %s restarted on its own (pid %d, was %d): %s", p, cur, pids[p], e.lastTermination(p))
				pids[p] = cur
			}
		}
		pod := chaosPods[i%len(chaosPods)]
		idx := i % len(chaosPods)
		survivor := bases[(idx+1)%len(bases)]
		pid, ok := e.r.PID(ns, pod, "broker")
		if !ok {
			t.Fatalf("kill %d: no running broker process in pod %s", i+1, pod)
		}
		before, err := getView(survivor)
		if err != nil {
			t.Fatalf("kill %d: %v", i+1, err)
		}
		restarts := int32(-1)
		if p, err := e.cs.CoreV1().Pods(ns).Get(e.ctx, pod, metav1.GetOptions{}); err == nil && len(p.Status.ContainerStatuses) > 0 {
			restarts = p.Status.ContainerStatuses[0].RestartCount
		}
		rec := killRecord{n: i + 1, pod: pod, pid: pid, led: before.ledBy(chaosTopic, pod), ctl: before.Controller == pod,
			restarted: -1, podReady: -1, leaders: -1, writes: -1, healthy: -1}
		// Every other kill first freezes the broker (SIGSTOP) until the others have failed its
		// partitions over (or chaosFreeze): a broker that hangs, then dies, and comes back to a
		// cluster that moved on without it. The others die at once and restart before the
		// failure detector notices.
		freeze := i%2 == 1
		rec.freeze = freeze
		killedAt := time.Now()
		var last *clusterView
		var lastErr error
		if freeze {
			e.signal(pid, pod, syscall.SIGSTOP)
			waitStopped(pid)
			for time.Since(killedAt) < chaosFreeze {
				if v, err := getView(survivor); err == nil {
					last = v
					if v.leadersOK(chaosShape) && !v.ready(pod) {
						rec.leaders = time.Since(killedAt)
						t.Logf("kill %d: failed over while %s is frozen: %s", i+1, pod, v)
						break
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		e.signal(pid, pod, syscall.SIGKILL)
		deadline := killedAt.Add(90 * time.Second)
		for time.Now().Before(deadline) {
			now := time.Now()
			if rec.restarted < 0 {
				if p, ok := e.r.PID(ns, pod, "broker"); ok && p != pid {
					rec.restarted = now.Sub(killedAt)
				}
			}
			if rec.restarted >= 0 && rec.podReady < 0 {
				if p, err := e.cs.CoreV1().Pods(ns).Get(e.ctx, pod, metav1.GetOptions{}); err == nil &&
					len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].Ready && p.Status.ContainerStatuses[0].RestartCount > restarts {
					if np, ok := e.r.PID(ns, pod, "broker"); ok && np != pid {
						rec.podReady = now.Sub(killedAt)
					}
				}
			}
			v, err := getView(survivor)
			if err == nil {
				last = v
				if rec.leaders < 0 && v.leadersOK(chaosShape) {
					rec.leaders = now.Sub(killedAt)
				}
				if rec.podReady >= 0 {
					if lastErr = v.healthy(chaosShape, 3); lastErr == nil {
						rec.healthy = now.Sub(killedAt)
						break
					}
				}
			} else {
				lastErr = err
			}
			time.Sleep(200 * time.Millisecond)
		}
		if rec.writes < 0 {
			var latest time.Time
			for _, at := range led.firstAckAfter(killedAt) {
				if at.IsZero() {
					latest = time.Time{}
					break
				}
				latest = maxTime(latest, at)
			}
			if !latest.IsZero() {
				rec.writes = latest.Sub(killedAt)
			}
		}
		recs = append(recs, rec)
		pids[pod], _ = e.r.PID(ns, pod, "broker")
		how := "SIGKILL"
		if freeze {
			how = "SIGSTOP until failed over, then SIGKILL"
		}
		t.Logf("kill %d/%d at %s: %s of %s (pid %d; led partitions %v; controller %v): restarted %s, pod Ready %s, partitions led by ready members %s, every partition written %s, fully in sync %s (times since the %s)",
			rec.n, kills, killedAt.UTC().Format("15:04:05.000"), how, pod, pid, rec.led, rec.ctl, fmtDur(rec.restarted), fmtDur(rec.podReady), fmtDur(rec.leaders), fmtDur(rec.writes), fmtDur(rec.healthy), strings.ToLower(how[:7]))
		if rec.healthy < 0 {
			if last != nil {
				t.Logf("last GET /v1/cluster from %s: %s", survivor, last)
			}
			t.Fatalf("kill %d (%s): the cluster did not recover within 90s: %v", rec.n, pod, lastErr)
		}
	}

	// Last, the whole cluster crashes at once again, now that Raft has taken snapshots.
	if kills > 0 {
		crashAll("at the end")
	}

	// Keep the load a little longer, then stop it.
	time.Sleep(2 * time.Second)
	stopLoad()
	loadEnd := time.Now()
	led.mu.Lock()
	acked := make(map[string]ackedMsg, len(led.acked))
	for k, v := range led.acked {
		acked[k] = v
	}
	attempts := led.attempts
	failures, samples, batches := led.failures, led.samples, led.batches
	led.mu.Unlock()
	t.Logf("load: %d messages acknowledged in %s (%d publish requests); failed requests by class: %v",
		len(acked), loadEnd.Sub(loadStart).Round(100*time.Millisecond), batches, failures)
	for _, c := range slices.Sorted(maps.Keys(samples)) {
		t.Logf("  e.g. %s: %s", c, samples[c])
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged")
	}
	// The producers retry every failure, but a client following the API retries only 503s and
	// transport errors: any other answer would have made it drop the messages.
	for c, n := range failures {
		if !strings.HasPrefix(c, "transport:") && !strings.HasPrefix(c, "503 ") {
			t.Errorf("%d publish requests were answered %s (not retryable for a client) during the chaos, e.g. %s", n, c, samples[c])
		}
	}
	for p := range chaosPartitions {
		t.Logf("partition %d: longest stretch without an acknowledged publish during the chaos: %s",
			p, fmtDur(led.maxGap(p, loadStart, loadEnd)))
	}
	for _, freeze := range []bool{false, true} {
		n := 0
		var worstLeaders, worstWrites, worstHealthy time.Duration
		for _, r := range recs {
			if r.freeze == freeze {
				n++
				worstLeaders, worstWrites, worstHealthy = max(worstLeaders, r.leaders), max(worstWrites, r.writes), max(worstHealthy, r.healthy)
			}
		}
		how := "SIGKILL (quick restart)"
		if freeze {
			how = "SIGSTOP then SIGKILL (failover)"
		}
		if n > 0 {
			t.Logf("%d kills by %s; worst: partitions led by ready members %s, every partition written %s, fully in sync %s",
				n, how, fmtDur(worstLeaders), fmtDur(worstWrites), fmtDur(worstHealthy))
		}
	}

	// Every acknowledged message is pushed, the topic holds it, nothing twice per publish request.
	checkDelivery(t, deliveryCheck{base: bases[0], topic: chaosTopic, push: chaosPush, audit: chaosAudit,
		acked: acked, attempts: attempts, rc: rc, origin: loadStart})
	t.Logf("chaos test: %s in all", time.Since(began).Round(100*time.Millisecond))
}

// lastTermination describes how pod's broker container last ended (from the pod's status).
func (e *env) lastTermination(pod string) string {
	p, err := e.cs.CoreV1().Pods(ns).Get(e.ctx, pod, metav1.GetOptions{})
	if err != nil || len(p.Status.ContainerStatuses) == 0 {
		return fmt.Sprint(err)
	}
	st := p.Status.ContainerStatuses[0]
	if term := st.LastTerminationState.Terminated; term != nil {
		return fmt.Sprintf("restarts %d, last exit code %d signal %d at %s (%s)", st.RestartCount, term.ExitCode, term.Signal, term.FinishedAt.Format(time.RFC3339), term.Reason)
	}
	return fmt.Sprintf("restarts %d", st.RestartCount)
}

// waitStopped waits (a second at most) until process pid is stopped: a signal to a busy
// multi-threaded process takes effect a moment after kill(2) returns.
func waitStopped(pid int) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			time.Sleep(200 * time.Millisecond) // no /proc: give it a moment
			return
		}
		// pid (comm) state ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signal sends sig to the broker process pid of pod. A process that is gone already was killed by
// something else than this test: an error, but the test goes on (the runner restarts it).
func (e *env) signal(pid int, pod string, sig syscall.Signal) {
	e.t.Helper()
	err := syscall.Kill(pid, sig)
	switch {
	case errors.Is(err, syscall.ESRCH):
		e.t.Errorf("%s of broker %s (pid %d): the process is gone already, killed by something else than this test: %s", sig, pod, pid, e.lastTermination(pod))
	case err != nil:
		e.t.Fatalf("%s of broker %s (pid %d): %v", sig, pod, pid, err)
	}
}
