package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// TestDelayedSurvivesLeaderKill: a delayed message accepted by a broker that dies before it is
// due is delivered anyway, when due and not before, by the partition's next leader; the
// cluster's stats count it while it waits; and a restarted replica rebuilds its delay index.
func TestDelayedSurvivesLeaderKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.putTopic("later", 1, 3)
	c.putSub("later-sub", api.SubscriptionSpec{Topic: "later"})
	leader := c.waitLeader("later", 0)
	others := except([]int{0, 1, 2}, leader)

	delay := api.Duration(4 * time.Second)
	far := api.Duration(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Accepted by the leader itself: on a single broker it would wait on the leader's disk.
	res, err := c.cl(leader).Publish(ctx, "later", []api.PublishMessage{
		{Text: text("soon"), Delay: &delay, Attributes: map[string]string{"k": "v"}},
		{Text: text("now")},
		{Text: text("far"), Delay: &far},
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if res[0].Offset != -1 || res[0].DeliverAt == nil {
		t.Fatalf("delayed result: %+v", res[0])
	}
	topic, err := c.cl(others[0]).GetTopic(ctx, "later")
	if err != nil || topic.Stats == nil || topic.Stats.Delayed != 2 {
		t.Fatalf("stats before the kill: %+v, %v", topic.Stats, err)
	}
	// Every replica has it before the kill (the publish returned: the ISR has it).
	for _, i := range others {
		n, _ := c.nodes[i].get()
		if got := n.replica("later", 0).delayedCount(); got != 2 {
			t.Fatalf("%s indexes %d delayed messages, want 2", c.nodes[i].id, got)
		}
	}

	c.kill(leader)
	nl := c.waitLeader("later", 0, c.nodes[leader].id)
	got := map[string]api.Message{}
	waitFor(t, 30*time.Second, "both messages delivered", func() (bool, string) {
		msgs, err := c.cl(nl).Pull(ctx, "later-sub", api.PullRequest{Max: 10, Wait: api.Duration(time.Second), Visibility: api.Duration(time.Minute)})
		if err != nil {
			return false, err.Error()
		}
		for _, m := range msgs {
			if string(m.Data) == "soon" && time.Now().Before(*res[0].DeliverAt) {
				t.Fatalf("the delayed message came %s before it was due", res[0].DeliverAt.Sub(time.Now()))
			}
			if string(m.Data) == "far" {
				t.Fatalf("a message delayed by an hour was delivered")
			}
			got[string(m.Data)] = m
		}
		return len(got) == 2, fmt.Sprintf("got %d", len(got))
	})
	soon := got["soon"]
	if len(soon.Attributes) != 1 || soon.Attributes["k"] != "v" {
		t.Errorf("delayed message attributes: %v (internal ones must not show)", soon.Attributes)
	}
	waitFor(t, 10*time.Second, "one delayed message counted", func() (bool, string) {
		topic, err := c.cl(nl).GetTopic(ctx, "later")
		if err != nil || topic.Stats == nil {
			return false, fmt.Sprint(err)
		}
		return topic.Stats.Delayed == 1, fmt.Sprintf("delayed %d", topic.Stats.Delayed)
	})

	// The restarted replica reads its delay log back: only the far one waits.
	c.restart(leader)
	c.waitReady()
	c.waitConverged("later")
	n, _ := c.nodes[leader].get()
	if got := n.replica("later", 0).delayedCount(); got != 1 {
		t.Errorf("restarted replica indexes %d delayed messages, want 1", got)
	}
	if msgs, err := c.cl(others[0]).Pull(ctx, "later-sub", api.PullRequest{Max: 10, Visibility: api.Duration(time.Minute)}); err != nil || len(msgs) != 0 {
		t.Errorf("after the restart: %d messages, %v (the delayed one must not be moved twice)", len(msgs), err)
	}
}
