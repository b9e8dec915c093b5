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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/heraldmq/herald/test/cluster"
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

// clusterView is GET /v1/cluster.
type clusterView struct {
	Controller string `json:"controller"`
	Members    []struct {
		ID       string `json:"id"`
		Address  string `json:"address"`
		Ready    bool   `json:"ready"`
		Replicas int    `json:"replicas"`
		Leaders  int    `json:"leaders"`
	} `json:"members"`
	Partitions []struct {
		Topic           string           `json:"topic"`
		Partition       int              `json:"partition"`
		Leader          string           `json:"leader"`
		Epoch           uint64           `json:"epoch"`
		Replicas        []string         `json:"replicas"`
		InSync          []string         `json:"inSync"`
		EndOffset       *int64           `json:"endOffset"`
		HighWatermark   *int64           `json:"highWatermark"`
		Lag             map[string]int64 `json:"lag"`
		UnderReplicated bool             `json:"underReplicated"`
	} `json:"partitions"`
}

var viewClient = &http.Client{Timeout: 3 * time.Second}

func getView(base string) (*clusterView, error) {
	resp, err := viewClient.Get(base + "/v1/cluster")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/cluster: %s: %s", resp.Status, b)
	}
	var v clusterView
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("GET /v1/cluster: %v: %s", err, b)
	}
	return &v, nil
}

// membersOK: a controller and every member ready.
func (v *clusterView) membersOK(members int) error {
	if v.Controller == "" {
		return errors.New("no controller")
	}
	if len(v.Members) != members {
		return fmt.Errorf("%d members, want %d", len(v.Members), members)
	}
	for _, m := range v.Members {
		if !m.Ready {
			return fmt.Errorf("member %s not ready", m.ID)
		}
	}
	return nil
}

// healthy: a controller, every member ready, and every partition of the topic with a leader and
// all its replicas in sync.
func (v *clusterView) healthy(members int) error {
	if err := v.membersOK(members); err != nil {
		return err
	}
	n := 0
	for _, p := range v.Partitions {
		if p.Topic != chaosTopic {
			continue
		}
		n++
		if p.Leader == "" {
			return fmt.Errorf("partition %d has no leader", p.Partition)
		}
		if len(p.Replicas) != chaosRF {
			return fmt.Errorf("partition %d has %d replicas %v, want %d", p.Partition, len(p.Replicas), p.Replicas, chaosRF)
		}
		if len(p.InSync) != len(p.Replicas) {
			return fmt.Errorf("partition %d: in sync %v of %v (leader %s, epoch %d)", p.Partition, p.InSync, p.Replicas, p.Leader, p.Epoch)
		}
	}
	if n != chaosPartitions {
		return fmt.Errorf("%d partitions of topic %s, want %d", n, chaosTopic, chaosPartitions)
	}
	return nil
}

// ledBy lists the partitions of the topic that member id leads.
func (v *clusterView) ledBy(id string) []int {
	var out []int
	for _, p := range v.Partitions {
		if p.Topic == chaosTopic && p.Leader == id {
			out = append(out, p.Partition)
		}
	}
	return out
}

// leadersOK: every partition has a leader that is a ready member (a killed broker is not: the
// view asks every member's /readyz) and a quorum in sync.
func (v *clusterView) leadersOK() bool {
	ready := map[string]bool{}
	for _, m := range v.Members {
		ready[m.ID] = m.Ready
	}
	n := 0
	for _, p := range v.Partitions {
		if p.Topic != chaosTopic {
			continue
		}
		n++
		if p.Leader == "" || !ready[p.Leader] || len(p.InSync) < chaosRF/2+1 {
			return false
		}
	}
	return n == chaosPartitions
}

// ready says whether the view saw member id ready.
func (v *clusterView) ready(id string) bool {
	for _, m := range v.Members {
		if m.ID == id {
			return m.Ready
		}
	}
	return false
}

func (v *clusterView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "controller %q;", v.Controller)
	for _, m := range v.Members {
		fmt.Fprintf(&b, " %s(ready=%v leads %d)", m.ID, m.Ready, m.Leaders)
	}
	for _, p := range v.Partitions {
		hw, end := int64(-1), int64(-1)
		if p.HighWatermark != nil {
			hw = *p.HighWatermark
		}
		if p.EndOffset != nil {
			end = *p.EndOffset
		}
		fmt.Fprintf(&b, "; %s/%d leader %s epoch %d isr %v hw %d end %d", p.Topic, p.Partition, p.Leader, p.Epoch, p.InSync, hw, end)
	}
	return b.String()
}

// chaosReceiver is the push endpoint: deliveries per message (the body is the message's text),
// with the partition and offset each delivery said.
type chaosReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int
	at  map[string][2]int64 // id → partition, offset of its first delivery
	all int
}

func newChaosReceiver(t *testing.T) *chaosReceiver {
	rc := &chaosReceiver{got: map[string]int{}, at: map[string][2]int64{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad push", http.StatusBadRequest)
			return
		}
		id := string(b)
		p, _ := strconv.ParseInt(r.Header.Get("Herald-Partition"), 10, 64)
		o, _ := strconv.ParseInt(r.Header.Get("Herald-Offset"), 10, 64)
		rc.mu.Lock()
		if rc.got[id] == 0 {
			rc.at[id] = [2]int64{p, o}
		}
		rc.got[id]++
		rc.all++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// ackedMsg is where an acknowledged message went.
type ackedMsg struct {
	partition int
	offset    int64
	at        time.Time
}

// ledger is what the producers did.
type ledger struct {
	mu       sync.Mutex
	acked    map[string]ackedMsg
	attempts map[string]int // publish requests that carried the message (acknowledged or not)
	ackTimes [][]time.Time  // per partition, when a publish to it was acknowledged
	failures map[string]int // by error class
	samples  map[string]string
	batches  int
}

func newLedger() *ledger {
	return &ledger{acked: map[string]ackedMsg{}, attempts: map[string]int{}, ackTimes: make([][]time.Time, chaosPartitions),
		failures: map[string]int{}, samples: map[string]string{}}
}

// publishErr is a failed publish request; status 0 is a transport error (no answer).
type publishErr struct {
	status int
	msg    string
}

func (e *publishErr) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func (e *publishErr) class() string {
	if e.status == 0 {
		// Keep the class short: "connection refused", "EOF", "timeout".
		switch {
		case strings.Contains(e.msg, "refused"):
			return "transport: connection refused"
		case strings.Contains(e.msg, "Timeout") || strings.Contains(e.msg, "timeout"):
			return "transport: timeout"
		case strings.Contains(e.msg, "EOF") || strings.Contains(e.msg, "reset"):
			return "transport: connection closed"
		}
		return "transport: other"
	}
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(e.msg), &body)
	return fmt.Sprintf("%d %s", e.status, body.Error.Code)
}

var publishClient = &http.Client{Timeout: 25 * time.Second}

// publishBatch publishes texts with one key (so the batch goes to one partition).
func publishBatch(base, key string, texts []string) ([]ackedMsg, error) {
	msgs := make([]map[string]any, len(texts))
	for i, s := range texts {
		msgs[i] = map[string]any{"text": s, "key": key}
	}
	body, _ := json.Marshal(map[string]any{"messages": msgs})
	resp, err := publishClient.Post(base+"/v1/topics/"+chaosTopic+"/messages", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, &publishErr{msg: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &publishErr{msg: err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &publishErr{status: resp.StatusCode, msg: string(b)}
	}
	var res struct {
		Results []struct {
			Partition int   `json:"partition"`
			Offset    int64 `json:"offset"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &res); err != nil || len(res.Results) != len(texts) {
		return nil, &publishErr{status: resp.StatusCode, msg: fmt.Sprintf("bad answer (%v): %s", err, b)}
	}
	now := time.Now()
	out := make([]ackedMsg, len(texts))
	for i, r := range res.Results {
		out[i] = ackedMsg{partition: r.Partition, offset: r.Offset, at: now}
	}
	return out, nil
}

// produce publishes batches with unique ids until stop is closed, rotating over the brokers and
// retrying a failed batch (same ids) with backoff.
func (l *ledger) produce(g int, bases []string, stop <-chan struct{}) {
	next := g
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		key := fmt.Sprintf("k%d-%d", g, seq)
		texts := make([]string, chaosBatch)
		for i := range texts {
			texts[i] = fmt.Sprintf("m%d-%06d-%d", g, seq, i)
		}
		backoff := 50 * time.Millisecond
		for {
			base := bases[next%len(bases)]
			next++
			res, err := publishBatch(base, key, texts)
			l.mu.Lock()
			l.batches++
			for _, s := range texts {
				l.attempts[s]++
			}
			if err == nil {
				now := time.Now() // under the lock: ackTimes stay sorted
				for i, s := range texts {
					res[i].at = now
					l.acked[s] = res[i]
				}
				p := res[0].partition
				if p >= 0 && p < len(l.ackTimes) {
					l.ackTimes[p] = append(l.ackTimes[p], now)
				}
			} else {
				c := err.(*publishErr).class()
				l.failures[c]++
				if _, ok := l.samples[c]; !ok {
					l.samples[c] = fmt.Sprintf("%s: %.300s", base, err)
				}
			}
			l.mu.Unlock()
			if err == nil {
				break
			}
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstAckAfter is, per partition, the first acknowledgement at or after t (zero if none).
func (l *ledger) firstAckAfter(t time.Time) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]time.Time, len(l.ackTimes))
	for p, ts := range l.ackTimes {
		i := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(t) })
		if i < len(ts) {
			out[p] = ts[i]
		}
	}
	return out
}

// maxGap is the longest time, between from and to, during which partition p had no acknowledged
// publish.
func (l *ledger) maxGap(p int, from, to time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, gap := from, time.Duration(0)
	for _, ts := range l.ackTimes[p] {
		if ts.Before(from) || ts.After(to) {
			continue
		}
		gap = max(gap, ts.Sub(prev))
		prev = ts
	}
	return max(gap, to.Sub(prev))
}

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

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
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
		t.Cleanup(func() { e.keepLogs(dir) })
	}

	step := time.Now()
	if _, err := e.run(3*time.Minute, e.helm, "install", "herald", filepath.Join(root, "charts", "herald"),
		"--namespace", operatorNS, "--create-namespace", "--wait", "--timeout", "150s",
		"--set", "extraArgs={--resync-interval=2s}"); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install --wait: %s", time.Since(step).Round(100*time.Millisecond))
	if err := cluster.CreateNamespace(e.ctx, e.cs, ns); err != nil {
		t.Fatal(err)
	}

	// The brokers first, and the Topic once all three are members: the topic's placement needs
	// three brokers.
	step = time.Now()
	brokers := filepath.Join(e.dir, "chaos-brokers.yaml")
	if err := os.WriteFile(brokers, []byte(chaosBrokerManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustK("apply", "-n", ns, "-f", brokers)
	eventually(t, 180*time.Second, "BrokerCluster chaos: 3 ready brokers", func() error {
		if r, err := e.jsonpath("brokercluster", chaosBC, ".status.readyReplicas"); err != nil || r != "3" {
			return fmt.Errorf("readyReplicas %q (%v)", r, err)
		}
		return nil
	})
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
	rc := newChaosReceiver(t)
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
		return view.healthy(3)
	})
	t.Logf("Topic and Subscriptions Ready: %s; %s", time.Since(step).Round(100*time.Millisecond), view)

	// Load.
	led := newLedger()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range chaosProducers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			led.produce(g, bases, stop)
		}()
	}
	var stopOnce sync.Once
	stopLoad := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	t.Cleanup(stopLoad)
	loadStart := time.Now()
	t.Logf("load started at %s (the +times below count from here)", loadStart.UTC().Format("15:04:05.000"))
	eventually(t, 30*time.Second, "publishes acknowledged on every partition", func() error {
		for p, at := range led.firstAckAfter(loadStart) {
			if at.IsZero() {
				return fmt.Errorf("none on partition %d yet", p)
			}
		}
		return nil
	})
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
				} else if last, lastErr = v, v.healthy(3); lastErr == nil {
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
		rec := killRecord{n: i + 1, pod: pod, pid: pid, led: before.ledBy(pod), ctl: before.Controller == pod,
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
					if v.leadersOK() && !v.ready(pod) {
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
				if rec.leaders < 0 && v.leadersOK() {
					rec.leaders = now.Sub(killedAt)
				}
				if rec.podReady >= 0 {
					if lastErr = v.healthy(3); lastErr == nil {
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

	// Every acknowledged message is pushed, and the push Subscription's backlog drains.
	step = time.Now()
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	missing := func() []string {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		var out []string
		for _, id := range ids {
			if rc.got[id] == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	var backlog int64 = -1
	drainErr := within(2*time.Minute, func() error {
		var s struct {
			Stats struct {
				Backlog  int64 `json:"backlog"`
				InFlight int64 `json:"inFlight"`
			} `json:"stats"`
		}
		if err := call(http.MethodGet, bases[0]+"/v1/subscriptions/"+chaosPush, nil, &s); err != nil {
			return err
		}
		backlog = s.Stats.Backlog
		m := missing()
		if len(m) > 0 || backlog != 0 {
			return fmt.Errorf("%d acknowledged messages not pushed yet (e.g. %v), backlog %d, in flight %d", len(m), m[:min(3, len(m))], backlog, s.Stats.InFlight)
		}
		return nil
	})
	lost := missing()
	t.Logf("push drained in %s (backlog %d): %v", time.Since(step).Round(100*time.Millisecond), backlog, drainErr)

	// Two acknowledged messages with the same partition and offset: the log was cut back below
	// an acknowledged offset and written again.
	byOffset := map[[2]int64][]string{}
	for _, id := range ids {
		a := acked[id]
		k := [2]int64{int64(a.partition), a.offset}
		byOffset[k] = append(byOffset[k], id)
	}
	var reused []string
	for k, list := range byOffset {
		if len(list) > 1 {
			sort.Slice(list, func(i, j int) bool { return acked[list[i]].at.Before(acked[list[j]].at) })
			var b strings.Builder
			fmt.Fprintf(&b, "%d/%d:", k[0], k[1])
			for _, id := range list {
				fmt.Fprintf(&b, " %s (acknowledged at +%s)", id, acked[id].at.Sub(loadStart).Round(10*time.Millisecond))
			}
			reused = append(reused, b.String())
		}
	}
	if len(reused) > 0 {
		slices.Sort(reused)
		t.Errorf("LOST: %d offsets were acknowledged for two different messages (the partition log was cut back below acknowledged offsets and rewritten), e.g.\n  %s",
			len(reused), strings.Join(reused[:min(10, len(reused))], "\n  "))
	}

	// What the topic holds: drain the audit Subscription.
	audit, auditErr := drainAudit(bases[0])
	inTopic := map[string]int{}
	at := map[[2]int64]string{}
	where := map[string][]string{}
	for _, m := range audit {
		inTopic[m.text]++
		at[[2]int64{int64(m.partition), m.offset}] = m.text
		where[m.text] = append(where[m.text], fmt.Sprintf("%d/%d", m.partition, m.offset))
	}
	t.Logf("audit: %d messages read from the topic (%v)", len(audit), auditErr)

	// Lost: acknowledged, never pushed.
	if len(lost) > 0 {
		var b strings.Builder
		for _, id := range lost[:min(20, len(lost))] {
			a := acked[id]
			fmt.Fprintf(&b, "\n  %s: acknowledged at partition %d offset %d at +%s; in the topic %d times; offset now holds %q",
				id, a.partition, a.offset, a.at.Sub(loadStart).Round(10*time.Millisecond), inTopic[id], at[[2]int64{int64(a.partition), a.offset}])
		}
		t.Errorf("LOST: %d of %d acknowledged messages were never pushed:%s", len(lost), len(acked), b.String())
	}

	// Duplicates, as the push endpoint saw them.
	rc.mu.Lock()
	dupIDs, extra, delivered := 0, 0, 0
	for _, n := range rc.got {
		delivered++
		if n > 1 {
			dupIDs++
			extra += n - 1
		}
	}
	all := rc.all
	rc.mu.Unlock()
	pct := func(a, b int) float64 {
		if b == 0 {
			return 0
		}
		return 100 * float64(a) / float64(b)
	}
	t.Logf("push: %d deliveries of %d distinct messages (%d acknowledged); %d messages delivered more than once (%.2f%%), %d extra deliveries (%.2f%% of all deliveries)",
		all, delivered, len(acked), dupIDs, pct(dupIDs, delivered), extra, pct(extra, all))

	// The topic: every acknowledged message is there, at the offset its publish was given, and
	// at most once per publish request that carried it.
	if auditErr != nil {
		t.Errorf("reading the topic back: %v", auditErr)
	}
	var notInTopic, moved, tooMany []string
	exactlyOnce, retried := 0, 0
	for _, id := range ids {
		a := acked[id]
		switch n := inTopic[id]; {
		case n == 0:
			notInTopic = append(notInTopic, id)
		case n > attempts[id]:
			tooMany = append(tooMany, fmt.Sprintf("%s (%d times: at %v; %d publish requests, acknowledged at %d/%d at +%s)",
				id, n, where[id], attempts[id], a.partition, a.offset, a.at.Sub(loadStart).Round(10*time.Millisecond)))
		case n == 1 && attempts[id] == 1:
			exactlyOnce++
		default:
			retried++
		}
		if got := at[[2]int64{int64(a.partition), a.offset}]; auditErr == nil && got != id {
			moved = append(moved, fmt.Sprintf("%s: acknowledged at %d/%d, which holds %q", id, a.partition, a.offset, got))
		}
	}
	unackedInTopic := 0
	for id, n := range inTopic {
		if _, ok := acked[id]; !ok {
			unackedInTopic += n
		}
		if n > attempts[id] {
			if _, ok := acked[id]; !ok {
				tooMany = append(tooMany, fmt.Sprintf("%s (not acknowledged; %d times, %d publish requests)", id, n, attempts[id]))
			}
		}
	}
	t.Logf("topic: %d acknowledged messages exactly once (one publish request), %d published more than once (retries) and present; %d copies of messages whose publish failed",
		exactlyOnce, retried, unackedInTopic)
	if len(notInTopic) > 0 && auditErr == nil {
		t.Errorf("LOST: %d acknowledged messages are not in the topic, e.g. %v", len(notInTopic), notInTopic[:min(10, len(notInTopic))])
	}
	if len(moved) > 0 {
		t.Errorf("%d acknowledged offsets hold another message (an acknowledged write was truncated), e.g.\n  %s", len(moved), strings.Join(moved[:min(10, len(moved))], "\n  "))
	}
	if len(tooMany) > 0 {
		t.Errorf("%d messages are in the topic more often than they were published (a broker retried a write that had been done), e.g.\n  %s",
			len(tooMany), strings.Join(tooMany[:min(10, len(tooMany))], "\n  "))
	}
	if drainErr != nil && len(lost) == 0 {
		t.Errorf("the push Subscription did not drain: %v", drainErr)
	}
	t.Logf("chaos test: %s in all", time.Since(began).Round(100*time.Millisecond))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type auditMsg struct {
	text      string
	partition int
	offset    int64
}

// drainAudit reads the whole topic through the audit Subscription (leases are long; nothing is
// acked): until the topic's message count is reached and a pull comes back empty.
func drainAudit(base string) ([]auditMsg, error) {
	var topic struct {
		Stats struct {
			Messages   int64 `json:"messages"`
			Partitions []struct {
				Partition   int   `json:"partition"`
				StartOffset int64 `json:"startOffset"`
				EndOffset   int64 `json:"endOffset"`
			} `json:"partitions"`
		} `json:"stats"`
	}
	if err := call(http.MethodGet, base+"/v1/topics/"+chaosTopic, nil, &topic); err != nil {
		return nil, err
	}
	var out []auditMsg
	seen := map[[2]int64]bool{}
	deadline := time.Now().Add(90 * time.Second)
	empty := 0
	for time.Now().Before(deadline) {
		var res struct {
			Messages []struct {
				Partition int    `json:"partition"`
				Offset    int64  `json:"offset"`
				Data      []byte `json:"data"`
			} `json:"messages"`
		}
		if err := call(http.MethodPost, base+"/v1/subscriptions/"+chaosAudit+"/pull", map[string]any{"max": 1000, "wait": "1s", "visibility": "600s"}, &res); err != nil {
			time.Sleep(250 * time.Millisecond)
			continue
		}
		for _, m := range res.Messages {
			k := [2]int64{int64(m.Partition), m.Offset}
			if seen[k] {
				continue // a redelivery
			}
			seen[k] = true
			out = append(out, auditMsg{text: string(m.Data), partition: m.Partition, offset: m.Offset})
		}
		if len(res.Messages) == 0 {
			empty++
			if int64(len(out)) >= topic.Stats.Messages && empty >= 2 {
				return out, nil
			}
			if empty >= 5 {
				return out, fmt.Errorf("read %d messages, the topic has %d (%+v)", len(out), topic.Stats.Messages, topic.Stats.Partitions)
			}
		} else {
			empty = 0
		}
	}
	return out, fmt.Errorf("read %d messages of %d in 90s", len(out), topic.Stats.Messages)
}

// keepLogs copies the brokers' logs (every run of every container) and the cluster's state to
// dir.
func (e *env) keepLogs(dir string) {
	logs, _ := filepath.Glob(filepath.Join(e.r.StateDir(), "pods", "*", "*", "logs", "*", "*.log"))
	for _, f := range logs {
		rel, err := filepath.Rel(filepath.Join(e.r.StateDir(), "pods"), f)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		dst := filepath.Join(dir, rel)
		_ = os.MkdirAll(filepath.Dir(dst), 0o755)
		_ = os.WriteFile(dst, b, 0o644)
	}
	for _, p := range chaosPods {
		if ip, err := e.jsonpath("pod", p, ".status.podIP"); err == nil && ip != "" {
			if v, err := getView("http://" + ip + ":8080"); err == nil {
				b, _ := json.MarshalIndent(v, "", "  ")
				_ = os.WriteFile(filepath.Join(dir, "cluster-"+p+".json"), b, 0o644)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.dir, "podrunner.log")); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "podrunner.log"), b, 0o644)
	}
	e.t.Logf("logs kept in %s", dir)
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
