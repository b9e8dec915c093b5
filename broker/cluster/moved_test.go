package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// TestMovedCopyIsDropped: a broker whose replicas move away (it is drained) frees their logs
// once the copies that replace them are in sync, and copies everything back from the leaders
// when replicas are placed on it again.
func TestMovedCopyIsDropped(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.putTopic("moving", 3, 2)
	c.putSub("moving-sub", api.SubscriptionSpec{Topic: "moving"})
	acked, _ := c.publishRetry("moving", []int{0, 1, 2}, payloads("mv", 60), 20*time.Second)
	c.waitConverged("moving")
	victim := 2
	id := c.nodes[victim].id
	n, _ := c.nodes[victim].get()
	held := 0
	for p, ps := range c.state().Topics["moving"].Partitions {
		if slices.Contains(ps.Replicas, id) {
			held++
			if _, end, _, _ := n.eng.PartitionOffsets("moving", p); end == 0 {
				t.Fatalf("%s holds moving/%d but its log is empty", id, p)
			}
		}
	}
	if held == 0 {
		t.Fatalf("%s holds no replica of moving: nothing to test", id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.cl(0).DrainMember(ctx, id); err != nil {
		t.Fatalf("drain %s: %v", id, err)
	}
	waitFor(t, 30*time.Second, id+" drained and its copies dropped", func() (bool, string) {
		m, err := c.cl(0).ClusterMember(ctx, id)
		if err != nil || !m.Drained {
			return false, fmt.Sprintf("member %+v, %v", m, err)
		}
		for p := range 3 {
			r := n.replica("moving", p)
			for _, k := range kinds {
				if s, e := r.logStart(k), r.logEnd(k); s != 0 || e != 0 {
					return false, fmt.Sprintf("moving/%d log %d on %s spans [%d, %d)", p, k, id, s, e)
				}
			}
		}
		return true, ""
	})
	c.checkInLogs("moving", acked)

	// Undrained, it gets replicas again (the spread evens out) and copies them in full.
	if err := c.cl(0).UndrainMember(ctx, id); err != nil {
		t.Fatalf("undrain %s: %v", id, err)
	}
	waitFor(t, 60*time.Second, id+" holds replicas again", func() (bool, string) {
		m, err := c.cl(0).ClusterMember(ctx, id)
		return err == nil && m.Replicas > 0, fmt.Sprintf("member %+v, %v", m, err)
	})
	c.waitConverged("moving")
	c.checkInLogs("moving", acked)
	cs := newConsumer(c, "moving-sub", func() int { return victim })
	cs.drain(payloadsOf(acked), 30*time.Second)
}
