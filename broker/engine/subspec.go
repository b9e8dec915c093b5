package engine

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// Defaults and bounds of subscription settings.
const (
	defaultAckDeadline = 30 * time.Second
	maxAckDeadline     = 12 * time.Hour
	defaultPushTimeout = 10 * time.Second
	defaultMaxInFlight = 16
	defaultMinBackoff  = time.Second
	defaultMaxBackoff  = 10 * time.Minute
)

var pushFormats = map[string]bool{"raw": true, "json": true, "cloudevents-binary": true, "cloudevents-structured": true}

// normalizeSubSpec validates spec and fills its defaults.
// NormalizeSubscriptionSpec fills a subscription spec's defaults and validates it (the filter
// compiles, the topic name is valid), as PutSubscription would.
func (b *Broker) NormalizeSubscriptionSpec(name string, s api.SubscriptionSpec) (api.SubscriptionSpec, error) {
	if e := validName("name", name); e != nil {
		return s, e
	}
	out, _, e := b.normalizeSubSpec(name, s)
	if e != nil {
		return out, e
	}
	return out, nil
}

func (b *Broker) normalizeSubSpec(name string, s api.SubscriptionSpec) (api.SubscriptionSpec, *filter, *api.Error) {
	if e := validName("topic", s.Topic); e != nil {
		if s.Topic == "" {
			e.Message = "topic is required"
		}
		return s, nil, e
	}
	if s.AckDeadline == 0 {
		s.AckDeadline = api.Duration(defaultAckDeadline)
	}
	if s.AckDeadline.D() < time.Second || s.AckDeadline.D() > maxAckDeadline {
		return s, nil, api.Invalid("ackDeadline", "ackDeadline must be between 1s and %s", api.Duration(maxAckDeadline))
	}
	switch s.StartAt {
	case "":
		s.StartAt = "latest"
	case "latest", "earliest":
	default:
		if _, err := time.Parse(time.RFC3339Nano, s.StartAt); err != nil {
			return s, nil, api.Invalid("startAt", "startAt must be latest, earliest or an RFC 3339 time, got %q", s.StartAt)
		}
	}
	if s.DeadLetterTopic != "" {
		if e := validName("deadLetterTopic", s.DeadLetterTopic); e != nil {
			return s, nil, e
		}
		if s.DeadLetterTopic == s.Topic {
			return s, nil, api.Invalid("deadLetterTopic", "deadLetterTopic must differ from topic")
		}
	}
	if s.Retry != nil {
		r := *s.Retry
		switch r.Policy {
		case "":
			r.Policy = "exponential"
		case "linear", "exponential":
		case RetryMNSBackoff:
			// Alibaba MNS BACKOFF_RETRY: 3 retries (4 attempts in all), each after a random
			// 10 to 20 s. Fields that are set win.
			setDefaults(&r, 10*time.Second, 20*time.Second, 4)
		case RetryMNSExponentialDecay:
			// Alibaba MNS EXPONENTIAL_DECAY_RETRY: 176 retries (177 attempts) 1, 2, 4, … 256,
			// then every 512 s: about 23.9 hours in all.
			setDefaults(&r, time.Second, 512*time.Second, 177)
		default:
			return s, nil, api.Invalid("retry.policy", "retry.policy must be linear, exponential, %s or %s, got %q", RetryMNSBackoff, RetryMNSExponentialDecay, r.Policy)
		}
		if r.MinBackoff == 0 {
			r.MinBackoff = api.Duration(defaultMinBackoff)
		}
		if r.MaxBackoff == 0 {
			r.MaxBackoff = api.Duration(defaultMaxBackoff)
		}
		if r.MinBackoff > r.MaxBackoff {
			return s, nil, api.Invalid("retry.minBackoff", "retry.minBackoff (%s) must not exceed retry.maxBackoff (%s)", r.MinBackoff, r.MaxBackoff)
		}
		if r.MaxAttempts < 0 {
			return s, nil, api.Invalid("retry.maxAttempts", "retry.maxAttempts must not be negative")
		}
		s.Retry = &r
	}
	if s.Push != nil {
		p := *s.Push
		if e := b.checkEndpoint(p.Endpoint); e != nil {
			return s, nil, e
		}
		if t, ok := strings.CutPrefix(p.Endpoint, TopicEndpointPrefix); ok && t == s.Topic {
			return s, nil, api.Invalid("push.endpoint", "push.endpoint %q forwards into the subscription's own topic (a loop)", p.Endpoint)
		}
		if p.Format == "" {
			p.Format = "raw"
		}
		if !pushFormats[p.Format] {
			return s, nil, api.Invalid("push.format", "push.format must be raw, json, cloudevents-binary or cloudevents-structured, got %q", p.Format)
		}
		if p.Timeout == 0 {
			p.Timeout = api.Duration(defaultPushTimeout)
		}
		if p.Timeout.D() > 10*time.Minute {
			return s, nil, api.Invalid("push.timeout", "push.timeout must be at most 10m")
		}
		if p.MaxInFlight == 0 {
			p.MaxInFlight = defaultMaxInFlight
		}
		if p.MaxInFlight < 0 || p.MaxInFlight > 10000 {
			return s, nil, api.Invalid("push.maxInFlight", "push.maxInFlight must be between 1 and 10000")
		}
		for k, v := range p.Headers {
			if e := checkText("push.headers."+k, k+v, 8192); e != nil || !isToken(k) {
				return s, nil, api.Invalid("push.headers", "header %q is not a valid header", k)
			}
		}
		for i, sec := range p.SigningSecrets {
			if len(sec) < 8 {
				return s, nil, api.Invalid("push.signingSecrets", "signing secret %d is shorter than 8 characters", i)
			}
			if _, err := SigningKey(sec); err != nil {
				return s, nil, api.Invalid("push.signingSecrets", "signing secret %d: %v", i, err)
			}
		}
		s.Push = &p
	}
	f, err := compileFilter(s.Filter)
	if err != nil {
		return s, nil, api.Invalid("filter", "invalid filter: %v", err)
	}
	return s, f, nil
}

// isToken reports whether s is a valid HTTP header name (an RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// checkEndpoint validates a push endpoint URL. Link-local and cloud metadata addresses are
// refused (they reach the node's credentials) unless the broker explicitly allows them; names
// are checked again when connecting.
func (b *Broker) checkEndpoint(raw string) *api.Error {
	if t, ok := strings.CutPrefix(raw, TopicEndpointPrefix); ok {
		if e := validName("push.endpoint", t); e != nil {
			e.Message = "push.endpoint " + TopicEndpointPrefix + "<topic>: " + e.Message
			return e
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return api.Invalid("push.endpoint", "push.endpoint must be an absolute http or https URL or %s<topic>, got %q", TopicEndpointPrefix, raw)
	}
	if b.cfg.AllowLinkLocalEndpoints {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && IsForbiddenAddr(ip) {
		return api.Invalid("push.endpoint", "push.endpoint %q is a link-local or cloud metadata address; start the broker with --allow-link-local-endpoints to allow it", raw)
	}
	return nil
}

// IsForbiddenAddr reports link-local (169.254.0.0/16, fe80::/10) and cloud metadata addresses
// (fd00:ec2::254).
func IsForbiddenAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
		return true
	}
	return ip == netip.MustParseAddr("fd00:ec2::254")
}

// IsForbiddenIP is IsForbiddenAddr for a net.IP (dialers).
func IsForbiddenIP(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && IsForbiddenAddr(a)
}

// Retry policy presets besides linear and exponential.
const (
	RetryMNSBackoff          = "mns-backoff"
	RetryMNSExponentialDecay = "mns-exponential-decay"
)

// TopicEndpointPrefix marks a push endpoint that forwards into another topic: "topic:<name>".
const TopicEndpointPrefix = "topic:"

func setDefaults(r *api.RetryPolicy, minB, maxB time.Duration, attempts int) {
	if r.MinBackoff == 0 {
		r.MinBackoff = api.Duration(minB)
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = api.Duration(maxB)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = attempts
	}
}

// SigningKey returns the HMAC key of a push signing secret. A secret of the form
// whsec_<base64> (Standard Webhooks) is the base64-decoded part; any other secret is used as
// its bytes.
func SigningKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, errors.New("a whsec_ secret must be whsec_ followed by standard base64")
		}
	}
	if len(key) == 0 {
		return nil, errors.New("a whsec_ secret must not be empty")
	}
	return key, nil
}

// Backoff is the retry policy's delay before the next attempt after attempts failed ones (no
// jitter, except mns-backoff's, which is random between minBackoff and maxBackoff). A nil
// policy gives 0.
func Backoff(r *api.RetryPolicy, attempts int) time.Duration { return backoff(r, attempts) }

// backoff is the delay before redelivery attempt n+1 after n failed attempts.
func backoff(r *api.RetryPolicy, attempts int) time.Duration {
	if r == nil {
		return 0
	}
	minB, maxB := r.MinBackoff.D(), r.MaxBackoff.D()
	if attempts < 1 {
		attempts = 1
	}
	var d time.Duration
	if r.Policy == RetryMNSBackoff {
		d = minB
		if maxB > minB {
			d += rand.N(maxB - minB + 1)
		}
	} else if r.Policy == "linear" {
		d = minB * time.Duration(attempts)
	} else {
		d = minB
		for i := 1; i < attempts && d < maxB; i++ {
			d *= 2
		}
	}
	if d > maxB || d < 0 {
		d = maxB
	}
	return d
}
