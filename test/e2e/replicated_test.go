package e2e_test

// Helpers of the tests of replicated BrokerClusters (chaos_test.go, scale_test.go,
// rolling_test.go): the cluster's view (GET /v1/cluster), the broker pods a client Service would
// send requests to, producers that retry like a client and record what was acknowledged, a push
// endpoint, and the checks that nothing acknowledged was lost.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/test/cluster"
)

// clusterView is GET /v1/cluster.
type clusterView api.Cluster

// topicShape is a replicated topic of a test: its name, partitions and replication factor.
type topicShape struct {
	name       string
	partitions int
	rf         int
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

// healthy: a controller, every member ready, and every partition of topic ts with a leader and
// all its replicas in sync.
func (v *clusterView) healthy(ts topicShape, members int) error {
	if err := v.membersOK(members); err != nil {
		return err
	}
	n := 0
	for _, p := range v.Partitions {
		if p.Topic != ts.name {
			continue
		}
		n++
		if p.Leader == "" {
			return fmt.Errorf("partition %d has no leader", p.Partition)
		}
		if len(p.Replicas) != ts.rf {
			return fmt.Errorf("partition %d has %d replicas %v, want %d", p.Partition, len(p.Replicas), p.Replicas, ts.rf)
		}
		if len(p.InSync) != len(p.Replicas) {
			return fmt.Errorf("partition %d: in sync %v of %v (leader %s, epoch %d)", p.Partition, p.InSync, p.Replicas, p.Leader, p.Epoch)
		}
	}
	if n != ts.partitions {
		return fmt.Errorf("%d partitions of topic %s, want %d", n, ts.name, ts.partitions)
	}
	return nil
}

// ledBy lists the partitions of topic that member id leads.
func (v *clusterView) ledBy(topic, id string) []int {
	var out []int
	for _, p := range v.Partitions {
		if p.Topic == topic && p.Leader == id {
			out = append(out, p.Partition)
		}
	}
	return out
}

// leadersOK: every partition has a leader that is a ready member (a killed broker is not: the
// view asks every member's /readyz) and a quorum in sync.
func (v *clusterView) leadersOK(ts topicShape) bool {
	ready := map[string]bool{}
	for _, m := range v.Members {
		ready[m.ID] = m.Ready
	}
	n := 0
	for _, p := range v.Partitions {
		if p.Topic != ts.name {
			continue
		}
		n++
		if p.Leader == "" || !ready[p.Leader] || len(p.InSync) < ts.rf/2+1 {
			return false
		}
	}
	return n == ts.partitions
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

// pushReceiver is a push endpoint: deliveries per message (the body is the message's text), with
// the partition and offset each delivery said.
type pushReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int
	at  map[string][2]int64 // id → partition, offset of its first delivery
	all int
}

func newPushReceiver(t *testing.T) *pushReceiver {
	rc := &pushReceiver{got: map[string]int{}, at: map[string][2]int64{}}
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

// failedPublish is one failed publish request.
type failedPublish struct {
	at    time.Time
	class string
	pod   string
}

// ledger is what the producers did.
type ledger struct {
	topic string
	batch int // messages per publish request
	// finish: once stopped, a producer still retries the batch it has not published yet, for
	// this long at most (zero: it gives up at once).
	finish time.Duration

	mu        sync.Mutex
	acked     map[string]ackedMsg
	attempts  map[string]int // publish requests that carried the message (acknowledged or not)
	ackTimes  [][]time.Time  // per partition, when a publish to it was acknowledged
	failures  map[string]int // by error class
	samples   map[string]string
	failed    []failedPublish
	batches   int
	abandoned []string // messages a stopped producer gave up on (never acknowledged)
}

func newLedger(ts topicShape, batch int) *ledger {
	return &ledger{topic: ts.name, batch: batch, acked: map[string]ackedMsg{}, attempts: map[string]int{},
		ackTimes: make([][]time.Time, ts.partitions), failures: map[string]int{}, samples: map[string]string{}}
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

// publishBatch publishes texts to topic with one key (so the batch goes to one partition).
func publishBatch(base, topic, key string, texts []string) ([]ackedMsg, error) {
	msgs := make([]map[string]any, len(texts))
	for i, s := range texts {
		msgs[i] = map[string]any{"text": s, "key": key}
	}
	body, _ := json.Marshal(map[string]any{"messages": msgs})
	resp, err := publishClient.Post(base+"/v1/topics/"+topic+"/messages", "application/json", bytes.NewReader(body))
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

// produce publishes batches with unique ids until stop is closed, through the brokers pick gives
// (its n-th pick; pod names the broker in the failures), retrying a failed batch (same ids) with
// backoff.
func (l *ledger) produce(g int, pick func(n int) (pod, base string), stop <-chan struct{}) {
	next := g
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		key := fmt.Sprintf("k%d-%d", g, seq)
		texts := make([]string, l.batch)
		for i := range texts {
			texts[i] = fmt.Sprintf("m%d-%06d-%d", g, seq, i)
		}
		backoff := 50 * time.Millisecond
		var giveUp <-chan time.Time
		for {
			pod, base := pick(next)
			next++
			res, err := publishBatch(base, l.topic, key, texts)
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
				l.failed = append(l.failed, failedPublish{at: time.Now(), class: c, pod: pod})
				if _, ok := l.samples[c]; !ok {
					l.samples[c] = fmt.Sprintf("%s (%s): %.300s", pod, base, err)
				}
			}
			l.mu.Unlock()
			if err == nil {
				break
			}
			if giveUp == nil {
				select {
				case <-stop:
					if l.finish <= 0 {
						l.abandon(texts)
						return
					}
					giveUp = time.After(l.finish)
				default:
				}
			}
			select {
			case <-giveUp:
				l.abandon(texts)
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count is how many messages were acknowledged so far.
func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *ledger) abandon(texts []string) {
	l.mu.Lock()
	l.abandoned = append(l.abandoned, texts...)
	l.mu.Unlock()
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
func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
}

// deliveryCheck is what checkDelivery looks at: the acknowledged messages and the publish requests
// that carried each, the push endpoint, and a broker to ask.
type deliveryCheck struct {
	base     string // a broker's URL
	topic    string
	push     string // the push Subscription delivering to rc
	audit    string // a pull Subscription of the topic that nobody read
	acked    map[string]ackedMsg
	attempts map[string]int
	rc       *pushReceiver
	origin   time.Time // the +times of the messages count from here
}

// deliveryResult counts what checkDelivery saw.
type deliveryResult struct {
	deliveries, distinct, dupIDs, extra           int // pushes
	exactlyOnce, retried, unackedInTopic, inTopic int // the topic
}

// checkDelivery is the end of a test of a replicated cluster under load (once the producers
// stopped): every acknowledged message is pushed at least once and the push Subscription's
// backlog drains; no two acknowledged messages got the same partition and offset; the topic
// (read back through the audit Subscription) holds every acknowledged message at the offset its
// publish was given, and each at most once per publish request that carried it. It logs the
// duplicates and fails t for every loss.
func checkDelivery(t *testing.T, c deliveryCheck) deliveryResult {
	t.Helper()
	acked, attempts, rc := c.acked, c.attempts, c.rc
	// Every acknowledged message is pushed, and the push Subscription's backlog drains.
	step := time.Now()
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
		if err := call(http.MethodGet, c.base+"/v1/subscriptions/"+c.push, nil, &s); err != nil {
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
				fmt.Fprintf(&b, " %s (acknowledged at +%s)", id, acked[id].at.Sub(c.origin).Round(10*time.Millisecond))
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
	audit, auditErr := drainAudit(c.base, c.topic, c.audit)
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
				id, a.partition, a.offset, a.at.Sub(c.origin).Round(10*time.Millisecond), inTopic[id], at[[2]int64{int64(a.partition), a.offset}])
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
	res := deliveryResult{deliveries: all, distinct: delivered, dupIDs: dupIDs, extra: extra}
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
				id, n, where[id], attempts[id], a.partition, a.offset, a.at.Sub(c.origin).Round(10*time.Millisecond)))
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
	res.exactlyOnce, res.retried, res.unackedInTopic, res.inTopic = exactlyOnce, retried, unackedInTopic, len(audit)
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
	return res
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

// drainAudit reads the whole of topic through its audit Subscription sub, which nobody else
// reads (leases are long; nothing is acked): until the topic's message count is reached and a
// pull comes back empty.
func drainAudit(base, topic, sub string) ([]auditMsg, error) {
	var stats struct {
		Stats struct {
			Messages   int64 `json:"messages"`
			Partitions []struct {
				Partition   int   `json:"partition"`
				StartOffset int64 `json:"startOffset"`
				EndOffset   int64 `json:"endOffset"`
			} `json:"partitions"`
		} `json:"stats"`
	}
	if err := call(http.MethodGet, base+"/v1/topics/"+topic, nil, &stats); err != nil {
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
		if err := call(http.MethodPost, base+"/v1/subscriptions/"+sub+"/pull", map[string]any{"max": 1000, "wait": "1s", "visibility": "600s"}, &res); err != nil {
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
			if int64(len(out)) >= stats.Stats.Messages && empty >= 2 {
				return out, nil
			}
			if empty >= 5 {
				return out, fmt.Errorf("read %d messages, the topic has %d (%+v)", len(out), stats.Stats.Messages, stats.Stats.Partitions)
			}
		} else {
			empty = 0
		}
	}
	return out, fmt.Errorf("read %d messages of %d in 90s", len(out), stats.Stats.Messages)
}

// keepLogs copies to dir the pods' logs (every run of every container of the pods that exist;
// the operator's too), the pod runner's log, the events, and GET /v1/cluster of each of pods.
func (e *env) keepLogs(dir string, pods []string) {
	if e.r == nil {
		return
	}
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
	for _, p := range pods {
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
	if out, err := e.k("get", "events", "-A", "--sort-by=.lastTimestamp"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "events.txt"), []byte(out), 0o644)
	}
	e.t.Logf("logs kept in %s", dir)
}

// endpoints are the broker pods of a BrokerCluster that a client Service would send requests to:
// Ready and not terminating (the pods have loopback IPs, so there is no Service IP to use).
type endpoints struct {
	instance string // the BrokerCluster
	mu       sync.Mutex
	names    []string
	bases    []string
}

func (s *endpoints) refresh(e *env) error {
	pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + s.instance})
	if err != nil {
		return err
	}
	items := pods.Items
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	var names, bases []string
	for _, p := range items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(&p) {
			continue
		}
		names = append(names, p.Name)
		bases = append(bases, "http://"+p.Status.PodIP+":8080")
	}
	if len(bases) == 0 {
		return fmt.Errorf("no ready broker pod")
	}
	s.mu.Lock()
	s.names, s.bases = names, bases
	s.mu.Unlock()
	return nil
}

// pick returns the n-th endpoint (round robin).
func (s *endpoints) pick(n int) (name, base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bases) == 0 {
		return "", ""
	}
	i := n % len(s.bases)
	return s.names[i], s.bases[i]
}

// list returns the endpoints' pod names and base URLs.
func (s *endpoints) list() (names, bases []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.names), slices.Clone(s.bases)
}

// follow refreshes the endpoints every 500ms (a Service's endpoints lag the pods a little too)
// until the returned function is called.
func (s *endpoints) follow(e *env) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
			}
			_ = s.refresh(e)
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }); <-stopped }
}

func podReady(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// heraldClient is a client of the cluster's API server that knows the herald.dev types.
func (e *env) heraldClient() client.Client {
	e.t.Helper()
	scheme := runtime.NewScheme()
	if err := heraldv1.AddToScheme(scheme); err != nil {
		e.t.Fatal(err)
	}
	crc, err := client.New(e.c.Config, client.Options{Scheme: scheme})
	if err != nil {
		e.t.Fatal(err)
	}
	return crc
}

// installWithBrokers installs the chart (resync 2s), creates the namespace, and applies a
// three-broker BrokerCluster named bc from manifest, returning once its three pods are Ready.
// The replicated tests (chaos, scale, rolling) all start so.
func (e *env) installWithBrokers(t *testing.T, bc, manifest string) {
	t.Helper()
	step := time.Now()
	if _, err := e.run(3*time.Minute, e.helm, "install", "herald", filepath.Join(root, "charts", "herald"),
		"--namespace", operatorNS, "--create-namespace", "--wait", "--timeout", "150s",
		"--set", "extraArgs={--resync-interval=2s}"); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install --wait: %s", fmtDur(time.Since(step)))
	if err := cluster.CreateNamespace(e.ctx, e.cs, ns); err != nil {
		t.Fatal(err)
	}
	step = time.Now()
	file := filepath.Join(e.dir, bc+"-brokers.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mustK("apply", "-n", ns, "-f", file)
	eventually(t, 180*time.Second, "BrokerCluster "+bc+": 3 ready brokers", func() error {
		if r, err := e.jsonpath("brokercluster", bc, ".status.readyReplicas"); err != nil || r != "3" {
			return fmt.Errorf("readyReplicas %q (%v)", r, err)
		}
		return nil
	})
	t.Logf("BrokerCluster %s: 3 ready brokers after %s", bc, fmtDur(time.Since(step)))
}

// startLoad starts n producers of led through pick and waits until every partition has an
// acknowledged publish; stop ends them (also at cleanup). loadStart is when they began.
func startLoad(t *testing.T, led *ledger, n int, pick func(n int) (pod, base string)) (loadStart time.Time, stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			led.produce(g, pick, done)
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
	t.Cleanup(stop)
	loadStart = time.Now()
	t.Logf("load started at %s (the +times below count from here)", loadStart.UTC().Format("15:04:05.000"))
	eventually(t, 30*time.Second, "publishes acknowledged on every partition", func() error {
		for p, at := range led.firstAckAfter(loadStart) {
			if at.IsZero() {
				return fmt.Errorf("none on partition %d yet", p)
			}
		}
		return nil
	})
	return loadStart, stop
}
