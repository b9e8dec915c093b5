package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

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

// atLeaders runs a receipt-handle operation at the leader of each partition the handles name:
// local here, as the internal call method elsewhere; add merges each leader's answer.
func atLeaders[R any](n *Node, sub string, handles []string, timeout time.Duration, local func([]string) (R, error),
	method string, req func([]string) handlesRequest, add func(R)) error {
	groups, err := n.byLeader(sub, handles)
	if err != nil {
		return err
	}
	for id, hs := range groups {
		var r R
		if id == n.cfg.NodeID {
			r, err = local(hs)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err = n.callMember(ctx, id, method, req(hs), &r)
			cancel()
		}
		if err != nil {
			return err
		}
		add(r)
	}
	return nil
}

// Ack acks handles at their partitions' leaders.
func (n *Node) Ack(sub string, handles []string) (api.AckResponse, error) {
	if err := n.current(); err != nil {
		return api.AckResponse{}, err
	}
	if len(handles) == 0 {
		return n.eng.Ack(sub, handles)
	}
	resp := api.AckResponse{Invalid: []string{}}
	err := atLeaders(n, sub, handles, n.cfg.CommitTimeout+5*time.Second,
		func(hs []string) (api.AckResponse, error) { return n.eng.Ack(sub, hs) },
		"ack", func(hs []string) handlesRequest { return handlesRequest{Sub: sub, Handles: hs} },
		func(r api.AckResponse) {
			resp.Acked += r.Acked
			resp.Invalid = append(resp.Invalid, r.Invalid...)
		})
	if err != nil {
		return api.AckResponse{}, err
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
	resp := api.NackResponse{Invalid: []string{}}
	err := atLeaders(n, sub, handles, 10*time.Second,
		func(hs []string) (api.NackResponse, error) { return n.eng.Nack(sub, hs, delay) },
		"nack", func(hs []string) handlesRequest { return handlesRequest{Sub: sub, Handles: hs, Delay: delay} },
		func(r api.NackResponse) {
			resp.Nacked += r.Nacked
			resp.Invalid = append(resp.Invalid, r.Invalid...)
		})
	if err != nil {
		return api.NackResponse{}, err
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
