package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldmq/herald/broker/api"
)

// Membership operations, for the operator (scale-down) and for graceful stops:
//
//	POST   /v1/cluster/members/{id}/drain   move its replicas and leaderships away (202)
//	DELETE /v1/cluster/members/{id}/drain   stop draining
//	DELETE /v1/cluster/members/{id}         remove it from the cluster: 409 while it still
//	                                        holds replicas, unless ?force=true
//	GET    /v1/cluster/members/{id}         the member, with its replica and leader counts
//
// A broker that gets SIGTERM first hands its leaderships over (Handoff), so a rolling restart
// costs producers retries at most.

// memberView is a member with its placement counts.
func (n *Node) memberView(st *State, id, addr string, ready bool) api.ClusterMember {
	m := api.ClusterMember{ID: id, Address: addr, Ready: ready}
	if sm := st.Members[id]; sm != nil {
		m.Draining, m.Leaving = sm.Draining, sm.Leaving
	}
	for _, t := range st.Topics {
		for _, p := range t.Partitions {
			for _, r := range p.Replicas {
				if r == id {
					m.Replicas++
				}
			}
			if p.Leader == id {
				m.Leaders++
			}
		}
	}
	m.Drained = m.Draining && m.Replicas == 0
	return m
}

// AdminHandler serves /v1/cluster/members/….
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster/members/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		members := n.members()
		addr, ok := members[id]
		if !ok {
			writeErr(w, api.NotFound("id", "no member %q", id))
			return
		}
		st, _ := n.fsm.snapshotState()
		ready := id == n.cfg.NodeID && n.Ready()
		if id != n.cfg.NodeID {
			ctx, cancel := context.WithTimeout(r.Context(), time.Second)
			ready = n.peerReady(ctx, addr)
			cancel()
		}
		writeJSON(w, n.memberView(st, id, addr, ready))
	})
	flag := func(draining bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if _, ok := n.members()[id]; !ok {
				writeErr(w, api.NotFound("id", "no member %q", id))
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
			defer cancel()
			if err := n.propose(ctx, &Command{Op: opSetDraining, MemberID: id, Draining: draining}); err != nil {
				writeErr(w, err)
				return
			}
			st, _ := n.fsm.snapshotState()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			b, _ := json.Marshal(n.memberView(st, id, n.members()[id], false))
			w.Write(append(b, '\n'))
		}
	}
	mux.HandleFunc("POST /v1/cluster/members/{id}/drain", flag(true))
	mux.HandleFunc("DELETE /v1/cluster/members/{id}/drain", flag(false))
	mux.HandleFunc("DELETE /v1/cluster/members/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
		defer cancel()
		in := removeRequest{ID: r.PathValue("id"), Force: r.URL.Query().Get("force") == "true"}
		var err error
		if n.isLeader() {
			_, err = n.rpcRemove(ctx, mustJSON(in))
		} else {
			err = n.callLeader(ctx, "remove", in, nil)
		}
		if err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, api.NotFound("path", "no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type removeRequest struct {
	ID    string `json:"id"`
	Force bool   `json:"force"`
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// rpcRemove removes a member from the Raft configuration (controller only).
func (n *Node) rpcRemove(ctx context.Context, b json.RawMessage) (any, error) {
	if !n.isLeader() {
		return nil, errNoController
	}
	var in removeRequest
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	if _, ok := n.members()[in.ID]; !ok {
		return nil, api.NotFound("id", "no member %q", in.ID)
	}
	st, _ := n.fsm.snapshotState()
	if m := n.memberView(st, in.ID, "", false); m.Replicas > 0 && !in.Force {
		return nil, api.Precondition("id", "member %q still holds %d replicas; drain it first (POST /v1/cluster/members/%s/drain) and wait until it is drained", in.ID, m.Replicas, in.ID)
	}
	if in.ID == n.cfg.NodeID {
		// Hand the controller role over first, so the removal is committed by the others.
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return nil, mapRaftErr(err)
		}
		return nil, errNoController // the caller retries on the new controller
	}
	if err := n.raft.RemoveServer(raft.ServerID(in.ID), 0, 10*time.Second).Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	if _, err := n.apply(&Command{Op: opRemoveMember, MemberID: in.ID}); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// Handoff moves every leadership off this node (and the controller role, if it has it), for a
// graceful stop. It returns when the node leads nothing or ctx ends.
func (n *Node) Handoff(ctx context.Context) error {
	n.handingOff.Store(true)
	if _, ok := n.members()[n.cfg.NodeID]; !ok || len(n.members()) < 2 {
		return nil // removed (scale-down) or alone: nobody to hand anything to
	}
	if err := n.propose(ctx, &Command{Op: opSetLeaving, MemberID: n.cfg.NodeID, Draining: true}); err != nil {
		return err
	}
	for {
		leads := 0
		n.fsm.read(func(s *State) {
			for _, t := range s.Topics {
				for _, p := range t.Partitions {
					// Partitions without another in-sync replica cannot move (RF 1, or the
					// others are down): they go offline with this node.
					if p.Leader == n.cfg.NodeID && len(p.ISR) > 1 {
						leads++
					}
				}
			}
		})
		if leads == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	n.awaitApplied(ctx, n.fsm.appliedIndex())
	if n.isLeader() && len(n.members()) > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return mapRaftErr(err)
		}
	}
	return nil
}

// awaitApplied waits (up to 2 s, or ctx) until the other members have applied the metadata up
// to index. A Raft follower learns that an entry is committed only from the leader's next
// message: without the wait, a broker that stops right after its leaderships moved (above all
// the controller itself) leaves the others naming it leader for a moment, and they send
// requests to a broker that is gone.
func (n *Node) awaitApplied(ctx context.Context, index uint64) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for id := range n.members() {
		if id == n.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var out struct {
					Index uint64 `json:"index"`
				}
				if err := n.callMember(ctx, id, "appliedIndex", struct{}{}, &out); err == nil && out.Index >= index {
					return
				}
				select {
				case <-ctx.Done():
					return // a member that is down or slow does not hold the stop up for long
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
}

// clearLeaving undoes a previous run's Handoff once this node is back (reconcile calls it).
func (n *Node) clearLeaving(st *State) {
	m := st.Members[n.cfg.NodeID]
	if m == nil || !m.Leaving || n.handingOff.Load() || !n.clearing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.clearing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.propose(ctx, &Command{Op: opSetLeaving, MemberID: n.cfg.NodeID, Draining: false}); err != nil {
			n.log.Debug("clear leaving flag", "err", err)
		}
	}()
}
