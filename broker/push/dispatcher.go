package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// outcome of one delivery.
type outcome int

const (
	delivered outcome = iota // 2xx (or forwarded): ack
	permanent                // the endpoint rejects this message for good: dead-letter
	retryable                // try again later
	aborted                  // shut down mid-request: leave the lease alone
)

type result struct {
	outcome    outcome
	status     int
	failure    string
	retryAfter time.Duration
	code       string // metrics label
}

// breaker states.
const (
	closed = iota
	open
	halfOpen
)

// dispatcher pushes one subscription's messages.
type dispatcher struct {
	m    *Manager
	name string
	cur  atomic.Pointer[target]

	loopCtx    context.Context // cancelled: stop leasing
	stopLoop   context.CancelFunc
	reqCtx     context.Context // cancelled: abort requests in flight
	cancelReqs context.CancelFunc
	wake       chan struct{} // a slot freed, the settings or the breaker changed
	inflight   sync.WaitGroup
	acks       chan ackReq // to the acker, which acks in batches

	mu        sync.Mutex
	busy      int
	holdUntil time.Time // Retry-After of the endpoint
	state     int
	failures  int // consecutive retryable failures
	pause     time.Duration
	until     time.Time // open: when to probe
	probing   bool      // halfOpen: the probe is out
}

func newDispatcher(m *Manager, name string, t *target) *dispatcher {
	d := &dispatcher{m: m, name: name, wake: make(chan struct{}, 1), acks: make(chan ackReq, 64)}
	d.cur.Store(t)
	m.metrics.circuit.WithLabelValues(name).Set(0)
	d.loopCtx, d.stopLoop = context.WithCancel(context.Background())
	d.reqCtx, d.cancelReqs = context.WithCancel(context.Background())
	return d
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// configure switches to new settings; deliveries in flight finish with the old ones.
func (d *dispatcher) configure(t *target) {
	old := d.cur.Swap(t)
	if old != nil && old.tr != nil && old.tr != t.tr {
		// Requests in flight keep their connections; idle ones of the old pool go now.
		old.tr.CloseIdleConnections()
	}
	d.signal()
}

// retire stops leasing; deliveries in flight finish.
func (d *dispatcher) retire() { d.stopLoop() }

// abort cancels the deliveries in flight.
func (d *dispatcher) abort() { d.cancelReqs() }

// ackReq asks the acker to ack one handle; the result comes back on done.
type ackReq struct {
	handle string
	done   chan error
}

// maxAckBatch bounds one batched ack.
const maxAckBatch = 1000

// acker acks handles in batches: whatever deliveries finished while the previous ack was being
// made durable go together, so a busy subscription pays one journal write (and fsync) for many
// messages. It runs until acks is closed.
func (d *dispatcher) acker() {
	batch := make([]ackReq, 0, 64)
	handles := make([]string, 0, 64)
	for first := range d.acks {
		batch = append(batch[:0], first)
	more:
		for len(batch) < maxAckBatch {
			select {
			case r, ok := <-d.acks:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		handles = handles[:0]
		for _, r := range batch {
			handles = append(handles, r.handle)
		}
		res, err := d.m.b.Ack(d.name, handles)
		invalid := map[string]bool{}
		for _, h := range res.Invalid {
			invalid[h] = true
		}
		for _, r := range batch {
			switch {
			case err != nil:
				r.done <- err
			case invalid[r.handle]:
				r.done <- errors.New("lease expired before the ack; the message will be redelivered")
			default:
				r.done <- nil
			}
		}
	}
}

// ack acks one handle through the acker.
func (d *dispatcher) ack(handle string) error {
	done := make(chan error, 1)
	d.acks <- ackReq{handle: handle, done: done}
	return <-done
}

// run leases and delivers until retired, then waits for the deliveries in flight.
func (d *dispatcher) run() {
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		d.acker()
	}()
	defer func() {
		d.inflight.Wait()
		close(d.acks)
		<-ackerDone
		if t := d.cur.Load(); t != nil && t.tr != nil {
			t.tr.CloseIdleConnections()
		}
		d.m.metrics.circuit.WithLabelValues(d.name).Set(0)
		d.cancelReqs()
	}()
	errPause := time.Duration(0)
	for d.loopCtx.Err() == nil {
		t := d.cur.Load()
		wait, n, probe := d.admit(t, time.Now())
		if n == 0 {
			d.sleep(wait)
			continue
		}
		msgs, err := d.m.b.Lease(d.loopCtx, d.name, engine.PullOptions{Max: n, Wait: d.m.o.LeaseWait, Visibility: t.visibility()})
		if err != nil {
			if probe {
				d.mu.Lock()
				d.probing = false
				d.mu.Unlock()
			}
			if errors.Is(err, engine.ErrClosed) {
				return
			}
			// Deleted, turned into a pull subscription, or its topic deleted: the manager is
			// told separately; until then, look again now and then.
			errPause = min(max(2*errPause, 100*time.Millisecond), 5*time.Second)
			var ae *api.Error
			if !errors.As(err, &ae) {
				d.m.log.Error("push lease", "subscription", d.name, "err", err)
			}
			d.sleep(errPause)
			continue
		}
		errPause = 0
		if probe && len(msgs) == 0 {
			d.mu.Lock()
			d.probing = false
			d.mu.Unlock()
		}
		for i := range msgs {
			d.launch(&msgs[i], probe && i == 0)
		}
	}
}

// admit decides how many messages to lease now: n > 0, or n == 0 and how long to wait (< 0:
// until woken). probe reports a half-open breaker's single probe.
func (d *dispatcher) admit(t *target, now time.Time) (wait time.Duration, n int, probe bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.Before(d.holdUntil) {
		return d.holdUntil.Sub(now), 0, false
	}
	switch d.state {
	case open:
		if now.Before(d.until) {
			return d.until.Sub(now), 0, false
		}
		d.state, d.probing = halfOpen, false
		fallthrough
	case halfOpen:
		if d.probing {
			return -1, 0, false
		}
		d.probing = true
		return 0, 1, true
	}
	free := t.push.MaxInFlight - d.busy
	if free <= 0 {
		return -1, 0, false
	}
	return 0, min(free, 1000), false
}

func (d *dispatcher) sleep(wait time.Duration) {
	var timer <-chan time.Time
	if wait >= 0 {
		tm := time.NewTimer(wait)
		defer tm.Stop()
		timer = tm.C
	}
	select {
	case <-d.loopCtx.Done():
	case <-d.wake:
	case <-timer:
	}
}

func (d *dispatcher) launch(msg *api.Message, probe bool) {
	d.mu.Lock()
	d.busy++
	d.mu.Unlock()
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		d.deliver(msg, probe)
		d.mu.Lock()
		d.busy--
		d.mu.Unlock()
		d.signal()
	}()
}

// deliver pushes one message and reports the outcome to the engine.
func (d *dispatcher) deliver(msg *api.Message, probe bool) {
	t := d.cur.Load()
	start := time.Now()
	var res result
	if t.forward != "" {
		res = d.forward(t, msg)
	} else {
		res = d.post(t, msg)
	}
	if res.outcome == aborted {
		return
	}
	mt := d.m.metrics
	mt.requests.WithLabelValues(d.name, res.code).Inc()
	mt.latency.WithLabelValues(d.name).Observe(time.Since(start).Seconds())
	b := d.m.b
	var err error
	switch res.outcome {
	case delivered:
		mt.endToEnd.WithLabelValues(d.name).Observe(time.Since(msg.PublishTime).Seconds())
		err = d.ack(msg.ReceiptHandle)
	case permanent:
		err = b.Reject(d.name, msg.ReceiptHandle, res.failure, res.status)
	case retryable:
		err = b.Retry(d.name, msg.ReceiptHandle, t.retryDelay(msg.DeliveryAttempt, res.retryAfter), res.failure, res.status)
	}
	if err != nil && !errors.Is(err, engine.ErrClosed) {
		d.m.log.Warn("push outcome not recorded", "subscription", d.name, "message", msg.ID, "err", err)
	}
	d.record(res, probe)
}

// record feeds an outcome to the circuit breaker and the Retry-After hold.
func (d *dispatcher) record(res result, probe bool) {
	now := time.Now()
	o := d.m.o
	d.mu.Lock()
	if res.retryAfter > 0 {
		if h := now.Add(min(res.retryAfter, o.BreakerMaxPause)); h.After(d.holdUntil) {
			d.holdUntil = h
		}
	}
	wasOpen := d.state != closed
	switch res.outcome {
	case delivered, permanent:
		// The endpoint answers: close the breaker.
		d.state, d.failures, d.pause, d.probing = closed, 0, 0, false
	case retryable:
		d.failures++
		switch {
		case d.state == halfOpen && probe:
			d.pause = min(2*d.pause, o.BreakerMaxPause)
			d.state, d.until, d.probing = open, now.Add(d.pause), false
		case d.state == closed && d.failures >= o.BreakerThreshold:
			d.pause = o.BreakerMinPause
			d.state, d.until = open, now.Add(d.pause)
		}
	}
	isOpen := d.state != closed
	pause := d.pause
	d.mu.Unlock()
	if isOpen != wasOpen {
		v := 0.0
		if isOpen {
			v = 1
			d.m.log.Warn("push endpoint failing: circuit open", "subscription", d.name, "pause", pause, "lastError", res.failure)
		} else {
			d.m.log.Info("push endpoint recovered: circuit closed", "subscription", d.name)
		}
		d.m.metrics.circuit.WithLabelValues(d.name).Set(v)
	}
	d.signal()
}

// forward publishes the message into the endpoint's topic.
func (d *dispatcher) forward(t *target, msg *api.Message) result {
	_, err := d.m.b.Publish(t.forward, []api.PublishMessage{{Data: msg.Data, Key: msg.Key, Tag: msg.Tag, OrderingKey: msg.OrderingKey, Attributes: msg.Attributes}})
	if err == nil {
		return result{outcome: delivered, code: "200"}
	}
	if errors.Is(err, engine.ErrClosed) {
		return result{outcome: aborted}
	}
	failure := clip("forward to topic " + t.forward + ": " + err.Error())
	var ae *api.Error
	if errors.As(err, &ae) {
		code := strconv.Itoa(ae.Status())
		if ae.Code == api.CodeInvalidArgument || ae.Code == api.CodeTooLarge {
			return result{outcome: permanent, failure: failure, code: code}
		}
		return result{outcome: retryable, failure: failure, code: code}
	}
	return result{outcome: retryable, failure: failure, code: "error"}
}

// post sends the message to the endpoint.
func (d *dispatcher) post(t *target, msg *api.Message) result {
	r, err := t.render(msg)
	if err != nil {
		return result{outcome: permanent, failure: clip("render " + t.push.Format + ": " + err.Error()), code: "error"}
	}
	ctx, cancel := context.WithTimeout(d.reqCtx, t.push.Timeout.D())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint.String(), bytes.NewReader(r.body))
	if err != nil {
		return result{outcome: retryable, failure: clip(err.Error()), code: "error"}
	}
	req.Header = r.header
	if r.host != "" {
		req.Host = r.host
	}
	req.Header.Set("User-Agent", d.m.o.UserAgent)
	if len(t.keys) > 0 {
		ts := time.Now().Unix()
		req.Header.Set(HeaderWebhookID, msg.ID)
		req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderWebhookSignature, signature(t.keys, msg.ID, ts, r.body))
	}
	resp, err := t.client.Do(req)
	if err != nil {
		switch {
		case d.reqCtx.Err() != nil:
			return result{outcome: aborted}
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
			return result{outcome: retryable, failure: "timeout: no response within " + t.push.Timeout.String(), code: "timeout"}
		}
		return result{outcome: retryable, failure: clip(err.Error()), code: "error"}
	}
	// Read a little of the body for lastError, discard the rest up to the cap.
	head := make([]byte, 256)
	n, _ := io.ReadFull(resp.Body, head)
	io.Copy(io.Discard, io.LimitReader(resp.Body, d.m.o.MaxResponseBytes))
	resp.Body.Close()
	code := resp.StatusCode
	res := result{status: code, code: strconv.Itoa(code)}
	if code >= 200 && code < 300 {
		res.outcome = delivered
		return res
	}
	res.failure = clip(failureText(code, head[:n]))
	if permanentStatus(code) {
		res.outcome = permanent
		return res
	}
	res.outcome = retryable
	if ra := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ra > 0 {
		res.retryAfter = min(ra, d.m.o.MaxRetryAfter)
	}
	return res
}

func failureText(code int, body []byte) string {
	s := fmt.Sprintf("HTTP %d", code)
	if txt := http.StatusText(code); txt != "" {
		s += " " + txt
	}
	if b := strings.TrimSpace(string(body)); b != "" {
		s += ": " + b
	}
	return s
}

// clip makes a failure text safe as a dead-letter attribute: valid UTF-8, no control
// characters, at most 512 bytes.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 512 {
		cut := 509
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
