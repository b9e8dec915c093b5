package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// mode is one storage implementation the engine runs on; every test runs against each.
type mode struct {
	name string
	// reopenable: the state survives Close + open (file storage only).
	reopenable bool
	cfg        func(t *testing.T) Config
}

var modes = []mode{
	{name: "memory", cfg: func(t *testing.T) Config { return Config{Memory: true} }},
	{name: "file", reopenable: true, cfg: func(t *testing.T) Config {
		return Config{DataDir: t.TempDir(), Sync: store.SyncAlways, SegmentBytes: 64 << 10}
	}},
}

func forEachMode(t *testing.T, fn func(t *testing.T, m mode, cfg Config)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { fn(t, m, m.cfg(t)) })
	}
}

func open(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func mustTopic(t *testing.T, b *Broker, name string, spec api.TopicSpec) {
	t.Helper()
	if _, _, err := b.PutTopic(name, spec); err != nil {
		t.Fatalf("PutTopic %s: %v", name, err)
	}
}

func mustSub(t *testing.T, b *Broker, name string, spec api.SubscriptionSpec) {
	t.Helper()
	if _, _, err := b.PutSubscription(name, spec); err != nil {
		t.Fatalf("PutSubscription %s: %v", name, err)
	}
}

func text(s string) *string { return &s }

func publishTexts(t *testing.T, b *Broker, topic string, texts ...string) []api.PublishResult {
	t.Helper()
	msgs := make([]api.PublishMessage, len(texts))
	for i, s := range texts {
		msgs[i] = api.PublishMessage{Text: text(s)}
	}
	res, err := b.Publish(topic, msgs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return res
}

func pull(t *testing.T, b *Broker, sub string, max int, wait time.Duration) []api.Message {
	t.Helper()
	msgs, err := b.Pull(context.Background(), sub, PullOptions{Max: max, Wait: wait})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	return msgs
}

func texts(msgs []api.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Data)
	}
	return out
}

func handles(msgs []api.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ReceiptHandle
	}
	return out
}

func stats(t *testing.T, b *Broker, sub string) api.SubscriptionStats {
	t.Helper()
	s, err := b.GetSubscription(sub)
	if err != nil {
		t.Fatal(err)
	}
	return *s.Stats
}

func TestPublishPullAckInOrder(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 1})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
		var want []string
		for i := 0; i < 50; i++ {
			want = append(want, fmt.Sprintf("m%d", i))
		}
		publishTexts(t, b, "t", want...)
		got := pull(t, b, "s", 100, 0)
		if fmt.Sprint(texts(got)) != fmt.Sprint(want) {
			t.Fatalf("first deliveries not in offset order:\n got %v\nwant %v", texts(got), want)
		}
		if st := stats(t, b, "s"); st.Backlog != 50 || st.InFlight != 50 || st.Delivered != 50 {
			t.Fatalf("stats after pull = %+v", st)
		}
		res, err := b.Ack("s", append(handles(got), "garbage"))
		if err != nil {
			t.Fatal(err)
		}
		if res.Acked != 50 || len(res.Invalid) != 1 || res.Invalid[0] != "garbage" {
			t.Fatalf("ack = %+v", res)
		}
		if st := stats(t, b, "s"); st.Backlog != 0 || st.InFlight != 0 || st.Acked != 50 {
			t.Fatalf("stats after ack = %+v", st)
		}
		// A second ack of the same handles is invalid: the lease is gone.
		res, _ = b.Ack("s", handles(got)[:1])
		if res.Acked != 0 || len(res.Invalid) != 1 {
			t.Fatalf("double ack = %+v", res)
		}
	})
}

func TestStartAt(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 1})
		publishTexts(t, b, "t", "old")
		time.Sleep(20 * time.Millisecond)
		between := time.Now().UTC().Format(time.RFC3339Nano)
		time.Sleep(20 * time.Millisecond)
		publishTexts(t, b, "t", "mid")
		mustSub(t, b, "latest", api.SubscriptionSpec{Topic: "t"})
		mustSub(t, b, "earliest", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
		mustSub(t, b, "time", api.SubscriptionSpec{Topic: "t", StartAt: between})
		publishTexts(t, b, "t", "new")
		cases := map[string]string{"latest": "[new]", "earliest": "[old mid new]", "time": "[mid new]"}
		for sub, want := range cases {
			if got := fmt.Sprint(texts(pull(t, b, sub, 10, 0))); got != want {
				t.Errorf("%s: got %s want %s", sub, got, want)
			}
		}
	})
}

func TestLongPollReturnsWhenMessageArrives(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 2})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t"})
		got := make(chan []api.Message, 1)
		go func() {
			msgs, _ := b.Pull(context.Background(), "s", PullOptions{Max: 5, Wait: 30 * time.Second})
			got <- msgs
		}()
		time.Sleep(50 * time.Millisecond)
		publishTexts(t, b, "t", "hello")
		select {
		case msgs := <-got:
			if len(msgs) != 1 || string(msgs[0].Data) != "hello" {
				t.Fatalf("got %v", texts(msgs))
			}
		case <-time.After(20 * time.Second):
			t.Fatal("long poll did not return after a publish")
		}
		// With nothing to deliver, a pull waits out its wait and returns an empty list.
		if msgs := pull(t, b, "s", 1, 100*time.Millisecond); len(msgs) != 0 {
			t.Fatalf("want no messages, got %v", texts(msgs))
		}
	})
}

func TestRedeliveryAfterVisibilityAndNack(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
		publishTexts(t, b, "t", "x")
		first, _ := b.Pull(context.Background(), "s", PullOptions{Max: 1, Visibility: 100 * time.Millisecond})
		if len(first) != 1 || first[0].DeliveryAttempt != 1 {
			t.Fatalf("first = %+v", first)
		}
		// Redelivered once the lease expires, with the attempt counted.
		second := pull(t, b, "s", 1, 5*time.Second)
		if len(second) != 1 || second[0].DeliveryAttempt != 2 || second[0].ID != first[0].ID {
			t.Fatalf("second = %+v", second)
		}
		// The expired handle no longer acks.
		if res, _ := b.Ack("s", handles(first)); res.Acked != 0 {
			t.Fatalf("expired handle acked: %+v", res)
		}
		// Nack with a delay: not before the delay, then redelivered.
		if res, err := b.Nack("s", handles(second), 200*time.Millisecond); err != nil || res.Nacked != 1 {
			t.Fatalf("nack = %+v, %v", res, err)
		}
		third := pull(t, b, "s", 1, 5*time.Second)
		if len(third) != 1 || third[0].DeliveryAttempt != 3 {
			t.Fatalf("third = %+v", third)
		}
		// Visibility: the new handle acks, the old one is dead.
		h, err := b.ModifyVisibility("s", third[0].ReceiptHandle, time.Minute)
		if err != nil || h == "" {
			t.Fatalf("ModifyVisibility: %q %v", h, err)
		}
		if _, err := b.ModifyVisibility("s", third[0].ReceiptHandle, time.Minute); err == nil {
			t.Fatal("old handle still valid after a visibility change")
		}
		if res, _ := b.Ack("s", []string{h}); res.Acked != 1 {
			t.Fatalf("ack with new handle = %+v", res)
		}
	})
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{})
		mustTopic(t, b, "dlq", api.TopicSpec{})
		mustSub(t, b, "dlq-reader", api.SubscriptionSpec{Topic: "dlq", StartAt: "earliest"})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest", DeadLetterTopic: "dlq",
			Retry: &api.RetryPolicy{MaxAttempts: 2, MinBackoff: api.Duration(time.Millisecond), MaxBackoff: api.Duration(time.Millisecond)}})
		res := publishTexts(t, b, "t", "poison")
		for attempt := 1; attempt <= 2; attempt++ {
			msgs, _ := b.Pull(context.Background(), "s", PullOptions{Max: 1, Wait: 5 * time.Second})
			if len(msgs) != 1 || msgs[0].DeliveryAttempt != attempt {
				t.Fatalf("attempt %d: %+v", attempt, msgs)
			}
			b.Nack("s", handles(msgs), 0)
		}
		if msgs := pull(t, b, "s", 1, 300*time.Millisecond); len(msgs) != 0 {
			t.Fatalf("delivered a third time: %+v", msgs)
		}
		dead := pull(t, b, "dlq-reader", 1, 5*time.Second)
		if len(dead) != 1 || string(dead[0].Data) != "poison" || dead[0].Attributes["herald.deadLetter.messageId"] != res[0].ID {
			t.Fatalf("dead letter = %+v", dead)
		}
		if st := stats(t, b, "s"); st.DeadLettered != 1 || st.Backlog != 0 {
			t.Fatalf("stats = %+v", st)
		}
	})
}

func TestFilterSkipsAndBacklog(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 2})
		mustSub(t, b, "eu-high", api.SubscriptionSpec{Topic: "t", StartAt: "earliest",
			Filter: "tag == 'eu' && has(attributes.priority) && attributes.priority == 'high'"})
		msgs := []api.PublishMessage{
			{Text: text("1"), Tag: "eu", Attributes: map[string]string{"priority": "high"}},
			{Text: text("2"), Tag: "us", Attributes: map[string]string{"priority": "high"}},
			{Text: text("3"), Tag: "eu"},
			{Text: text("4"), Tag: "eu", Attributes: map[string]string{"priority": "high"}, Key: "k"},
		}
		if _, err := b.Publish("t", msgs); err != nil {
			t.Fatal(err)
		}
		if st := stats(t, b, "eu-high"); st.Backlog != 2 {
			t.Fatalf("backlog = %d, want 2 (filtered-out messages never count)", st.Backlog)
		}
		got := pull(t, b, "eu-high", 10, 0)
		if len(got) != 2 {
			t.Fatalf("got %v", texts(got))
		}
		b.Ack("eu-high", handles(got))
		if st := stats(t, b, "eu-high"); st.Backlog != 0 {
			t.Fatalf("backlog after ack = %d", st.Backlog)
		}
		if _, _, err := b.PutSubscription("bad", api.SubscriptionSpec{Topic: "t", Filter: "tag =="}); !isCode(err, api.CodeInvalidArgument, "filter") {
			t.Fatalf("invalid filter: %v", err)
		}
		if _, _, err := b.PutSubscription("bad", api.SubscriptionSpec{Topic: "t", Filter: "tag"}); !isCode(err, api.CodeInvalidArgument, "filter") {
			t.Fatalf("non-bool filter: %v", err)
		}
	})
}

func isCode(err error, code, field string) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == code && e.Field == field
}

func TestOrderedDeliveryOneAtATimePerKey(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 1})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest", Ordered: true})
		var msgs []api.PublishMessage
		for i := 0; i < 3; i++ {
			msgs = append(msgs, api.PublishMessage{Text: text(fmt.Sprintf("a%d", i)), OrderingKey: "a"},
				api.PublishMessage{Text: text(fmt.Sprintf("b%d", i)), OrderingKey: "b"})
		}
		if _, err := b.Publish("t", msgs); err != nil {
			t.Fatal(err)
		}
		var seen []string
		for round := 0; round < 3; round++ {
			got := pull(t, b, "s", 10, 2*time.Second)
			if len(got) != 2 {
				t.Fatalf("round %d: want one message per key, got %v", round, texts(got))
			}
			seen = append(seen, texts(got)...)
			// Until these are acked, nothing else of their keys comes.
			if more := pull(t, b, "s", 10, 0); len(more) != 0 {
				t.Fatalf("round %d: delivered %v while keys were busy", round, texts(more))
			}
			b.Ack("s", handles(got))
		}
		want := "[a0 b0 a1 b1 a2 b2]"
		if fmt.Sprint(seen) != want {
			t.Fatalf("order = %v, want %s", seen, want)
		}
	})
}

func TestMessageTTL(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		var skew atomic.Int64 // the test's clock runs this far ahead of the real one
		cfg.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{MessageTTL: api.Duration(time.Minute)})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
		publishTexts(t, b, "t", "stale")
		skew.Store(int64(2 * time.Minute))
		publishTexts(t, b, "t", "fresh")
		if got := texts(pull(t, b, "s", 10, 0)); fmt.Sprint(got) != "[fresh]" {
			t.Fatalf("got %v", got)
		}
		if st := stats(t, b, "s"); st.Expired != 1 {
			t.Fatalf("expired = %d", st.Expired)
		}
	})
}

func TestDelayedMessages(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 2})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t"})
		d := api.Duration(300 * time.Millisecond)
		at := time.Now().Add(400 * time.Millisecond)
		res, err := b.Publish("t", []api.PublishMessage{{Text: text("later"), Delay: &d, Key: "k"}, {Text: text("at"), DeliverAt: &at}, {Text: text("now")}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Offset != -1 || res[0].DeliverAt == nil || res[2].Offset < 0 {
			t.Fatalf("results = %+v", res)
		}
		if got := texts(pull(t, b, "s", 10, 0)); fmt.Sprint(got) != "[now]" {
			t.Fatalf("before due: %v", got)
		}
		tp, _ := b.GetTopic("t")
		if tp.Stats.Delayed != 2 {
			t.Fatalf("delayed = %d", tp.Stats.Delayed)
		}
		var got []string
		deadline := time.Now().Add(10 * time.Second)
		for len(got) < 2 && time.Now().Before(deadline) {
			msgs := pull(t, b, "s", 10, time.Second)
			for _, msg := range msgs {
				if msg.ID == res[0].ID && msg.Partition != res[0].Partition {
					t.Errorf("delayed message went to partition %d, announced %d", msg.Partition, res[0].Partition)
				}
			}
			got = append(got, texts(msgs)...)
		}
		if len(got) != 2 {
			t.Fatalf("delayed messages delivered: %v", got)
		}
	})
}

func TestTopicLifecycle(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		if _, created, err := b.PutTopic("t", api.TopicSpec{Partitions: 2}); err != nil || !created {
			t.Fatalf("create: %v %v", created, err)
		}
		if _, created, err := b.PutTopic("t", api.TopicSpec{Partitions: 2}); err != nil || created {
			t.Fatalf("idempotent put: %v %v", created, err)
		}
		if _, _, err := b.PutTopic("t", api.TopicSpec{Partitions: 1}); !isCode(err, api.CodeFailedPrecondition, "partitions") {
			t.Fatalf("shrink: %v", err)
		}
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
		if _, _, err := b.PutTopic("t", api.TopicSpec{Partitions: 4}); err != nil {
			t.Fatalf("grow: %v", err)
		}
		// Keys spread over the new partitions too, and the subscription reads them.
		for i := 0; i < 40; i++ {
			if _, err := b.Publish("t", []api.PublishMessage{{Text: text("x"), Key: fmt.Sprint(i)}}); err != nil {
				t.Fatal(err)
			}
		}
		parts := map[int]bool{}
		for _, msg := range pull(t, b, "s", 100, 0) {
			parts[msg.Partition] = true
		}
		if !parts[2] && !parts[3] {
			t.Fatalf("no deliveries from the added partitions: %v", parts)
		}
		if err := b.DeleteTopic("t"); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteTopic("t"); !isCode(err, api.CodeNotFound, "name") {
			t.Fatalf("second delete: %v", err)
		}
		if _, err := b.Pull(context.Background(), "s", PullOptions{}); !isCode(err, api.CodeFailedPrecondition, "subscription") {
			t.Fatalf("pull on detached subscription: %v", err)
		}
		// Re-created: the subscription reads the new topic from its start.
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 1})
		publishTexts(t, b, "t", "again")
		if got := texts(pull(t, b, "s", 10, 0)); fmt.Sprint(got) != "[again]" {
			t.Fatalf("after re-create: %v", got)
		}
	})
}

func TestSameKeySamePartition(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{Partitions: 8})
		seen := map[string]int{}
		for i := 0; i < 200; i++ {
			k := fmt.Sprint(i % 10)
			res, err := b.Publish("t", []api.PublishMessage{{Text: text("x"), Key: k}})
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := seen[k]; ok && p != res[0].Partition {
				t.Fatalf("key %s went to partitions %d and %d", k, p, res[0].Partition)
			}
			seen[k] = res[0].Partition
		}
	})
}

func TestPublishValidation(t *testing.T) {
	b := open(t, Config{Memory: true})
	mustTopic(t, b, "t", api.TopicSpec{MaxMessageBytes: 10})
	d := api.Duration(time.Second)
	now := time.Now()
	cases := []struct {
		name  string
		msgs  []api.PublishMessage
		code  string
		field string
	}{
		{"empty", nil, api.CodeInvalidArgument, "messages"},
		{"no data", []api.PublishMessage{{}}, api.CodeInvalidArgument, "messages[0].data"},
		{"both", []api.PublishMessage{{Text: text("a"), Data: []byte("a")}}, api.CodeInvalidArgument, "messages[0].data"},
		{"too large", []api.PublishMessage{{Text: text("a")}, {Data: make([]byte, 11)}}, api.CodeTooLarge, "messages[1].data"},
		{"control char key", []api.PublishMessage{{Text: text("a"), Key: "a\nb"}}, api.CodeInvalidArgument, "messages[0].key"},
		{"delay and deliverAt", []api.PublishMessage{{Text: text("a"), Delay: &d, DeliverAt: &now}}, api.CodeInvalidArgument, "messages[0].delay"},
		{"empty attribute name", []api.PublishMessage{{Text: text("a"), Attributes: map[string]string{"": "x"}}}, api.CodeInvalidArgument, "messages[0].attributes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.Publish("t", c.msgs)
			if !isCode(err, c.code, c.field) {
				t.Fatalf("got %v, want %s on %s", err, c.code, c.field)
			}
		})
	}
	if _, err := b.Publish("nope", []api.PublishMessage{{Text: text("a")}}); !isCode(err, api.CodeNotFound, "topic") {
		t.Fatalf("unknown topic: %v", err)
	}
	if _, err := b.Publish("bad/name", []api.PublishMessage{{Text: text("a")}}); !isCode(err, api.CodeInvalidArgument, "topic") {
		t.Fatalf("bad name: %v", err)
	}
}
