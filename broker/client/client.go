// Package client is the Go client of the broker's HTTP API v1 (see DESIGN.md, "Broker HTTP API
// v1"). The operator, the herald CLI and the tests use it.
//
// Every method takes a context. A response with a status outside 2xx is returned as an
// *api.Error (with HTTPStatus set), so callers can write
//
//	var apiErr *api.Error
//	if errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound { … }
//
// A Client is safe for concurrent use. Clients made without WithHTTPClient share one transport,
// which keeps up to MaxIdleConnsPerHost idle connections per broker open (keep-alive).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/internal/hostsfile"
)

// DefaultTimeout bounds one request (connect, send, and read the whole response) unless
// WithTimeout says otherwise. A long-poll pull gets its wait on top of it.
const DefaultTimeout = 30 * time.Second

// DefaultUserAgent is the User-Agent header unless WithUserAgent says otherwise.
const DefaultUserAgent = "herald-client/v1"

// MaxIdleConnsPerHost is how many idle keep-alive connections the default transport keeps to the
// broker: enough for load tests with hundreds of concurrent publishers.
const MaxIdleConnsPerHost = 256

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 1 << 20

// Client talks to one broker (or to a Service in front of several).
type Client struct {
	base      string // scheme://host[:port][/prefix], no trailing slash
	hc        *http.Client
	timeout   time.Duration
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc (its transport, TLS settings,
// cookies…) instead of a default one. If hc.Timeout is set, a long-poll pull still gets wait +
// the client's timeout: the client raises hc.Timeout for that request.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithTimeout bounds each request to d (0: no bound except the context's). A long-poll pull is
// given its wait on top of d.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// WithUserAgent sets the User-Agent header of every request.
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// New returns a client of the broker at baseURL, such as "http://127.0.0.1:8080" or
// "https://broker.example/herald" (a path prefix is kept). A URL without a scheme is taken as
// http ("127.0.0.1:8080").
func New(baseURL string, opts ...Option) (*Client, error) {
	s := strings.TrimSpace(baseURL)
	if s == "" {
		return nil, errors.New("client: empty broker URL")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("client: invalid broker URL %q: %v", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("client: invalid broker URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: invalid broker URL %q: no host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: invalid broker URL %q: no query or fragment allowed", baseURL)
	}
	c := &Client{
		base:      strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"),
		timeout:   DefaultTimeout,
		userAgent: DefaultUserAgent,
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	return c, nil
}

// defaultHTTPClient is shared by every Client made without WithHTTPClient, so that clients
// created often (say, one per reconcile) share one pool of keep-alive connections instead of
// each leaving its own idle connections behind.
var defaultHTTPClient = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: NewTransport()}
})

// NewTransport returns the transport a Client uses by default: the standard library's default
// settings (proxy from the environment, HTTP/2 over TLS, dial and TLS handshake timeouts) with
// MaxIdleConnsPerHost idle keep-alive connections per broker.
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * MaxIdleConnsPerHost
	t.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	t.IdleConnTimeout = 90 * time.Second
	// Names in HERALD_HOSTS_FILE (the local cluster's stand-in for cluster DNS) come first.
	t.DialContext = hostsfile.FromEnv().DialContext((&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext)
	return t
}

// BaseURL returns the broker URL the client sends to, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// request is one API call.
type request struct {
	method string
	path   string // already escaped, starts with "/"
	// in is marshalled as the JSON body unless nil; raw is sent as is (with contentType).
	in          any
	raw         []byte
	contentType string
	header      map[string]string
	// extra is added to the client's timeout (a long-poll pull's wait).
	extra time.Duration
}

// do sends req and decodes a 2xx response's JSON body into out (unless out is nil or the body is
// empty). It returns the response status.
func (c *Client) do(ctx context.Context, req request, out any) (int, error) {
	var body io.Reader
	contentType := req.contentType
	switch {
	case req.in != nil:
		b, err := json.Marshal(req.in)
		if err != nil {
			return 0, fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
		contentType = "application/json"
	case req.raw != nil:
		body = bytes.NewReader(req.raw)
	}

	hc := c.hc
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout+req.extra)
		defer cancel()
	}
	if hc.Timeout > 0 && req.extra > 0 {
		// The caller's http.Client has a timeout of its own: stretch it by the long-poll wait.
		cp := *hc
		cp.Timeout += req.extra
		hc = &cp
	}

	hreq, err := http.NewRequestWithContext(ctx, req.method, c.base+req.path, body)
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	if contentType != "" {
		hreq.Header.Set("Content-Type", contentType)
	}
	hreq.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		hreq.Header.Set("User-Agent", c.userAgent)
	}
	for k, v := range req.header {
		hreq.Header.Set(k, v)
	}

	resp, err := hc.Do(hreq)
	if err != nil {
		return 0, err // *url.Error naming method and URL; wraps context errors
	}
	defer func() {
		// Drain what is left (a little) so the connection goes back to the idle pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, decodeError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("client: %s %s: read response: %w", req.method, req.path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("client: %s %s: decode response (status %d): %w", req.method, req.path, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

// decodeError turns a non-2xx response into an *api.Error. A body that is not the contract's
// error shape still gives one: its code follows from the status and its text is the message.
func decodeError(resp *http.Response) *api.Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb api.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		eb.Error.HTTPStatus = resp.StatusCode
		return eb.Error
	}
	msg := strings.TrimSpace(string(b))
	if msg == "" {
		msg = resp.Status
		if msg == "" {
			msg = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
	}
	return &api.Error{Code: CodeForStatus(resp.StatusCode), Message: msg, HTTPStatus: resp.StatusCode}
}

// CodeForStatus is the error code of a response whose body does not carry one (a proxy's error
// page, say). 409 is taken as FailedPrecondition, the usual conflict of this API.
func CodeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return api.CodeInvalidArgument
	case http.StatusNotFound:
		return api.CodeNotFound
	case http.StatusConflict:
		return api.CodeFailedPrecondition
	case http.StatusRequestEntityTooLarge:
		return api.CodeTooLarge
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return api.CodeUnavailable
	}
	if status >= 400 && status < 500 {
		return api.CodeInvalidArgument
	}
	return api.CodeInternal
}

// segment escapes one path segment (a topic or subscription name). The names the broker accepts
// never need escaping; other names still reach the broker intact, for it to reject.
func segment(field, name string) (string, error) {
	switch name {
	case "":
		return "", api.Invalid(field, "name must not be empty")
	case ".", "..":
		return "", api.Invalid(field, "name %q is not allowed", name)
	}
	return url.PathEscape(name), nil
}
