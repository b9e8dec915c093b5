package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// The public API on a cluster node: every request is served here or forwarded, so clients
// never need to know the topology. Admin changes go through the controller (Raft); publishes
// go to partition leaders (engine → Append); pulls gather from every partition leader; acks,
// nacks and visibility changes go to the leader of the partition named in the handle.

const adminTimeout = 15 * time.Second

// errCatchingUp answers public requests while a (re)started node replays the metadata: until
// then an existing topic would look absent (a 404 the client would not retry).
var errCatchingUp = api.Unavailable("this broker is catching up on the cluster's metadata; retry")

// current returns errCatchingUp until the metadata is current (see caughtUp).
func (n *Node) current() error {
	if n.metaCurrent.Load() {
		return nil
	}
	n.triggerReconcile()
	return errCatchingUp
}

// Append implements engine.Replicator: it stores recs in the partition wherever its leader
// is, retrying across a leader change, and writes the offsets back.
func (n *Node) Append(topic string, p int, recs []store.Record) error {
	deadline := time.Now().Add(n.cfg.CommitTimeout)
	var last error = errNotLeader
	for {
		if err := n.current(); err != nil {
			if time.Now().After(deadline) || n.stopping() {
				return err
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		leader, inc, ok := n.partitionLeader(topic, p)
		if !ok {
			return api.NotFound("topic", "topic %q has no partition %d", topic, p)
		}
		var base int64
		var err error
		switch {
		case leader == "":
			err = api.Unavailable("partition %s/%d has no leader right now (none of its in-sync replicas is up)", topic, p)
		case leader == n.cfg.NodeID:
			r := n.replica(topic, p)
			if r == nil {
				err = errNotLeader
			} else {
				base, err = r.appendLeader(kindData, recs)
			}
		default:
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout+5*time.Second)
			addr := n.members()[leader]
			base, err = n.forwardAppend(ctx, addr, &appendRequest{Topic: topic, Partition: p, Incarnation: inc, Records: recs})
			cancel()
		}
		if err == nil {
			for i := range recs {
				recs[i].Offset = base + int64(i)
			}
			return nil
		}
		last = err
		if !retryable(err) || time.Now().After(deadline) || n.stopping() {
			var ae *api.Error
			if !errors.As(last, &ae) {
				// Always an API error: a transport failure is a 503 the client retries.
				last = api.Unavailable("partition %s/%d: %v", topic, p, last)
			}
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// retryable errors are the ones a leader change or a restart causes: the write was not done.
func retryable(err error) bool {
	var u errUnreachable
	if errors.As(err, &u) {
		return true
	}
	var e *api.Error
	if errors.As(err, &e) {
		return e == errNotLeader || e.Message == errNotLeader.Message || e.Message == engine.ErrNotLeader.Message
	}
	return false
}

// partitionLeader looks a partition up in the metadata.
func (n *Node) partitionLeader(topic string, p int) (leader string, incarnation uint64, ok bool) {
	n.fsm.read(func(s *State) {
		t := s.Topics[topic]
		if t == nil || p < 0 || p >= len(t.Partitions) {
			return
		}
		leader, incarnation, ok = t.Partitions[p].Leader, t.Incarnation, true
	})
	return
}

// ---- admin ----------------------------------------------------------------------------

type adminRequest struct {
	Op        string                `json:"op"`
	Name      string                `json:"name"`
	TopicSpec *api.TopicSpec        `json:"topicSpec,omitempty"`
	SubSpec   *api.SubscriptionSpec `json:"subSpec,omitempty"`
}

type adminResponse struct {
	Index   uint64            `json:"index"`
	Created bool              `json:"created"`
	Topic   *api.Topic        `json:"topic,omitempty"`
	Sub     *api.Subscription `json:"sub,omitempty"`
}

// admin runs an admin request on the controller and waits until this node applied it.
func (n *Node) admin(req adminRequest) (*adminResponse, error) {
	if err := n.current(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var resp *adminResponse
	var err error
	if n.isLeader() {
		resp, err = n.adminLocal(req)
	} else {
		resp = &adminResponse{}
		err = n.callLeader(ctx, "admin", req, resp)
	}
	if err != nil {
		return nil, err
	}
	if resp.Index > 0 {
		if err := n.waitApplied(ctx, resp.Index); err != nil {
			return nil, api.Unavailable("the change was made but this broker has not applied it yet; retry the read")
		}
		n.reconcile()
	}
	return resp, nil
}

func (n *Node) rpcAdmin(ctx context.Context, b json.RawMessage) (any, error) {
	if !n.isLeader() {
		return nil, errNoController
	}
	var req adminRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return n.adminLocal(req)
}

// adminLocal validates and applies an admin request; on the controller only.
func (n *Node) adminLocal(req adminRequest) (*adminResponse, error) {
	st, _ := n.fsm.snapshotState()
	switch req.Op {
	case opPutTopic:
		spec, err := n.eng.NormalizeTopicSpec(*req.TopicSpec)
		if err != nil {
			return nil, err
		}
		if _, e := validateName(req.Name); e != nil {
			return nil, e
		}
		active := activeMembers(st, n.members())
		cur := st.Topics[req.Name]
		if spec.ReplicationFactor == 0 {
			if cur != nil {
				spec.ReplicationFactor = cur.Spec.ReplicationFactor
			} else {
				spec.ReplicationFactor = min(3, len(active))
			}
		}
		if cur != nil && spec.ReplicationFactor != cur.Spec.ReplicationFactor {
			return nil, api.Precondition("replicationFactor", "topic %q has replicationFactor %d; it cannot change", req.Name, cur.Spec.ReplicationFactor)
		}
		if cur == nil && spec.ReplicationFactor > len(active) {
			return nil, api.Invalid("replicationFactor", "replicationFactor %d exceeds the %d brokers of the cluster", spec.ReplicationFactor, len(active))
		}
		var placement []*PartitionState
		if cur != nil {
			if spec.Partitions < len(cur.Partitions) {
				return nil, api.Precondition("partitions", "topic %q has %d partitions; partitions can grow but never shrink", req.Name, len(cur.Partitions))
			}
			if specEqual(cur.Spec, spec) {
				v := topicView(cur)
				return &adminResponse{Topic: &v}, nil
			}
			placement = place(st, active, spec.Partitions-len(cur.Partitions), spec.ReplicationFactor)
		} else {
			placement = place(st, active, spec.Partitions, spec.ReplicationFactor)
		}
		idx, err := n.apply(&Command{Op: opPutTopic, Topic: req.Name, TopicSpec: &spec, Placement: placement})
		if err != nil {
			return nil, err
		}
		var v api.Topic
		n.fsm.read(func(s *State) { v = topicView(s.Topics[req.Name]) })
		return &adminResponse{Index: idx, Created: cur == nil, Topic: &v}, nil
	case opDeleteTopic:
		if _, e := validateName(req.Name); e != nil {
			return nil, e
		}
		idx, err := n.apply(&Command{Op: opDeleteTopic, Topic: req.Name})
		return &adminResponse{Index: idx}, err
	case opPutSub:
		spec, err := n.eng.NormalizeSubscriptionSpec(req.Name, *req.SubSpec)
		if err != nil {
			return nil, err
		}
		if cur := st.Subscriptions[req.Name]; cur != nil {
			if cur.Spec.Topic != spec.Topic {
				return nil, api.Precondition("topic", "subscription %q reads topic %q; its topic cannot change", req.Name, cur.Spec.Topic)
			}
			if subSpecEqual(cur.Spec, spec) {
				v := subView(cur)
				return &adminResponse{Sub: &v}, nil
			}
		}
		created := st.Subscriptions[req.Name] == nil
		idx, err := n.apply(&Command{Op: opPutSub, Sub: req.Name, SubSpec: &spec})
		if err != nil {
			return nil, err
		}
		var v api.Subscription
		n.fsm.read(func(s *State) { v = subView(s.Subscriptions[req.Name]) })
		return &adminResponse{Index: idx, Created: created, Sub: &v}, nil
	case opDeleteSub:
		if _, e := validateName(req.Name); e != nil {
			return nil, e
		}
		idx, err := n.apply(&Command{Op: opDeleteSub, Sub: req.Name})
		return &adminResponse{Index: idx}, err
	}
	return nil, api.Invalid("op", "unknown admin op %q", req.Op)
}

func validateName(name string) (string, *api.Error) {
	if len(name) < 1 || len(name) > 249 {
		return "", api.Invalid("name", "names are 1 to 249 characters of [a-zA-Z0-9._-]")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "", api.Invalid("name", "names are 1 to 249 characters of [a-zA-Z0-9._-]")
		}
	}
	return name, nil
}

func subSpecEqual(a, b api.SubscriptionSpec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// activeMembers are the members new replicas may go to: in the Raft configuration and not
// draining.
func activeMembers(st *State, members map[string]string) []string {
	var out []string
	for id := range members {
		if m := st.Members[id]; m != nil && m.Draining {
			continue
		}
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func topicView(t *TopicState) api.Topic {
	spec := t.Spec
	if spec.Retention != nil {
		r := *spec.Retention
		spec.Retention = &r
	}
	return api.Topic{Name: t.Name, TopicSpec: spec, CreateTime: t.CreateTime}
}

func subView(s *SubState) api.Subscription {
	return api.Subscription{Name: s.Name, SubscriptionSpec: s.Spec, CreateTime: s.CreateTime}
}

// PutTopic creates or updates a topic cluster-wide.
func (n *Node) PutTopic(name string, spec api.TopicSpec) (api.Topic, bool, error) {
	resp, err := n.admin(adminRequest{Op: opPutTopic, Name: name, TopicSpec: &spec})
	if err != nil {
		return api.Topic{}, false, err
	}
	return *resp.Topic, resp.Created, nil
}

// DeleteTopic deletes a topic cluster-wide.
func (n *Node) DeleteTopic(name string) error {
	_, err := n.admin(adminRequest{Op: opDeleteTopic, Name: name})
	return err
}

// PutSubscription creates or updates a subscription cluster-wide.
func (n *Node) PutSubscription(name string, spec api.SubscriptionSpec) (api.Subscription, bool, error) {
	resp, err := n.admin(adminRequest{Op: opPutSub, Name: name, SubSpec: &spec})
	if err != nil {
		return api.Subscription{}, false, err
	}
	return *resp.Sub, resp.Created, nil
}

// DeleteSubscription deletes a subscription cluster-wide.
func (n *Node) DeleteSubscription(name string) error {
	_, err := n.admin(adminRequest{Op: opDeleteSub, Name: name})
	return err
}

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
// delayed counts summed (each member keeps the delayed messages published through it).
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

// ---- pull, ack, nack, visibility, peek ------------------------------------------------

// subLeaders returns the members leading at least one partition of the subscription's topic.
func (n *Node) subLeaders(sub string) ([]string, error) {
	var leaders []string
	var err error
	n.fsm.read(func(s *State) {
		ss := s.Subscriptions[sub]
		if ss == nil {
			err = api.NotFound("subscription", "subscription %q not found", sub)
			return
		}
		t := s.Topics[ss.Spec.Topic]
		if t == nil {
			return
		}
		for _, p := range t.Partitions {
			if p.Leader != "" && !slices.Contains(leaders, p.Leader) {
				leaders = append(leaders, p.Leader)
			}
		}
	})
	return leaders, err
}

type pullRequest struct {
	Sub        string        `json:"sub"`
	Max        int           `json:"max"`
	Wait       time.Duration `json:"wait"`
	Visibility time.Duration `json:"visibility"`
}

func (n *Node) rpcPull(ctx context.Context, b json.RawMessage) (any, error) {
	var req pullRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	msgs, err := n.eng.Pull(ctx, req.Sub, engine.PullOptions{Max: req.Max, Wait: req.Wait, Visibility: req.Visibility})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil && len(msgs) > 0 {
		// The asking broker called this poll off (another answered first): give the leases
		// back now rather than after their visibility timeout.
		n.nackAll(req.Sub, msgs)
		return nil, ctx.Err()
	}
	return msgs, nil
}

// Pull leases messages from every partition leader of the subscription: first without
// waiting, member by member, then (if none) a long poll on all of them at once.
func (n *Node) Pull(ctx context.Context, sub string, o engine.PullOptions) ([]api.Message, error) {
	if err := n.current(); err != nil {
		return nil, err
	}
	if _, e := validateName(sub); e != nil {
		e.Field = "subscription"
		return nil, e
	}
	leaders, err := n.subLeaders(sub)
	if err != nil {
		return nil, err
	}
	if len(leaders) == 0 || (len(leaders) == 1 && leaders[0] == n.cfg.NodeID) {
		return n.eng.Pull(ctx, sub, o)
	}
	if o.Max == 0 {
		o.Max = 1
	}
	rand.Shuffle(len(leaders), func(i, k int) { leaders[i], leaders[k] = leaders[k], leaders[i] })
	pullFrom := func(ctx context.Context, id string, o engine.PullOptions) ([]api.Message, error) {
		if id == n.cfg.NodeID {
			return n.eng.Pull(ctx, sub, o)
		}
		var msgs []api.Message
		err := n.callMember(ctx, id, "pull", pullRequest{Sub: sub, Max: o.Max, Wait: o.Wait, Visibility: o.Visibility}, &msgs)
		return msgs, err
	}
	var out []api.Message
	var firstErr error
	for _, id := range leaders {
		if len(out) >= o.Max {
			break
		}
		msgs, err := pullFrom(ctx, id, engine.PullOptions{Max: o.Max - len(out), Visibility: o.Visibility})
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code != api.CodeUnavailable {
			return nil, err // bad options or a missing subscription: every member says the same
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		out = append(out, msgs...)
	}
	if len(out) > 0 || o.Wait <= 0 {
		if out == nil && firstErr != nil {
			return nil, firstErr
		}
		if out == nil {
			out = []api.Message{}
		}
		return out, nil
	}
	// Long poll everywhere; the first answer with messages wins and the others are called off
	// (a member that leased messages for a called-off poll gets them nacked straight back).
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		id   string
		msgs []api.Message
		err  error
	}
	ch := make(chan answer, len(leaders))
	for _, id := range leaders {
		go func() {
			msgs, err := pullFrom(lctx, id, engine.PullOptions{Max: o.Max, Wait: o.Wait, Visibility: o.Visibility})
			ch <- answer{id, msgs, err}
		}()
	}
	var got []api.Message
	remaining := len(leaders)
	for remaining > 0 && got == nil {
		a := <-ch
		remaining--
		if len(a.msgs) > 0 {
			got = a.msgs
		}
	}
	cancel()
	// Answers still coming (leases made just before the call-off) go back at once.
	go func() {
		for ; remaining > 0; remaining-- {
			if a := <-ch; len(a.msgs) > 0 {
				n.nackAll(sub, a.msgs)
			}
		}
	}()
	if got == nil {
		got = []api.Message{}
	}
	return got, nil
}

// nackAll returns leased messages for immediate redelivery.
func (n *Node) nackAll(sub string, msgs []api.Message) {
	hs := make([]string, len(msgs))
	for i, m := range msgs {
		hs[i] = m.ReceiptHandle
	}
	if _, err := n.Nack(sub, hs, 0); err != nil {
		n.log.Debug("give back leases of a called-off poll", "subscription", sub, "err", err)
	}
}

type handlesRequest struct {
	Sub        string        `json:"sub"`
	Handles    []string      `json:"handles"`
	Delay      time.Duration `json:"delay,omitempty"`
	Visibility time.Duration `json:"visibility,omitempty"`
}

// byLeader groups receipt handles by the member leading their partition. Handles that do not
// decode go to this node (which reports them invalid).
func (n *Node) byLeader(sub string, handles []string) (map[string][]string, error) {
	out := map[string][]string{}
	var err error
	n.fsm.read(func(s *State) {
		ss := s.Subscriptions[sub]
		if ss == nil {
			err = api.NotFound("subscription", "subscription %q not found", sub)
			return
		}
		t := s.Topics[ss.Spec.Topic]
		for _, h := range handles {
			id := n.cfg.NodeID
			if p, ok := engine.HandlePartition(h); ok && t != nil && p < len(t.Partitions) && t.Partitions[p].Leader != "" {
				id = t.Partitions[p].Leader
			}
			out[id] = append(out[id], h)
		}
	})
	return out, err
}

func (n *Node) rpcAck(ctx context.Context, b json.RawMessage) (any, error) {
	var req handlesRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return n.eng.Ack(req.Sub, req.Handles)
}

func (n *Node) rpcNack(ctx context.Context, b json.RawMessage) (any, error) {
	var req handlesRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return n.eng.Nack(req.Sub, req.Handles, req.Delay)
}

func (n *Node) rpcVisibility(ctx context.Context, b json.RawMessage) (any, error) {
	var req handlesRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	if len(req.Handles) != 1 {
		return nil, api.Invalid("receiptHandle", "one receipt handle expected")
	}
	h, err := n.eng.ModifyVisibility(req.Sub, req.Handles[0], req.Visibility)
	if err != nil {
		return nil, err
	}
	return map[string]string{"receiptHandle": h}, nil
}

// Ack acks handles at their partitions' leaders.
func (n *Node) Ack(sub string, handles []string) (api.AckResponse, error) {
	if err := n.current(); err != nil {
		return api.AckResponse{}, err
	}
	if len(handles) == 0 {
		return n.eng.Ack(sub, handles)
	}
	groups, err := n.byLeader(sub, handles)
	if err != nil {
		return api.AckResponse{}, err
	}
	resp := api.AckResponse{Invalid: []string{}}
	for id, hs := range groups {
		var r api.AckResponse
		if id == n.cfg.NodeID {
			r, err = n.eng.Ack(sub, hs)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout+5*time.Second)
			err = n.callMember(ctx, id, "ack", handlesRequest{Sub: sub, Handles: hs}, &r)
			cancel()
		}
		if err != nil {
			return api.AckResponse{}, err
		}
		resp.Acked += r.Acked
		resp.Invalid = append(resp.Invalid, r.Invalid...)
	}
	return resp, nil
}

// Nack returns handles to their partitions' leaders for redelivery.
func (n *Node) Nack(sub string, handles []string, delay time.Duration) (api.NackResponse, error) {
	if err := n.current(); err != nil {
		return api.NackResponse{}, err
	}
	if len(handles) == 0 {
		return n.eng.Nack(sub, handles, delay)
	}
	groups, err := n.byLeader(sub, handles)
	if err != nil {
		return api.NackResponse{}, err
	}
	resp := api.NackResponse{Invalid: []string{}}
	for id, hs := range groups {
		var r api.NackResponse
		if id == n.cfg.NodeID {
			r, err = n.eng.Nack(sub, hs, delay)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = n.callMember(ctx, id, "nack", handlesRequest{Sub: sub, Handles: hs, Delay: delay}, &r)
			cancel()
		}
		if err != nil {
			return api.NackResponse{}, err
		}
		resp.Nacked += r.Nacked
		resp.Invalid = append(resp.Invalid, r.Invalid...)
	}
	return resp, nil
}

// ModifyVisibility changes a lease at its partition's leader.
func (n *Node) ModifyVisibility(sub, handle string, vis time.Duration) (string, error) {
	if err := n.current(); err != nil {
		return "", err
	}
	groups, err := n.byLeader(sub, []string{handle})
	if err != nil {
		return "", err
	}
	for id := range groups {
		if id == n.cfg.NodeID {
			return n.eng.ModifyVisibility(sub, handle, vis)
		}
		var out struct {
			ReceiptHandle string `json:"receiptHandle"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.callMember(ctx, id, "visibility", handlesRequest{Sub: sub, Handles: []string{handle}, Visibility: vis}, &out); err != nil {
			return "", err
		}
		return out.ReceiptHandle, nil
	}
	return n.eng.ModifyVisibility(sub, handle, vis)
}

func (n *Node) rpcPeek(ctx context.Context, b json.RawMessage) (any, error) {
	var req pullRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return n.eng.Peek(req.Sub, req.Max)
}

// Peek gathers what every partition leader would deliver now.
func (n *Node) Peek(sub string, max int) ([]api.Message, error) {
	if err := n.current(); err != nil {
		return nil, err
	}
	leaders, err := n.subLeaders(sub)
	if err != nil {
		return nil, err
	}
	local, err := n.eng.Peek(sub, max)
	if err != nil {
		return nil, err
	}
	if max == 0 {
		max = 1
	}
	out := local
	for _, id := range leaders {
		if id == n.cfg.NodeID || len(out) >= max {
			continue
		}
		var msgs []api.Message
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.callMember(ctx, id, "peek", pullRequest{Sub: sub, Max: max - len(out)}, &msgs)
		cancel()
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

// Ready reports whether this node is a member with a controller and has applied the metadata.
func (n *Node) Ready() bool {
	if n.raft == nil || !n.eng.Ready() {
		return false
	}
	if _, ok := n.members()[n.cfg.NodeID]; !ok {
		return false
	}
	if addr, _ := n.leaderAddr(); addr == "" {
		return false
	}
	select {
	case <-n.ready:
		return true
	default:
		return false
	}
}
