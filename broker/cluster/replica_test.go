package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/store"
)

// Unit-sized checks on a one-node cluster.

// TestBatchSentAgain: a leader given a batch it stored already (a forwarding broker lost the
// answer and retries) does not store it twice.
func TestBatchSentAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{nodes: 1})
	c.putTopic("again", 1, 1)
	n, _ := c.nodes[0].get()
	r := n.replica("again", 0)
	batch := func(ids ...string) []store.Record {
		var out []store.Record
		for _, id := range ids {
			out = append(out, store.Record{ID: id, Timestamp: time.Now().UnixMilli(), Data: []byte(id)})
		}
		return out
	}
	base1, err := r.appendLeader(kindData, batch("a-1", "a-2", "a-3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.appendLeader(kindData, batch("b-1")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		recs []store.Record
		want int64 // -1: stored anew
	}{
		{"the same batch", batch("a-1", "a-2", "a-3"), base1},
		{"a prefix of it", batch("a-1", "a-2"), base1},
		{"the same first id, other records", batch("a-1", "x-2"), -1},
		{"a new batch", batch("c-1"), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := r.logEnd(kindData)
			base, err := r.appendLeader(kindData, tc.recs)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want < 0 {
				want = end
			}
			if base != want {
				t.Errorf("base %d, want %d", base, want)
			}
		})
	}
	ids := map[string]int{}
	for _, rec := range readLog(t, n, "again", 0, kindData) {
		ids[rec.ID]++
	}
	want := map[string]int{"a-1": 2, "a-2": 1, "a-3": 1, "b-1": 1, "x-2": 1, "c-1": 1}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("log ids %v, want %v", ids, want)
	}
}

// TestProgressOfSubscriptionNotApplied: a follower catching up on the metadata gets progress
// of a subscription created by a Raft entry it has not applied yet: the record is retried
// (not dropped as if the subscription had been deleted).
func TestProgressOfSubscriptionNotApplied(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{nodes: 1})
	c.putTopic("prog", 1, 1)
	c.putSub("prog-sub", api.SubscriptionSpec{Topic: "prog"})
	n, _ := c.nodes[0].get()
	k := replicaKey{"prog", 0}
	record := func(sub string, epoch uint32) []store.Record {
		return []store.Record{{Key: sub, Data: encodeProgress(epoch, []engine.DoneRange{{Partition: 0, From: 0, N: 1}})}}
	}
	applied := n.fsm.appliedIndex()
	if err := n.applyProgressRecords(k, record("future-sub", uint32(applied+50))); err == nil {
		t.Errorf("progress of a subscription the metadata will create was dropped")
	}
	if err := n.applyProgressRecords(k, record("deleted-sub", uint32(applied))); err != nil {
		t.Errorf("progress of a subscription the metadata no longer has: %v", err)
	}
}

// TestProgressAfterClose: progress handed to a stopped node fails at once (an ack waiting for
// it must not hang: the engine's Ack waits for the replication of its done ranges).
func TestProgressAfterClose(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{nodes: 1})
	c.putTopic("closed", 1, 1)
	n, _ := c.nodes[0].get()
	n.Close()
	errc := make(chan error, 1)
	go func() {
		errc <- n.Progress("some-sub", 1, "closed", []engine.DoneRange{{Partition: 0, From: 0, N: 1}})()
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Errorf("progress handed to a stopped node reported as replicated")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("progress handed to a stopped node never completes")
	}
}
