package e2e_test

// The scale test: a replicated BrokerCluster scaled 3 → 5 → 3 under load, with no acknowledged
// message lost and the BrokerCluster's status showing the drain.
//
// A BrokerCluster of 3 brokers (persistent volumes, fsync always), a Topic with 6 partitions and
// replicationFactor 3 (which does not block the way back to 3 brokers) and a pull Subscription.
// Producers publish batches of unique ids and consumers pull and ack, both through whichever
// broker pods are Ready and not terminating at the moment (what the client Service would send
// them to); a failed publish is retried with the same ids, and the ids the brokers acknowledged
// are recorded. Then:
//
//  1. spec.replicas 3 → 5: wait until 5 pods are Ready, GET /v1/cluster lists 5 ready members,
//     and the brokers moved replicas onto the new ones (every member within one replica of the
//     others, every partition with 3 in-sync copies);
//  2. spec.replicas 5 → 3: the operator drains scale-3 and scale-4, removes them from the
//     cluster, and only then shrinks the StatefulSet. The test watches the BrokerCluster's
//     status meanwhile (status.drain, condition Progressing with reason Draining) and requires
//     it seen at least once, and the members gone from GET /v1/cluster before the StatefulSet
//     shrank; it waits until the StatefulSet has 3 pods, GET /v1/cluster lists 3 members and
//     every partition has 3 in-sync copies (a drain whose replica placement stops changing for
//     a minute fails at once, with the placement);
//  3. the load stops: every acknowledged message must have been pulled at least once
//     (duplicates are logged), no two acknowledged messages got the same partition and offset,
//     the Subscription's backlog drains to 0, no partition is under-replicated (on every
//     broker, and in the Topic's status), and no broker that stays restarted.
//
// The timings of each phase are logged, every change of the BrokerCluster's status (with the
// StatefulSet's size and the cluster's members) as the test saw it, the failed requests by
// kind and pod, and the delivery latency (publish acknowledged → first pulled).
//
// Knobs (environment): HERALD_SCALE_LOGS (a folder the brokers' and the operator's logs, the pod
// runner's log and each broker's GET /v1/cluster are copied to at the end). Skipped with -short.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
)

const (
	scaleBC         = "scale"
	scaleTopic      = "scale"
	scaleSub        = "scale-pull"
	scalePartitions = 6
	scaleRF         = 3
	scaleProducers  = 2
	scaleConsumers  = 2
	scaleBatch      = 5
)

func scalePod(i int) string { return fmt.Sprintf("%s-%d", scaleBC, i) }

const scaleBrokerManifest = `apiVersion: herald.dev/v1alpha1
kind: BrokerCluster
metadata:
  name: scale
spec:
  replicas: 3
  storage:
    size: 256Mi
  config:
    fsync: always
`

// The Topic and the pull Subscription (short retry backoffs: a lease that expires, or that was
// lost with a moved leadership, comes back quickly).
const scaleTopicManifest = `apiVersion: herald.dev/v1alpha1
kind: Topic
metadata:
  name: scale
spec:
  clusterRef:
    name: scale
  partitions: 6
  replicationFactor: 3
---
apiVersion: herald.dev/v1alpha1
kind: Subscription
metadata:
  name: scale-pull
spec:
  clusterRef:
    name: scale
  topic: scale
  startAt: earliest
  ackDeadline: 30s
  retry:
    policy: exponential
    minBackoff: 100ms
    maxBackoff: 1s
`

// scaleView is GET /v1/cluster, with the checks of this test.
type scaleView api.Cluster

// scaleBrokers are the broker clients of getScaleView, by base URL.
var scaleBrokers sync.Map // string → *brokerclient.Client

func getScaleView(base string) (*scaleView, error) {
	c, ok := scaleBrokers.Load(base)
	if !ok {
		bc, err := brokerclient.New(base, brokerclient.WithTimeout(5*time.Second))
		if err != nil {
			return nil, err
		}
		c, _ = scaleBrokers.LoadOrStore(base, bc)
	}
	v, err := c.(*brokerclient.Client).Cluster(context.Background())
	if err != nil {
		return nil, fmt.Errorf("GET /v1/cluster: %w", err)
	}
	sv := scaleView(v)
	return &sv, nil
}

func (v *scaleView) memberIDs() []string {
	out := make([]string, 0, len(v.Members))
	for _, m := range v.Members {
		out = append(out, m.ID)
	}
	return out
}

// whole: a controller; exactly the members scale-0 … scale-(n-1), each ready and not draining;
// the topic's partitions each with a leader among its scaleRF replicas, all in sync; and no
// under-replicated partition of any topic.
func (v *scaleView) whole(n int) error {
	if v.Controller == "" {
		return fmt.Errorf("no controller")
	}
	var want []string
	for i := range n {
		want = append(want, scalePod(i))
	}
	if got := v.memberIDs(); !slices.Equal(got, want) {
		return fmt.Errorf("members %v, want %v", got, want)
	}
	for _, m := range v.Members {
		if !m.Ready || m.Draining || m.Leaving {
			return fmt.Errorf("member %s: ready %v, draining %v, leaving %v", m.ID, m.Ready, m.Draining, m.Leaving)
		}
	}
	parts := 0
	for _, p := range v.Partitions {
		if p.UnderReplicated || len(p.InSync) != len(p.Replicas) {
			return fmt.Errorf("%s/%d under-replicated: in sync %v of %v (leader %s)", p.Topic, p.Partition, p.InSync, p.Replicas, p.Leader)
		}
		if p.Topic != scaleTopic {
			continue
		}
		parts++
		if len(p.Replicas) != scaleRF {
			return fmt.Errorf("partition %d has replicas %v, want %d", p.Partition, p.Replicas, scaleRF)
		}
		if p.Leader == "" || !slices.Contains(p.Replicas, p.Leader) {
			return fmt.Errorf("partition %d: leader %q, replicas %v", p.Partition, p.Leader, p.Replicas)
		}
		for _, id := range p.Replicas {
			if !slices.Contains(want, id) {
				return fmt.Errorf("partition %d has a replica on %s, not a member that stays (replicas %v)", p.Partition, id, p.Replicas)
			}
		}
	}
	if parts != scalePartitions {
		return fmt.Errorf("%d partitions of topic %s, want %d", parts, scaleTopic, scalePartitions)
	}
	return nil
}

// balanced: every member holds replicas, within one of each other.
func (v *scaleView) balanced() error {
	lo, hi := 1<<30, 0
	for _, m := range v.Members {
		lo, hi = min(lo, m.Replicas), max(hi, m.Replicas)
	}
	if lo == 0 || hi-lo > 1 {
		return fmt.Errorf("not rebalanced: %s", v.spread())
	}
	return nil
}

// spread says how many replicas (and leaderships) each member holds.
func (v *scaleView) spread() string {
	var b []string
	for _, m := range v.Members {
		s := fmt.Sprintf("%s %d replicas/%d leaders", m.ID, m.Replicas, m.Leaders)
		if m.Draining {
			s += " draining"
		}
		if m.Drained {
			s += " drained"
		}
		b = append(b, s)
	}
	return strings.Join(b, ", ")
}

func (v *scaleView) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "controller %q; %s", v.Controller, v.spread())
	for _, p := range v.Partitions {
		fmt.Fprintf(&b, "; %s/%d leader %s epoch %d replicas %v isr %v", p.Topic, p.Partition, p.Leader, p.Epoch, p.Replicas, p.InSync)
	}
	return b.String()
}

var scaleClient = &http.Client{Timeout: 25 * time.Second}

// scalePost POSTs in as JSON and decodes a 200 answer into out.
func scalePost(url string, in, out any) *publishErr {
	body, _ := json.Marshal(in)
	resp, err := scaleClient.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return &publishErr{msg: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return &publishErr{msg: err.Error()}
	}
	if resp.StatusCode != http.StatusOK {
		return &publishErr{status: resp.StatusCode, msg: string(b)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return &publishErr{status: resp.StatusCode, msg: fmt.Sprintf("bad answer (%v): %s", err, b)}
	}
	return nil
}

// scaleFailures counts failed requests by class, with the pods that gave them and a sample.
type scaleFailures struct {
	count   map[string]int
	pods    map[string]map[string]int
	samples map[string]string
}

func newScaleFailures() scaleFailures {
	return scaleFailures{count: map[string]int{}, pods: map[string]map[string]int{}, samples: map[string]string{}}
}

func (f scaleFailures) add(err *publishErr, pod string, since time.Duration) {
	c := err.class()
	f.count[c]++
	if f.pods[c] == nil {
		f.pods[c] = map[string]int{}
	}
	f.pods[c][pod]++
	if _, ok := f.samples[c]; !ok {
		f.samples[c] = fmt.Sprintf("%s at +%s: %.300s", pod, since.Round(10*time.Millisecond), err)
	}
}

func (f scaleFailures) log(t *testing.T, what string) {
	for _, c := range slices.Sorted(maps.Keys(f.count)) {
		t.Logf("  %s failed %d times with %s (by pod %v), first: %s", what, f.count[c], c, f.pods[c], f.samples[c])
	}
}

// scaleAck is where an acknowledged message went.
type scaleAck struct {
	partition int
	offset    int64
	at        time.Time
}

// scaleLedger is what the producers did.
type scaleLedger struct {
	start    time.Time
	mu       sync.Mutex
	acked    map[string]scaleAck
	perPart  [scalePartitions]int
	requests int
	failures scaleFailures
}

// produce publishes batches of unique ids (one key per batch) until stop is closed, through the
// endpoints in turn, retrying a failed batch (same ids) with backoff.
func (l *scaleLedger) produce(g int, eps *endpoints, stop <-chan struct{}) {
	next := g
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		texts := make([]string, scaleBatch)
		msgs := make([]map[string]any, scaleBatch)
		key := fmt.Sprintf("k%d-%d", g, seq)
		for i := range texts {
			texts[i] = fmt.Sprintf("s%d-%06d-%d", g, seq, i)
			msgs[i] = map[string]any{"text": texts[i], "key": key}
		}
		backoff := 50 * time.Millisecond
		for {
			pod, base := eps.pick(next)
			next++
			var res struct {
				Results []struct {
					Partition int   `json:"partition"`
					Offset    int64 `json:"offset"`
				} `json:"results"`
			}
			err := scalePost(base+"/v1/topics/"+scaleTopic+"/messages", map[string]any{"messages": msgs}, &res)
			if err == nil && len(res.Results) != len(texts) {
				err = &publishErr{status: http.StatusOK, msg: fmt.Sprintf("%d results for %d messages", len(res.Results), len(texts))}
			}
			now := time.Now()
			l.mu.Lock()
			l.requests++
			if err == nil {
				for i, s := range texts {
					r := res.Results[i]
					l.acked[s] = scaleAck{partition: r.Partition, offset: r.Offset, at: now}
					if r.Partition >= 0 && r.Partition < scalePartitions {
						l.perPart[r.Partition]++
					}
				}
			} else {
				l.failures.add(err, pod, now.Sub(l.start))
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

func (l *scaleLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// scaleDelivery is the first delivery of a message.
type scaleDelivery struct {
	at        time.Time
	attempt   int
	partition int
	offset    int64
	pod       string
}

// scaleConsumer pulls and acks, counting deliveries per message.
type scaleConsumer struct {
	start      time.Time
	mu         sync.Mutex
	got        map[string]int
	first      map[string]scaleDelivery
	deliveries int
	redelivery int // deliveries with deliveryAttempt > 1
	acked      int
	invalid    int // receipt handles the brokers did not take
	ackLost    int // batches of handles no broker took (they come back)
	failures   scaleFailures
}

func (c *scaleConsumer) consume(g int, eps *endpoints, stop <-chan struct{}) {
	for n := g; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		pod, base := eps.pick(n)
		var res struct {
			Messages []struct {
				ReceiptHandle   string `json:"receiptHandle"`
				Partition       int    `json:"partition"`
				Offset          int64  `json:"offset"`
				Data            []byte `json:"data"`
				DeliveryAttempt int    `json:"deliveryAttempt"`
			} `json:"messages"`
		}
		if err := scalePost(base+"/v1/subscriptions/"+scaleSub+"/pull", map[string]any{"max": 200, "wait": "1s", "visibility": "15s"}, &res); err != nil {
			c.mu.Lock()
			c.failures.add(err, pod, time.Since(c.start))
			c.mu.Unlock()
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if len(res.Messages) == 0 {
			continue
		}
		handles := make([]string, 0, len(res.Messages))
		now := time.Now()
		c.mu.Lock()
		for _, m := range res.Messages {
			if c.got[string(m.Data)] == 0 {
				c.first[string(m.Data)] = scaleDelivery{at: now, attempt: m.DeliveryAttempt, partition: m.Partition, offset: m.Offset, pod: pod}
			}
			c.got[string(m.Data)]++
			c.deliveries++
			if m.DeliveryAttempt > 1 {
				c.redelivery++
			}
			handles = append(handles, m.ReceiptHandle)
		}
		c.mu.Unlock()
		ok := false
		for try := range 3 {
			apod, abase := eps.pick(n + try)
			var ack struct {
				Acked   int      `json:"acked"`
				Invalid []string `json:"invalid"`
			}
			err := scalePost(abase+"/v1/subscriptions/"+scaleSub+"/ack", map[string]any{"receiptHandles": handles}, &ack)
			c.mu.Lock()
			if err == nil {
				c.acked += ack.Acked
				c.invalid += len(ack.Invalid)
			} else {
				c.failures.add(&publishErr{status: err.status, msg: "ack: " + err.msg}, apod, time.Since(c.start))
			}
			c.mu.Unlock()
			if err == nil {
				ok = true
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !ok {
			c.mu.Lock()
			c.ackLost++
			c.mu.Unlock()
		}
	}
}

// scaleSample is what the status watch saw once.
type scaleSample struct {
	at          time.Time
	stsSpec     int32 // -1: unknown
	stsReplicas int32
	ready       int32
	phase       string
	drain       *heraldv1.DrainStatus
	progressing *metav1.Condition
	degraded    *metav1.Condition
	members     []string // from GET /v1/cluster on scale-0; nil when that failed
	viewErr     string
}

func (s *scaleSample) draining() bool {
	p := s.progressing
	return p != nil && p.Status == metav1.ConditionTrue && p.Reason == "Draining"
}

func (s *scaleSample) summary() string {
	cond := func(c *metav1.Condition) string {
		if c == nil {
			return "-"
		}
		return fmt.Sprintf("%s/%s %q", c.Status, c.Reason, c.Message)
	}
	drain := "none"
	if d := s.drain; d != nil {
		drain = fmt.Sprintf("{members %v, replicasRemaining %d, blockedReason %q}", d.Members, d.ReplicasRemaining, d.BlockedReason)
	}
	members := fmt.Sprint(s.members)
	if s.members == nil {
		members = "? (" + s.viewErr + ")"
	}
	return fmt.Sprintf("StatefulSet %d (%d pods), %d ready, phase %s, status.drain %s, Progressing %s, Degraded %s; cluster members %s",
		s.stsSpec, s.stsReplicas, s.ready, s.phase, drain, cond(s.progressing), cond(s.degraded), members)
}

// scaleWatch samples the BrokerCluster's status, its StatefulSet and the cluster's members
// every 300ms, and logs every change.
type scaleWatch struct {
	mu      sync.Mutex
	samples []scaleSample
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func watchScale(e *env, crc client.Client, viewBase string, origin time.Time) *scaleWatch {
	w := &scaleWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		last := ""
		for {
			s := scaleSample{at: time.Now(), stsSpec: -1}
			bc := &heraldv1.BrokerCluster{}
			if err := crc.Get(e.ctx, client.ObjectKey{Namespace: ns, Name: scaleBC}, bc); err == nil {
				s.ready, s.phase, s.drain = bc.Status.ReadyReplicas, string(bc.Status.Phase), bc.Status.Drain.DeepCopy()
				s.progressing = meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionProgressing)
				s.degraded = meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionDegraded)
			}
			if sts, err := e.cs.AppsV1().StatefulSets(ns).Get(e.ctx, scaleBC, metav1.GetOptions{}); err == nil {
				if sts.Spec.Replicas != nil {
					s.stsSpec = *sts.Spec.Replicas
				}
				s.stsReplicas = sts.Status.Replicas
			}
			if v, err := getScaleView(viewBase); err == nil {
				s.members = v.memberIDs()
			} else {
				s.viewErr = err.Error()
			}
			w.mu.Lock()
			w.samples = append(w.samples, s)
			w.mu.Unlock()
			if sum := s.summary(); sum != last {
				e.t.Logf("[status +%s] %s", s.at.Sub(origin).Round(10*time.Millisecond), sum)
				last = sum
			}
			select {
			case <-w.done:
				return
			case <-e.ctx.Done():
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *scaleWatch) stop() {
	w.once.Do(func() { close(w.done) })
	<-w.stopped
}

// since returns the samples taken at or after t.
func (w *scaleWatch) since(t time.Time) []scaleSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []scaleSample
	for _, s := range w.samples {
		if !s.at.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

func scaleDur(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

// TestScale scales a replicated BrokerCluster 3 → 5 → 3 under load and checks that no
// acknowledged message is lost and that the status shows the drain.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("the scale test takes minutes; skipped with -short")
	}
	began := time.Now()
	e := startWithin(t, 12*time.Minute)
	t.Logf("cluster up in %s", scaleDur(time.Since(began)))
	if dir := os.Getenv("HERALD_SCALE_LOGS"); dir != "" {
		t.Cleanup(func() { e.keepLogs(dir, []string{scalePod(0), scalePod(1), scalePod(2), scalePod(3), scalePod(4)}) })
	}
	crc := e.heraldClient()

	// Three brokers, then the Topic once they are one cluster (its placement needs three).
	e.installWithBrokers(t, scaleBC, scaleBrokerManifest)
	step := time.Now()
	// scale-0 stays throughout: the test asks it for the cluster's state.
	base0 := "http://" + e.podIP(scalePod(0)) + ":8080"
	eventually(t, 60*time.Second, "3 cluster members", func() error {
		v, err := getScaleView(base0)
		if err != nil {
			return err
		}
		if len(v.Members) != 3 {
			return fmt.Errorf("members %v", v.memberIDs())
		}
		return nil
	})
	t.Logf("3 brokers Ready, one cluster: %s", scaleDur(time.Since(step)))

	step = time.Now()
	topics := filepath.Join(e.dir, "scale-topic.yaml")
	if err := os.WriteFile(topics, []byte(scaleTopicManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustK("apply", "-n", ns, "-f", topics)
	e.waitReady("topic", scaleTopic, 90*time.Second)
	e.waitReady("subscription", scaleSub, 90*time.Second)
	var view *scaleView
	eventually(t, 60*time.Second, "topic placed with 3 in-sync replicas per partition", func() error {
		var err error
		if view, err = getScaleView(base0); err != nil {
			return err
		}
		return view.whole(3)
	})
	t.Logf("Topic and Subscription Ready: %s; %s", scaleDur(time.Since(step)), view.spread())

	// The load: producers and consumers through the Ready pods.
	eps := &endpoints{instance: scaleBC}
	if err := eps.refresh(e); err != nil {
		t.Fatal(err)
	}
	loadStart := time.Now()
	led := &scaleLedger{start: loadStart, acked: map[string]scaleAck{}, failures: newScaleFailures()}
	con := &scaleConsumer{start: loadStart, got: map[string]int{}, first: map[string]scaleDelivery{}, failures: newScaleFailures()}
	stopProduce, stopConsume := make(chan struct{}), make(chan struct{})
	var producers, consumers sync.WaitGroup
	stopRefresh := eps.follow(e)
	for g := range scaleProducers {
		producers.Add(1)
		go func() {
			defer producers.Done()
			led.produce(g, eps, stopProduce)
		}()
	}
	for g := range scaleConsumers {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			con.consume(g, eps, stopConsume)
		}()
	}
	var onceP, onceC sync.Once
	stopProducers := func() { onceP.Do(func() { close(stopProduce) }); producers.Wait() }
	stopConsumers := func() { onceC.Do(func() { close(stopConsume) }); consumers.Wait() }
	t.Cleanup(func() { stopProducers(); stopConsumers(); stopRefresh() })
	t.Logf("load started at %s (the +times below count from here)", loadStart.UTC().Format("15:04:05.000"))
	watch := watchScale(e, crc, base0, loadStart)
	t.Cleanup(watch.stop)
	eventually(t, 30*time.Second, "publishes acknowledged on every partition", func() error {
		led.mu.Lock()
		defer led.mu.Unlock()
		for p, n := range led.perPart {
			if n == 0 {
				return fmt.Errorf("none on partition %d yet", p)
			}
		}
		return nil
	})
	time.Sleep(8 * time.Second) // some data for the new brokers to copy
	t.Logf("steady load with 3 brokers: %d messages acknowledged in %s", led.count(), scaleDur(time.Since(loadStart)))

	scaleTo := func(n int) {
		e.mustK("patch", "-n", ns, "brokercluster", scaleBC, "--type=merge", "-p", fmt.Sprintf(`{"spec":{"replicas":%d}}`, n))
	}
	listPods := func() (ready, all []string, err error) {
		pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + scaleBC})
		if err != nil {
			return nil, nil, err
		}
		for _, p := range pods.Items {
			all = append(all, p.Name)
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p.Name)
			}
		}
		slices.Sort(ready)
		slices.Sort(all)
		return ready, all, nil
	}

	// 1. Scale up: 3 → 5.
	upStart := time.Now()
	ackedBefore := led.count()
	scaleTo(5)
	t.Logf("scale 3 → 5 at +%s", scaleDur(upStart.Sub(loadStart)))
	eventually(t, 180*time.Second, "5 broker pods Ready", func() error {
		ready, _, err := listPods()
		if err != nil {
			return err
		}
		if len(ready) != 5 {
			return fmt.Errorf("ready pods %v", ready)
		}
		return nil
	})
	podsReady := time.Since(upStart)
	eventually(t, 60*time.Second, "5 cluster members", func() error {
		v, err := getScaleView(base0)
		if err != nil {
			return err
		}
		if len(v.Members) != 5 {
			return fmt.Errorf("members %v", v.memberIDs())
		}
		for _, m := range v.Members {
			if !m.Ready {
				return fmt.Errorf("member %s not ready", m.ID)
			}
		}
		return nil
	})
	members5 := time.Since(upStart)
	eventually(t, 180*time.Second, "partitions rebalanced onto the new brokers", func() error {
		var err error
		if view, err = getScaleView(base0); err != nil {
			return err
		}
		if err := view.whole(5); err != nil {
			return err
		}
		return view.balanced()
	})
	rebalanced := time.Since(upStart)
	sawRebalancing := false
	var degraded []*scaleSample
	upSamples := watch.since(upStart)
	for i := range upSamples {
		s := &upSamples[i]
		if p := s.progressing; p != nil && p.Reason == "Rebalancing" {
			sawRebalancing = true
		}
		if s.phase == string(heraldv1.PhaseDegraded) {
			degraded = append(degraded, s)
		}
	}
	if n := len(degraded); n > 0 {
		// Degraded means a broker went bad; new pods that start belong to the scale-up
		// (Updating, reason Scaling).
		t.Errorf("phase Degraded during the scale-up (new pods starting), seen from +%s to +%s after it (%d samples), e.g. %s",
			scaleDur(degraded[0].at.Sub(upStart)), scaleDur(degraded[n-1].at.Sub(upStart)), n, degraded[0].summary())
	}
	t.Logf("scale-up 3 → 5: 5 pods Ready after %s, 5 cluster members after %s, rebalanced after %s (Progressing/Rebalancing seen: %v); %d messages acknowledged meanwhile; %s",
		scaleDur(podsReady), scaleDur(members5), scaleDur(rebalanced), sawRebalancing, led.count()-ackedBefore, view.spread())
	time.Sleep(5 * time.Second) // some load on five brokers

	// 2. Scale down: 5 → 3.
	downStart := time.Now()
	ackedBefore = led.count()
	scaleTo(3)
	t.Logf("scale 5 → 3 at +%s", scaleDur(downStart.Sub(loadStart)))
	leaving := []string{scalePod(3), scalePod(4)}
	// The drain moves data, so it may take a while; but when the placement of the replicas
	// stops changing for a minute before the StatefulSet shrank, it is stuck.
	stsAt3 := func() error {
		sts, err := e.cs.AppsV1().StatefulSets(ns).Get(e.ctx, scaleBC, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if r := sts.Spec.Replicas; r == nil || *r != 3 || sts.Status.Replicas != 3 || sts.Status.ReadyReplicas != 3 {
			return fmt.Errorf("StatefulSet spec.replicas %d, %d pods, %d ready", ptrOr(r, -1), sts.Status.Replicas, sts.Status.ReadyReplicas)
		}
		_, all, err := listPods()
		if err != nil {
			return err
		}
		if len(all) != 3 {
			return fmt.Errorf("pods %v", all)
		}
		return nil
	}
	placement, placementChanged := "", time.Now()
	for {
		err := stsAt3()
		if err == nil {
			break
		}
		v, verr := getScaleView(base0)
		if verr == nil && v.String() != placement {
			placement, placementChanged = v.String(), time.Now()
		}
		stalled := time.Since(placementChanged) > time.Minute
		if stalled || time.Since(downStart) > 3*time.Minute {
			if verr == nil {
				t.Logf("GET /v1/cluster: %s", v)
			}
			if stalled {
				t.Fatalf("StatefulSet back to 3 pods: the drain is stuck (the replicas' placement has not changed for %s; %s after the scale-down): %v",
					scaleDur(time.Since(placementChanged)), scaleDur(time.Since(downStart)), err)
			}
			t.Fatalf("StatefulSet back to 3 pods: not within 3m of the scale-down: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	stsDone := time.Since(downStart)
	eventually(t, 60*time.Second, "3 members, every partition with 3 in sync", func() error {
		var err error
		if view, err = getScaleView(base0); err != nil {
			return err
		}
		return view.whole(3)
	})
	healthy3 := time.Since(downStart)

	// What the status showed meanwhile.
	samples := watch.since(downStart)
	var firstDrain, firstDraining, shrunk, lastListed *scaleSample
	remaining := []int32{}
	for i := range samples {
		s := &samples[i]
		if s.drain != nil && len(s.drain.Members) > 0 {
			if firstDrain == nil {
				firstDrain = s
			}
			if n := len(remaining); n == 0 || remaining[n-1] != s.drain.ReplicasRemaining {
				remaining = append(remaining, s.drain.ReplicasRemaining)
			}
			for _, m := range s.drain.Members {
				if !slices.Contains(leaving, m) {
					t.Errorf("status.drain at +%s lists %s, which stays: %s", scaleDur(s.at.Sub(loadStart)), m, s.summary())
				}
			}
			if s.drain.BlockedReason != "" {
				t.Logf("drain blocked at +%s: %s", scaleDur(s.at.Sub(loadStart)), s.drain.BlockedReason)
			}
		}
		if s.draining() && firstDraining == nil {
			firstDraining = s
		}
		if d := s.degraded; d != nil && d.Status == metav1.ConditionTrue {
			t.Errorf("Degraded=True (%s: %s) at +%s during the scale-down", d.Reason, d.Message, scaleDur(s.at.Sub(loadStart)))
		}
		if shrunk == nil && s.stsSpec >= 0 && s.stsSpec < 5 {
			shrunk = s
		}
		if s.members != nil && slices.ContainsFunc(s.members, func(m string) bool { return slices.Contains(leaving, m) }) {
			lastListed = s
		}
	}
	switch {
	case firstDrain == nil:
		t.Errorf("status.drain was never seen during the scale-down")
	case firstDraining == nil:
		t.Errorf("condition Progressing=True with reason Draining was never seen during the scale-down")
	default:
		t.Logf("drain seen at +%s after the scale-down: %s", scaleDur(firstDrain.at.Sub(downStart)), firstDrain.summary())
		t.Logf("status.drain.replicasRemaining went %v", remaining)
	}
	removedAt, shrunkAt := time.Duration(-1), time.Duration(-1)
	if lastListed != nil {
		for _, s := range samples {
			if s.at.After(lastListed.at) && s.members != nil {
				removedAt = s.at.Sub(downStart)
				break
			}
		}
	}
	if shrunk != nil {
		shrunkAt = shrunk.at.Sub(downStart)
		// The members go before the pods: once the StatefulSet shrank, GET /v1/cluster (from
		// scale-0, whose metadata may lag the controller's by a moment) no longer lists them.
		if lastListed != nil && lastListed.at.After(shrunk.at.Add(2*time.Second)) {
			t.Errorf("the StatefulSet shrank (at +%s) while GET /v1/cluster still listed a member that goes (until +%s): %s",
				scaleDur(shrunk.at.Sub(downStart)), scaleDur(lastListed.at.Sub(downStart)), lastListed.summary())
		}
	}
	t.Logf("scale-down 5 → 3: drain seen after %s, members removed after %s, StatefulSet shrunk after %s, 3 pods after %s, 3 members fully in sync after %s; %d messages acknowledged meanwhile",
		scaleDurOr(firstDrain, downStart), scaleDurSigned(removedAt), scaleDurSigned(shrunkAt), scaleDur(stsDone), scaleDur(healthy3), led.count()-ackedBefore)

	// The BrokerCluster settles: no drain, Progressing False, Ready.
	step = time.Now()
	eventually(t, 60*time.Second, "BrokerCluster settled after the scale-down", func() error {
		bc := &heraldv1.BrokerCluster{}
		if err := crc.Get(e.ctx, client.ObjectKey{Namespace: ns, Name: scaleBC}, bc); err != nil {
			return err
		}
		st := bc.Status
		if st.Drain != nil {
			return fmt.Errorf("status.drain %+v", *st.Drain)
		}
		if st.ReadyReplicas != 3 || st.Phase != heraldv1.PhaseRunning {
			return fmt.Errorf("readyReplicas %d, phase %s", st.ReadyReplicas, st.Phase)
		}
		if !meta.IsStatusConditionTrue(st.Conditions, heraldv1.ConditionReady) || !meta.IsStatusConditionFalse(st.Conditions, heraldv1.ConditionProgressing) {
			return fmt.Errorf("conditions %+v", st.Conditions)
		}
		return nil
	})
	t.Logf("BrokerCluster Ready, Progressing False, no status.drain: %s after the 3 pods", scaleDur(time.Since(step)))

	// Load on three brokers a little longer, then stop it.
	time.Sleep(2 * time.Second)
	stopProducers()
	loadEnd := time.Now()
	watch.stop()
	led.mu.Lock()
	acked := maps.Clone(led.acked)
	requests := led.requests
	led.mu.Unlock()
	t.Logf("load: %d messages acknowledged in %s (%d publish requests)", len(acked), scaleDur(loadEnd.Sub(loadStart)), requests)
	led.failures.log(t, "publish requests")
	for c, n := range led.failures.count {
		if !strings.HasPrefix(c, "transport:") && !strings.HasPrefix(c, "503 ") {
			t.Errorf("%d publish requests were answered %s (a client does not retry that: it would have dropped the messages), e.g. %s", n, c, led.failures.samples[c])
		}
	}
	if len(acked) == 0 {
		t.Fatal("no message was acknowledged")
	}

	// Every acknowledged message is pulled, and the backlog drains.
	step = time.Now()
	ids := slices.Sorted(maps.Keys(acked))
	missing := func() []string {
		con.mu.Lock()
		defer con.mu.Unlock()
		var out []string
		for _, id := range ids {
			if con.got[id] == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	backlog := int64(-1)
	drainErr := within(2*time.Minute, func() error {
		var s struct {
			Stats struct {
				Backlog  int64 `json:"backlog"`
				InFlight int64 `json:"inFlight"`
			} `json:"stats"`
		}
		if err := call(http.MethodGet, base0+"/v1/subscriptions/"+scaleSub, nil, &s); err != nil {
			return err
		}
		backlog = s.Stats.Backlog
		if m := missing(); len(m) > 0 || backlog != 0 {
			return fmt.Errorf("%d acknowledged messages not pulled yet (e.g. %v), backlog %d, in flight %d", len(m), m[:min(3, len(m))], backlog, s.Stats.InFlight)
		}
		return nil
	})
	stopConsumers()
	stopRefresh()
	lost := missing()
	t.Logf("consumers caught up in %s after the load stopped (backlog %d): %v", scaleDur(time.Since(step)), backlog, drainErr)

	con.mu.Lock()
	dupIDs, extra, distinct, unacked := 0, 0, len(con.got), 0
	var dupSamples []string
	for _, id := range slices.Sorted(maps.Keys(con.got)) {
		n := con.got[id]
		if n > 1 {
			dupIDs++
			extra += n - 1
			if len(dupSamples) < 5 {
				a := acked[id]
				dupSamples = append(dupSamples, fmt.Sprintf("%s ×%d (%d/%d, acknowledged at +%s)", id, n, a.partition, a.offset, scaleDur(a.at.Sub(loadStart))))
			}
		}
		if _, ok := acked[id]; !ok {
			unacked++
		}
	}
	deliveries, redelivery, ackedByCon, invalid, ackLost := con.deliveries, con.redelivery, con.acked, con.invalid, con.ackLost
	con.mu.Unlock()
	t.Logf("pull: %d deliveries of %d distinct messages (%d acknowledged by the brokers, %d whose publish failed); %d acks taken, %d receipt handles invalid, %d ack requests failed everywhere",
		deliveries, distinct, len(acked), unacked, ackedByCon, invalid, ackLost)
	t.Logf("duplicates: %d messages delivered more than once, %d extra deliveries (%d deliveries said deliveryAttempt > 1); e.g. %v",
		dupIDs, extra, redelivery, dupSamples)
	con.failures.log(t, "pull/ack requests")
	scaleLatencies(t, acked, con, loadStart)

	if len(lost) > 0 {
		var b strings.Builder
		for _, id := range lost[:min(20, len(lost))] {
			a := acked[id]
			fmt.Fprintf(&b, "\n  %s: acknowledged at partition %d offset %d at +%s", id, a.partition, a.offset, scaleDur(a.at.Sub(loadStart)))
		}
		t.Errorf("LOST: %d of %d acknowledged messages were never delivered:%s", len(lost), len(acked), b.String())
	} else if drainErr != nil {
		t.Errorf("the pull Subscription's backlog did not drain: %v", drainErr)
	}

	// Two acknowledged messages at one partition and offset: a log was cut back below an
	// acknowledged offset and written again.
	byOffset := map[[2]int64][]string{}
	for _, id := range ids {
		a := acked[id]
		k := [2]int64{int64(a.partition), a.offset}
		byOffset[k] = append(byOffset[k], id)
	}
	var reused []string
	for k, list := range byOffset {
		if len(list) > 1 {
			reused = append(reused, fmt.Sprintf("%d/%d: %v", k[0], k[1], list))
		}
	}
	if len(reused) > 0 {
		slices.Sort(reused)
		t.Errorf("LOST: %d offsets were acknowledged for two different messages, e.g.\n  %s", len(reused), strings.Join(reused[:min(10, len(reused))], "\n  "))
	}

	// No partition under-replicated, as every broker sees it; the Topic says so too.
	for i := range 3 {
		base := "http://" + e.podIP(scalePod(i)) + ":8080"
		eventually(t, 30*time.Second, "GET /v1/cluster on "+scalePod(i)+": 3 members, nothing under-replicated", func() error {
			v, err := getScaleView(base)
			if err != nil {
				return err
			}
			view = v
			return v.whole(3)
		})
	}
	t.Logf("final placement: %s", view.spread())
	eventually(t, 30*time.Second, "Topic scale: no under-replicated partition", func() error {
		n, err := e.jsonpath("topic", scaleTopic, ".status.underReplicatedPartitions")
		if err != nil || n != "0" {
			return fmt.Errorf("underReplicatedPartitions %q (%v)", n, err)
		}
		c, err := e.jsonpath("topic", scaleTopic, `.status.conditions[?(@.type=="UnderReplicated")].status`)
		if err != nil || c != "False" {
			return fmt.Errorf("UnderReplicated %q (%v)", c, err)
		}
		return nil
	})

	// Nothing restarted a broker that stays.
	for i := range 3 {
		if rs, err := e.jsonpath("pod", scalePod(i), ".status.containerStatuses[0].restartCount"); err != nil || rs != "0" {
			t.Errorf("broker %s restarted during the test: restartCount %q (%v)", scalePod(i), rs, err)
		}
	}
	t.Logf("scale test: %s in all", scaleDur(time.Since(began)))
}

// scaleLatencies logs how long acknowledged messages took from their publish's acknowledgement
// to their first delivery, and the slow ones: a message first delivered with deliveryAttempt > 1
// was leased before without reaching a consumer.
func scaleLatencies(t *testing.T, acked map[string]scaleAck, con *scaleConsumer, origin time.Time) {
	con.mu.Lock()
	defer con.mu.Unlock()
	var lat []time.Duration
	var slow []string
	firstAttemptGT1 := 0
	for _, id := range slices.Sorted(maps.Keys(acked)) {
		d, ok := con.first[id]
		if !ok {
			continue
		}
		a := acked[id]
		l := max(d.at.Sub(a.at), 0)
		lat = append(lat, l)
		if d.attempt > 1 {
			firstAttemptGT1++
		}
		if l > 5*time.Second && len(slow) < 10 {
			slow = append(slow, fmt.Sprintf("%s %d/%d acknowledged at +%s, first delivered at +%s (attempt %d, pulled from %s)",
				id, a.partition, a.offset, scaleDur(a.at.Sub(origin)), scaleDur(d.at.Sub(origin)), d.attempt, d.pod))
		}
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	over := len(lat) - sort.Search(len(lat), func(i int) bool { return lat[i] > 5*time.Second })
	q := func(f float64) string { return scaleDur(lat[min(len(lat)-1, int(f*float64(len(lat))))]) }
	t.Logf("delivery latency (publish acknowledged → first pulled): p50 %s, p99 %s, max %s; %d over 5s; %d first delivered with deliveryAttempt > 1 (leased before, never received)",
		q(0.5), q(0.99), scaleDur(lat[len(lat)-1]), over, firstAttemptGT1)
	for _, s := range slow {
		t.Logf("  slow: %s", s)
	}
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

func scaleDurOr(s *scaleSample, from time.Time) string {
	if s == nil {
		return "-"
	}
	return scaleDur(s.at.Sub(from))
}

func scaleDurSigned(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return scaleDur(d)
}
