package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// ---- reads with stats: every member reports the partitions it leads -------------------

type statsRequest struct {
	Kind string `json:"kind"` // topics | topic | subs | sub
	Name string `json:"name,omitempty"`
}

type statsResponse struct {
	Topics []api.Topic        `json:"topics,omitempty"`
	Subs   []api.Subscription `json:"subs,omitempty"`
	// Led lists, per topic, the partitions this member leads.
	Led map[string][]int `json:"led,omitempty"`
}

func (n *Node) rpcStats(ctx context.Context, b json.RawMessage) (any, error) {
	var req statsRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return n.localStats(req)
}

func (n *Node) localStats(req statsRequest) (*statsResponse, error) {
	out := &statsResponse{Led: map[string][]int{}}
	switch req.Kind {
	case "topics":
		out.Topics = n.eng.ListTopics()
	case "topic":
		t, err := n.eng.GetTopic(req.Name)
		if err != nil {
			return nil, err
		}
		out.Topics = []api.Topic{t}
	case "subs":
		out.Subs = n.eng.ListSubscriptions()
	case "sub":
		s, err := n.eng.GetSubscription(req.Name)
		if err != nil {
			return nil, err
		}
		out.Subs = []api.Subscription{s}
	default:
		return nil, api.Invalid("kind", "unknown stats kind %q", req.Kind)
	}
	for _, r := range n.replicaList() {
		if ro, _, _ := r.roleView(); ro == roleLeader {
			out.Led[r.key.topic] = append(out.Led[r.key.topic], r.key.part)
		}
	}
	return out, nil
}

// gatherStats asks every member (this one locally) in parallel; unreachable members are skipped.
func (n *Node) gatherStats(req statsRequest) []*statsResponse {
	members := n.members()
	var mu sync.Mutex
	var out []*statsResponse
	var wg sync.WaitGroup
	for id := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r *statsResponse
			if id == n.cfg.NodeID {
				r, _ = n.localStats(req)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				r = &statsResponse{}
				if err := n.callMember(ctx, id, "stats", req, r); err != nil {
					r = nil
				}
				cancel()
			}
			if r != nil {
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// mergeTopic combines members' views of one topic: each partition's stats from its leader,
// delayed counts summed (each member counts those of the partitions it leads, delays.go).
func mergeTopic(base api.Topic, views []*statsResponse) api.Topic {
	st := &api.TopicStats{Partitions: make([]api.PartitionStats, base.Partitions)}
	for i := range st.Partitions {
		st.Partitions[i].Partition = i
	}
	for _, v := range views {
		for _, t := range v.Topics {
			if t.Name != base.Name || t.Stats == nil {
				continue
			}
			st.Delayed += t.Stats.Delayed
			for _, p := range v.Led[base.Name] {
				for _, ps := range t.Stats.Partitions {
					if ps.Partition == p && p < len(st.Partitions) {
						st.Partitions[p] = ps
					}
				}
			}
		}
	}
	for _, ps := range st.Partitions {
		st.Messages += ps.EndOffset - ps.StartOffset
		st.Bytes += ps.Bytes
	}
	base.Stats = st
	return base
}

// mergeSub sums members' stats of one subscription (each counts what it delivers).
func mergeSub(base api.Subscription, views []*statsResponse) api.Subscription {
	st := &api.SubscriptionStats{}
	var lastErr *time.Time
	for _, v := range views {
		for _, s := range v.Subs {
			if s.Name != base.Name || s.Stats == nil {
				continue
			}
			x := s.Stats
			st.Backlog += x.Backlog
			st.InFlight += x.InFlight
			st.Delivered += x.Delivered
			st.Acked += x.Acked
			st.Failed += x.Failed
			st.DeadLettered += x.DeadLettered
			st.Expired += x.Expired
			if x.LastErrorTime != nil && (lastErr == nil || x.LastErrorTime.After(*lastErr)) {
				lastErr, st.LastError, st.LastErrorTime = x.LastErrorTime, x.LastError, x.LastErrorTime
			}
		}
	}
	base.Stats = st
	return base
}

// GetTopic returns a topic with cluster-wide stats.
func (n *Node) GetTopic(name string) (api.Topic, error) {
	if err := n.current(); err != nil {
		return api.Topic{}, err
	}
	var t *TopicState
	n.fsm.read(func(s *State) {
		if x := s.Topics[name]; x != nil {
			v := *x
			t = &v
		}
	})
	if t == nil {
		if _, e := validateName(name); e != nil {
			e.Field = "topic"
			return api.Topic{}, e
		}
		return api.Topic{}, api.NotFound("topic", "topic %q not found", name)
	}
	return mergeTopic(topicView(t), n.gatherStats(statsRequest{Kind: "topic", Name: name})), nil
}

// ListTopics lists every topic with cluster-wide stats.
func (n *Node) ListTopics() []api.Topic {
	st, _ := n.fsm.snapshotState()
	views := n.gatherStats(statsRequest{Kind: "topics"})
	out := make([]api.Topic, 0, len(st.Topics))
	for _, t := range sortedTopics(st) {
		out = append(out, mergeTopic(topicView(t), views))
	}
	return out
}

// GetSubscription returns a subscription with cluster-wide stats.
func (n *Node) GetSubscription(name string) (api.Subscription, error) {
	if err := n.current(); err != nil {
		return api.Subscription{}, err
	}
	var s *SubState
	n.fsm.read(func(st *State) {
		if x := st.Subscriptions[name]; x != nil {
			v := *x
			s = &v
		}
	})
	if s == nil {
		if _, e := validateName(name); e != nil {
			e.Field = "subscription"
			return api.Subscription{}, e
		}
		return api.Subscription{}, api.NotFound("subscription", "subscription %q not found", name)
	}
	return mergeSub(subView(s), n.gatherStats(statsRequest{Kind: "sub", Name: name})), nil
}

// ListSubscriptions lists every subscription with cluster-wide stats.
func (n *Node) ListSubscriptions() []api.Subscription {
	st, _ := n.fsm.snapshotState()
	views := n.gatherStats(statsRequest{Kind: "subs"})
	names := sortedKeys(st.Subscriptions)
	out := make([]api.Subscription, 0, len(names))
	for _, name := range names {
		out = append(out, mergeSub(subView(st.Subscriptions[name]), views))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Publish publishes through the engine, which routes each partition's batch to its leader.
func (n *Node) Publish(topic string, msgs []api.PublishMessage) ([]api.PublishResult, error) {
	if err := n.current(); err != nil {
		return nil, err
	}
	return n.eng.Publish(topic, msgs)
}
