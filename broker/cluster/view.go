package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

type ledPartition struct {
	Topic     string           `json:"topic"`
	Partition int              `json:"partition"`
	End       int64            `json:"end"`
	HW        int64            `json:"hw"`
	Lag       map[string]int64 `json:"lag"`
}

func (n *Node) localLed() []ledPartition {
	var out []ledPartition
	for _, r := range n.replicaList() {
		r.mu.Lock()
		if r.role == roleLeader {
			end := r.logEnd(kindData)
			lp := ledPartition{Topic: r.key.topic, Partition: r.key.part, End: end, HW: r.hw[kindData], Lag: map[string]int64{}}
			for _, id := range r.replicas {
				if id == n.cfg.NodeID {
					continue
				}
				if f := r.followers[id]; f != nil && f.leo[kindData] >= 0 {
					lp.Lag[id] = end - f.leo[kindData]
				} else {
					lp.Lag[id] = end
				}
			}
			out = append(out, lp)
		}
		r.mu.Unlock()
	}
	return out
}

// ClusterView gathers the cluster's state from the metadata and from every member.
func (n *Node) ClusterView(ctx context.Context) api.Cluster {
	st, _ := n.fsm.snapshotState()
	members := n.members()
	_, ctlID := n.leaderAddr()
	v := api.Cluster{Controller: ctlID, Members: []api.ClusterMember{}, Partitions: []api.ClusterPartition{}}
	var mu sync.Mutex
	led := map[replicaKey]ledPartition{}
	ready := map[string]bool{}
	var wg sync.WaitGroup
	for id, addr := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lp []ledPartition
			ok := false
			if id == n.cfg.NodeID {
				lp, ok = n.localLed(), n.Ready()
			} else {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				ok = n.peerReady(cctx, addr)
				if ok {
					_ = n.callAddr(cctx, addr, "led", struct{}{}, &lp)
				}
			}
			mu.Lock()
			ready[id] = ok
			for _, p := range lp {
				led[replicaKey{p.Topic, p.Partition}] = p
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, id := range sortedKeys(members) {
		v.Members = append(v.Members, n.memberView(st, id, members[id], ready[id]))
	}
	for _, t := range sortedTopics(st) {
		for i, p := range t.Partitions {
			pv := api.ClusterPartition{Topic: t.Name, Partition: i, Leader: p.Leader, Epoch: p.Epoch,
				Replicas: append([]string{}, p.Replicas...), InSync: append([]string{}, p.ISR...),
				UnderReplicated: len(p.ISR) < len(p.Replicas)}
			if lp, ok := led[replicaKey{t.Name, i}]; ok {
				end, hw := lp.End, lp.HW
				pv.EndOffset, pv.HighWatermark, pv.Lag = &end, &hw, lp.Lag
			}
			v.Partitions = append(v.Partitions, pv)
		}
	}
	sort.SliceStable(v.Partitions, func(i, k int) bool {
		if v.Partitions[i].Topic != v.Partitions[k].Topic {
			return v.Partitions[i].Topic < v.Partitions[k].Topic
		}
		return v.Partitions[i].Partition < v.Partitions[k].Partition
	})
	return v
}

func (n *Node) rpcLed(ctx context.Context, b json.RawMessage) (any, error) {
	out := n.localLed()
	if out == nil {
		out = []ledPartition{}
	}
	return out, nil
}

// peerReady asks a member's /readyz.
func (n *Node) peerReady(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.scheme+"://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// ServeClusterView serves GET /v1/cluster.
func (n *Node) ServeClusterView(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, n.ClusterView(r.Context()))
}
