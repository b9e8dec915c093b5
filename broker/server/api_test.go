package server_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// happyPaths are the routes of DESIGN.md's "Broker HTTP API v1" used as documented. Each runs on
// a fresh broker per storage mode (memory, file), in parallel. Nothing asserts how long anything
// takes: asynchronous effects are polled for with generous deadlines.
var happyPaths = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"Topics", testTopics},
	{"PublishJSON", testPublishJSON},
	{"PublishRaw", testPublishRaw},
	{"SameKeySamePartition", testSameKeySamePartition},
	{"Subscriptions", testSubscriptions},
	{"PullLongPoll", testPullLongPoll},
	{"Ack", testAck},
	{"Nack", testNack},
	{"Visibility", testVisibility},
	{"Peek", testPeek},
	{"RedeliveryAfterVisibilityTimeout", testRedelivery},
	{"RetryBackoff", testRetryBackoff},
	{"DeadLetter", testDeadLetter},
	{"Filter", testFilter},
	{"Ordered", testOrdered},
	{"MessageTTL", testMessageTTL},
	{"Operations", testOperations},
	{"Unavailable", testUnavailable},
}

func TestHappyPaths(t *testing.T) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			for _, hp := range happyPaths {
				t.Run(hp.name, func(t *testing.T) {
					t.Parallel()
					hp.run(t, newEnv(t, m.cfg(t)))
				})
			}
		})
	}
}

func testTopics(t *testing.T, e *env) {
	spec := `{"partitions":3,"retention":{"maxAge":"168h","maxBytes":0},"messageTTL":"0s","maxMessageBytes":1048576}`
	created := object(t, e.json("PUT", "/v1/topics/orders", spec).want(t, 201))
	wantKeys(t, "PUT topic", created, "name", "partitions", "retention", "messageTTL", "maxMessageBytes", "replicationFactor", "createTime")
	var sent map[string]any
	json.Unmarshal([]byte(spec), &sent)
	for k, v := range sent {
		if !reflect.DeepEqual(created[k], v) {
			t.Errorf("PUT topic: %s = %v, want %v as sent", k, created[k], v)
		}
	}
	if created["name"] != "orders" {
		t.Errorf("name %v", created["name"])
	}
	if _, err := time.Parse(time.RFC3339, created["createTime"].(string)); err != nil {
		t.Errorf("createTime: %v", err)
	}

	// Idempotent: the same PUT again is a 200 with the same topic.
	again := object(t, e.json("PUT", "/v1/topics/orders", spec).want(t, 200))
	if !reflect.DeepEqual(again, created) {
		t.Errorf("second PUT returned %v, want %v", again, created)
	}

	// GET returns the PUT fields unchanged, plus stats.
	got := object(t, e.do("GET", "/v1/topics/orders", nil).want(t, 200))
	wantKeys(t, "GET topic", got, "name", "partitions", "retention", "messageTTL", "maxMessageBytes", "replicationFactor", "createTime", "stats")
	for k, v := range created {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("GET topic: %s = %v, want %v", k, got[k], v)
		}
	}
	stats := got["stats"].(map[string]any)
	wantKeys(t, "topic stats", stats, "messages", "bytes", "delayed", "partitions")
	parts := stats["partitions"].([]any)
	if len(parts) != 3 {
		t.Fatalf("stats.partitions has %d entries, want 3", len(parts))
	}
	for i, p := range parts {
		wantKeys(t, "partition stats", p, "partition", "startOffset", "endOffset", "bytes")
		if p.(map[string]any)["partition"] != float64(i) {
			t.Errorf("partition %d: %v", i, p)
		}
	}

	// Partitions grow, never shrink.
	e.json("PUT", "/v1/topics/orders", `{"partitions":2}`).wantError(t, 409, api.CodeFailedPrecondition, "partitions")
	grown := decode[api.Topic](t, e.json("PUT", "/v1/topics/orders", strings.Replace(spec, `"partitions":3`, `"partitions":5`, 1)).want(t, 200))
	if grown.Partitions != 5 {
		t.Errorf("after growing: partitions %d", grown.Partitions)
	}
	if n := len(decode[api.Topic](t, e.do("GET", "/v1/topics/orders", nil)).Stats.Partitions); n != 5 {
		t.Errorf("after growing: %d partition stats", n)
	}

	// An empty body creates a topic with the defaults.
	def := object(t, e.do("PUT", "/v1/topics/defaults", nil).want(t, 201))
	want := map[string]any{"name": "defaults", "partitions": float64(1), "retention": map[string]any{"maxAge": "0s", "maxBytes": float64(0)},
		"messageTTL": "0s", "maxMessageBytes": float64(1 << 20), "replicationFactor": float64(1), "createTime": def["createTime"]}
	if !reflect.DeepEqual(def, want) {
		t.Errorf("defaults: %v, want %v", def, want)
	}

	// The list, sorted by name, with stats.
	list := object(t, e.do("GET", "/v1/topics", nil).want(t, 200))
	wantKeys(t, "topic list", list, "topics")
	var names []string
	for _, x := range list["topics"].([]any) {
		wantKeys(t, "listed topic", x, "name", "partitions", "retention", "messageTTL", "maxMessageBytes", "replicationFactor", "createTime", "stats")
		names = append(names, x.(map[string]any)["name"].(string))
	}
	if !reflect.DeepEqual(names, []string{"defaults", "orders"}) {
		t.Errorf("listed %v", names)
	}

	// DELETE: 204 without a body, then 404.
	del := e.do("DELETE", "/v1/topics/orders", nil).want(t, 204)
	if len(del.body) != 0 {
		t.Errorf("DELETE body %q", del.body)
	}
	e.do("DELETE", "/v1/topics/orders", nil).wantError(t, 404, api.CodeNotFound, "name")
	e.do("GET", "/v1/topics/orders", nil).wantError(t, 404, api.CodeNotFound, "topic")
	e.json("POST", "/v1/topics/orders/messages", `{"messages":[{"text":"x"}]}`).wantError(t, 404, api.CodeNotFound, "topic")
	list = object(t, e.do("GET", "/v1/topics", nil).want(t, 200))
	if n := len(list["topics"].([]any)); n != 1 {
		t.Errorf("%d topics listed after delete, want 1", n)
	}
	// Re-created, it starts empty.
	e.json("PUT", "/v1/topics/orders", spec).want(t, 201)
	if st := decode[api.Topic](t, e.do("GET", "/v1/topics/orders", nil)).Stats; st.Messages != 0 {
		t.Errorf("re-created topic holds %d messages", st.Messages)
	}
	// With no topics, the list is [] (not null).
	e.do("DELETE", "/v1/topics/orders", nil).want(t, 204)
	e.do("DELETE", "/v1/topics/defaults", nil).want(t, 204)
	if body := e.do("GET", "/v1/topics", nil).want(t, 200).String(); body != "{\"topics\":[]}\n" {
		t.Errorf("empty list: %q", body)
	}
}

func testPublishJSON(t *testing.T, e *env) {
	e.putTopic("orders", `{"partitions":3}`)
	e.putSub("all", msg{"topic": "orders", "startAt": "earliest"})
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	r := e.json("POST", "/v1/topics/orders/messages", msg{"messages": []msg{
		{"data": b64("hello"), "key": "k1", "attributes": msg{"a": "1", "b": "2"}, "tag": "t1"},
		{"text": "world", "orderingKey": "o1"},
		{"text": "", "tag": "empty"},
		{"text": "soon", "delay": "1s"},
		{"text": "later", "deliverAt": at.Format(time.RFC3339)},
	}}).want(t, 200)
	body := object(t, r)
	wantKeys(t, "publish response", body, "results")
	results := body["results"].([]any)
	if len(results) != 5 {
		t.Fatalf("%d results, want 5", len(results))
	}
	wantKeys(t, "result", results[0], "id", "partition", "offset")
	wantKeys(t, "delayed result", results[3], "id", "partition", "offset", "deliverAt")
	res := decode[api.PublishResponse](t, r).Results
	ids := map[string]bool{}
	for i, x := range res {
		if x.ID == "" || ids[x.ID] {
			t.Errorf("result %d: id %q empty or repeated", i, x.ID)
		}
		ids[x.ID] = true
		if x.Partition < 0 || x.Partition >= 3 {
			t.Errorf("result %d: partition %d", i, x.Partition)
		}
		if delayed := i >= 3; delayed != (x.Offset == -1) || delayed != (x.DeliverAt != nil) {
			t.Errorf("result %d: offset %d deliverAt %v", i, x.Offset, x.DeliverAt)
		}
	}
	if !res[4].DeliverAt.Equal(at) {
		t.Errorf("deliverAt %v, want %v", res[4].DeliverAt, at)
	}
	// The 1s-delayed one moves into the topic; the other still waits.
	eventually(t, 20*time.Second, "the delayed message to become due", func() bool {
		return decode[api.Topic](t, e.do("GET", "/v1/topics/orders", nil)).Stats.Delayed == 1
	})

	got := e.pullUntil("all", 4, nil, 30*time.Second)
	byText := map[string]api.Message{}
	for _, m := range got {
		byText[string(m.Data)] = m
		if m.ReceiptHandle == "" || m.DeliveryAttempt != 1 || m.PublishTime.IsZero() {
			t.Errorf("message %q: handle %q attempt %d publishTime %v", m.Data, m.ReceiptHandle, m.DeliveryAttempt, m.PublishTime)
		}
	}
	hello := byText["hello"]
	if hello.ID != res[0].ID || hello.Partition != res[0].Partition || hello.Offset != res[0].Offset ||
		hello.Key != "k1" || hello.Tag != "t1" || !reflect.DeepEqual(hello.Attributes, map[string]string{"a": "1", "b": "2"}) {
		t.Errorf("hello: %+v (published as %+v)", hello, res[0])
	}
	if w := byText["world"]; w.ID != res[1].ID || w.OrderingKey != "o1" || w.Key != "" || w.Attributes == nil || len(w.Attributes) != 0 {
		t.Errorf("world: %+v", w)
	}
	if em, ok := byText[""]; !ok || em.ID != res[2].ID || em.Tag != "empty" {
		t.Errorf("empty message: %+v", em)
	}
	if s := byText["soon"]; s.ID != res[3].ID || s.Partition != res[3].Partition || s.Offset < 0 {
		t.Errorf("delayed message: %+v (published as %+v)", s, res[3])
	}
	if extra := e.pull("all", msg{"max": 10, "wait": "1s"}); len(extra) != 0 {
		t.Errorf("the message due in an hour was delivered: %v", texts(extra))
	}
}

// pullRaw pulls once and returns the messages as JSON objects too, for exact shape checks.
func (e *env) pullRaw(sub string, req any) ([]api.Message, []map[string]any) {
	e.t.Helper()
	r := e.json("POST", "/v1/subscriptions/"+sub+"/pull", req).want(e.t, 200)
	wantKeys(e.t, "pull response", object(e.t, r), "messages")
	var raw struct{ Messages []map[string]any }
	json.Unmarshal(r.body, &raw)
	return decode[api.PullResponse](e.t, r).Messages, raw.Messages
}

func testPublishRaw(t *testing.T, e *env) {
	e.putTopic("raw", `{"partitions":1}`)
	e.putSub("s", msg{"topic": "raw", "startAt": "earliest"})
	publishRaw := func(body string, header ...string) api.PublishResult {
		t.Helper()
		r := e.do("POST", "/v1/topics/raw/messages", []byte(body), header...).want(t, 200)
		res := decode[api.PublishResponse](t, r).Results
		if len(res) != 1 {
			t.Fatalf("raw publish: %d results", len(res))
		}
		return res[0]
	}
	first := publishRaw("hello raw", "Content-Type", "text/plain; charset=utf-8",
		"Herald-Attribute-Color", "red", "Herald-Attribute-Priority", "high",
		"Ce-Type", "com.example.order.created", "ce-id", "42",
		"Herald-Key", "order-42", "Herald-Tag", "eu", "Herald-Ordering-Key", "cust-7")
	if first.Offset != 0 || first.DeliverAt != nil {
		t.Errorf("first raw publish: %+v", first)
	}
	// A JSON body under another media type is one raw message, kept byte for byte.
	envelope := `{"messages":[{"text":"not an envelope"}]}`
	publishRaw(envelope, "Content-Type", "application/cloudevents+json")
	// No Content-Type and no body: one empty message.
	publishRaw("")
	delayed := publishRaw("delayed", "Content-Type", "application/octet-stream", "Herald-Delay", "1s")
	if delayed.Offset != -1 || delayed.DeliverAt == nil {
		t.Errorf("Herald-Delay: %+v", delayed)
	}

	got := e.pullUntil("s", 4, nil, 30*time.Second)
	wantData := []string{"hello raw", envelope, "", "delayed"}
	if !reflect.DeepEqual(texts(got), wantData) {
		t.Fatalf("pulled %q, want %q", texts(got), wantData)
	}
	m := got[0]
	wantAttrs := map[string]string{"color": "red", "priority": "high", "ce-type": "com.example.order.created", "ce-id": "42", "content-type": "text/plain; charset=utf-8"}
	if !reflect.DeepEqual(m.Attributes, wantAttrs) || m.Key != "order-42" || m.Tag != "eu" || m.OrderingKey != "cust-7" {
		t.Errorf("raw message: %+v\nwant attributes %v", m, wantAttrs)
	}
	if a := got[1].Attributes; !reflect.DeepEqual(a, map[string]string{"content-type": "application/cloudevents+json"}) {
		t.Errorf("envelope attributes %v", a)
	}
	if a := got[2].Attributes; a == nil || len(a) != 0 {
		t.Errorf("empty message attributes %v, want {} (always present)", a)
	}
}

func testSameKeySamePartition(t *testing.T, e *env) {
	e.putTopic("keyed", `{"partitions":8}`)
	for _, field := range []string{"key", "orderingKey"} {
		want := -1
		for i := 0; i < 12; i++ {
			res := e.publish("keyed", msg{"text": fmt.Sprint(i), field: "user-42"})
			if want == -1 {
				want = res[0].Partition
			}
			if res[0].Partition != want {
				t.Fatalf("%s user-42: partition %d, earlier %d", field, res[0].Partition, want)
			}
		}
		// Mixed with other keys in one request, too.
		res := e.publish("keyed", msg{"text": "a", field: "user-42"}, msg{"text": "b", field: "user-7"}, msg{"text": "c", field: "user-42"}, msg{"text": "d"})
		if res[0].Partition != want || res[2].Partition != want {
			t.Errorf("%s user-42 in a batch: partitions %d and %d, want %d", field, res[0].Partition, res[2].Partition, want)
		}
	}
	// Different keys spread over the partitions.
	seen := map[int]bool{}
	for i := 0; i < 40; i++ {
		seen[e.publish("keyed", msg{"text": "x", "key": fmt.Sprintf("k%d", i)})[0].Partition] = true
	}
	if len(seen) < 2 {
		t.Errorf("40 keys all went to partitions %v", seen)
	}
}

func testSubscriptions(t *testing.T, e *env) {
	e.putTopic("orders", `{"partitions":2}`)
	e.putTopic("orders-dlq", nil)
	e.putTopic("other", nil)
	spec := `{"topic":"orders","retry":{"policy":"exponential","minBackoff":"1s","maxBackoff":"10m","maxAttempts":10,"maxAge":"24h"},` +
		`"deadLetterTopic":"orders-dlq","ackDeadline":"30s","filter":"tag == 'eu'","ordered":true,"startAt":"earliest"}`
	created := object(t, e.json("PUT", "/v1/subscriptions/orders-worker", spec).want(t, 201))
	wantKeys(t, "PUT subscription", created, "name", "topic", "retry", "deadLetterTopic", "ackDeadline", "filter", "ordered", "startAt", "createTime")
	var sent map[string]any
	json.Unmarshal([]byte(spec), &sent)
	for k, v := range sent {
		if !reflect.DeepEqual(created[k], v) {
			t.Errorf("PUT subscription: %s = %v, want %v as sent", k, created[k], v)
		}
	}
	again := object(t, e.json("PUT", "/v1/subscriptions/orders-worker", spec).want(t, 200))
	if !reflect.DeepEqual(again, created) {
		t.Errorf("second PUT: %v, want %v", again, created)
	}
	got := object(t, e.do("GET", "/v1/subscriptions/orders-worker", nil).want(t, 200))
	wantKeys(t, "GET subscription", got, "name", "topic", "retry", "deadLetterTopic", "ackDeadline", "filter", "ordered", "startAt", "createTime", "stats")
	for k, v := range created {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("GET subscription: %s = %v, want %v", k, got[k], v)
		}
	}
	wantKeys(t, "subscription stats", got["stats"], "backlog", "inFlight", "delivered", "acked", "failed", "deadLettered", "expired", "lastError")

	// Settings may change; the topic and startAt may not.
	upd := decode[api.Subscription](t, e.json("PUT", "/v1/subscriptions/orders-worker", strings.Replace(spec, `"30s"`, `"45s"`, 1)).want(t, 200))
	if upd.AckDeadline.D() != 45*time.Second {
		t.Errorf("ackDeadline after update: %v", upd.AckDeadline)
	}
	e.json("PUT", "/v1/subscriptions/orders-worker", strings.Replace(spec, `"topic":"orders"`, `"topic":"other"`, 1)).
		wantError(t, 409, api.CodeFailedPrecondition, "topic")
	e.json("PUT", "/v1/subscriptions/orders-worker", strings.Replace(spec, `"earliest"`, `"latest"`, 1)).
		wantError(t, 409, api.CodeFailedPrecondition, "startAt")

	// A minimal pull subscription gets the defaults.
	min := object(t, e.json("PUT", "/v1/subscriptions/minimal", `{"topic":"orders"}`).want(t, 201))
	want := map[string]any{"name": "minimal", "topic": "orders", "ackDeadline": "30s", "startAt": "latest", "createTime": min["createTime"]}
	if !reflect.DeepEqual(min, want) {
		t.Errorf("minimal subscription %v, want %v", min, want)
	}

	// A push subscription: DESIGN.md's push object comes back with what was sent.
	push := `{"topic":"orders","push":{"endpoint":"http://127.0.0.1:9/hook","format":"cloudevents-binary","timeout":"10s","maxInFlight":16,"headers":{"X-Env":"test"},"signingSecrets":["whsec_abcdefgh"]}}`
	p := object(t, e.json("PUT", "/v1/subscriptions/pusher", push).want(t, 201))
	var pushSent map[string]any
	json.Unmarshal([]byte(push), &pushSent)
	if !reflect.DeepEqual(p["push"], pushSent["push"]) {
		t.Errorf("push %v, want %v", p["push"], pushSent["push"])
	}
	e.json("POST", "/v1/subscriptions/pusher/pull", `{}`).wantError(t, 409, api.CodeFailedPrecondition, "subscription")

	// Stats count what happens.
	e.putSub("counter", msg{"topic": "orders", "startAt": "earliest"})
	e.publishTexts("orders", "a", "b", "c")
	if st := e.subStats("counter"); st.Backlog != 3 || st.InFlight != 0 || st.Delivered != 0 {
		t.Errorf("after publishing 3: %+v", st)
	}
	m := e.pull("counter", msg{"max": 1})
	if len(m) != 1 {
		t.Fatalf("pulled %d", len(m))
	}
	if st := e.subStats("counter"); st.Backlog != 3 || st.InFlight != 1 || st.Delivered != 1 || st.Acked != 0 {
		t.Errorf("after pulling 1: %+v", st)
	}
	e.ack("counter", m[0].ReceiptHandle)
	if st := e.subStats("counter"); st.Backlog != 2 || st.InFlight != 0 || st.Delivered != 1 || st.Acked != 1 {
		t.Errorf("after acking 1: %+v", st)
	}

	// The list is sorted by name, each with stats.
	list := object(t, e.do("GET", "/v1/subscriptions", nil).want(t, 200))
	wantKeys(t, "subscription list", list, "subscriptions")
	var names []string
	for _, x := range list["subscriptions"].([]any) {
		s := x.(map[string]any)
		if s["stats"] == nil {
			t.Errorf("listed subscription without stats: %v", s)
		}
		names = append(names, s["name"].(string))
	}
	if !reflect.DeepEqual(names, []string{"counter", "minimal", "orders-worker", "pusher"}) {
		t.Errorf("listed %v", names)
	}

	del := e.do("DELETE", "/v1/subscriptions/minimal", nil).want(t, 204)
	if len(del.body) != 0 {
		t.Errorf("DELETE body %q", del.body)
	}
	e.do("DELETE", "/v1/subscriptions/minimal", nil).wantError(t, 404, api.CodeNotFound, "name")
	e.do("GET", "/v1/subscriptions/minimal", nil).wantError(t, 404, api.CodeNotFound, "subscription")
	e.json("POST", "/v1/subscriptions/minimal/pull", `{}`).wantError(t, 404, api.CodeNotFound, "subscription")

	// A subscription whose topic was deleted cannot be pulled.
	e.do("DELETE", "/v1/topics/orders", nil).want(t, 204)
	e.json("POST", "/v1/subscriptions/counter/pull", `{}`).wantError(t, 409, api.CodeFailedPrecondition, "subscription")
}

func testPullLongPoll(t *testing.T, e *env) {
	e.putTopic("t", `{"partitions":2}`)
	e.putSub("s", msg{"topic": "t"})

	// Nothing to deliver: [] once the wait is over, and at once without a wait or a body.
	if body := e.json("POST", "/v1/subscriptions/s/pull", `{"max":10,"wait":"1s"}`).want(t, 200).String(); body != "{\"messages\":[]}\n" {
		t.Errorf("empty pull: %q", body)
	}
	if body := e.do("POST", "/v1/subscriptions/s/pull", nil).want(t, 200).String(); body != "{\"messages\":[]}\n" {
		t.Errorf("empty pull without a body: %q", body)
	}

	// A long poll returns with the message published while it waits.
	type result struct {
		r       response
		err     error
		elapsed time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		r, err := e.tryDo("POST", "/v1/subscriptions/s/pull", []byte(`{"max":10,"wait":"30s"}`), "Content-Type", "application/json")
		done <- result{r, err, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond) // let the poll start waiting (harmless if it has not yet)
	res := e.publishTexts("t", "wake up")
	var got result
	select {
	case got = <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("the long poll did not return")
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	msgs := decode[api.PullResponse](t, got.r.want(t, 200)).Messages
	if len(msgs) != 1 || string(msgs[0].Data) != "wake up" || msgs[0].ID != res[0].ID {
		t.Fatalf("long poll returned %s", got.r.body)
	}
	if got.elapsed >= 29*time.Second {
		t.Errorf("the long poll returned only when its 30s wait ran out (%s)", got.elapsed)
	}

	// First deliveries of one partition come in offset order.
	e.putTopic("one", nil)
	e.putSub("one-s", msg{"topic": "one"})
	e.publishTexts("one", "1", "2", "3", "4", "5")
	e.publishTexts("one", "6", "7")
	var order []string
	for _, m := range e.pullUntil("one-s", 7, msg{"max": 3}, 30*time.Second) {
		order = append(order, string(m.Data))
	}
	if strings.Join(order, "") != "1234567" {
		t.Errorf("delivered in order %v", order)
	}
}

func testAck(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t"})
	e.putSub("other", msg{"topic": "t"})
	e.publishTexts("t", "a", "b", "c")
	ms := e.pullUntil("s", 3, msg{"visibility": "5m"}, 30*time.Second)
	other := e.pullUntil("other", 1, msg{"visibility": "5m"}, 30*time.Second)

	r := e.json("POST", "/v1/subscriptions/s/ack", msg{"receiptHandles": []string{ms[0].ReceiptHandle, "garbage", ms[1].ReceiptHandle}}).want(t, 200)
	if body := r.String(); body != "{\"acked\":2,\"invalid\":[\"garbage\"]}\n" {
		t.Errorf("ack: %q", body)
	}
	// Acked handles are dead; so are another subscription's handles.
	if res := e.ack("s", ms[0].ReceiptHandle, other[0].ReceiptHandle); res.Acked != 0 || !reflect.DeepEqual(res.Invalid, []string{ms[0].ReceiptHandle, other[0].ReceiptHandle}) {
		t.Errorf("acking a dead handle and another subscription's: %+v", res)
	}
	if body := e.json("POST", "/v1/subscriptions/s/ack", msg{"receiptHandles": []string{ms[2].ReceiptHandle}}).want(t, 200).String(); body != "{\"acked\":1,\"invalid\":[]}\n" {
		t.Errorf("ack: %q", body)
	}
	if st := e.subStats("s"); st.Acked != 3 || st.Backlog != 0 || st.InFlight != 0 {
		t.Errorf("stats after acking all: %+v", st)
	}
	if got := e.pull("s", msg{"max": 10, "wait": "1s"}); len(got) != 0 {
		t.Errorf("acked messages came back: %v", texts(got))
	}
}

func testNack(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t"})
	e.publishTexts("t", "soon", "much later")
	ms := e.pullUntil("s", 2, nil, 30*time.Second)

	r := e.json("POST", "/v1/subscriptions/s/nack", msg{"receiptHandles": []string{ms[0].ReceiptHandle}, "delay": "1s"}).want(t, 200)
	if body := r.String(); body != "{\"nacked\":1,\"invalid\":[]}\n" {
		t.Errorf("nack: %q", body)
	}
	if res := e.nack("s", "1h", ms[1].ReceiptHandle, "garbage"); res.Nacked != 1 || !reflect.DeepEqual(res.Invalid, []string{"garbage"}) {
		t.Errorf("nack with a garbage handle: %+v", res)
	}
	// The nacked handle is dead.
	if res := e.ack("s", ms[0].ReceiptHandle); res.Acked != 0 {
		t.Errorf("a nacked handle still acks: %+v", res)
	}
	// The first comes back after its delay, as attempt 2; the one delayed an hour does not.
	again := e.pullUntil("s", 1, nil, 30*time.Second)[0]
	if string(again.Data) != "soon" || again.DeliveryAttempt != 2 || again.ID != ms[0].ID || again.ReceiptHandle == ms[0].ReceiptHandle {
		t.Errorf("redelivered after nack: %+v", again)
	}
	// Nack without a delay: back at once.
	e.nack("s", "", again.ReceiptHandle)
	third := e.pullUntil("s", 1, nil, 30*time.Second)[0]
	if string(third.Data) != "soon" || third.DeliveryAttempt != 3 {
		t.Errorf("redelivered after nack without delay: %+v", third)
	}
	e.ack("s", third.ReceiptHandle)
	if got := e.pull("s", msg{"max": 10, "wait": "1s"}); len(got) != 0 {
		t.Errorf("the message nacked for an hour came back: %v", texts(got))
	}
	if st := e.subStats("s"); st.Backlog != 1 || st.InFlight != 0 {
		t.Errorf("stats: %+v", st)
	}
}

func testVisibility(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t"})
	e.publishTexts("t", "a")
	m := e.pullUntil("s", 1, msg{"visibility": "30s"}, 30*time.Second)[0]

	r := e.json("POST", "/v1/subscriptions/s/visibility", msg{"receiptHandle": m.ReceiptHandle, "visibility": "60s"}).want(t, 200)
	wantKeys(t, "visibility response", object(t, r), "receiptHandle")
	h2 := decode[api.VisibilityResponse](t, r).ReceiptHandle
	if h2 == "" || h2 == m.ReceiptHandle {
		t.Fatalf("new handle %q (old %q)", h2, m.ReceiptHandle)
	}
	// The old handle is dead; the new one works.
	if res := e.ack("s", m.ReceiptHandle); res.Acked != 0 || !reflect.DeepEqual(res.Invalid, []string{m.ReceiptHandle}) {
		t.Errorf("old handle: %+v", res)
	}
	e.json("POST", "/v1/subscriptions/s/visibility", msg{"receiptHandle": m.ReceiptHandle, "visibility": "60s"}).
		wantError(t, 409, api.CodeFailedPrecondition, "receiptHandle")
	if res := e.ack("s", h2); res.Acked != 1 {
		t.Errorf("new handle: %+v", res)
	}

	// Extending a short lease keeps the message out past the first deadline.
	e.publishTexts("t", "b")
	b := e.pullUntil("s", 1, msg{"visibility": "1s"}, 30*time.Second)[0]
	r = e.json("POST", "/v1/subscriptions/s/visibility", msg{"receiptHandle": b.ReceiptHandle, "visibility": "1h"})
	if r.status == 409 {
		t.Skip("the 1s lease expired before it could be extended (very slow machine)")
	}
	hb := decode[api.VisibilityResponse](t, r.want(t, 200)).ReceiptHandle
	time.Sleep(2 * time.Second) // the original 1s lease is over now
	if got := e.pull("s", msg{"max": 10}); len(got) != 0 {
		t.Errorf("extended message delivered again: %v", texts(got))
	}
	if res := e.ack("s", hb); res.Acked != 1 {
		t.Errorf("extended handle: %+v", res)
	}

	// Visibility 0 returns the message at once and no handle.
	e.publishTexts("t", "c")
	c := e.pullUntil("s", 1, msg{"visibility": "5m"}, 30*time.Second)[0]
	r = e.json("POST", "/v1/subscriptions/s/visibility", msg{"receiptHandle": c.ReceiptHandle, "visibility": "0s"}).want(t, 200)
	if body := r.String(); body != "{\"receiptHandle\":\"\"}\n" {
		t.Errorf("visibility 0: %q", body)
	}
	c2 := e.pullUntil("s", 1, nil, 30*time.Second)[0]
	if c2.ID != c.ID || c2.DeliveryAttempt != 2 {
		t.Errorf("after visibility 0: %+v", c2)
	}
}

func testPeek(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t"})
	e.publish("t", msg{"text": "a", "key": "k", "tag": "x", "attributes": msg{"p": "1"}}, msg{"text": "b"})

	r := e.json("POST", "/v1/subscriptions/s/peek", `{"max":10}`).want(t, 200)
	var raw struct{ Messages []map[string]any }
	json.Unmarshal(r.body, &raw)
	if len(raw.Messages) != 2 {
		t.Fatalf("peek: %s", r.body)
	}
	// No lease: no receipt handle, attempt 0.
	wantKeys(t, "peeked message", raw.Messages[0], "id", "partition", "offset", "data", "attributes", "key", "tag", "publishTime", "deliveryAttempt")
	peeked := decode[api.PullResponse](t, r).Messages
	if !reflect.DeepEqual(texts(peeked), []string{"a", "b"}) || peeked[0].DeliveryAttempt != 0 {
		t.Errorf("peeked %+v", peeked)
	}
	if one := e.peek("s", 1); len(one) != 1 {
		t.Errorf("peek max 1 returned %d", len(one))
	}
	if body := e.do("POST", "/v1/subscriptions/s/peek", nil).want(t, 200); len(decode[api.PullResponse](t, body).Messages) != 1 {
		t.Errorf("peek without a body (max 1): %s", body.body)
	}
	if st := e.subStats("s"); st.InFlight != 0 || st.Delivered != 0 || st.Backlog != 2 {
		t.Errorf("stats after peeking: %+v", st)
	}
	// The peeked messages are still there for a pull, as first attempts.
	ms, rawMsgs := e.pullRaw("s", msg{"max": 10})
	if !reflect.DeepEqual(texts(ms), []string{"a", "b"}) || ms[0].DeliveryAttempt != 1 || ms[0].ID != peeked[0].ID {
		t.Fatalf("pulled after peek: %+v", ms)
	}
	wantKeys(t, "pulled message", rawMsgs[0], "id", "receiptHandle", "partition", "offset", "data", "attributes", "key", "tag", "publishTime", "deliveryAttempt")
	// Leased messages are not peeked; a nacked one is again.
	if got := e.peek("s", 10); len(got) != 0 {
		t.Errorf("peek shows leased messages: %v", texts(got))
	}
	e.nack("s", "", ms[1].ReceiptHandle)
	if got := e.peek("s", 10); len(got) != 1 || string(got[0].Data) != "b" || got[0].DeliveryAttempt != 1 || got[0].ReceiptHandle != "" {
		t.Errorf("peek after nack: %+v", got)
	}
}

func testRedelivery(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t"})
	e.publishTexts("t", "again")
	first := e.pullUntil("s", 1, msg{"visibility": "1s"}, 30*time.Second)[0]
	if first.DeliveryAttempt != 1 {
		t.Fatalf("first delivery: attempt %d", first.DeliveryAttempt)
	}
	second := e.pullUntil("s", 1, msg{"visibility": "1s"}, 30*time.Second)[0]
	third := e.pullUntil("s", 1, msg{"visibility": "5m"}, 30*time.Second)[0]
	for i, m := range []api.Message{second, third} {
		if m.ID != first.ID || m.DeliveryAttempt != i+2 {
			t.Errorf("redelivery %d: id %s attempt %d, want %s attempt %d", i+1, m.ID, m.DeliveryAttempt, first.ID, i+2)
		}
	}
	if first.ReceiptHandle == second.ReceiptHandle || second.ReceiptHandle == third.ReceiptHandle {
		t.Errorf("a redelivery reused a receipt handle")
	}
	// Expired handles are invalid; the current one acks.
	if res := e.ack("s", first.ReceiptHandle, second.ReceiptHandle, third.ReceiptHandle); res.Acked != 1 || len(res.Invalid) != 2 {
		t.Errorf("ack: %+v", res)
	}
	if st := e.subStats("s"); st.Delivered != 3 || st.Acked != 1 || st.Backlog != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// testRetryBackoff: a message whose lease ran out, or that was nacked without a delay, waits
// out the retry policy's backoff before it is delivered again. (The backoff is 30s and the test
// looks within a few seconds, so no timing is tight.)
func testRetryBackoff(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.putSub("s", msg{"topic": "t", "retry": msg{"minBackoff": "30s", "maxBackoff": "30s"}})
	e.publishTexts("t", "expires", "nacked")
	ms := e.pullUntil("s", 2, msg{"visibility": "5m"}, 30*time.Second)
	byText := map[string]api.Message{}
	for _, m := range ms {
		byText[string(m.Data)] = m
	}
	e.nack("s", "", byText["nacked"].ReceiptHandle)
	r := e.json("POST", "/v1/subscriptions/s/visibility", msg{"receiptHandle": byText["expires"].ReceiptHandle, "visibility": "1s"}).want(t, 200)
	h := decode[api.VisibilityResponse](t, r).ReceiptHandle
	// The lease ends after 1s; the broker's lease sweep (about once a second) notices.
	eventually(t, 20*time.Second, "the expired lease to end", func() bool { return e.subStats("s").InFlight == 0 })
	if res := e.ack("s", h); res.Acked != 0 {
		t.Errorf("the expired handle still acks: %+v", res)
	}
	if got := e.peek("s", 10); len(got) != 0 {
		t.Errorf("peek shows messages still in their retry backoff: %v", texts(got))
	}
	if got := e.pull("s", msg{"max": 10, "wait": "1s"}); len(got) != 0 {
		t.Errorf("delivered again before the 30s retry backoff: %v", texts(got))
	}
	if st := e.subStats("s"); st.Backlog != 2 {
		t.Errorf("stats: %+v", st)
	}
}

func testDeadLetter(t *testing.T, e *env) {
	e.putTopic("orders", `{"partitions":2}`)
	e.putTopic("orders-dlq", nil)
	e.putSub("dlq-reader", msg{"topic": "orders-dlq", "startAt": "earliest"})
	e.putSub("worker", msg{"topic": "orders", "deadLetterTopic": "orders-dlq",
		"retry": msg{"maxAttempts": 2, "minBackoff": "1s", "maxBackoff": "1s"}})
	e.putSub("dropper", msg{"topic": "orders", "retry": msg{"maxAttempts": 1}})
	res := e.publish("orders", msg{"text": "poison", "key": "k", "tag": "x", "attributes": msg{"a": "1"}})

	// Attempt 1 is nacked, attempt 2 runs out its lease: then the message is dead-lettered.
	m1 := e.pullUntil("worker", 1, nil, 30*time.Second)[0]
	e.nack("worker", "", m1.ReceiptHandle)
	m2 := e.pullUntil("worker", 1, msg{"visibility": "1s"}, 30*time.Second)[0]
	if m1.DeliveryAttempt != 1 || m2.DeliveryAttempt != 2 || m2.ID != m1.ID {
		t.Fatalf("attempts %d then %d", m1.DeliveryAttempt, m2.DeliveryAttempt)
	}
	eventually(t, 30*time.Second, "stats.deadLettered to reach 1", func() bool { return e.subStats("worker").DeadLettered == 1 })
	if st := e.subStats("worker"); st.Backlog != 0 || st.InFlight != 0 || st.Delivered != 2 {
		t.Errorf("worker stats: %+v", st)
	}
	dl := e.pullUntil("dlq-reader", 1, nil, 30*time.Second)[0]
	wantAttrs := map[string]string{"a": "1", "herald.deadLetter.subscription": "worker", "herald.deadLetter.topic": "orders", "herald.deadLetter.messageId": res[0].ID}
	if string(dl.Data) != "poison" || dl.Key != "k" || dl.Tag != "x" {
		t.Errorf("dead letter: %+v", dl)
	}
	for k, v := range wantAttrs {
		if dl.Attributes[k] != v {
			t.Errorf("dead letter attribute %s = %q, want %q (attributes %v)", k, dl.Attributes[k], v, dl.Attributes)
		}
	}
	e.ack("dlq-reader", dl.ReceiptHandle)
	if got := e.pull("worker", msg{"max": 10, "wait": "1s"}); len(got) != 0 {
		t.Errorf("dead-lettered message delivered again: %+v", got)
	}

	// Without a dead-letter topic, the message is dropped and counted.
	d := e.pullUntil("dropper", 1, nil, 30*time.Second)[0]
	e.nack("dropper", "", d.ReceiptHandle)
	eventually(t, 30*time.Second, "the dropper's deadLettered to reach 1", func() bool { return e.subStats("dropper").DeadLettered == 1 })
	if st := e.subStats("dropper"); st.Backlog != 0 || st.LastError != "" {
		t.Errorf("dropper stats: %+v", st)
	}
	if st := e.subStats("dlq-reader"); st.Backlog != 0 {
		t.Errorf("the dropped message reached the dead-letter topic: %+v", st)
	}
}

func testFilter(t *testing.T, e *env) {
	e.putTopic("events", `{"partitions":2}`)
	const filter = "tag == 'eu' && attributes.priority == 'high'"
	e.putSub("eu-high", msg{"topic": "events", "startAt": "earliest", "filter": filter})
	e.putSub("all", msg{"topic": "events", "startAt": "earliest"})
	e.publish("events",
		msg{"text": "m1", "tag": "eu", "attributes": msg{"priority": "high"}},
		msg{"text": "m2", "tag": "us", "attributes": msg{"priority": "high"}},
		msg{"text": "m3", "tag": "eu", "attributes": msg{"priority": "low"}},
		msg{"text": "m4", "tag": "eu"}, // no attribute: the filter errs, which is no match
		msg{"text": "m5", "tag": "eu", "key": "k", "attributes": msg{"priority": "high", "x": "y"}},
	)
	if st := e.subStats("eu-high"); st.Backlog != 2 {
		t.Errorf("filtered backlog %d, want 2", st.Backlog)
	}
	if st := e.subStats("all"); st.Backlog != 5 {
		t.Errorf("unfiltered backlog %d, want 5", st.Backlog)
	}
	if got := e.peek("eu-high", 10); !sameSet(texts(got), []string{"m1", "m5"}) {
		t.Errorf("peeked %v", texts(got))
	}
	got := e.pullUntil("eu-high", 2, msg{"max": 10}, 30*time.Second)
	if !sameSet(texts(got), []string{"m1", "m5"}) {
		t.Errorf("pulled %v", texts(got))
	}
	if more := e.pull("eu-high", msg{"max": 10, "wait": "1s"}); len(more) != 0 {
		t.Errorf("filtered-out messages delivered: %v", texts(more))
	}
	if st := e.subStats("eu-high"); st.Backlog != 2 || st.InFlight != 2 {
		t.Errorf("stats with 2 in flight: %+v", st)
	}
	e.ack("eu-high", handles(got)...)
	if st := e.subStats("eu-high"); st.Backlog != 0 {
		t.Errorf("backlog after acking: %+v", st)
	}
	// Filtered-out messages never count, matching ones do.
	e.publish("events", msg{"text": "m6", "tag": "us"}, msg{"text": "m7", "tag": "eu", "attributes": msg{"priority": "high"}})
	if st := e.subStats("eu-high"); st.Backlog != 1 {
		t.Errorf("backlog after one match and one miss: %+v", st)
	}
	// A subscription created later counts only the matching messages already there.
	e.putSub("late", msg{"topic": "events", "startAt": "earliest", "filter": filter})
	if st := e.subStats("late"); st.Backlog != 3 {
		t.Errorf("late subscription backlog %d, want 3", st.Backlog)
	}
	// Changing the filter recounts.
	e.json("PUT", "/v1/subscriptions/late", msg{"topic": "events", "startAt": "earliest", "filter": "tag == 'us' || key == 'k'"}).want(t, 200)
	if st := e.subStats("late"); st.Backlog != 3 { // m2, m5, m6
		t.Errorf("backlog after the filter changed: %d, want 3", st.Backlog)
	}
	if got := e.pullUntil("late", 3, msg{"max": 10}, 30*time.Second); !sameSet(texts(got), []string{"m2", "m5", "m6"}) {
		t.Errorf("pulled with the new filter: %v", texts(got))
	}
	// An invalid expression is a 400 naming filter.
	e.json("PUT", "/v1/subscriptions/bad", msg{"topic": "events", "filter": "tag =="}).wantError(t, 400, api.CodeInvalidArgument, "filter")
	e.json("PUT", "/v1/subscriptions/bad", msg{"topic": "events", "filter": "tag"}).wantError(t, 400, api.CodeInvalidArgument, "filter")
	e.json("PUT", "/v1/subscriptions/bad", msg{"topic": "events", "filter": "color == 'red'"}).wantError(t, 400, api.CodeInvalidArgument, "filter")
}

func testOrdered(t *testing.T, e *env) {
	e.putTopic("ord", `{"partitions":2}`)
	e.putSub("o", msg{"topic": "ord", "ordered": true, "startAt": "earliest"})
	e.publish("ord",
		msg{"text": "A1", "orderingKey": "A"}, msg{"text": "A2", "orderingKey": "A"}, msg{"text": "A3", "orderingKey": "A"},
		msg{"text": "B1", "orderingKey": "B"}, msg{"text": "B2", "orderingKey": "B"},
		msg{"text": "N1"}, msg{"text": "N2"},
	)
	byText := func(ms []api.Message) map[string]api.Message {
		out := map[string]api.Message{}
		for _, m := range ms {
			out[string(m.Data)] = m
		}
		return out
	}
	// One message per ordering key at a time; messages without one are not held back.
	first := byText(e.pullUntil("o", 4, msg{"max": 10}, 30*time.Second))
	if !sameSet(keysOf(first), []string{"A1", "B1", "N1", "N2"}) {
		t.Fatalf("first pull %v, want A1 B1 N1 N2", keysOf(first))
	}
	if more := e.pull("o", msg{"max": 10, "wait": "1s"}); len(more) != 0 {
		t.Fatalf("delivered while their key was busy: %v", texts(more))
	}
	e.ack("o", first["A1"].ReceiptHandle, first["N1"].ReceiptHandle, first["N2"].ReceiptHandle)
	a2 := e.pullUntil("o", 1, msg{"max": 10}, 30*time.Second)[0]
	if string(a2.Data) != "A2" {
		t.Fatalf("after acking A1: %s", a2.Data)
	}
	// A nacked message comes back before the next of its key.
	e.nack("o", "", a2.ReceiptHandle)
	a2again := e.pullUntil("o", 1, msg{"max": 10}, 30*time.Second)[0]
	if string(a2again.Data) != "A2" || a2again.DeliveryAttempt != 2 {
		t.Fatalf("after nacking A2: %s attempt %d", a2again.Data, a2again.DeliveryAttempt)
	}
	e.ack("o", a2again.ReceiptHandle, first["B1"].ReceiptHandle)
	last := e.pullUntil("o", 2, msg{"max": 10}, 30*time.Second)
	if !sameSet(texts(last), []string{"A3", "B2"}) {
		t.Fatalf("last pull %v, want A3 B2", texts(last))
	}
	e.ack("o", handles(last)...)
	if st := e.subStats("o"); st.Backlog != 0 || st.InFlight != 0 || st.Acked != 7 {
		t.Errorf("stats: %+v", st)
	}
}

func keysOf(m map[string]api.Message) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testMessageTTL(t *testing.T, e *env) {
	e.putTopic("ttl", `{"messageTTL":"3s"}`)
	e.putSub("s", msg{"topic": "ttl", "startAt": "earliest"})
	e.publishTexts("ttl", "stale")
	time.Sleep(3500 * time.Millisecond) // now the message is older than the TTL
	if got := e.peek("s", 10); len(got) != 0 {
		t.Errorf("peek shows an expired message: %v", texts(got))
	}
	e.publishTexts("ttl", "fresh")
	got := e.pullUntil("s", 1, msg{"max": 10}, 30*time.Second)
	if string(got[0].Data) != "fresh" {
		t.Fatalf("pulled %v, want only fresh", texts(got))
	}
	e.ack("s", got[0].ReceiptHandle)
	if st := e.subStats("s"); st.Expired != 1 || st.Backlog != 0 || st.Delivered != 1 {
		t.Errorf("stats: %+v", st)
	}
}

func testOperations(t *testing.T, e *env) {
	if body := e.do("GET", "/healthz", nil).want(t, 200).String(); body != "{\"status\":\"ok\"}\n" {
		t.Errorf("/healthz: %q", body)
	}
	if body := e.do("GET", "/readyz", nil).want(t, 200).String(); body != "{\"status\":\"ready\"}\n" {
		t.Errorf("/readyz: %q", body)
	}
	if r := e.do("HEAD", "/healthz", nil).want(t, 200); len(r.body) != 0 {
		t.Errorf("HEAD /healthz body %q", r.body)
	}
	e.putTopic("m", nil)
	e.putSub("s", msg{"topic": "m"})
	e.publishTexts("m", "a", "b")
	e.pullUntil("s", 1, nil, 30*time.Second)
	r := e.do("GET", "/metrics", nil).want(t, 200)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	body := r.String()
	for _, want := range []string{
		`herald_messages_published_total{topic="m"} 2`,
		`herald_published_bytes_total{topic="m"} 2`,
		`herald_messages_delivered_total{subscription="s"} 1`,
		`herald_subscription_backlog{subscription="s",topic="m"} 2`,
		`herald_subscription_in_flight{subscription="s",topic="m"} 1`,
		`herald_topic_bytes{topic="m"}`,
		`herald_http_requests_total{code="200",route="/v1/topics/{topic}/messages"} 1`,
		`herald_http_request_duration_seconds_count{route="/v1/subscriptions/{sub}/pull"}`,
		`herald_fsync_duration_seconds_count`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Herald's own metrics (all but the Go runtime's and the process's) are named herald_*.
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if name := line[:strings.IndexAny(line, "{ ")]; !strings.HasPrefix(name, "herald_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s is not named herald_*", name)
		}
	}
}

// testUnavailable: a closed broker answers 503 Unavailable, /readyz included.
func testUnavailable(t *testing.T, e *env) {
	e.putTopic("t", nil)
	e.b.Close()
	e.do("GET", "/readyz", nil).wantError(t, 503, api.CodeUnavailable, "")
	e.json("POST", "/v1/topics/t/messages", `{"messages":[{"text":"x"}]}`).wantError(t, 503, api.CodeUnavailable, "")
	e.json("PUT", "/v1/topics/u", `{}`).wantError(t, 503, api.CodeUnavailable, "")
	e.do("GET", "/healthz", nil).want(t, 200)
}
