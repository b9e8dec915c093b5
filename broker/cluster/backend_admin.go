package cluster

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/heraldmq/herald/broker/api"
)

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
