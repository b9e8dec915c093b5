package cluster

import (
	"context"
	"errors"
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
	return n.appendKind(kindData, topic, p, recs)
}

// appendKind appends recs to one of the partition's logs (data, or delayed messages) at its
// leader.
func (n *Node) appendKind(kind logKind, topic string, p int, recs []store.Record) error {
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
				base, err = r.appendLeader(kind, recs)
			}
		default:
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout+5*time.Second)
			addr := n.members()[leader]
			base, err = n.forwardAppend(ctx, addr, kind, &appendRequest{Topic: topic, Partition: p, Incarnation: inc, Records: recs})
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
