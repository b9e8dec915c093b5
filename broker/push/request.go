package push

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
)

// Header names of the push contract.
const (
	HeaderMessageID       = "Herald-Message-Id"
	HeaderSubscription    = "Herald-Subscription"
	HeaderTopic           = "Herald-Topic"
	HeaderPartition       = "Herald-Partition"
	HeaderOffset          = "Herald-Offset"
	HeaderDeliveryAttempt = "Herald-Delivery-Attempt"
	HeaderPublishTime     = "Herald-Publish-Time"
	HeaderKey             = "Herald-Key"
	HeaderTag             = "Herald-Tag"
	HeaderOrderingKey     = "Herald-Ordering-Key"
	// HeaderAttributePrefix precedes an attribute's name (raw format, and attributes that are
	// not CloudEvents attributes in the CloudEvents formats).
	HeaderAttributePrefix = "Herald-Attribute-"

	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

// CloudEvents defaults for messages that were not published as CloudEvents.
const (
	CloudEventType     = "dev.herald.message"
	cloudEventSpec     = "1.0"
	cloudEventsJSON    = "application/cloudevents+json; charset=utf-8"
	cloudEventSourceTo = "/herald/topics/"
)

// request is one rendered push: body and headers, before signing.
type request struct {
	body   []byte
	header http.Header
	host   string
}

// render builds the request for msg in the target's format.
func (t *target) render(msg *api.Message) (*request, error) {
	r := &request{header: make(http.Header, 16)}
	// Extra headers first: the contract's headers below overwrite them.
	for k, v := range t.push.Headers {
		if strings.EqualFold(k, "Host") {
			r.host = v
			continue
		}
		r.header.Set(k, v)
	}
	userCT := r.header.Get("Content-Type")
	r.header.Del("Content-Type")
	for k := range r.header {
		if isReservedHeader(k) {
			r.header.Del(k)
		}
	}
	h := r.header
	h.Set(HeaderMessageID, msg.ID)
	h.Set(HeaderSubscription, t.name)
	h.Set(HeaderTopic, t.spec.Topic)
	h.Set(HeaderPartition, strconv.Itoa(msg.Partition))
	h.Set(HeaderOffset, strconv.FormatInt(msg.Offset, 10))
	h.Set(HeaderDeliveryAttempt, strconv.Itoa(msg.DeliveryAttempt))
	h.Set(HeaderPublishTime, msg.PublishTime.UTC().Format(time.RFC3339Nano))
	if msg.Key != "" {
		h.Set(HeaderKey, msg.Key)
	}
	if msg.Tag != "" {
		h.Set(HeaderTag, msg.Tag)
	}
	if msg.OrderingKey != "" {
		h.Set(HeaderOrderingKey, msg.OrderingKey)
	}
	switch t.push.Format {
	case "json":
		body, err := json.Marshal(envelope{
			Message: envelopeMessage{ID: msg.ID, MessageID: msg.ID, Data: msg.Data, Attributes: msg.Attributes, Key: msg.Key,
				Tag: msg.Tag, OrderingKey: msg.OrderingKey, PublishTime: msg.PublishTime.UTC(), Partition: msg.Partition, Offset: msg.Offset},
			Subscription: t.name, Topic: t.spec.Topic, DeliveryAttempt: msg.DeliveryAttempt,
		})
		if err != nil {
			return nil, err
		}
		r.body = body
		h.Set("Content-Type", "application/json")
	case "cloudevents-binary", "cloudevents-structured":
		ce, rest := t.cloudEvent(msg)
		for k, v := range rest {
			h.Set(HeaderAttributePrefix+headerToken(k), v)
		}
		if t.push.Format == "cloudevents-binary" {
			for _, k := range ce.names() {
				if k == "datacontenttype" {
					continue
				}
				h.Set("ce-"+k, ce.attrs[k])
			}
			if ct := ce.attrs["datacontenttype"]; ct != "" {
				h.Set("Content-Type", ct)
			}
			r.body = msg.Data
		} else {
			body, err := ce.structured(msg.Data)
			if err != nil {
				return nil, err
			}
			r.body = body
			h.Set("Content-Type", cloudEventsJSON)
		}
	default: // raw
		ct := ""
		for k, v := range msg.Attributes {
			lk := strings.ToLower(k)
			switch {
			case lk == "content-type":
				ct = v
			case strings.HasPrefix(lk, "ce-"):
				h.Set(headerToken(lk), v)
			default:
				h.Set(HeaderAttributePrefix+headerToken(k), v)
			}
		}
		if ct == "" {
			ct = userCT
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		r.body = msg.Data
	}
	return r, nil
}

// isReservedHeader reports headers push.headers may not set.
func isReservedHeader(k string) bool {
	l := strings.ToLower(k)
	return strings.HasPrefix(l, "herald-") || strings.HasPrefix(l, "webhook-") || strings.HasPrefix(l, "ce-") ||
		l == "content-length" || l == "transfer-encoding" || l == "connection"
}

// envelope is the json format's body.
type envelope struct {
	Message         envelopeMessage `json:"message"`
	Subscription    string          `json:"subscription"`
	Topic           string          `json:"topic"`
	DeliveryAttempt int             `json:"deliveryAttempt"`
}

type envelopeMessage struct {
	ID          string            `json:"id"`
	MessageID   string            `json:"messageId"` // the Pub/Sub push name of id
	Data        []byte            `json:"data"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Key         string            `json:"key,omitempty"`
	Tag         string            `json:"tag,omitempty"`
	OrderingKey string            `json:"orderingKey,omitempty"`
	PublishTime time.Time         `json:"publishTime"`
	Partition   int               `json:"partition"`
	Offset      int64             `json:"offset"`
}

// cloudEvent holds a message's CloudEvents context attributes (lower-case names, string values).
type cloudEvent struct {
	attrs map[string]string
}

func (c cloudEvent) names() []string {
	out := make([]string, 0, len(c.attrs))
	for k := range c.attrs {
		out = append(out, k)
	}
	return out
}

// ceContext are the context attributes CloudEvents 1.0 defines (no extension may use them).
var ceContext = map[string]bool{"id": true, "source": true, "specversion": true, "type": true, "datacontenttype": true,
	"dataschema": true, "subject": true, "time": true, "data": true, "data_base64": true}

// validCEName: CloudEvents attribute names are a-z and 0-9, at most 20 characters recommended.
func validCEName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// cloudEvent maps msg to CloudEvents attributes. Attributes that fit nowhere in the event are
// returned in rest (for Herald-Attribute-* headers).
func (t *target) cloudEvent(msg *api.Message) (cloudEvent, map[string]string) {
	a := map[string]string{
		"specversion": cloudEventSpec,
		"id":          msg.ID,
		"source":      cloudEventSourceTo + t.spec.Topic,
		"type":        CloudEventType,
		"time":        msg.PublishTime.UTC().Format(time.RFC3339Nano),
	}
	var rest map[string]string
	addRest := func(k, v string) {
		if rest == nil {
			rest = map[string]string{}
		}
		rest[k] = v
	}
	binary := t.push.Format == "cloudevents-binary"
	// Plain attributes first, so that ce-* ones (the event as published) win any clash.
	keys := make([]string, 0, len(msg.Attributes))
	for k := range msg.Attributes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := strings.HasPrefix(strings.ToLower(keys[i]), "ce-"), strings.HasPrefix(strings.ToLower(keys[j]), "ce-")
		if ci != cj {
			return cj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		v := msg.Attributes[k]
		lk := strings.ToLower(k)
		switch {
		case lk == "content-type":
			a["datacontenttype"] = v
		case strings.HasPrefix(lk, "ce-"):
			name := lk[3:]
			switch {
			case name == "specversion":
				// Always 1.0: that is the version this binding speaks.
			case !validCEName(name):
				addRest(k, v)
			case v == "" && (name == "id" || name == "source" || name == "type"):
				// Required attributes must not be empty: keep the defaults.
			case name == "time" && !validTime(v):
				addRest(k, v)
			default:
				a[name] = v // published as a CloudEvent (stored as its wire form): pass through
			}
		case validCEName(lk) && !ceContext[lk] && lk == k:
			if binary {
				v = percentEncodeCE(v)
			}
			a[lk] = v
		default:
			addRest(k, v)
		}
	}
	return cloudEvent{attrs: a}, rest
}

func validTime(s string) bool {
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

// structured renders the event in the JSON event format.
func (c cloudEvent) structured(data []byte) ([]byte, error) {
	m := make(map[string]any, len(c.attrs)+1)
	for k, v := range c.attrs {
		m[k] = v
	}
	ct := c.attrs["datacontenttype"]
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case len(data) == 0 && ct == "":
		// No data.
	case (mt == "application/json" || strings.HasSuffix(mt, "+json")) && json.Valid(data):
		m["data"] = json.RawMessage(data)
	case strings.HasPrefix(mt, "text/") && utf8.Valid(data):
		m["data"] = string(data)
	default:
		m["data_base64"] = base64.StdEncoding.EncodeToString(data)
	}
	return json.Marshal(m)
}

// percentEncodeCE encodes a header value per the CloudEvents HTTP binding (3.1.3.2): space,
// double quote, percent and everything outside printable ASCII.
func percentEncodeCE(s string) string {
	need := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// headerToken makes s usable in a header name: bytes that are not RFC 9110 token characters,
// and '%', are percent-encoded.
func headerToken(s string) string {
	ok := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&'*+-.^_`|~", c) >= 0
	}
	need := false
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			need = true
			break
		}
	}
	if !need {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; ok(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	return b.String()
}

// signature is the webhook-signature value: one v1 signature per key, space-separated
// (Standard Webhooks: HMAC-SHA256 over "<id>.<timestamp>.<body>", base64).
func signature(keys [][]byte, id string, ts int64, body []byte) string {
	var sb strings.Builder
	prefix := make([]byte, 0, len(id)+24)
	prefix = append(prefix, id...)
	prefix = append(prefix, '.')
	prefix = strconv.AppendInt(prefix, ts, 10)
	prefix = append(prefix, '.')
	for i, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write(prefix)
		mac.Write(body)
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return sb.String()
}
