package crash

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyTimeout bounds how long a (re)started broker may take to answer /readyz with 200. Generous:
// the machine is shared and recovery scans the active segments.
const readyTimeout = 30 * time.Second

// requestTimeout bounds one API call (a pull waits at most 5 s here): a broker that hangs fails
// the test instead of stalling it.
const requestTimeout = 20 * time.Second

var errAddrInUse = errors.New("listen address already in use")

// broker is one herald broker child process on a fixed data dir, restartable. Every start gets a
// new loopback port and a new HTTP client, so a request of an earlier incarnation can never reach
// a later one.
type broker struct {
	t       *testing.T
	name    string
	dataDir string
	fsync   string   // --fsync policy; newBroker sets always
	extra   []string // flags after the standard ones
	logDir  string

	cmd    *exec.Cmd
	exited chan struct{}
	state  *os.ProcessState // set before exited is closed
	ep     *endpoint
	starts int
	used   map[string]bool
	logs   []string
}

// endpoint is how to talk to one incarnation of the broker.
type endpoint struct {
	base string
	tr   *http.Transport
	hc   *http.Client
}

// newBroker prepares (without starting) a broker on dataDir. The process is killed, if still
// running, when the test ends; on failure the tail of its logs is printed.
func newBroker(t *testing.T, name, dataDir string, extra ...string) *broker {
	t.Helper()
	b := &broker{t: t, name: name, dataDir: dataDir, fsync: "always", extra: extra, logDir: t.TempDir(), used: map[string]bool{}}
	t.Cleanup(func() {
		if b.running() {
			_ = b.cmd.Process.Kill()
			select {
			case <-b.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: pid %d did not exit after SIGKILL", b.name, b.cmd.Process.Pid)
			}
		}
		if b.ep != nil {
			b.ep.tr.CloseIdleConnections()
		}
		if t.Failed() {
			for _, p := range lastN(b.logs, 2) {
				t.Logf("---- %s (last lines) ----\n%s", filepath.Base(p), tailFile(p, 40))
			}
		}
	})
	return b
}

func (b *broker) running() bool {
	if b.cmd == nil {
		return false
	}
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// start runs `herald broker --data-dir D --listen 127.0.0.1:<free port> --fsync <policy> [extra]`
// and waits for GET /readyz == 200.
func (b *broker) start() {
	b.t.Helper()
	if b.running() {
		b.t.Fatalf("%s: start while running", b.name)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = b.spawn(); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		b.t.Fatalf("%s: start: %v", b.name, err)
	}
}

// pickAddr returns a free loopback address never used by this broker before.
func (b *broker) pickAddr() (string, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		l.Close()
		if !b.used[addr] {
			b.used[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("no fresh free port")
}

func (b *broker) spawn() error {
	addr, err := b.pickAddr()
	if err != nil {
		return err
	}
	b.starts++
	logPath := filepath.Join(b.logDir, fmt.Sprintf("%s-%02d.log", b.name, b.starts))
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	b.logs = append(b.logs, logPath)
	args := append([]string{"broker", "--data-dir", b.dataDir, "--listen", addr, "--fsync", b.fsync}, b.extra...)
	cmd := exec.Command(heraldBin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	startedAt := time.Now()
	err = cmd.Start()
	logf.Close() // the child has its own descriptor
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		b.state = cmd.ProcessState
		close(exited)
	}()
	b.cmd, b.exited = cmd, exited
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	b.ep = &endpoint{base: "http://" + addr, tr: tr, hc: &http.Client{Transport: tr, Timeout: requestTimeout}}

	// Ready means /readyz == 200 from this process. Another process could own the port (ours then
	// fails to bind and exits at once), so a 200 counts only once our log says "broker ready" or
	// our process has outlived the first 200 by a margin.
	probe := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	var first200 time.Time
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log := tailFile(logPath, 30)
			if strings.Contains(log, "address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("exited before ready (%v):\n%s", b.state, log)
		default:
		}
		resp, err := probe.Get(b.ep.base + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && first200.IsZero() {
				first200 = time.Now()
			}
			if resp.StatusCode == http.StatusOK && (strings.Contains(tailFile(logPath, 50), "broker ready") || time.Since(first200) > 300*time.Millisecond) {
				b.t.Logf("%s: start %d ready on %s in %s (pid %d)", b.name, b.starts, addr, time.Since(startedAt).Round(time.Millisecond), cmd.Process.Pid)
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exited
	return fmt.Errorf("not ready within %s:\n%s", readyTimeout, tailFile(logPath, 30))
}

// kill sends SIGKILL (cmd.Process.Kill) and waits for the process to be gone.
func (b *broker) kill() {
	b.t.Helper()
	b.mustBeRunning("kill")
	if err := b.cmd.Process.Kill(); err != nil {
		b.t.Fatalf("%s: kill: %v", b.name, err)
	}
	b.waitExit(10 * time.Second)
	b.ep.tr.CloseIdleConnections()
}

// stop shuts the broker down gracefully (SIGTERM) and expects exit status 0.
func (b *broker) stop() {
	b.t.Helper()
	b.mustBeRunning("stop")
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.t.Fatalf("%s: SIGTERM: %v", b.name, err)
	}
	b.waitExit(30 * time.Second)
	b.ep.tr.CloseIdleConnections()
	if !b.state.Success() {
		b.t.Errorf("%s: graceful stop exited with %v:\n%s", b.name, b.state, tailFile(b.logs[len(b.logs)-1], 20))
	}
}

// mustBeRunning fails the test, with the log, when the broker is not running; in particular
// when it exited on its own (a panic, a fatal error).
func (b *broker) mustBeRunning(op string) {
	b.t.Helper()
	if b.cmd == nil {
		b.t.Fatalf("%s: %s before start", b.name, op)
	}
	if !b.running() {
		b.t.Fatalf("%s: %s: the broker exited on its own (%v):\n%s", b.name, op, b.state, tailFile(b.logs[len(b.logs)-1], 40))
	}
}

func (b *broker) waitExit(d time.Duration) {
	b.t.Helper()
	select {
	case <-b.exited:
	case <-time.After(d):
		_ = b.cmd.Process.Kill()
		<-b.exited
		b.t.Fatalf("%s: pid %d did not exit within %s", b.name, b.cmd.Process.Pid, d)
	}
}

// childEnv is the test's environment without HERALD_* variables, so only flags configure the
// broker.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	return env
}

// httpError is a non-2xx answer.
type httpError struct {
	status int
	body   string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.status, strings.TrimSpace(e.body))
}

// call sends body (JSON, when not nil) and decodes a 2xx answer into out (when not nil). A
// transport error, a body cut short, or a non-2xx status is an error.
func (e *endpoint) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if resp.StatusCode/100 != 2 {
		return &httpError{status: resp.StatusCode, body: string(data)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s %s answer %q: %w", method, path, data, err)
		}
	}
	return nil
}

// must is call on the current incarnation; any error fails the test.
func (b *broker) must(method, path string, body, out any) {
	b.t.Helper()
	if err := b.ep.call(method, path, body, out); err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// ---- API v1 shapes (DESIGN.md "Broker HTTP API v1"), declared here so the tests depend on the
// wire contract only.

type pubMsg struct {
	Text       *string           `json:"text,omitempty"`
	Key        string            `json:"key,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Delay      string            `json:"delay,omitempty"`
}

type pubReq struct {
	Messages []pubMsg `json:"messages"`
}

type pubResult struct {
	ID        string     `json:"id"`
	Partition int        `json:"partition"`
	Offset    int64      `json:"offset"`
	DeliverAt *time.Time `json:"deliverAt"`
}

type pubResp struct {
	Results []pubResult `json:"results"`
}

type message struct {
	ID              string            `json:"id"`
	ReceiptHandle   string            `json:"receiptHandle"`
	Partition       int               `json:"partition"`
	Offset          int64             `json:"offset"`
	Data            []byte            `json:"data"`
	Attributes      map[string]string `json:"attributes"`
	Key             string            `json:"key"`
	PublishTime     time.Time         `json:"publishTime"`
	DeliveryAttempt int               `json:"deliveryAttempt"`
}

type pullResp struct {
	Messages []message `json:"messages"`
}

type ackResp struct {
	Acked   int      `json:"acked"`
	Invalid []string `json:"invalid"`
}

type partitionStats struct {
	Partition   int   `json:"partition"`
	StartOffset int64 `json:"startOffset"`
	EndOffset   int64 `json:"endOffset"`
}

type topicView struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
	Stats      struct {
		Messages   int64            `json:"messages"`
		Delayed    int64            `json:"delayed"`
		Partitions []partitionStats `json:"partitions"`
	} `json:"stats"`
}

type subView struct {
	Name  string `json:"name"`
	Stats struct {
		Backlog  int64 `json:"backlog"`
		InFlight int64 `json:"inFlight"`
		Acked    int64 `json:"acked"`
	} `json:"stats"`
}

func text(s string) *string { return &s }

// ---- API helpers (fail the test on error)

func (b *broker) putTopic(name string, partitions int) {
	b.t.Helper()
	b.must("PUT", "/v1/topics/"+name, map[string]any{"partitions": partitions}, nil)
}

func (b *broker) putPullSub(name, topic string) {
	b.t.Helper()
	b.must("PUT", "/v1/subscriptions/"+name, map[string]any{"topic": topic, "startAt": "earliest", "ackDeadline": "5m"}, nil)
}

func (b *broker) publish(topic string, msgs []pubMsg) []pubResult {
	b.t.Helper()
	var r pubResp
	b.must("POST", "/v1/topics/"+topic+"/messages", pubReq{Messages: msgs}, &r)
	if len(r.Results) != len(msgs) {
		b.t.Fatalf("publish: %d results for %d messages", len(r.Results), len(msgs))
	}
	return r.Results
}

func (b *broker) topic(name string) topicView {
	b.t.Helper()
	var v topicView
	b.must("GET", "/v1/topics/"+name, nil, &v)
	return v
}

// ends returns the end offset of every partition of the topic, checking start offsets are 0.
func (b *broker) ends(topic string) []int64 {
	b.t.Helper()
	v := b.topic(topic)
	ends := make([]int64, v.Partitions)
	if len(v.Stats.Partitions) != v.Partitions {
		b.t.Fatalf("topic %s: %d partitions, stats for %d", topic, v.Partitions, len(v.Stats.Partitions))
	}
	for _, p := range v.Stats.Partitions {
		if p.StartOffset != 0 {
			b.t.Errorf("topic %s partition %d: startOffset %d, want 0 (no retention)", topic, p.Partition, p.StartOffset)
		}
		ends[p.Partition] = p.EndOffset
	}
	return ends
}

func (b *broker) sub(name string) subView {
	b.t.Helper()
	var v subView
	b.must("GET", "/v1/subscriptions/"+name, nil, &v)
	return v
}

func (b *broker) pull(sub string, max int, wait string) []message {
	b.t.Helper()
	var r pullResp
	b.must("POST", "/v1/subscriptions/"+sub+"/pull", map[string]any{"max": max, "wait": wait, "visibility": "5m"}, &r)
	return r.Messages
}

// ack acks the messages and expects every handle to be accepted.
func (b *broker) ack(sub string, msgs []message) {
	b.t.Helper()
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		hs := make([]string, n)
		for i := range hs {
			hs[i] = msgs[i].ReceiptHandle
		}
		var r ackResp
		b.must("POST", "/v1/subscriptions/"+sub+"/ack", map[string]any{"receiptHandles": hs}, &r)
		if r.Acked != n || len(r.Invalid) != 0 {
			b.t.Fatalf("ack %d handles: acked %d, invalid %v", n, r.Acked, r.Invalid)
		}
		msgs = msgs[n:]
	}
}

// drain pulls from sub, acking as it goes, until want messages arrived (or pulls keep coming
// back empty), then pulls once more so that anything beyond want shows up too (callers publish
// everything before they drain, so that pull need not wait). It returns everything pulled, in
// delivery order.
func (b *broker) drain(sub string, want int) []message {
	b.t.Helper()
	got := b.drainN(sub, want)
	extra := b.pull(sub, 1000, "0s")
	if len(extra) > 0 {
		b.ack(sub, extra)
		got = append(got, extra...)
	}
	return got
}

// drainN is drain without the final check for more.
func (b *broker) drainN(sub string, want int) []message {
	b.t.Helper()
	var got []message
	for empty := 0; len(got) < want && empty < 3; {
		msgs := b.pull(sub, 1000, "2s")
		if len(msgs) == 0 {
			empty++
			continue
		}
		empty = 0
		b.ack(sub, msgs)
		got = append(got, msgs...)
	}
	if len(got) < want {
		b.t.Fatalf("drain %s: got %d messages, want %d", sub, len(got), want)
	}
	return got
}

// ---- small utilities

func lastN(xs []string, n int) []string {
	if len(xs) > n {
		return xs[len(xs)-n:]
	}
	return xs
}

func tailFile(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		all = append(all, sc.Text())
	}
	return strings.Join(lastN(all, lines), "\n")
}

// limitedErrors reports at most max failures per kind, then counts the rest, so one systematic
// problem does not bury the log.
type limitedErrors struct {
	t      *testing.T
	max    int
	counts map[string]int
}

func newLimitedErrors(t *testing.T, max int) *limitedErrors {
	return &limitedErrors{t: t, max: max, counts: map[string]int{}}
}

func (l *limitedErrors) errorf(kind, format string, args ...any) {
	l.t.Helper()
	l.counts[kind]++
	if l.counts[kind] <= l.max {
		l.t.Errorf(kind+": "+format, args...)
	}
}

func (l *limitedErrors) summary() {
	l.t.Helper()
	for k, n := range l.counts {
		if n > l.max {
			l.t.Errorf("%s: %d failures in all (%d shown)", k, n, l.max)
		}
	}
}
