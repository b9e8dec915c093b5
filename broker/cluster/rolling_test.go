package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// TestRollingRestart restarts every node in turn the way a pod is stopped (SIGTERM: the node
// hands its leaderships over, then stops) while a producer publishes through every running
// node and a consumer consumes: leadership moves before each stop (no failure-timeout
// election: the timeout is long), the producer sees nothing but retryable 503s, and no
// acknowledged message is lost.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{failureTimeout: 20 * time.Second})
	c.putTopic("roll", 3, 3)
	c.putSub("roll-sub", api.SubscriptionSpec{Topic: "roll"})
	for p := 0; p < 3; p++ {
		c.waitLeader("roll", p)
	}
	prod := startProducer(c, "roll", "r", c.up)
	cs := newConsumer(c, "roll-sub", func() int { up := c.up(); return up[time.Now().Nanosecond()%len(up)] })
	stopCons := cs.run()
	waitFor(t, 20*time.Second, "traffic before the restarts", func() (bool, string) {
		return prod.count() >= 50, fmt.Sprintf("%d published", prod.count())
	})
	for i := range c.nodes {
		id := c.nodes[i].id
		n, _ := c.nodes[i].get()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := n.Handoff(ctx)
		cancel()
		if err != nil {
			t.Fatalf("handoff of %s: %v", id, err)
		}
		// Every member knows it already (not only the controller): none sends requests to a
		// broker about to stop.
		for _, j := range c.up() {
			o, _ := c.nodes[j].get()
			o.fsm.read(func(st *State) {
				for p, ps := range st.Topics["roll"].Partitions {
					if ps.Leader == id {
						t.Errorf("after the handoff of %s, %s still has it leading roll/%d", id, c.nodes[j].id, p)
					}
				}
			})
		}
		handedOff := time.Since(start)
		atStop := prod.count()
		c.kill(i)
		c.restart(i)
		c.waitReady()
		c.waitConverged("roll")
		waitFor(t, 20*time.Second, "traffic after restarting "+id, func() (bool, string) {
			return prod.count() >= atStop+30, fmt.Sprintf("%d published since the stop", prod.count()-atStop)
		})
		c.logf("%s: handed off in %s, back in sync after %s", id, handedOff.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	acked := prod.finish()
	stopCons()
	cs.drain(payloadsOf(acked), 30*time.Second)
	c.checkInLogs("roll", acked)
	prod.mu.Lock()
	defer prod.mu.Unlock()
	if len(prod.other) > 0 {
		t.Errorf("the producer got %d errors a client would not retry, e.g. %v", len(prod.other), prod.other[0])
	}
	c.logf("rolling restart: %d published, %d retried attempts, %d delivered twice", len(acked), prod.failures, len(cs.duplicates()))
}
