package push

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/internal/hostsfile"
)

// hosts is the table of HERALD_HOSTS_FILE (the local cluster's stand-in for cluster DNS, so that
// an endpoint such as http://<service>.<namespace>.svc resolves there); nil when it is unset.
var hosts = sync.OnceValue(hostsfile.FromEnv)

// maxRedirects bounds the redirects one push follows.
const maxRedirects = 5

// leaseMargin is added to push.timeout for the lease of a pushed message: the request is bounded
// by the timeout, so the lease outlives it and the outcome is always reported on a live lease.
const leaseMargin = 30 * time.Second

// defaultRetry applies to push subscriptions without a retry policy.
var defaultRetry = api.RetryPolicy{Policy: "exponential", MinBackoff: api.Duration(time.Second), MaxBackoff: api.Duration(10 * time.Minute)}

// target is one snapshot of a push subscription's settings, with what is derived from them.
// Deliveries take the current target when they start and keep it to the end.
type target struct {
	name     string
	spec     api.SubscriptionSpec
	push     api.PushConfig
	retry    api.RetryPolicy
	forward  string // topic:<name> endpoint: the topic; else ""
	endpoint *url.URL
	keys     [][]byte
	client   *http.Client
	tr       *http.Transport
}

// newTarget derives a target from spec; prev (may be nil) lends its client when the transport
// settings did not change, so connections are kept across unrelated changes.
func (m *Manager) newTarget(name string, spec api.SubscriptionSpec, prev *target) (*target, error) {
	if spec.Push == nil {
		return nil, errors.New("not a push subscription")
	}
	t := &target{name: name, spec: spec, push: *spec.Push, retry: defaultRetry}
	if spec.Retry != nil {
		t.retry = *spec.Retry
	}
	if t.push.Timeout <= 0 {
		t.push.Timeout = api.Duration(10 * time.Second)
	}
	if t.push.MaxInFlight <= 0 {
		t.push.MaxInFlight = 16
	}
	for _, s := range t.push.SigningSecrets {
		k, err := engine.SigningKey(s)
		if err != nil {
			return nil, err
		}
		t.keys = append(t.keys, k)
	}
	if topic, ok := strings.CutPrefix(t.push.Endpoint, engine.TopicEndpointPrefix); ok {
		t.forward = topic
		return t, nil
	}
	u, err := url.Parse(t.push.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("push.endpoint %q is not an absolute http or https URL", t.push.Endpoint)
	}
	t.endpoint = u
	if prev != nil && prev.tr != nil && prev.push.MaxInFlight == t.push.MaxInFlight && prev.push.Timeout == t.push.Timeout {
		t.tr, t.client = prev.tr, prev.client
		return t, nil
	}
	t.tr = m.newTransport(t.push.MaxInFlight, t.push.Timeout.D())
	t.client = &http.Client{Transport: t.tr, CheckRedirect: m.checkRedirect}
	return t, nil
}

// newTransport is a subscription's own connection pool.
func (m *Manager) newTransport(maxInFlight int, timeout time.Duration) *http.Transport {
	dialTimeout := min(timeout, 30*time.Second)
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: dialControl(m.b.AllowLinkLocalEndpoints()), Resolver: m.o.Resolver}
	// Names in HERALD_HOSTS_FILE are dialed at their listed addresses, still through d's Control:
	// a forbidden address is refused wherever it came from.
	return &http.Transport{
		Proxy:                  nil, // a proxy would hide which address is reached
		DialContext:            hosts().DialContext(d.DialContext),
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           maxInFlight,
		MaxIdleConnsPerHost:    maxInFlight,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    min(timeout, 10*time.Second),
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
}

// ErrForbiddenAddress is returned (wrapped) for a connection to a link-local or cloud metadata
// address.
var ErrForbiddenAddress = errors.New("link-local or cloud metadata address refused (the broker allows them only with --allow-link-local-endpoints)")

// dialControl refuses connections to forbidden addresses: it sees the address after name
// resolution, so a name that resolves to 169.254.169.254 is refused as surely as the literal.
func dialControl(allow bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		if allow {
			return nil
		}
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("push: dial %s: unexpected address: %w", address, err)
		}
		if engine.IsForbiddenAddr(ip) {
			return fmt.Errorf("push: dial %s: %w", address, ErrForbiddenAddress)
		}
		return nil
	}
}

// checkRedirect follows at most maxRedirects redirects, to http(s) only, never to a literal
// forbidden address (the dialer checks names).
func (m *Manager) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return http.ErrUseLastResponse
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to %s: only http and https are followed", req.URL.Scheme)
	}
	if !m.b.AllowLinkLocalEndpoints() {
		if ip, err := netip.ParseAddr(strings.Trim(req.URL.Hostname(), "[]")); err == nil && engine.IsForbiddenAddr(ip) {
			return fmt.Errorf("redirect to %s: %w", req.URL.Host, ErrForbiddenAddress)
		}
	}
	return nil
}

// visibility is the lease a pushed message gets.
func (t *target) visibility() time.Duration {
	return t.push.Timeout.D() + leaseMargin
}

// retryDelay is the delay before the next attempt after attempt failed ones, jittered, and at
// least retryAfter.
func (t *target) retryDelay(attempt int, retryAfter time.Duration) time.Duration {
	d := engine.Backoff(&t.retry, attempt)
	if t.retry.Policy != engine.RetryMNSBackoff {
		d = jitter(d, t.retry.MinBackoff.D(), t.retry.MaxBackoff.D())
	}
	return max(d, retryAfter)
}

// jitter spreads d over ±20%, kept within [minB, maxB].
func jitter(d, minB, maxB time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	lo, hi := d-d/5, d+d/5
	lo = max(lo, minB)
	if maxB > 0 {
		hi = min(hi, maxB)
	}
	if lo >= hi {
		return max(lo, 0)
	}
	return lo + rand.N(hi-lo+1)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var secs int64
	digits := true
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			digits = false
			break
		}
		if secs < 1<<40 {
			secs = secs*10 + int64(v[i]-'0')
		}
	}
	if digits {
		return time.Duration(min(secs, 1<<30)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// permanentStatus lists the answers that mean "this message will never be accepted".
func permanentStatus(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusGone, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return true
	}
	return false
}
