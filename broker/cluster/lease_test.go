package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// TestLeaseMovesWithPartition: leases granted by a leader that dies are honoured by the new
// leader (no redelivery before they end), their handles still ack, and delivery attempts
// carry over.
func TestLeaseMovesWithPartition(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.putTopic("jobs", 1, 3)
	c.putSub("jobs-sub", api.SubscriptionSpec{Topic: "jobs"})
	c.publishRetry("jobs", []int{0, 1, 2}, payloads("j", 10), 20*time.Second)
	leader := c.waitLeader("jobs", 0)
	others := except([]int{0, 1, 2}, leader)

	pull := func(i, max int, vis time.Duration) []api.Message {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		msgs, err := c.cl(i).Pull(ctx, "jobs-sub", api.PullRequest{Max: max, Wait: api.Duration(time.Second), Visibility: api.Duration(vis)})
		if err != nil {
			t.Fatalf("pull via %s: %v", c.nodes[i].id, err)
		}
		return msgs
	}
	var held []api.Message // leased for a minute, acked after the failover
	waitFor(t, 10*time.Second, "four leased", func() (bool, string) {
		held = append(held, pull(leader, 4-len(held), time.Minute)...)
		return len(held) == 4, fmt.Sprintf("%d leased", len(held))
	})
	var short []api.Message // leased for 4s, never acked: redelivered by the new leader
	waitFor(t, 10*time.Second, "one leased", func() (bool, string) {
		short = pull(leader, 1, 4*time.Second)
		return len(short) == 1, ""
	})
	leasedAt := time.Now()
	// The lease records reach the followers' progress logs (and their engines) before the kill.
	waitFor(t, 10*time.Second, "lease records on the followers", func() (bool, string) {
		for _, i := range others {
			n, _ := c.nodes[i].get()
			k := 0
			for _, r := range readLog(t, n, "jobs", 0, kindProgress) {
				if r.Tag == tagLease {
					k++
				}
			}
			if k < 2 {
				return false, fmt.Sprintf("%s has %d lease records", c.nodes[i].id, k)
			}
		}
		return true, ""
	})

	c.kill(leader)
	nl := c.waitLeader("jobs", 0, c.nodes[leader].id)
	heldOffsets := map[int64]bool{}
	for _, m := range held {
		heldOffsets[m.Offset] = true
	}
	var rest []api.Message
	var again *api.Message
	waitFor(t, 30*time.Second, "the unleased messages and the short lease again", func() (bool, string) {
		for _, m := range pull(nl, 10, time.Minute) {
			if heldOffsets[m.Offset] {
				t.Fatalf("offset %d redelivered by the new leader while the old leader's lease holds", m.Offset)
			}
			if m.Offset == short[0].Offset {
				if time.Since(leasedAt) < 4*time.Second {
					t.Fatalf("offset %d redelivered %s after its 4s lease began", m.Offset, time.Since(leasedAt))
				}
				again = &m
				continue
			}
			rest = append(rest, m)
		}
		return len(rest) == 5 && again != nil, fmt.Sprintf("%d unleased, short lease back: %v", len(rest), again != nil)
	})
	if again.DeliveryAttempt != 2 {
		t.Errorf("redelivery of the short lease is attempt %d, want 2 (attempts carry over)", again.DeliveryAttempt)
	}

	// The old leader's handles still ack (by offset), and so do the new ones.
	hs := []string{again.ReceiptHandle}
	for _, m := range append(held, rest...) {
		hs = append(hs, m.ReceiptHandle)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.cl(others[0]).Ack(ctx, "jobs-sub", hs)
	if err != nil || resp.Acked != 10 {
		t.Fatalf("ack after failover: %+v, %v", resp, err)
	}
	if got := pull(nl, 10, time.Minute); len(got) != 0 {
		t.Fatalf("delivered after everything was acked: %d messages", len(got))
	}
	waitFor(t, 10*time.Second, "every offset done on the in-sync replicas", func() (bool, string) {
		done := c.committedDone("jobs", 0, "jobs-sub")
		var missing []int64
		for off := int64(0); off < 10; off++ {
			if !done[off] {
				missing = append(missing, off)
			}
		}
		slices.Sort(missing)
		return len(missing) == 0, fmt.Sprintf("not done: %v", missing)
	})
}
