package controllers

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/server"
)

// testBroker is a real broker engine (files in a temporary folder) behind its HTTP server on a
// loopback port, and a client of it.
func testBroker(t *testing.T) *brokerclient.Client {
	t.Helper()
	b, err := engine.Open(engine.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(b, nil))
	t.Cleanup(func() {
		srv.Close()
		_ = b.Close()
	})
	c, err := brokerclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dur(s string) *heraldv1.Duration { return ptr.To(heraldv1.Duration(s)) }

// TestDesiredTopicSpecRoundTrips checks that what the operator PUTs comes back from GET as it was
// sent: otherwise every resync would see drift and write again.
func TestDesiredTopicSpecRoundTrips(t *testing.T) {
	c := testBroker(t)
	ctx := context.Background()
	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
	custom := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: heraldv1.BrokerClusterSpec{
		Config: heraldv1.BrokerConfig{MaxMessageBytes: ptr.To[int32](2048),
			Retention: heraldv1.RetentionDefaults{MaxAge: dur("1h30m"), MaxBytes: ptr.To[int64](1 << 20)}}}}
	tests := []struct {
		name string
		bc   *heraldv1.BrokerCluster
		spec heraldv1.TopicSpec
		want api.TopicSpec
	}{
		{"defaults", bc, heraldv1.TopicSpec{Partitions: 1},
			api.TopicSpec{Partitions: 1, Retention: &api.Retention{MaxAge: api.Duration(168 * time.Hour)}, MaxMessageBytes: 1 << 20}},
		{"cluster defaults", custom, heraldv1.TopicSpec{Partitions: 2},
			api.TopicSpec{Partitions: 2, Retention: &api.Retention{MaxAge: api.Duration(90 * time.Minute), MaxBytes: 1 << 20}, MaxMessageBytes: 2048}},
		{"half a retention", custom, heraldv1.TopicSpec{Partitions: 3, Retention: &heraldv1.TopicRetention{MaxBytes: ptr.To[int64](0)}},
			api.TopicSpec{Partitions: 3, Retention: &api.Retention{MaxAge: api.Duration(90 * time.Minute)}, MaxMessageBytes: 2048}},
		{"everything", bc, heraldv1.TopicSpec{Partitions: 4, Retention: &heraldv1.TopicRetention{MaxAge: dur("0s"), MaxBytes: ptr.To[int64](5000)},
			MessageTTL: dur("90s"), MaxMessageBytes: ptr.To[int32](100)},
			api.TopicSpec{Partitions: 4, Retention: &api.Retention{MaxBytes: 5000}, MessageTTL: api.Duration(90 * time.Second), MaxMessageBytes: 100}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: "t" + string(rune('a'+i))}, Spec: tt.spec}
			got, err := DesiredTopicSpec(topic, tt.bc)
			if err != nil {
				t.Fatal(err)
			}
			if d := topicDiff(tt.want, got); len(d) > 0 {
				t.Fatalf("desired spec differs from the expected one: %v", d)
			}
			if _, _, err := c.PutTopic(ctx, topic.Name, got); err != nil {
				t.Fatal(err)
			}
			back, err := c.GetTopic(ctx, topic.Name)
			if err != nil {
				t.Fatal(err)
			}
			if d := topicDiff(got, back.TopicSpec); len(d) > 0 {
				t.Errorf("the broker's topic differs from what was PUT: %v", asDrift(d))
			}
		})
	}
	// A broker-side change is seen, with both values.
	have := api.TopicSpec{Partitions: 5, Retention: &api.Retention{MaxAge: api.Duration(time.Hour)}, MaxMessageBytes: 1}
	want := api.TopicSpec{Partitions: 3, Retention: &api.Retention{MaxAge: api.Duration(168 * time.Hour)}, MaxMessageBytes: 1}
	got := strings.Join(asDrift(topicDiff(want, have)), "; ")
	if got != "partitions was 5 on the broker, restored to 3; retention.maxAge was 1h on the broker, restored to 168h" {
		t.Errorf("drift = %q", got)
	}
}

// TestDesiredSubscriptionSpecRoundTrips: the same for subscriptions, over every retry policy.
func TestDesiredSubscriptionSpecRoundTrips(t *testing.T) {
	c := testBroker(t)
	ctx := context.Background()
	if _, _, err := c.PutTopic(ctx, "orders", api.TopicSpec{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PutTopic(ctx, "orders-dlq", api.TopicSpec{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	refs := resolvedRefs{Topic: "orders"}
	push := resolvedRefs{Topic: "orders", DeadLetterTopic: "orders-dlq", Endpoint: "http://127.0.0.1:9/hook",
		SigningSecrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain-secret-2"}}
	tests := []struct {
		name string
		spec heraldv1.SubscriptionSpec
		refs resolvedRefs
		want func(*api.SubscriptionSpec)
	}{
		{"pull, nothing set (not even the CRD's defaults)", heraldv1.SubscriptionSpec{}, refs, func(s *api.SubscriptionSpec) {
			if s.Retry.Policy != "exponential" || s.Retry.MaxAttempts != 10 || s.AckDeadline.D() != 30*time.Second || s.StartAt != "latest" {
				t.Errorf("defaults: %+v %+v", s, s.Retry)
			}
		}},
		{"linear", heraldv1.SubscriptionSpec{Retry: heraldv1.RetrySpec{Policy: heraldv1.RetryLinear, MinBackoff: dur("2s"), MaxAttempts: 3, MaxAge: dur("0s")},
			AckDeadline: dur("1m"), Filter: "tag == 'eu'", Ordered: true, StartAt: "earliest"}, refs, nil},
		{"mns-backoff", heraldv1.SubscriptionSpec{Retry: heraldv1.RetrySpec{Policy: heraldv1.RetryMNSBackoff, MaxAge: dur("24h")}}, refs, func(s *api.SubscriptionSpec) {
			if s.Retry.MinBackoff.D() != 10*time.Second || s.Retry.MaxBackoff.D() != 20*time.Second || s.Retry.MaxAttempts != 4 {
				t.Errorf("mns-backoff defaults: %+v", s.Retry)
			}
		}},
		{"mns-exponential-decay", heraldv1.SubscriptionSpec{Retry: heraldv1.RetrySpec{Policy: heraldv1.RetryMNSExponentialDecay}}, refs, func(s *api.SubscriptionSpec) {
			if s.Retry.MinBackoff.D() != time.Second || s.Retry.MaxBackoff.D() != 512*time.Second || s.Retry.MaxAttempts != 177 {
				t.Errorf("mns-exponential-decay defaults: %+v", s.Retry)
			}
		}},
		{"push with everything", heraldv1.SubscriptionSpec{DeadLetterTopic: "orders-dlq-object", StartAt: "2024-05-01T12:00:00Z",
			Push: &heraldv1.PushSpec{ServiceRef: &heraldv1.ServiceReference{Name: "x"}, Format: heraldv1.PushFormatCloudEventsBinary,
				Timeout: dur("3s"), MaxInFlight: 2, Headers: map[string]string{"X-Team": "payments"}, SigningSecretRef: &heraldv1.SecretReference{Name: "s"}},
			Retry: heraldv1.RetrySpec{Policy: heraldv1.RetryExponential, MinBackoff: dur("0s"), MaxBackoff: dur("1m"), MaxAttempts: 5}}, push, func(s *api.SubscriptionSpec) {
			if s.Push.Endpoint != push.Endpoint || len(s.Push.SigningSecrets) != 2 || s.DeadLetterTopic != "orders-dlq" || s.Retry.MinBackoff.D() != time.Second {
				t.Errorf("push: %+v %+v", s.Push, s.Retry)
			}
		}},
		{"push, defaults", heraldv1.SubscriptionSpec{Push: &heraldv1.PushSpec{URI: "http://127.0.0.1:9/"}}, resolvedRefs{Topic: "orders", Endpoint: "http://127.0.0.1:9/"},
			func(s *api.SubscriptionSpec) {
				if s.Push.Format != "raw" || s.Push.MaxInFlight != 16 || s.Push.Timeout.D() != 10*time.Second {
					t.Errorf("push defaults: %+v", s.Push)
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := &heraldv1.Subscription{ObjectMeta: metav1.ObjectMeta{Name: "s" + string(rune('a'+i))}, Spec: tt.spec}
			got, err := DesiredSubscriptionSpec(sub, tt.refs)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil {
				tt.want(&got)
			}
			if _, _, err := c.PutSubscription(ctx, sub.Name, got); err != nil {
				t.Fatal(err)
			}
			back, err := c.GetSubscription(ctx, sub.Name)
			if err != nil {
				t.Fatal(err)
			}
			if back.Topic != got.Topic || back.StartAt != got.StartAt {
				t.Errorf("topic/startAt: got %q/%q, want %q/%q", back.Topic, back.StartAt, got.Topic, got.StartAt)
			}
			if d := subscriptionDiff(got, back.SubscriptionSpec); len(d) > 0 {
				t.Errorf("the broker's subscription differs from what was PUT: %v", asDrift(d))
			}
		})
	}
	// Secrets never show in a diff.
	a := api.SubscriptionSpec{Push: &api.PushConfig{Endpoint: "http://a/", SigningSecrets: []string{"secret-one"}}}
	b := api.SubscriptionSpec{Push: &api.PushConfig{Endpoint: "http://b/", SigningSecrets: []string{"secret-two"}}}
	got := strings.Join(asUpdate(subscriptionDiff(b, a)), "; ")
	if got != "push.endpoint http://a/ → http://b/; push.signingSecrets changed" {
		t.Errorf("diff = %q", got)
	}
}

func TestParseBrokerURLOverride(t *testing.T) {
	o, err := ParseBrokerURLOverride(" team-a/orders=http://127.0.0.1:18080 , http://{name}.{namespace}.example:8080/x=y ")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ ns, name, want string }{
		{"team-a", "orders", "http://127.0.0.1:18080"},
		{"team-b", "orders", "http://orders.team-b.example:8080/x=y"},
	} {
		if got, ok := o.BrokerURL(tt.ns, tt.name); !ok || got != tt.want {
			t.Errorf("BrokerURL(%s, %s) = %q, %v; want %q", tt.ns, tt.name, got, ok, tt.want)
		}
	}
	if got := o.String(); got != "team-a/orders=http://127.0.0.1:18080,http://{name}.{namespace}.example:8080/x=y" {
		t.Errorf("String() = %q", got)
	}
	only, err := ParseBrokerURLOverride("a/b=http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := only.BrokerURL("a", "c"); ok {
		t.Error("an unlisted cluster was overridden without a default")
	}
	if o, err := ParseBrokerURLOverride(" "); o != nil || err != nil {
		t.Errorf("empty: %v, %v", o, err)
	}
	var none *BrokerURLOverride
	if _, ok := none.BrokerURL("a", "b"); ok {
		t.Error("nil override answered")
	}
	for _, bad := range []string{"127.0.0.1:8080", "a/b=ftp://x", "a=http://x", "a/b/c=http://x", "http://x,http://y",
		"a/b=http://x,a/b=http://y", "http://x/?q=1"} {
		if _, err := ParseBrokerURLOverride(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestServiceRefResolution(t *testing.T) {
	ref := &heraldv1.ServiceReference{Name: "billing"}
	if got := serviceURL("shop", ref); got != "http://billing.shop.svc:80/" {
		t.Errorf("serviceURL = %q", got)
	}
	ref = &heraldv1.ServiceReference{Name: "billing", Port: ptr.To[int32](8443), Path: "/hooks/herald"}
	if got := serviceURL("shop", ref); got != "http://billing.shop.svc:8443/hooks/herald" {
		t.Errorf("serviceURL = %q", got)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "billing"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Port: 80}, {Port: 8443, Protocol: corev1.ProtocolTCP}}}}
	if p := servicePortProblem(svc, ref); p != "" {
		t.Errorf("port 8443: %s", p)
	}
	if p := servicePortProblem(svc, &heraldv1.ServiceReference{Name: "billing", Port: ptr.To[int32](9)}); !strings.Contains(p, "no TCP port 9 (its ports: 80, 8443)") {
		t.Errorf("port 9: %q", p)
	}
	ext := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "hooks.example.com"}}
	if p := servicePortProblem(ext, ref); p != "" {
		t.Errorf("ExternalName: %s", p)
	}
}

func TestSigningSecrets(t *testing.T) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sig"}, Data: map[string][]byte{
		"b-new": []byte("whsec_bmV3LXNlY3JldA==\n"), "a-old": []byte("old-secret-1"), "empty": nil}}
	got, problem := signingSecrets(s, &heraldv1.SecretReference{Name: "sig"})
	if problem != "" || strings.Join(got, ",") != "old-secret-1,whsec_bmV3LXNlY3JldA==" {
		t.Errorf("all keys: %v %q", got, problem)
	}
	got, problem = signingSecrets(s, &heraldv1.SecretReference{Name: "sig", Key: "b-new"})
	if problem != "" || strings.Join(got, ",") != "whsec_bmV3LXNlY3JldA==" {
		t.Errorf("one key: %v %q", got, problem)
	}
	if _, problem = signingSecrets(s, &heraldv1.SecretReference{Name: "sig", Key: "nope"}); !strings.Contains(problem, `no key "nope"`) {
		t.Errorf("missing key: %q", problem)
	}
	if _, problem = signingSecrets(s, &heraldv1.SecretReference{Name: "sig", Key: "empty"}); !strings.Contains(problem, "no signing secret") {
		t.Errorf("empty key: %q", problem)
	}
}

func TestDriftCondition(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var conds []metav1.Condition
	driftCondition(&conds, nil, false, 1, now, time.Minute)
	if len(conds) != 0 {
		t.Fatalf("set without a comparison: %v", conds)
	}
	driftCondition(&conds, nil, true, 1, now, time.Minute)
	if c := meta.FindStatusCondition(conds, heraldv1.ConditionDrifted); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonInSync {
		t.Fatalf("first comparison: %v", conds)
	}
	driftCondition(&conds, []string{"partitions was 1 on the broker, restored to 3"}, true, 1, now, time.Minute)
	c := meta.FindStatusCondition(conds, heraldv1.ConditionDrifted)
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonCorrected || !strings.Contains(c.Message, "partitions was 1 on the broker, restored to 3") {
		t.Fatalf("corrected: %v", c)
	}
	// Stays True until a resync one interval later finds nothing.
	driftCondition(&conds, nil, true, 1, now.Add(10*time.Second), time.Minute)
	if c := meta.FindStatusCondition(conds, heraldv1.ConditionDrifted); c.Status != metav1.ConditionTrue {
		t.Fatalf("reset too early: %v", c)
	}
	driftCondition(&conds, nil, true, 1, now.Add(time.Minute), time.Minute)
	c = meta.FindStatusCondition(conds, heraldv1.ConditionDrifted)
	if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "last correction at 2026-01-02T03:04:05Z: partitions was 1") {
		t.Fatalf("reset: %v", c)
	}
}

func TestJitteredAndBackoff(t *testing.T) {
	for range 1000 {
		if d := jittered(30 * time.Second); d < 27*time.Second || d > 33*time.Second {
			t.Fatalf("jittered(30s) = %s", d)
		}
	}
	var b backoff
	key := types.NamespacedName{Namespace: "a", Name: "b"}
	prev := time.Duration(0)
	for range 12 {
		d := b.next(key)
		if d < prev || d > backoffMax {
			t.Fatalf("backoff %s after %s", d, prev)
		}
		prev = d
	}
	if prev != backoffMax {
		t.Errorf("backoff does not reach its cap: %s", prev)
	}
	b.reset(key)
	if d := b.next(key); d != backoffBase {
		t.Errorf("after reset: %s", d)
	}
}

func TestTopicClaimOrder(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	topic := func(name string, created metav1.Time, finalizer bool) *heraldv1.Topic {
		tp := &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: created}}
		if finalizer {
			tp.Finalizers = []string{Finalizer}
		}
		return tp
	}
	later := metav1.NewTime(at.Add(time.Second))
	for _, tt := range []struct {
		a, b *heraldv1.Topic
		want bool
	}{
		{topic("z", at, false), topic("a", later, true), true}, // creation time first
		{topic("z", at, true), topic("a", at, false), true},    // same second: the holder of the topic
		{topic("a", at, false), topic("z", at, false), true},   // then the name
		{topic("z", at, false), topic("a", at, false), false},
	} {
		if got := olderThan(tt.a, tt.b); got != tt.want {
			t.Errorf("olderThan(%s, %s) = %v", tt.a.Name, tt.b.Name, got)
		}
	}
}

func TestDesiredTopicSpecReplicationFactor(t *testing.T) {
	bc := &heraldv1.BrokerCluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
	for rf, want := range map[int32]int{0: 0, 1: 1, 3: 3} {
		topic := &heraldv1.Topic{ObjectMeta: metav1.ObjectMeta{Name: "t"}, Spec: heraldv1.TopicSpec{Partitions: 1, ReplicationFactor: rf}}
		got, err := DesiredTopicSpec(topic, bc)
		if err != nil {
			t.Fatal(err)
		}
		if got.ReplicationFactor != want {
			t.Errorf("spec.replicationFactor %d: PUT %d, want %d (0: the brokers choose)", rf, got.ReplicationFactor, want)
		}
	}
	// Never a difference to "restore": it cannot change.
	if d := topicDiff(api.TopicSpec{Partitions: 1, ReplicationFactor: 3}, api.TopicSpec{Partitions: 1, ReplicationFactor: 1}); len(d) != 0 {
		t.Errorf("diff %v", d)
	}
	for _, tt := range []struct {
		want, have int
		mismatch   bool
	}{{3, 3, false}, {0, 3, false}, {3, 0, false}, {3, 2, true}} {
		msg := replicationFactorMismatch("t", "c", api.TopicSpec{ReplicationFactor: tt.want}, api.TopicSpec{ReplicationFactor: tt.have})
		if (msg != "") != tt.mismatch {
			t.Errorf("want %d have %d: %q", tt.want, tt.have, msg)
		}
	}
	if msg := replicationFactorMismatch("t", "c", api.TopicSpec{ReplicationFactor: 3}, api.TopicSpec{ReplicationFactor: 2}); !strings.HasPrefix(msg,
		`topic "t" has replicationFactor 2 on BrokerCluster "c", not 3 (spec.replicationFactor)`) {
		t.Errorf("message %q", msg)
	}
}

func TestUnderReplication(t *testing.T) {
	r := []string{"c-0", "c-1", "c-2"}
	view := &ClusterView{Partitions: []ClusterPartition{
		{Topic: "other", Partition: 0, Leader: "c-0", Replicas: r, InSync: r[:1]},
		{Topic: "t", Partition: 0, Leader: "c-0", Replicas: r, InSync: r},
		{Topic: "t", Partition: 1, Leader: "c-1", Replicas: r, InSync: r[:2]},
		// A copy being added (a move): 4 replicas for a factor of 3, the new one catching up.
		{Topic: "t", Partition: 2, Leader: "c-0", Replicas: append(slices.Clone(r), "c-3"), InSync: r},
		{Topic: "t", Partition: 3, Leader: "", Replicas: r, InSync: r[1:]},
	}}
	n, msg, found := underReplication(view, "t", 3)
	if !found || n != 2 || msg != "2 of 4 partitions are under-replicated: partition 1 has 2 of 3 copies in sync, partition 3 has 2 of 3 copies in sync and no leader" {
		t.Errorf("%d %q %v", n, msg, found)
	}
	// Without a known factor, every replica counts.
	if n, _, _ := underReplication(view, "t", 0); n != 3 {
		t.Errorf("factor unknown: %d under-replicated, want 3", n)
	}
	if n, msg, found := underReplication(&ClusterView{Partitions: view.Partitions[1:2]}, "t", 3); !found || n != 0 ||
		msg != "all 1 partitions have every copy in sync" {
		t.Errorf("%d %q %v", n, msg, found)
	}
	if _, _, found := underReplication(view, "missing", 3); found {
		t.Error("found a topic the view does not have")
	}
	// Many: the first ten are named.
	var many []ClusterPartition
	for i := range 13 {
		many = append(many, ClusterPartition{Topic: "t", Partition: i, Leader: "c-0", Replicas: r, InSync: r[:1]})
	}
	if n, msg, _ := underReplication(&ClusterView{Partitions: many}, "t", 3); n != 13 || !strings.HasSuffix(msg, "partition 9 has 1 of 3 copies in sync, and 3 more") {
		t.Errorf("%d %q", n, msg)
	}
}
