package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"
)

// A fetcher copies, for every partition this node follows whose leader is one given member,
// the leader's data and progress logs: one long-polling request for all of them at a time.
// Its fetch offsets tell the leader how far this replica got (Kafka's replica fetcher).
type fetcher struct {
	n      *Node
	leader string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

const (
	fetchMaxWait  = 500 * time.Millisecond
	fetchMaxBytes = 1 << 20 // per log per request
)

// syncFetchers runs one fetcher per leader this node follows partitions of.
func (n *Node) syncFetchers() {
	leaders := map[string]bool{}
	for _, r := range n.replicaList() {
		r.mu.Lock()
		if r.role == roleFollower && r.leaderID != "" {
			leaders[r.leaderID] = true
		}
		r.mu.Unlock()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping() {
		return
	}
	for id, f := range n.fetchers {
		if !leaders[id] {
			f.cancel()
			delete(n.fetchers, id)
		}
	}
	for id := range leaders {
		if _, ok := n.fetchers[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		f := &fetcher{n: n, leader: id, ctx: ctx, cancel: cancel, done: make(chan struct{})}
		n.fetchers[id] = f
		n.wg.Add(1)
		go f.run()
	}
}

// entries lists what to fetch from this fetcher's leader.
func (f *fetcher) entries() ([]fetchEntry, []*replica) {
	var xs []fetchEntry
	var rs []*replica
	for _, r := range f.n.replicaList() {
		r.mu.Lock()
		mine := r.role == roleFollower && r.leaderID == f.leader
		r.mu.Unlock()
		if !mine {
			continue
		}
		for _, kind := range kinds {
			if x, ok := r.fetchEntry(kind); ok {
				xs = append(xs, x)
				rs = append(rs, r)
			}
		}
	}
	// A stable order: easier to read in a trace, and fair across partitions.
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		x, y := xs[idx[a]], xs[idx[b]]
		if x.Topic != y.Topic {
			return x.Topic < y.Topic
		}
		if x.Partition != y.Partition {
			return x.Partition < y.Partition
		}
		return x.Kind < y.Kind
	})
	sx := make([]fetchEntry, len(xs))
	sr := make([]*replica, len(xs))
	for i, k := range idx {
		sx[i], sr[i] = xs[k], rs[k]
	}
	return sx, sr
}

func (f *fetcher) run() {
	defer f.n.wg.Done()
	defer close(f.done)
	backoff := 50 * time.Millisecond
	for f.ctx.Err() == nil {
		xs, rs := f.entries()
		if len(xs) == 0 {
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		progressed, err := f.fetchOnce(xs, rs)
		if err != nil {
			if f.ctx.Err() == nil {
				f.n.log.Debug("fetch", "leader", f.leader, "err", err)
			}
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		_ = progressed
	}
}

// fetchOnce sends one fetch and applies the answer.
func (f *fetcher) fetchOnce(xs []fetchEntry, rs []*replica) (bool, error) {
	addr := f.n.members()[f.leader]
	if addr == "" {
		return false, fmt.Errorf("leader %q has no address", f.leader)
	}
	req := &fetchRequest{Follower: f.n.cfg.NodeID, MaxWaitMs: uint64(fetchMaxWait / time.Millisecond), Entries: xs}
	ctx, cancel := context.WithTimeout(f.ctx, fetchMaxWait+5*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, f.n.scheme+"://"+addr+"/v1/internal/fetch", bytes.NewReader(req.encode()))
	if err != nil {
		return false, err
	}
	hr.Header.Set("Content-Type", "application/octet-stream")
	resp, err := f.n.client.Do(hr)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := readBody(resp, 256<<20)
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("fetch from %s: %s: %s", f.leader, resp.Status, bytes.TrimSpace(body[:min(len(body), 300)]))
	}
	results, err := decodeFetchResults(body)
	if err != nil {
		return false, err
	}
	if len(results) != len(xs) {
		return false, fmt.Errorf("fetch from %s: %d results for %d entries", f.leader, len(results), len(xs))
	}
	progressed := false
	notLeader := 0
	for i, res := range results {
		if res.Code == fetchNotLeader || res.Code == fetchUnknown {
			notLeader++
		}
		p, err := rs[i].applyFetched(xs[i], res)
		if err != nil {
			f.n.log.Warn("apply fetched records", "partition", rs[i].key.String(), "kind", xs[i].Kind, "err", err)
			continue
		}
		progressed = progressed || p
	}
	if notLeader == len(results) {
		// Our metadata is ahead of or behind the leader's: give the reconciler a moment.
		select {
		case <-f.ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return progressed, nil
}

// serveFetch answers a follower's fetch, long-polling up to its max wait when nothing is new.
func (n *Node) serveFetch(ctx context.Context, req *fetchRequest) []fetchResult {
	n.ctl.heartbeat(req.Follower) // a fetching follower is alive
	deadline := time.Now().Add(min(time.Duration(req.MaxWaitMs)*time.Millisecond, 2*time.Second))
	for {
		wake := n.bumped()
		results := make([]fetchResult, len(req.Entries))
		idle := true
		budget := 8 << 20
		for i, x := range req.Entries {
			r := n.replica(x.Topic, x.Partition)
			if r == nil {
				results[i] = fetchResult{Code: fetchUnknown}
				idle = false
				continue
			}
			mb := fetchMaxBytes
			if budget < mb {
				mb = max(budget, 1)
			}
			res := r.serveFetch(req.Follower, x, mb)
			for _, rec := range res.Records {
				budget -= len(rec.Data) + 64
			}
			// A new high watermark alone does not end the long poll: followers need it only
			// when they are promoted (and then recompute it), so it rides on the next answer
			// instead of costing every follower a round trip per commit.
			if res.Code != fetchOK || len(res.Records) > 0 {
				idle = false
			}
			results[i] = res
		}
		if !idle || !time.Now().Before(deadline) {
			return results
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return results
		case <-n.stop:
			t.Stop()
			return results
		}
		t.Stop()
	}
}

// readBody reads a response body into one buffer sized by Content-Length when it is known.
func readBody(resp *http.Response, limit int64) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= limit {
		b := make([]byte, n)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}
