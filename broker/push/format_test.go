package push

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
	"github.com/heraldmq/herald/broker/engine"
)

// deliverOne pushes one message in the given format and returns the request the endpoint got.
func deliverOne(t *testing.T, format string, headers map[string]string, secrets []string, msg api.PublishMessage) (hit, api.PublishResult) {
	t.Helper()
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	ep := newEndpoint(t, nil)
	e.topic("orders", 1)
	spec := pushSpec("orders", ep.URL+"/in")
	spec.Push.Format = format
	spec.Push.Headers = headers
	spec.Push.SigningSecrets = secrets
	e.sub("orders-push", spec)
	res := e.publish("orders", msg)
	eventually(t, 20*time.Second, "the push", func() bool { return e.stats("orders-push").Acked == 1 })
	return ep.all()[0], res[0]
}

func checkCommonHeaders(t *testing.T, h http.Header, res api.PublishResult) {
	t.Helper()
	want := map[string]string{
		HeaderMessageID: res.ID, HeaderSubscription: "orders-push", HeaderTopic: "orders",
		HeaderPartition: strconv.Itoa(res.Partition), HeaderOffset: strconv.FormatInt(res.Offset, 10), HeaderDeliveryAttempt: "1",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, h.Get(HeaderPublishTime)); err != nil {
		t.Errorf("%s: %v", HeaderPublishTime, err)
	}
}

func TestRawFormat(t *testing.T) {
	h, res := deliverOne(t, "raw", map[string]string{"Authorization": "Bearer t0ken", "Herald-Message-Id": "spoofed", "X-Extra": "1"}, nil,
		api.PublishMessage{Text: text(`{"n":1}`), Key: "cust-1", Tag: "eu", OrderingKey: "ok",
			Attributes: map[string]string{"priority": "high", "content-type": "application/json", "ce-type": "com.example.x", "two words": "v"}})
	checkCommonHeaders(t, h.header, res)
	if string(h.body) != `{"n":1}` {
		t.Errorf("body %q", h.body)
	}
	checks := map[string]string{
		"Content-Type": "application/json", "Herald-Attribute-Priority": "high", "ce-type": "com.example.x",
		"Herald-Attribute-two%20words": "v", "Authorization": "Bearer t0ken", "X-Extra": "1",
		HeaderKey: "cust-1", HeaderTag: "eu", HeaderOrderingKey: "ok",
	}
	for k, v := range checks {
		if got := h.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if ua := h.header.Get("User-Agent"); !strings.HasPrefix(ua, "herald-push/") {
		t.Errorf("User-Agent %q", ua)
	}
}

func TestRawFormatDefaultContentType(t *testing.T) {
	h, _ := deliverOne(t, "", nil, nil, api.PublishMessage{Data: []byte{0, 1, 2}})
	if ct := h.header.Get("Content-Type"); ct != "application/octet-stream" || !bytes.Equal(h.body, []byte{0, 1, 2}) {
		t.Errorf("Content-Type %q, body %v", ct, h.body)
	}
}

func TestJSONFormat(t *testing.T) {
	h, res := deliverOne(t, "json", nil, nil, api.PublishMessage{Data: []byte("bytes\x00"), Key: "k", Attributes: map[string]string{"a": "b"}})
	checkCommonHeaders(t, h.header, res)
	if ct := h.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var env struct {
		Message struct {
			ID, MessageID string
			Data          []byte
			Attributes    map[string]string
			Key           string
			PublishTime   time.Time
			Partition     int
			Offset        int64
		}
		Subscription, Topic string
		DeliveryAttempt     int
	}
	if err := json.Unmarshal(h.body, &env); err != nil {
		t.Fatalf("body %s: %v", h.body, err)
	}
	m := env.Message
	if m.ID != res.ID || m.MessageID != res.ID || string(m.Data) != "bytes\x00" || m.Attributes["a"] != "b" || m.Key != "k" ||
		m.PublishTime.IsZero() || m.Offset != res.Offset || env.Subscription != "orders-push" || env.Topic != "orders" || env.DeliveryAttempt != 1 {
		t.Errorf("envelope %s", h.body)
	}
}

// toEvent parses a recorded request with the official CloudEvents SDK.
func toEvent(t *testing.T, h hit) *event.Event {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://x/", bytes.NewReader(h.body))
	req.Header = h.header
	ev, err := binding.ToEvent(context.Background(), cehttp.NewMessageFromHttpRequest(req))
	if err != nil {
		t.Fatalf("CloudEvents SDK cannot read the push (%v); headers %v body %s", err, h.header, h.body)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("invalid event: %v", err)
	}
	return ev
}

func TestCloudEvents(t *testing.T) {
	for _, mode := range []string{"cloudevents-binary", "cloudevents-structured"} {
		t.Run(mode, func(t *testing.T) {
			t.Run("plain message", func(t *testing.T) {
				before := time.Now().Add(-time.Second)
				h, res := deliverOne(t, mode, nil, nil, api.PublishMessage{Text: text(`{"total":42}`),
					Attributes: map[string]string{"content-type": "application/json", "priority": "high", "Not-An-Extension": "v"}})
				checkCommonHeaders(t, h.header, res)
				ev := toEvent(t, h)
				if ev.SpecVersion() != "1.0" || ev.ID() != res.ID || ev.Source() != "/herald/topics/orders" || ev.Type() != CloudEventType {
					t.Errorf("event context %v", ev.Context)
				}
				if ev.Time().Before(before) || ev.Time().After(time.Now().Add(time.Second)) {
					t.Errorf("time %v is not the publish time", ev.Time())
				}
				if ev.DataContentType() != "application/json" || string(ev.Data()) != `{"total":42}` {
					t.Errorf("data %q (%s)", ev.Data(), ev.DataContentType())
				}
				if v, _ := ev.Extensions()["priority"].(string); v != "high" {
					t.Errorf("extensions %v, want priority=high", ev.Extensions())
				}
				if got := h.header.Get("Herald-Attribute-Not-An-Extension"); got != "v" {
					t.Errorf("attribute that is no valid extension name: header %q", got)
				}
				if mode == "cloudevents-structured" && !strings.HasPrefix(h.header.Get("Content-Type"), "application/cloudevents+json") {
					t.Errorf("structured Content-Type %q", h.header.Get("Content-Type"))
				}
			})
			t.Run("binary data", func(t *testing.T) {
				h, _ := deliverOne(t, mode, nil, nil, api.PublishMessage{Data: []byte{0xff, 0, 1}})
				ev := toEvent(t, h)
				if !bytes.Equal(ev.Data(), []byte{0xff, 0, 1}) {
					t.Errorf("data %v", ev.Data())
				}
			})
			t.Run("published as a CloudEvent", func(t *testing.T) {
				// As POST /v1/topics/{t}/messages stores a binary-mode CloudEvent.
				h, _ := deliverOne(t, mode, nil, nil, api.PublishMessage{Text: text("<order/>"), Attributes: map[string]string{
					"ce-specversion": "1.0", "ce-id": "evt-7", "ce-source": "https://shop.example/orders", "ce-type": "com.example.order.created",
					"ce-subject": "order-7", "ce-time": "2024-05-01T10:00:00Z", "ce-tenant": "acme", "content-type": "application/xml"}})
				ev := toEvent(t, h)
				if ev.ID() != "evt-7" || ev.Source() != "https://shop.example/orders" || ev.Type() != "com.example.order.created" ||
					ev.Subject() != "order-7" || !ev.Time().Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) {
					t.Errorf("event context %v, want the published event's", ev.Context)
				}
				if v, _ := ev.Extensions()["tenant"].(string); v != "acme" || ev.DataContentType() != "application/xml" || string(ev.Data()) != "<order/>" {
					t.Errorf("extensions %v, data %q (%s)", ev.Extensions(), ev.Data(), ev.DataContentType())
				}
			})
		})
	}
}

func TestSignatures(t *testing.T) {
	oldKey := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the old secret, 32 bytes long..."))
	newKey := "a-plain-secret-string"
	h, res := deliverOne(t, "json", nil, []string{oldKey, newKey}, api.PublishMessage{Text: text("signed")})
	sig := h.header.Get(HeaderWebhookSignature)
	if parts := strings.Fields(sig); len(parts) != 2 || !strings.HasPrefix(parts[0], "v1,") || !strings.HasPrefix(parts[1], "v1,") {
		t.Fatalf("webhook-signature %q: want two v1 signatures", sig)
	}
	if h.header.Get(HeaderWebhookID) != res.ID {
		t.Errorf("webhook-id %q, want the message id %s", h.header.Get(HeaderWebhookID), res.ID)
	}
	ts, err := strconv.ParseInt(h.header.Get(HeaderWebhookTimestamp), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)) > time.Hour {
		t.Errorf("webhook-timestamp %q", h.header.Get(HeaderWebhookTimestamp))
	}
	// Rotation: a receiver knowing either secret accepts the request.
	for _, secrets := range [][]string{{oldKey}, {newKey}, {"whsec_" + base64.StdEncoding.EncodeToString([]byte("unrelated")), newKey}} {
		if err := client.VerifyWebhook(secrets, h.header, h.body, 0); err != nil {
			t.Errorf("VerifyWebhook(%v): %v", secrets, err)
		}
	}
	if err := client.VerifyWebhook([]string{"some-other-secret"}, h.header, h.body, 0); !errors.Is(err, client.ErrWebhookSignature) {
		t.Errorf("wrong secret: %v", err)
	}
	tampered := bytes.Replace(h.body, []byte(`"deliveryAttempt":1`), []byte(`"deliveryAttempt":2`), 1)
	if bytes.Equal(tampered, h.body) {
		t.Fatal("tampering failed")
	}
	if err := client.VerifyWebhook([]string{oldKey, newKey}, h.header, tampered, 0); !errors.Is(err, client.ErrWebhookSignature) {
		t.Errorf("tampered body: %v", err)
	}
	hdr := h.header.Clone()
	hdr.Set(HeaderWebhookID, "another-id")
	if err := client.VerifyWebhook([]string{oldKey}, hdr, h.body, 0); !errors.Is(err, client.ErrWebhookSignature) {
		t.Errorf("changed webhook-id: %v", err)
	}
}

func TestPushSpecValidation(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("t", 1)
	spec := pushSpec("t", "http://127.0.0.1:1/")
	spec.Push.SigningSecrets = []string{"whsec_not*base64!"}
	_, _, err := e.b.PutSubscription("s", spec)
	assertInvalid(t, err, "push.signingSecrets")
}

func TestPushHeaderNamesValidated(t *testing.T) {
	e := newEnv(t, engine.Config{Memory: true}, testOptions())
	e.topic("t", 1)
	spec := pushSpec("t", "http://127.0.0.1:1/")
	spec.Push.Headers = map[string]string{"X Bad": "v"}
	_, _, err := e.b.PutSubscription("s", spec)
	assertInvalid(t, err, "push.headers")
}
