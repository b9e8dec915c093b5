package cluster

// The test harness: in-process clusters of real nodes (engine + cluster node + HTTP server on a
// loopback port), a simulated network between them that tests can cut, crash/restart helpers,
// and polling helpers. See cluster_test.go for the scenarios.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/push"
	"github.com/heraldmq/herald/broker/server"
	"github.com/heraldmq/herald/broker/store"
)

// ---- the simulated network ---------------------------------------------------------------

// netSim opens every connection a node makes to a peer (Raft and the internal HTTP calls: the
// harness gives every node its dialer), so a test can cut a node off: its connections to
// and from peers are closed and new ones refused, while clients (the test) still reach it.
type netSim struct {
	mu    sync.Mutex
	cut   map[string]bool // advertised addresses cut off from every peer
	conns map[*simConn]struct{}
}

var testNet = &netSim{cut: map[string]bool{}, conns: map[*simConn]struct{}{}}

type simConn struct {
	net.Conn
	from, to string
	once     sync.Once
}

func (c *simConn) Close() error {
	c.once.Do(func() {
		testNet.mu.Lock()
		delete(testNet.conns, c)
		testNet.mu.Unlock()
	})
	return c.Conn.Close()
}

var errCut = errors.New("netsim: the network between these nodes is cut")

func (s *netSim) dial(ctx context.Context, from, network, addr string) (net.Conn, error) {
	s.mu.Lock()
	blocked := s.cut[from] || s.cut[addr]
	s.mu.Unlock()
	if blocked {
		return nil, errCut
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &simConn{Conn: conn, from: from, to: addr}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut[from] || s.cut[addr] { // cut while dialing
		conn.Close()
		return nil, errCut
	}
	s.conns[c] = struct{}{}
	return c, nil
}

// isolate cuts addr off from every peer, closing the connections it has.
func (s *netSim) isolate(addr string) {
	s.mu.Lock()
	s.cut[addr] = true
	var doomed []*simConn
	for c := range s.conns {
		if c.from == addr || c.to == addr {
			doomed = append(doomed, c)
		}
	}
	s.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

func (s *netSim) heal(addr string) {
	s.mu.Lock()
	delete(s.cut, addr)
	s.mu.Unlock()
}

// ---- logs ----------------------------------------------------------------------------------

// logSink collects a cluster's logs; they are printed when the test fails (or always with
// HERALD_TEST_LOG=1).
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("HERALD_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logSink) tail(max int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// ---- the cluster ---------------------------------------------------------------------------

type clusterOpts struct {
	nodes          int
	failureTimeout time.Duration
	commitTimeout  time.Duration
	replicaLag     time.Duration
	withPush       bool
}

type tcluster struct {
	t     testing.TB
	opts  clusterOpts
	nodes []*tnode
	peers map[string]string
	logs  *logSink
	hc    *http.Client
}

// tnode is one broker: its data dir and port survive restarts.
type tnode struct {
	c    *tcluster
	id   string
	addr string
	dir  string

	mu     sync.Mutex
	up     bool
	ln     net.Listener
	srv    *http.Server
	eng    *engine.Broker
	node   *Node
	pushes *push.Manager
	cl     *client.Client
	// sync is the fsync policy of its next start (the zero value is SyncAlways).
	sync store.SyncPolicy
}

func newCluster(t testing.TB, o clusterOpts) *tcluster {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.failureTimeout == 0 {
		o.failureTimeout = time.Second
	}
	if o.commitTimeout == 0 {
		o.commitTimeout = 5 * time.Second
	}
	if o.replicaLag == 0 {
		o.replicaLag = 5 * time.Second
	}
	c := &tcluster{t: t, opts: o, peers: map[string]string{}, logs: &logSink{},
		hc: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}}}
	var lns []net.Listener
	for i := 0; i < o.nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		id := fmt.Sprintf("n%d", i+1)
		n := &tnode{c: c, id: id, addr: ln.Addr().String(), dir: filepath.Join(t.TempDir(), id)}
		cl, err := client.New("http://"+n.addr, client.WithHTTPClient(c.hc), client.WithTimeout(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n.cl = cl
		c.nodes = append(c.nodes, n)
		c.peers[id] = n.addr
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs (tail):\n%s", c.logs.tail(400<<10))
		}
		var wg sync.WaitGroup
		for _, n := range c.nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.stop() }()
		}
		wg.Wait()
		c.hc.CloseIdleConnections()
		for _, n := range c.nodes {
			testNet.heal(n.addr) // the port may serve another test's node later
		}
	})
	for i, n := range c.nodes {
		if err := n.start(lns[i]); err != nil {
			t.Fatalf("start %s: %v", n.id, err)
		}
	}
	c.waitReady()
	return c
}

func (c *tcluster) logf(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	c.t.Log(msg)
	fmt.Fprintf(c.logs, "---- TEST %s %s\n", time.Now().Format("15:04:05.000"), msg)
}

func (n *tnode) start(ln net.Listener) error {
	c := n.c
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", c.t.Name())
	node, err := New(Config{NodeID: n.id, Advertise: n.addr, Peers: c.peers, DataDir: filepath.Join(n.dir, "cluster"),
		Sync: n.sync, Logger: log, FailureTimeout: c.opts.failureTimeout, HeartbeatInterval: 100 * time.Millisecond,
		ReplicaLagTime: c.opts.replicaLag, CommitTimeout: c.opts.commitTimeout, PreferredLeaderDelay: time.Second,
		RaftHeartbeat: 150 * time.Millisecond, RaftElection: 400 * time.Millisecond})
	if err != nil {
		ln.Close()
		return err
	}
	// Raft and the internal HTTP calls go through the simulated network.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return testNet.dial(ctx, n.addr, network, addr)
	}
	node.dial = dial
	node.client.Transport.(*http.Transport).DialContext = dial
	eng, err := engine.Open(engine.Config{DataDir: n.dir, Sync: n.sync, Logger: log, Replicator: node})
	if err != nil {
		ln.Close()
		node.Close()
		return err
	}
	if err := node.Start(eng); err != nil {
		ln.Close()
		node.Close()
		eng.Close()
		return err
	}
	var pushes *push.Manager
	if c.opts.withPush {
		pushes = push.NewManager(eng, push.Options{Logger: log.With("node", n.id), LeaseWait: 500 * time.Millisecond, ShutdownGrace: time.Millisecond})
	}
	srv := &http.Server{Handler: server.NewWithOptions(eng, log, server.Options{Backend: node, Internal: node.Handler(), Cluster: node.ServeClusterView, ClusterAdmin: node.AdminHandler()}),
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go srv.Serve(ln)
	n.mu.Lock()
	n.up, n.ln, n.srv, n.eng, n.node, n.pushes = true, ln, srv, eng, node, pushes
	n.mu.Unlock()
	return nil
}

// stop stops a node abruptly, as close to a crash as in-process allows: its peers lose every
// connection to it at once, then its server, node and engine stop without any handoff.
func (n *tnode) stop() {
	n.mu.Lock()
	if !n.up {
		n.mu.Unlock()
		return
	}
	n.up = false
	srv, node, eng, pushes := n.srv, n.node, n.eng, n.pushes
	n.mu.Unlock()
	testNet.isolate(n.addr)
	srv.Close()
	node.Close() // first: a push dispatcher's ack waiting for its replication must not hold the stop
	if pushes != nil {
		pushes.Close()
	}
	eng.Close()
	n.c.hc.CloseIdleConnections()
}

// kill crashes a node (stop) and logs it.
func (c *tcluster) kill(i int) {
	c.t.Helper()
	c.logf("killing %s", c.nodes[i].id)
	c.nodes[i].stop()
}

// restart starts a stopped node again on its data dir and port.
func (c *tcluster) restart(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.logf("restarting %s", n.id)
	var ln net.Listener
	var err error
	for try := 0; try < 50; try++ {
		if ln, err = net.Listen("tcp", n.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("restart %s: %v", n.id, err)
	}
	testNet.heal(n.addr)
	if err := n.start(ln); err != nil {
		c.t.Fatalf("restart %s: %v", n.id, err)
	}
}

// isolate cuts a running node off from its peers (a network partition); heal undoes it.
func (c *tcluster) isolate(i int) {
	c.t.Helper()
	c.logf("isolating %s", c.nodes[i].id)
	testNet.isolate(c.nodes[i].addr)
}

func (c *tcluster) heal(i int) {
	c.t.Helper()
	c.logf("healing %s", c.nodes[i].id)
	testNet.heal(c.nodes[i].addr)
}

func (n *tnode) isUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// get returns the running node's parts (nil when it is down).
func (n *tnode) get() (*Node, *engine.Broker) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return nil, nil
	}
	return n.node, n.eng
}

func (c *tcluster) up() []int {
	var out []int
	for i, n := range c.nodes {
		if n.isUp() {
			out = append(out, i)
		}
	}
	return out
}

func (c *tcluster) index(id string) int {
	for i, n := range c.nodes {
		if n.id == id {
			return i
		}
	}
	c.t.Fatalf("no node %q", id)
	return -1
}

// ---- waiting -------------------------------------------------------------------------------

// waitFor polls cond until it holds or the deadline passes (then the test fails with cond's
// last explanation).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	start := time.Now()
	dumped := false
	for {
		if !dumped && os.Getenv("HERALD_TEST_DUMP") != "" && time.Since(start) > 5*time.Second {
			dumped = true
			buf := make([]byte, 32<<20)
			k := runtime.Stack(buf, true)
			f := filepath.Join(os.TempDir(), fmt.Sprintf("herald-stacks-%d.txt", time.Now().UnixNano()))
			os.WriteFile(f, buf[:k], 0o644)
			t.Logf("goroutines dumped to %s while waiting for %s", f, what)
		}
		ok, w := cond()
		if ok {
			return
		}
		why = w
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *tcluster) waitReady() {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "every running node ready", func() (bool, string) {
		for _, i := range c.up() {
			n, _ := c.nodes[i].get()
			if n == nil || !n.Ready() {
				return false, c.nodes[i].id + " is not ready"
			}
		}
		return true, ""
	})
}

// state returns the metadata as the most up-to-date running node (not cut off) has it.
func (c *tcluster) state() *State {
	var best *State
	var bestIdx uint64
	for _, i := range c.up() {
		n, _ := c.nodes[i].get()
		if n == nil {
			continue
		}
		testNet.mu.Lock()
		cut := testNet.cut[c.nodes[i].addr]
		testNet.mu.Unlock()
		if cut {
			continue
		}
		st, idx := n.fsm.snapshotState()
		if best == nil || idx > bestIdx {
			best, bestIdx = st, idx
		}
	}
	if best == nil {
		return newState()
	}
	return best
}

func (c *tcluster) partition(topic string, p int) PartitionState {
	st := c.state()
	t := st.Topics[topic]
	if t == nil || p >= len(t.Partitions) {
		return PartitionState{}
	}
	return *t.Partitions[p]
}

// waitLeader waits until the partition has a leader (not in exclude) that runs as the leader,
// and returns its index.
func (c *tcluster) waitLeader(topic string, p int, exclude ...string) int {
	c.t.Helper()
	var idx int
	waitFor(c.t, 20*time.Second, fmt.Sprintf("a leader of %s/%d", topic, p), func() (bool, string) {
		ps := c.partition(topic, p)
		if ps.Leader == "" || slices.Contains(exclude, ps.Leader) {
			return false, fmt.Sprintf("metadata: %+v", ps)
		}
		idx = c.index(ps.Leader)
		n, _ := c.nodes[idx].get()
		if n == nil {
			return false, ps.Leader + " is down"
		}
		r := n.replica(topic, p)
		if r == nil {
			return false, "no replica on " + ps.Leader
		}
		ro, ep, _ := r.roleView()
		if ro != roleLeader || ep != ps.Epoch {
			return false, fmt.Sprintf("%s is %s at epoch %d, metadata says leader at %d", ps.Leader, ro, ep, ps.Epoch)
		}
		return true, ""
	})
	return idx
}

// readLog reads a whole replica log of a running node.
func readLog(t testing.TB, n *Node, topic string, p int, kind logKind) []store.Record {
	t.Helper()
	r := n.replica(topic, p)
	if r == nil {
		return nil
	}
	var out []store.Record
	from := r.logStart(kind)
	for {
		recs, err := r.read(kind, from, 1000, 4<<20)
		if err != nil {
			t.Fatalf("read %s/%d kind %d on %s: %v", topic, p, kind, n.cfg.NodeID, err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
		from = recs[len(recs)-1].Offset + 1
	}
}

// converged reports whether every running replica of each partition of topic is in sync
// with the leader: the same data and progress logs record by record, the leader's high
// watermarks at its logs' ends, and the ISR holding every running replica.
func (c *tcluster) converged(topic string) (bool, string) {
	st := c.state()
	t := st.Topics[topic]
	if t == nil {
		return false, "no topic " + topic
	}
	for p, ps := range t.Partitions {
		if ps.Leader == "" {
			return false, fmt.Sprintf("%s/%d has no leader", topic, p)
		}
		li := c.index(ps.Leader)
		ln, _ := c.nodes[li].get()
		if ln == nil {
			return false, fmt.Sprintf("%s/%d: leader %s is down", topic, p, ps.Leader)
		}
		lr := ln.replica(topic, p)
		if lr == nil {
			return false, "no leader replica"
		}
		ro, ep, hw := lr.roleView()
		if ro != roleLeader || ep != ps.Epoch {
			return false, fmt.Sprintf("%s/%d: %s not leading at epoch %d yet", topic, p, ps.Leader, ps.Epoch)
		}
		for kind := range hw {
			if end := lr.logEnd(logKind(kind)); hw[kind] != end {
				return false, fmt.Sprintf("%s/%d kind %d: leader hw %d, end %d", topic, p, kind, hw[kind], end)
			}
		}
		for _, id := range ps.Replicas {
			i := c.index(id)
			if !c.nodes[i].isUp() {
				continue
			}
			if !slices.Contains(ps.ISR, id) {
				return false, fmt.Sprintf("%s/%d: running replica %s not in the ISR %v", topic, p, id, ps.ISR)
			}
			if id == ps.Leader {
				continue
			}
			fn, _ := c.nodes[i].get()
			if fn == nil {
				continue
			}
			for _, kind := range kinds {
				want := readLog(c.t, ln, topic, p, kind)
				got := readLog(c.t, fn, topic, p, kind)
				if len(got) != len(want) {
					return false, fmt.Sprintf("%s/%d kind %d: %s has %d records, leader %s %d", topic, p, kind, id, len(got), ps.Leader, len(want))
				}
				for k := range want {
					if got[k].Offset != want[k].Offset || got[k].ID != want[k].ID || got[k].Key != want[k].Key || !bytes.Equal(got[k].Data, want[k].Data) {
						return false, fmt.Sprintf("%s/%d kind %d: %s differs from leader %s at offset %d", topic, p, kind, id, ps.Leader, want[k].Offset)
					}
				}
			}
		}
	}
	return true, ""
}

func (c *tcluster) waitConverged(topic string) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, "replicas of "+topic+" converge", func() (bool, string) { return c.converged(topic) })
}

// ---- API helpers -----------------------------------------------------------------------------

func (c *tcluster) cl(i int) *client.Client { return c.nodes[i].cl }

func (c *tcluster) putTopic(topic string, partitions, rf int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := c.cl(c.up()[0]).PutTopic(ctx, topic, api.TopicSpec{Partitions: partitions, ReplicationFactor: rf}); err != nil {
		c.t.Fatalf("put topic %s: %v", topic, err)
	}
	// Every node applied it and every partition is led.
	for p := 0; p < partitions; p++ {
		c.waitLeader(topic, p)
	}
	waitFor(c.t, 10*time.Second, "topic on every node", func() (bool, string) {
		for _, i := range c.up() {
			n, _ := c.nodes[i].get()
			for p := 0; p < partitions; p++ {
				if n == nil || n.replica(topic, p) == nil {
					return false, fmt.Sprintf("%s has no replica of %s/%d", c.nodes[i].id, topic, p)
				}
			}
		}
		return true, ""
	})
}

func (c *tcluster) putSub(name string, spec api.SubscriptionSpec) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if spec.StartAt == "" {
		spec.StartAt = "earliest"
	}
	if _, _, err := c.cl(c.up()[0]).PutSubscription(ctx, name, spec); err != nil {
		c.t.Fatalf("put subscription %s: %v", name, err)
	}
	waitFor(c.t, 10*time.Second, "subscription on every node", func() (bool, string) {
		for _, i := range c.up() {
			_, e := c.nodes[i].get()
			if e == nil || e.SubscriptionEpoch(name) == 0 {
				return false, c.nodes[i].id + " lacks " + name
			}
		}
		return true, ""
	})
}

func text(s string) *string { return &s }

// published is one acknowledged publish.
type published struct {
	payload string
	res     api.PublishResult
}

// publishRetry publishes payloads one request each, through the nodes in via (round robin,
// skipping down ones), retrying every failure until it is acknowledged or the deadline passes.
func (c *tcluster) publishRetry(topic string, via []int, payloads []string, deadline time.Duration) ([]published, int) {
	c.t.Helper()
	var out []published
	retries := 0
	end := time.Now().Add(deadline)
	k := 0
	for _, p := range payloads {
		for {
			i := via[k%len(via)]
			k++
			if !c.nodes[i].isUp() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			res, err := c.cl(i).Publish(ctx, topic, []api.PublishMessage{{Text: text(p), Key: p}})
			cancel()
			if err == nil {
				out = append(out, published{p, res[0]})
				break
			}
			retries++
			if time.Now().After(end) {
				c.t.Fatalf("publish %s via %s: %v", p, c.nodes[i].id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out, retries
}

func payloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// checkInLogs checks that every acknowledged publish is in the partition logs of every running
// replica exactly once, at the offset it was acknowledged with.
func (c *tcluster) checkInLogs(topic string, acked []published) {
	c.t.Helper()
	st := c.state()
	t := st.Topics[topic]
	for p, ps := range t.Partitions {
		for _, id := range ps.Replicas {
			n, _ := c.nodes[c.index(id)].get()
			if n == nil {
				continue
			}
			recs := readLog(c.t, n, topic, p, kindData)
			count := map[string]int{}
			at := map[string]int64{}
			where := map[string][]int64{}
			for _, r := range recs {
				count[r.ID]++
				at[r.ID] = r.Offset
				where[r.ID] = append(where[r.ID], r.Offset)
			}
			for _, a := range acked {
				if a.res.Partition != p {
					continue
				}
				if count[a.res.ID] != 1 || at[a.res.ID] != a.res.Offset {
					c.t.Errorf("%s/%d on %s: acknowledged %s (%s, offset %d) found %d times (at %v)", topic, p, id, a.payload, a.res.ID, a.res.Offset, count[a.res.ID], where[a.res.ID])
				}
			}
		}
	}
}

// committedDone returns the offsets of partition p that the subscription's committed
// progress (the leader's progress log below its high watermark) marks done.
func (c *tcluster) committedDone(topic string, p int, sub string) map[int64]bool {
	out := map[int64]bool{}
	ps := c.partition(topic, p)
	if ps.Leader == "" {
		return out
	}
	n, _ := c.nodes[c.index(ps.Leader)].get()
	if n == nil {
		return out
	}
	r := n.replica(topic, p)
	if r == nil {
		return out
	}
	_, _, hw := r.roleView()
	for _, rec := range readLog(c.t, n, topic, p, kindProgress) {
		if rec.Offset >= hw[kindProgress] || rec.Key != sub || rec.Tag == tagLease {
			continue
		}
		_, ranges, err := decodeProgress(rec.Data, p)
		if err != nil {
			continue
		}
		for _, d := range ranges {
			for off := d.From; off < d.From+d.N; off++ {
				out[off] = true
			}
		}
	}
	return out
}

// getView fetches GET /v1/cluster from a node over HTTP.
func (c *tcluster) getView(i int) (api.Cluster, error) { return fetchView(c.hc, c.nodes[i].addr) }

func fetchView(hc *http.Client, addr string) (api.Cluster, error) {
	var v api.Cluster
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/cluster", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("GET /v1/cluster: %s: %s", resp.Status, b)
	}
	return v, json.Unmarshal(b, &v)
}

// consumer pulls and acks through one node, recording every delivery.
type consumer struct {
	c   *tcluster
	sub string
	via func() int

	mu         sync.Mutex
	deliveries map[string]int // by payload
	ackedAt    map[string]int // payload → the phase when its ack was confirmed
	afterPhase map[string]int // payload → deliveries during later phases
	phase      int
	errs       int
}

func newConsumer(c *tcluster, sub string, via func() int) *consumer {
	return &consumer{c: c, sub: sub, via: via, deliveries: map[string]int{}, ackedAt: map[string]int{}, afterPhase: map[string]int{}}
}

// setPhase starts a new phase: deliveries of messages whose ack was confirmed in an earlier
// phase are redeliveries of acked messages.
func (cs *consumer) setPhase(p int) {
	cs.mu.Lock()
	cs.phase = p
	cs.mu.Unlock()
}

// once pulls one batch and acks it; it returns how many messages it got.
func (cs *consumer) once(wait time.Duration) int {
	i := cs.via()
	ctx, cancel := context.WithTimeout(context.Background(), wait+10*time.Second)
	defer cancel()
	// A short lease: a new leader honours the old leader's leases (replicated), so what a
	// killed leader leased and never saw acked comes back when the lease ends.
	msgs, err := cs.c.cl(i).Pull(ctx, cs.sub, api.PullRequest{Max: 50, Wait: api.Duration(wait), Visibility: api.Duration(5 * time.Second)})
	if err != nil {
		cs.mu.Lock()
		cs.errs++
		cs.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		return 0
	}
	if len(msgs) == 0 {
		return 0
	}
	cs.mu.Lock()
	hs := make([]string, len(msgs))
	for k, m := range msgs {
		pl := string(m.Data)
		cs.deliveries[pl]++
		if ph, ok := cs.ackedAt[pl]; ok && ph < cs.phase {
			cs.afterPhase[pl]++
		}
		hs[k] = m.ReceiptHandle
	}
	cs.mu.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	resp, err := cs.c.cl(i).Ack(ctx2, cs.sub, hs)
	phaseBefore := -1
	cs.mu.Lock()
	phaseBefore = cs.phase
	cs.mu.Unlock()
	if err != nil {
		cs.mu.Lock()
		cs.errs++
		cs.mu.Unlock()
		return len(msgs)
	}
	invalid := map[string]bool{}
	for _, h := range resp.Invalid {
		invalid[h] = true
	}
	cs.mu.Lock()
	for k, m := range msgs {
		if !invalid[hs[k]] {
			if _, ok := cs.ackedAt[string(m.Data)]; !ok {
				cs.ackedAt[string(m.Data)] = phaseBefore
			}
		}
	}
	cs.mu.Unlock()
	return len(msgs)
}

// drain consumes until every payload in want was delivered at least once.
func (cs *consumer) drain(want []string, timeout time.Duration) {
	cs.c.t.Helper()
	waitFor(cs.c.t, timeout, "every acknowledged message delivered", func() (bool, string) {
		cs.once(200 * time.Millisecond)
		cs.mu.Lock()
		defer cs.mu.Unlock()
		var missing []string
		for _, w := range want {
			if cs.deliveries[w] == 0 {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return false, fmt.Sprintf("%d never delivered, e.g. %v", len(missing), missing[:min(5, len(missing))])
		}
		return true, ""
	})
}

func (cs *consumer) duplicates() map[string]int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := map[string]int{}
	for k, v := range cs.deliveries {
		if v > 1 {
			out[k] = v
		}
	}
	return out
}

func payloadsOf(ps []published) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.payload
	}
	return out
}

func isUnavailable(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == api.CodeUnavailable && e.HTTPStatus == http.StatusServiceUnavailable
}

// transferController makes the node the Raft leader (the controller).
func (c *tcluster) transferController(i int) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "controller on "+c.nodes[i].id, func() (bool, string) {
		n, _ := c.nodes[i].get()
		if n.isLeader() {
			return true, ""
		}
		for _, k := range c.up() {
			m, _ := c.nodes[k].get()
			if m != nil && m.isLeader() {
				m.raft.LeadershipTransferToServer(raft.ServerID(c.nodes[i].id), raft.ServerAddress(c.nodes[i].addr))
			}
		}
		_, id := n.leaderAddr()
		return false, "controller is " + id
	})
}

func except(all []int, skip ...int) []int {
	var out []int
	for _, i := range all {
		if !slices.Contains(skip, i) {
			out = append(out, i)
		}
	}
	return out
}
