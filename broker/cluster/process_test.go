package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
)

// brokerProc is one `herald broker` process of a cluster.
type brokerProc struct {
	id, addr, dir, logPath string
	args                   []string
	cmd                    *exec.Cmd
	exited                 chan struct{}
	state                  string // how it exited, when it did
	cl                     *client.Client
}

func (p *brokerProc) start(t *testing.T, bin string) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.state = cmd, exited, ""
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.state = fmt.Sprintf("%v (%v)", cmd.ProcessState, err)
		close(exited)
	}()
}

func (p *brokerProc) kill() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

func freePorts(t *testing.T, n int) []string {
	var out []string
	var lns []net.Listener
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// TestProcessCluster runs three `herald broker` processes, SIGKILLs the leader of a partition
// while a producer publishes, restarts it, and checks that every acknowledged message is
// delivered and the killed broker is back in sync.
func TestProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the herald binary and runs three brokers")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-o", bin, "github.com/heraldmq/herald")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addrs := freePorts(t, 3)
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	procs := make([]*brokerProc, 3)
	for i := range procs {
		p := &brokerProc{id: fmt.Sprintf("n%d", i+1), addr: addrs[i], dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1))}
		p.args = []string{"broker", "--data-dir", p.dir, "--listen", p.addr, "--node-id", p.id, "--cluster-peers", strings.Join(peers, ","), "--log-level", "info"}
		cl, err := client.New("http://"+p.addr, client.WithHTTPClient(hc), client.WithTimeout(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		p.cl = cl
		procs[i] = p
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.cmd != nil {
				select {
				case <-p.exited:
					t.Logf("%s had exited: %s", p.id, p.state)
				default:
				}
			}
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				b, _ := os.ReadFile(p.logPath)
				if len(b) > 20000 {
					b = b[len(b)-20000:]
				}
				t.Logf("%s log (tail):\n%s", p.id, b)
			}
		}
	})
	for _, p := range procs {
		p.start(t, bin)
	}
	ready := func(ps ...*brokerProc) {
		t.Helper()
		waitFor(t, 30*time.Second, "brokers ready", func() (bool, string) {
			for _, p := range ps {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := p.cl.Readyz(ctx)
				cancel()
				if err != nil {
					return false, p.id + ": " + err.Error()
				}
			}
			return true, ""
		})
	}
	ready(procs...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "create topic and subscription", func() (bool, string) {
		if _, _, err := procs[0].cl.PutTopic(ctx, "proc", api.TopicSpec{Partitions: 1, ReplicationFactor: 3}); err != nil {
			return false, err.Error()
		}
		if _, _, err := procs[0].cl.PutSubscription(ctx, "proc-sub", api.SubscriptionSpec{Topic: "proc", StartAt: "earliest"}); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	view := func(p *brokerProc) (api.Cluster, error) { return fetchView(hc, p.addr) }
	var leader string
	waitFor(t, 20*time.Second, "a leader in sync with everyone", func() (bool, string) {
		v, err := view(procs[0])
		if err != nil || len(v.Partitions) != 1 {
			return false, fmt.Sprintf("%+v %v", v, err)
		}
		leader = v.Partitions[0].Leader
		return leader != "" && len(v.Partitions[0].InSync) == 3, fmt.Sprintf("%+v", v.Partitions[0])
	})
	publish := func(via []*brokerProc, prefix string, n int) []string {
		t.Helper()
		var out []string
		for k := 0; k < n; k++ {
			payload := fmt.Sprintf("%s-%03d", prefix, k)
			waitFor(t, 30*time.Second, "publish "+payload, func() (bool, string) {
				p := via[k%len(via)]
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				defer pcancel()
				if _, err := p.cl.Publish(pctx, "proc", []api.PublishMessage{{Text: text(payload)}}); err != nil {
					return false, err.Error()
				}
				return true, ""
			})
			out = append(out, payload)
		}
		return out
	}
	want := publish(procs, "before", 20)
	victim := procs[int(leader[1]-'1')]
	var survivors []*brokerProc
	for _, p := range procs {
		if p != victim {
			survivors = append(survivors, p)
		}
	}
	t.Logf("SIGKILL %s (leader of proc/0)", victim.id)
	victim.kill()
	want = append(want, publish(survivors, "after", 20)...)
	waitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		v, err := view(survivors[0])
		if err != nil || len(v.Partitions) != 1 {
			return false, fmt.Sprintf("%v", err)
		}
		l := v.Partitions[0].Leader
		return l != "" && l != victim.id, "leader " + l
	})
	victim.start(t, bin)
	ready(procs...)
	waitFor(t, 30*time.Second, victim.id+" back in sync", func() (bool, string) {
		v, err := view(victim)
		if err != nil || len(v.Partitions) != 1 {
			return false, fmt.Sprintf("%v", err)
		}
		p := v.Partitions[0]
		return len(p.InSync) == 3 && p.HighWatermark != nil && p.EndOffset != nil && *p.HighWatermark == *p.EndOffset, fmt.Sprintf("%+v", p)
	})
	got := map[string]int{}
	waitFor(t, 30*time.Second, "every acknowledged message delivered", func() (bool, string) {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		msgs, err := victim.cl.Pull(pctx, "proc-sub", api.PullRequest{Max: 100, Wait: api.Duration(200 * time.Millisecond)})
		if err != nil {
			return false, err.Error()
		}
		var hs []string
		for _, m := range msgs {
			got[string(m.Data)]++
			hs = append(hs, m.ReceiptHandle)
		}
		if len(hs) > 0 {
			if _, err := victim.cl.Ack(pctx, "proc-sub", hs); err != nil {
				return false, err.Error()
			}
		}
		missing := 0
		for _, w := range want {
			if got[w] == 0 {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d missing", missing, len(want))
	})
}
