// Package pushcrash tests push delivery against the real binary: a `herald broker` process
// pushing to HTTP endpoints is killed with SIGKILL in the middle of a push storm and restarted.
// Nothing that was published (answered 200) may be lost, and nothing may be acked that the
// endpoint did not accept: every such message must in the end have been answered 2xx by the
// endpoint. It also runs the broker against a real `herald sink` process.
//
// Only the HTTP API v1 contract (DESIGN.md) and the push contract are used, plus the standard
// library.
package pushcrash

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var heraldBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushcrash:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "herald-pushcrash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushcrash:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	heraldBin = filepath.Join(tmp, "herald")
	goCmd := "go"
	if p, err := exec.LookPath("go"); err == nil {
		goCmd = p
	} else if r := os.Getenv("GOROOT"); r != "" {
		goCmd = filepath.Join(r, "bin", "go")
	}
	cmd := exec.Command(goCmd, "build", "-o", heraldBin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "pushcrash: go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// ---- child processes

type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// spawn starts herald with args, its output in a log file; killed when the test ends.
func spawn(t *testing.T, logName string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), logName)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(heraldBin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	p := &proc{t: t, cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("---- %s (last lines) ----\n%s", logName, strings.Join(lines, "\n"))
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var errAddrInUse = errors.New("address in use")

// startBroker runs a broker on dataDir and waits until it is ready; it returns its base URL.
func startBroker(t *testing.T, dataDir string, n int) (*proc, string) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		p, base, err := tryStartBroker(t, dataDir, fmt.Sprintf("broker-%02d-%d.log", n, attempt))
		if errors.Is(err, errAddrInUse) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return p, base
	}
	t.Fatal("no free port for the broker")
	return nil, ""
}

func tryStartBroker(t *testing.T, dataDir, logName string) (*proc, string, error) {
	addr := freeAddr(t)
	p := spawn(t, logName, "broker", "--data-dir", dataDir, "--listen", addr, "--fsync", "always")
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.log)
			if strings.Contains(string(b), "address already in use") {
				return nil, "", errAddrInUse
			}
			return nil, "", fmt.Errorf("broker exited before ready:\n%s", b)
		default:
		}
		if resp, err := http.Get(base + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, base, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, "", errors.New("broker not ready within 60s")
}

// ---- HTTP API helpers

var hc = &http.Client{Timeout: 30 * time.Second}

func call(method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func must(t *testing.T, method, url string, body, out any) {
	t.Helper()
	if err := call(method, url, body, out); err != nil {
		t.Fatal(err)
	}
}

type subStats struct {
	Stats struct {
		Backlog      int64  `json:"backlog"`
		Acked        int64  `json:"acked"`
		DeadLettered int64  `json:"deadLettered"`
		LastError    string `json:"lastError"`
	} `json:"stats"`
}

// ---- the test

// recorder is the push endpoint: it fails some requests at random and records the bodies it
// answered 2xx.
type recorder struct {
	mu       sync.Mutex
	accepted map[string]int
	requests atomic.Int64
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	r.requests.Add(1)
	if rand.IntN(10) == 0 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if rand.IntN(4) == 0 {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	}
	r.mu.Lock()
	r.accepted[string(body)]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (r *recorder) has(body string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[body] > 0
}

func TestPushSurvivesKill9(t *testing.T) {
	rec := &recorder{accepted: map[string]int{}}
	ep := httptest.NewServer(rec)
	defer ep.Close()
	dataDir := t.TempDir()
	proc, base := startBroker(t, dataDir, 0)
	var baseURL atomic.Value
	baseURL.Store(base)
	must(t, "PUT", base+"/v1/topics/storm", map[string]any{"partitions": 3}, nil)
	must(t, "PUT", base+"/v1/subscriptions/storm-push", map[string]any{"topic": "storm", "startAt": "earliest",
		"push":  map[string]any{"endpoint": ep.URL + "/hook", "maxInFlight": 32, "timeout": "5s"},
		"retry": map[string]any{"policy": "exponential", "minBackoff": "50ms", "maxBackoff": "500ms"}}, nil)

	// Publishers: what got a 200 is durable and must be delivered; what got no answer may or
	// may not exist.
	var mu sync.Mutex
	published := map[string]bool{} // body → certainly published
	uncertain := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var msgs []map[string]any
				var bodies []string
				for i := 0; i < 10; i++ {
					b := fmt.Sprintf("g%d-b%d-m%d", g, n, i)
					bodies = append(bodies, b)
					msgs = append(msgs, map[string]any{"text": b, "key": fmt.Sprintf("k%d", i%4)})
				}
				err := call("POST", baseURL.Load().(string)+"/v1/topics/storm/messages", map[string]any{"messages": msgs}, nil)
				mu.Lock()
				for _, b := range bodies {
					if err == nil {
						published[b] = true
					} else {
						uncertain[b] = true
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}(g)
	}

	for round := 1; round <= 3; round++ {
		// Let the storm run until pushes are flowing, then kill mid-flight.
		before := rec.requests.Load()
		deadline := time.Now().Add(60 * time.Second)
		for rec.requests.Load() < before+200 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: pushes do not flow (%d requests)", round, rec.requests.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		proc.kill()
		t.Logf("round %d: killed the broker after %d push requests", round, rec.requests.Load())
		proc, base = startBroker(t, dataDir, round)
		baseURL.Store(base)
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	want := len(published)
	mu.Unlock()
	t.Logf("%d messages published for sure, %d uncertain", want, len(uncertain))
	deadline := time.Now().Add(120 * time.Second)
	for {
		missing := 0
		var example string
		mu.Lock()
		for b := range published {
			if !rec.has(b) {
				missing++
				example = b
			}
		}
		mu.Unlock()
		var st subStats
		err := call("GET", base+"/v1/subscriptions/storm-push", nil, &st)
		if missing == 0 && err == nil && st.Stats.Backlog == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d published messages never accepted by the endpoint (e.g. %q); subscription %+v (%v)", missing, want, example, st.Stats, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing came out of nowhere.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	dups := 0
	for b, n := range rec.accepted {
		if !published[b] && !uncertain[b] {
			t.Errorf("endpoint accepted %q, which was never published", b)
		}
		dups += n - 1
	}
	var st subStats
	must(t, "GET", base+"/v1/subscriptions/storm-push", nil, &st)
	if st.Stats.DeadLettered != 0 {
		t.Errorf("dead-lettered %d (no maxAttempts set)", st.Stats.DeadLettered)
	}
	t.Logf("endpoint accepted %d distinct messages, %d duplicates (at-least-once), %d requests", len(rec.accepted), dups, rec.requests.Load())
}

// The broker pushes signed messages to a real `herald sink` process.
func TestPushToSinkProcess(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("pushcrash sink secret, 32 bytes."))
	sink := spawn(t, "sink.log", "sink", "--listen", "127.0.0.1:0", "--verify-secret", secret, "--fail-first", "3", "--quiet")
	sinkBase := ""
	deadline := time.Now().Add(30 * time.Second)
	for sinkBase == "" {
		if time.Now().After(deadline) {
			t.Fatal("sink did not print its address")
		}
		f, _ := os.Open(sink.log)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "herald sink: listening on "); ok {
				sinkBase = "http://" + addr
			}
		}
		f.Close()
		time.Sleep(20 * time.Millisecond)
	}
	_, base := startBroker(t, t.TempDir(), 0)
	must(t, "PUT", base+"/v1/topics/t", map[string]any{"partitions": 2}, nil)
	must(t, "PUT", base+"/v1/subscriptions/to-sink", map[string]any{"topic": "t", "startAt": "earliest",
		"push":  map[string]any{"endpoint": sinkBase + "/in", "format": "cloudevents-structured", "signingSecrets": []string{secret}},
		"retry": map[string]any{"minBackoff": "20ms", "maxBackoff": "200ms"}}, nil)
	var msgs []map[string]any
	for i := 0; i < 50; i++ {
		msgs = append(msgs, map[string]any{"text": fmt.Sprint("event ", i)})
	}
	must(t, "POST", base+"/v1/topics/t/messages", map[string]any{"messages": msgs}, nil)
	type sinkStats struct {
		OK, Failed, BadSignature, Unique int64
	}
	var st sinkStats
	deadline = time.Now().Add(60 * time.Second)
	for {
		if err := call("GET", sinkBase+"/stats", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.Unique == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink stats %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Failed != 3 || st.BadSignature != 0 {
		t.Errorf("sink stats %+v", st)
	}
	sink.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sink.exited:
	case <-time.After(10 * time.Second):
		t.Error("sink did not stop on SIGTERM")
	}
	if !sink.cmd.ProcessState.Success() {
		t.Errorf("sink exit: %v", sink.cmd.ProcessState)
	}
}
