package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// The internal API lives under /v1/internal/ on the broker's listener: the Raft transport
// (an upgraded connection), replication fetches and forwarded appends (binary, codec.go), and
// small JSON calls between members (rpc/{method}). Its shapes are not a public contract.

var (
	errNoController = api.Unavailable("the cluster has no controller right now (an election is in progress); retry")
	errShutdown     = api.Unavailable("broker is shutting down")
	errNotMember    = api.Precondition("cluster", "this broker is not a member of a cluster yet")
)

// Handler serves /v1/internal/.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+raftPath, func(w http.ResponseWriter, r *http.Request) {
		if n.stream == nil {
			writeErr(w, errShutdown)
			return
		}
		n.stream.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /v1/internal/fetch", n.handleFetch)
	mux.HandleFunc("POST /v1/internal/append", n.handleAppend)
	mux.HandleFunc("POST /v1/internal/rpc/{method}", n.handleRPC)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, api.NotFound("path", "no internal route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func writeErr(w http.ResponseWriter, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		e = &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	b, _ := json.Marshal(api.ErrorBody{Error: e})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status())
	w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (n *Node) handleFetch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		writeErr(w, api.Invalid("body", "read: %v", err))
		return
	}
	req, err := decodeFetchRequest(body)
	if err != nil {
		writeErr(w, api.Invalid("body", "%v", err))
		return
	}
	results := n.serveFetch(r.Context(), req)
	out := encodeFetchResults(results)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(out))) // the follower sizes its buffer by it
	w.Write(out)
}

func (n *Node) handleAppend(w http.ResponseWriter, r *http.Request) {
	var body []byte
	var err error
	if n := r.ContentLength; n >= 0 && n <= 200<<20 {
		body = make([]byte, n)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(io.LimitReader(r.Body, 200<<20))
	}
	if err != nil {
		writeErr(w, api.Invalid("body", "read: %v", err))
		return
	}
	req, err := decodeAppendRequest(body)
	if err != nil {
		writeErr(w, api.Invalid("body", "%v", err))
		return
	}
	rep := n.replica(req.Topic, req.Partition)
	if rep == nil || rep.incarnation != req.Incarnation {
		writeErr(w, errNotLeader)
		return
	}
	kind := kindData
	switch r.URL.Query().Get("log") {
	case "":
	case "delay":
		kind = kindDelay
	default:
		writeErr(w, api.Invalid("log", "unknown log %q (want delay, or none for the data log)", r.URL.Query().Get("log")))
		return
	}
	base, err := rep.appendLeader(kind, req.Records)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, map[string]int64{"base": base})
}

// rpc is one internal JSON call.
type rpcHandler func(ctx context.Context, body json.RawMessage) (any, error)

func (n *Node) rpcs() map[string]rpcHandler {
	return map[string]rpcHandler{
		"heartbeat": func(ctx context.Context, b json.RawMessage) (any, error) {
			// Callers from before incarnations send only the id: incarnation 0 is ignored.
			var in heartbeatRequest
			if err := json.Unmarshal(b, &in); err != nil {
				return nil, err
			}
			n.ctl.report(in)
			return struct{}{}, nil
		},
		"propose": func(ctx context.Context, b json.RawMessage) (any, error) {
			if !n.isLeader() {
				return nil, errNoController
			}
			var c Command
			if err := json.Unmarshal(b, &c); err != nil {
				return nil, err
			}
			idx, err := n.apply(&c)
			if err != nil {
				return nil, err
			}
			return map[string]uint64{"index": idx}, nil
		},
		"join": func(ctx context.Context, b json.RawMessage) (any, error) {
			var in struct{ ID, Address string }
			if err := json.Unmarshal(b, &in); err != nil {
				return nil, err
			}
			if len(n.members()) == 0 {
				return nil, errNotMember
			}
			if !n.isLeader() {
				return nil, n.callLeader(ctx, "join", in, nil)
			}
			if in.ID == "" || in.Address == "" {
				return nil, api.Invalid("id", "id and address are required")
			}
			// A node that asks to join has no Raft state: if it was a member before, it lost its
			// disk, so it must not count as an in-sync replica of anything any more.
			if _, err := n.apply(&Command{Op: opForgetReplicas, MemberID: in.ID}); err != nil {
				return nil, err
			}
			if err := n.raft.AddVoter(raft.ServerID(in.ID), raft.ServerAddress(in.Address), 0, 10*time.Second).Error(); err != nil {
				return nil, mapRaftErr(err)
			}
			return struct{}{}, nil
		},
		"appliedIndex": func(ctx context.Context, b json.RawMessage) (any, error) {
			return map[string]uint64{"index": n.fsm.appliedIndex()}, nil
		},
		"commitIndex": func(ctx context.Context, b json.RawMessage) (any, error) {
			if !n.isLeader() {
				return nil, errNoController
			}
			if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
				return nil, mapRaftErr(err)
			}
			// The last command the state machine applied: what a follower must have applied.
			return map[string]uint64{"index": n.fsm.appliedIndex()}, nil
		},
		"admin":      n.rpcAdmin,
		"pull":       n.rpcPull,
		"ack":        n.rpcAck,
		"nack":       n.rpcNack,
		"visibility": n.rpcVisibility,
		"peek":       n.rpcPeek,
		"stats":      n.rpcStats,
		"led":        n.rpcLed,
		"remove":     n.rpcRemove,
	}
}

func (n *Node) handleRPC(w http.ResponseWriter, r *http.Request) {
	h, ok := n.rpcs()[r.PathValue("method")]
	if !ok {
		writeErr(w, api.NotFound("method", "no internal method %q", r.PathValue("method")))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		writeErr(w, api.Invalid("body", "read: %v", err))
		return
	}
	out, err := h(r.Context(), body)
	if err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) {
			err = api.Invalid("body", "%v", err)
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, out)
}

// callAddr makes an internal JSON call to a member.
func (n *Node) callAddr(ctx context.Context, addr, method string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.scheme+"://"+addr+"/v1/internal/rpc/"+method, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return api.Unavailable("%s", fmt.Sprintf("broker %s is unreachable: %v", addr, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return api.Unavailable("%s", fmt.Sprintf("broker %s: %v", addr, err))
	}
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
			return eb.Error
		}
		return api.Unavailable("%s", fmt.Sprintf("broker %s: %s", addr, resp.Status))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// callMember calls a member by id.
func (n *Node) callMember(ctx context.Context, id, method string, in, out any) error {
	addr := n.members()[id]
	if addr == "" {
		return api.Unavailable("%s", fmt.Sprintf("broker %q is not a member", id))
	}
	return n.callAddr(ctx, addr, method, in, out)
}

// callLeader calls the controller, waiting for one to exist.
func (n *Node) callLeader(ctx context.Context, method string, in, out any) error {
	for {
		addr, _ := n.leaderAddr()
		if addr != "" {
			err := n.callAddr(ctx, addr, method, in, out)
			if err != errNoController && !isNoController(err) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return errNoController
		case <-n.stop:
			return errShutdown
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isNoController(err error) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == api.CodeUnavailable && e.Message == errNoController.Message
}

// forwardAppend sends records to a partition's leader and returns the first offset.
func (n *Node) forwardAppend(ctx context.Context, addr string, kind logKind, req *appendRequest) (int64, error) {
	u := n.scheme + "://" + addr + "/v1/internal/append"
	if kind == kindDelay {
		u += "?log=delay"
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(req.encode()))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Content-Type", "application/octet-stream")
	resp, err := n.client.Do(hr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return 0, errUnreachable{err} // never reached the leader: safe to send again
		}
		// It may have been stored: the client decides whether to publish again.
		return 0, api.Unavailable("the partition's leader %s did not answer: %v; the messages may or may not be stored", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, api.Unavailable("the partition's leader %s did not finish its answer: %v; the messages may or may not be stored", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb api.ErrorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != nil {
			return 0, eb.Error
		}
		return 0, api.Unavailable("%s", fmt.Sprintf("append at %s: %s", addr, resp.Status))
	}
	var out struct{ Base int64 }
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, err
	}
	return out.Base, nil
}

type errUnreachable struct{ error }

var _ = engine.ErrNotLeader
