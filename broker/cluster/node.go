// Package cluster makes several brokers one: a Raft group (hashicorp/raft) holds the metadata,
// and partitions are replicated Kafka-style by followers fetching from their leader. The
// design, the acknowledgement rule and the failure handling are in docs/adr/0001-replication.md.
//
// Wiring: New, then engine.Open with Config.Replicator = the node, then Start with the engine.
// The node serves the internal API (Handler) on the broker's own HTTP listener, and implements
// the public API's operations (server.Backend) by forwarding what this node cannot serve.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
	"github.com/heraldmq/herald/internal/hostsfile"
)

// Config configures one node.
type Config struct {
	// NodeID names this broker in the cluster (the pod name under the operator).
	NodeID string
	// Advertise is the host:port of this broker's HTTP listener as its peers reach it.
	Advertise string
	// Peers are the founding members, id → address, the same list on every founding node
	// (it includes this node). A node with Raft state ignores it.
	Peers map[string]string
	// Join lists addresses of existing members; a node without Raft state asks them to add it.
	Join []string
	// DataDir holds the Raft log, snapshots, progress logs and epoch caches; "" keeps them in
	// memory (tests).
	DataDir string
	// Sync is the fsync policy of the progress logs (the broker's --fsync).
	Sync store.SyncPolicy
	// TLS, when set, is used to reach peers over HTTPS.
	TLS    *tls.Config
	Logger *slog.Logger

	// FailureTimeout: a member not heard from for this long is down. Default 3s.
	FailureTimeout time.Duration
	// HeartbeatInterval: how often members report to the controller. Default 500ms.
	HeartbeatInterval time.Duration
	// ReplicaLagTime: an in-sync follower that has not caught up for this long leaves the ISR.
	// Default 10s.
	ReplicaLagTime time.Duration
	// CommitTimeout bounds how long a write waits for the in-sync replicas. Default 15s.
	CommitTimeout time.Duration
	// PreferredLeaderDelay: a partition's preferred replica takes its leadership back once it
	// has been up this long (after a restart). Default 10s.
	PreferredLeaderDelay time.Duration
	// RaftHeartbeat and RaftElection tune hashicorp/raft (defaults 500ms and 1s).
	RaftHeartbeat, RaftElection time.Duration
}

func (c *Config) setDefaults() {
	if c.FailureTimeout == 0 {
		c.FailureTimeout = 3 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 500 * time.Millisecond
	}
	if c.ReplicaLagTime == 0 {
		c.ReplicaLagTime = 10 * time.Second
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 15 * time.Second
	}
	if c.PreferredLeaderDelay == 0 {
		c.PreferredLeaderDelay = 10 * time.Second
	}
	if c.RaftHeartbeat == 0 {
		c.RaftHeartbeat = 500 * time.Millisecond
	}
	if c.RaftElection == 0 {
		c.RaftElection = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Node is one broker of a cluster.
type Node struct {
	cfg           Config
	log           *slog.Logger
	eng           *engine.Broker
	fsm           *fsm
	raft          *raft.Raft
	stream        *streamLayer
	transport     *raft.NetworkTransport
	closers       []io.Closer
	progressStore store.Store
	client        *http.Client
	scheme        string
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)

	mu       sync.Mutex
	replicas map[replicaKey]*replica
	fetchers map[string]*fetcher // by leader id

	bmu     sync.Mutex
	bumpCh  chan struct{} // closed and replaced at every local log or high-watermark change
	reconCh chan struct{}
	recMu   sync.Mutex // one reconcile at a time

	ctl      *controller
	progress *progressWriter

	// incarnation identifies this process (random, never 0); heartbeats carry it so the
	// controller can tell a restart even within the failure timeout. durable: every write is
	// fsynced (Config.Sync is SyncAlways, the zero value), so a restart loses nothing
	// acknowledged. See applyRestarted and fencedFromLeading.
	incarnation uint64
	durable     bool

	handingOff atomic.Bool // Handoff started: do not clear the leaving flag
	// Metadata catch-up after a start (see caughtUp): the last Raft index on disk at start,
	// the controller's commit index when first asked, and whether both were reached.
	startIndex   uint64
	commitTarget uint64
	commitAsked  bool
	metaCurrent  atomic.Bool
	clearing     atomic.Bool

	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	ready   chan struct{}
}

// New prepares a node; call Start once the engine is open with the node as its Replicator.
func New(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: a node id is required")
	}
	if cfg.Advertise == "" {
		return nil, errors.New("cluster: an advertise address is required")
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), replicas: map[replicaKey]*replica{}, fetchers: map[string]*fetcher{},
		bumpCh: make(chan struct{}), reconCh: make(chan struct{}, 1), stop: make(chan struct{}), ready: make(chan struct{}), scheme: "http"}
	if cfg.TLS != nil {
		n.scheme = "https"
	}
	n.incarnation, n.durable = newIncarnation(), cfg.Sync == store.SyncAlways
	// Peers' names resolve through the local cluster's hosts file when it has one.
	n.dial = hostsfile.FromEnv().DialContext((&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	tr := &http.Transport{TLSClientConfig: cfg.TLS, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute, DialContext: n.dial}
	n.client = &http.Client{Transport: tr}
	opts := store.Options{Sync: cfg.Sync, SegmentBytes: 16 << 20, OnWrite: n.bump}
	if cfg.DataDir == "" {
		n.progressStore = store.NewMemoryStore(opts)
	} else {
		st, err := store.NewFileStore(filepath.Join(cfg.DataDir, "progress"), opts)
		if err != nil {
			return nil, err
		}
		n.progressStore = st
	}
	n.fsm = newFSM(n.triggerReconcile)
	n.ctl = newController(n)
	n.progress = newProgressWriter(n)
	return n, nil
}

// newIncarnation returns a random non-zero id for this process (0 means "unknown" in
// heartbeats and in the metadata).
func newIncarnation() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (Go 1.24+: it crashes the program instead)
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Start starts Raft and the node's background work.
func (n *Node) Start(eng *engine.Broker) error {
	n.eng = eng
	if err := eng.Metrics.Registry.Register(metricsCollector{n}); err != nil {
		return err
	}
	stream, err := newStreamLayer(n.cfg.Advertise, n.cfg.TLS)
	if err != nil {
		return err
	}
	stream.dial = n.dial
	n.stream = stream
	hl := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	n.transport = raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hl)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout = n.cfg.RaftElection
	rc.ElectionTimeout = n.cfg.RaftElection
	rc.LeaderLeaseTimeout = n.cfg.RaftHeartbeat
	rc.CommitTimeout = 20 * time.Millisecond
	rc.SnapshotThreshold = 1024
	rc.TrailingLogs = 1024
	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if n.cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(n.cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return fmt.Errorf("cluster: raft log: %w", err)
		}
		n.closers = append(n.closers, bolt)
		logs, stable = bolt, bolt
		fss, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hl)
		if err != nil {
			return err
		}
		snaps = fss
	}
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return err
	}
	n.startIndex = lastCommandIndex(logs)
	r, err := raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.transport)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	bootstrap := !has && len(n.cfg.Peers) > 0 && len(n.cfg.Join) == 0
	if bootstrap {
		var servers []raft.Server
		for id, addr := range n.cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
		}
		sort.Slice(servers, func(i, k int) bool { return servers[i].ID < servers[k].ID })
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	n.wg.Add(6)
	go n.reconcileLoop()
	go n.heartbeatLoop()
	go n.ctl.run()
	go n.isrLoop()
	go n.progress.run()
	go n.delayLoop()
	if !has && len(n.cfg.Join) > 0 {
		n.wg.Add(1)
		go n.joinLoop(len(n.cfg.Peers) > 0)
	}
	if len(n.cfg.Join) > 0 {
		n.wg.Add(1)
		go n.rejoinLoop()
	}
	return nil
}

// Close stops the node (not the engine).
func (n *Node) Close() error {
	var errs []error
	n.stopped.Do(func() {
		close(n.stop)
		n.mu.Lock()
		for _, f := range n.fetchers {
			f.cancel()
		}
		n.mu.Unlock()
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if n.stream != nil {
			n.stream.Close()
		}
		if n.transport != nil {
			n.transport.Close()
		}
		n.wg.Wait()
		for _, c := range n.closers {
			errs = append(errs, c.Close())
		}
		errs = append(errs, n.progressStore.Close())
	})
	return errors.Join(errs...)
}

// LogWritten implements engine.LogWriteObserver: a leader's write wakes its followers' fetches
// before its own fsync is done.
func (n *Node) LogWritten() { n.bump() }

// bump wakes fetches long-polling on this node.
func (n *Node) bump() {
	n.bmu.Lock()
	close(n.bumpCh)
	n.bumpCh = make(chan struct{})
	n.bmu.Unlock()
}

func (n *Node) bumped() <-chan struct{} {
	n.bmu.Lock()
	defer n.bmu.Unlock()
	return n.bumpCh
}

func (n *Node) triggerReconcile() {
	select {
	case n.reconCh <- struct{}{}:
	default:
	}
}

func (n *Node) stopping() bool {
	select {
	case <-n.stop:
		return true
	default:
		return false
	}
}

// isLeader reports whether this node is the Raft leader (the controller).
func (n *Node) isLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// leaderAddr is the controller's address ("" while there is none).
func (n *Node) leaderAddr() (string, string) {
	addr, id := n.raft.LeaderWithID()
	return string(addr), string(id)
}

// members returns the Raft configuration: id → address.
func (n *Node) members() map[string]string {
	out := map[string]string{}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = string(s.Address)
	}
	return out
}

// apply proposes a command; only on the controller. It returns the command's Raft index.
func (n *Node) apply(c *Command) (uint64, error) {
	c.Now = time.Now().UTC().Truncate(time.Second)
	b, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	f := n.raft.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		return 0, mapRaftErr(err)
	}
	if res, ok := f.Response().(applyResult); ok && res.err != nil {
		return f.Index(), res.err
	}
	return f.Index(), nil
}

// propose applies a command on the controller, forwarding it there if needed, and waits until
// this node has applied it too.
func (n *Node) propose(ctx context.Context, c *Command) error {
	if n.isLeader() {
		_, err := n.apply(c)
		return err
	}
	var idx struct {
		Index uint64 `json:"index"`
	}
	if err := n.callLeader(ctx, "propose", c, &idx); err != nil {
		return err
	}
	return n.waitApplied(ctx, idx.Index)
}

// waitApplied waits until the local FSM has applied index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	for {
		applied := n.fsm.appliedIndex()
		if applied >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return errShutdown
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// joinLoop asks existing members to add this node until it is in the configuration. With
// mayFound (it also has founding Peers: pod 0 under the operator), it founds the cluster
// instead when for foundAfter no address answered as a member of one.
func (n *Node) joinLoop(mayFound bool) {
	defer n.wg.Done()
	const foundAfter = 3 * time.Second
	start := time.Now()
	sawCluster := false
	for !n.stopping() {
		if _, ok := n.members()[n.cfg.NodeID]; ok {
			return
		}
		for _, addr := range n.cfg.Join {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := n.callAddr(ctx, addr, "join", map[string]string{"id": n.cfg.NodeID, "address": n.cfg.Advertise}, nil)
			cancel()
			if err == nil {
				n.log.Info("joined the cluster", "via", addr)
				return
			}
			// Only a member answers "no controller" (or forwards to one): brokers that are not
			// members yet, still starting, or unreachable say nothing about an existing cluster.
			if isNoController(err) {
				sawCluster = true
			}
			n.log.Debug("join", "via", addr, "err", err)
		}
		if mayFound && !sawCluster && time.Since(start) > foundAfter {
			var servers []raft.Server
			for id, addr := range n.cfg.Peers {
				servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
			}
			if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.log.Error("bootstrap", "err", err)
			} else {
				n.log.Info("founded the cluster: no existing member answered")
			}
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

// rejoinLoop covers a member that was removed (scale-down) and comes back with its old Raft
// state: it never hears from a leader again, so after a while without one it asks to join like
// a new member.
func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	const alone = 10 * time.Second
	lastLeader := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if addr, _ := n.leaderAddr(); addr != "" {
			lastLeader = time.Now()
			continue
		}
		if time.Since(lastLeader) < alone {
			continue
		}
		for _, addr := range n.cfg.Join {
			if addr == n.cfg.Advertise {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := n.callAddr(ctx, addr, "join", map[string]string{"id": n.cfg.NodeID, "address": n.cfg.Advertise}, nil)
			cancel()
			if err == nil {
				n.log.Info("asked to join again after a long time without a leader", "via", addr)
				lastLeader = time.Now()
				break
			}
		}
	}
}

// lastCommandIndex is the index of the last metadata command in the Raft log on disk (0 if
// none is left after compaction: the snapshot then holds them all). Configuration and no-op
// entries do not reach the state machine, so they cannot be waited for.
func lastCommandIndex(logs raft.LogStore) uint64 {
	first, err1 := logs.FirstIndex()
	last, err2 := logs.LastIndex()
	if err1 != nil || err2 != nil {
		return 0
	}
	for i := last; i >= first && i > 0 && last-i < 4096; i-- {
		var l raft.Log
		if logs.GetLog(i, &l) == nil && l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return errNoController
	case errors.Is(err, raft.ErrRaftShutdown):
		return errShutdown
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// ParsePeers parses "id=host:port,id=host:port".
func ParsePeers(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, x := range splitList(s) {
		id, addr, ok := strings.Cut(x, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("cluster: peer %q is not id=host:port", x)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("cluster: peer %q: %w", x, err)
		}
		out[id] = addr
	}
	return out, nil
}

// ParseJoin parses "host:port,host:port".
func ParseJoin(s string) []string { return splitList(s) }
