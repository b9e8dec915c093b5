package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// Streaming subscribers: GET /v1/subscriptions/{sub}/stream on a pull subscription.
//
// A websocket upgrade request gets a websocket; a request with Accept: text/event-stream gets
// Server-Sent Events. Both lease messages like a pull (the engine's long poll) and send them as
// they come, each as the JSON of one message (the shape of a pull's messages, receiptHandle
// included). Several clients may stream one subscription: they share its messages. A client
// that goes away without acking leaves its leases to expire (the ack deadline, or visibility),
// after which the messages are delivered again, to it or to another client. Messages the server
// could not send at all are released at once.
//
// Query parameters (all optional):
//
//	visibility   lease of each message, e.g. 60s (default: the subscription's ackDeadline)
//	max          messages per lease call, 1 to 1000 (default 100)
//	maxInFlight  websocket only: messages sent and not yet acked or nacked at most (default
//	             100, at most 10000); leases that expire stop counting
//
// Websocket: text frames. From the server, a message is {"id":…,"receiptHandle":…,…}. From the
// client, {"ack":["<handle>",…]} acks and {"nack":["<handle>",…],"delay":"5s"} nacks (delay
// optional); the server answers each with {"acked":n,"invalid":[…]} or {"nacked":n,"invalid":[…]}
// (frames without "id"), and a malformed frame with {"error":{…}}. The server pings every 20s.
// When the stream ends because of an error the server sends {"error":{…}} and closes with code
// 4000+HTTP status (4404: subscription deleted, 4409: not a pull subscription any more), 1001
// when the broker shuts down. Acks may also be sent with POST /ack.
//
// SSE: each message is an event "message" with the message id as event id and the message JSON
// as data; a comment line ": keep-alive" at least every 15s; an error ends the stream with an
// event "error". Acks and nacks go through POST /ack and /nack. Flow control is TCP's: a client
// that stops reading stops receiving.
//
// Websocket requests from browsers must be same-origin (the Origin check of
// github.com/coder/websocket); clients that send no Origin are not checked.

const (
	streamPollWait     = 15 * time.Second
	streamPing         = 20 * time.Second
	streamWriteTimeout = 30 * time.Second
	streamDefaultMax   = 100
	streamMaxInFlight  = 10000
)

type streamParams struct {
	visibility  time.Duration
	max         int
	maxInFlight int
}

func parseStreamParams(r *http.Request) (streamParams, *api.Error) {
	p := streamParams{max: streamDefaultMax, maxInFlight: 100}
	q := r.URL.Query()
	if v := q.Get("visibility"); v != "" {
		d, err := api.ParseDuration(v)
		if err != nil || d < 0 {
			return p, api.Invalid("visibility", "visibility: want a duration such as 60s, got %q", v)
		}
		p.visibility = d
	}
	num := func(name string, dst *int, hi int) *api.Error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > hi {
			return api.Invalid(name, "%s must be a whole number from 1 to %d, got %q", name, hi, v)
		}
		*dst = n
		return nil
	}
	if e := num("max", &p.max, 1000); e != nil {
		return p, e
	}
	if e := num("maxInFlight", &p.maxInFlight, streamMaxInFlight); e != nil {
		return p, e
	}
	return p, nil
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("sub")
	sub, err := s.b.GetSubscription(name)
	if err != nil {
		writeError(w, err)
		return
	}
	if sub.Push != nil {
		writeError(w, api.Precondition("subscription", "subscription %q pushes to %s; streams work only on subscriptions without push", name, sub.Push.Endpoint))
		return
	}
	p, e := parseStreamParams(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if p.visibility == 0 {
		p.visibility = sub.AckDeadline.D()
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-serverShutdown(r):
			cancel()
		case <-ctx.Done():
		}
	}()
	switch {
	case strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		s.streamWebsocket(ctx, w, r, name, p)
	case acceptsEventStream(r):
		s.streamSSE(ctx, w, r, name, p)
	default:
		writeErrorStatus(w, http.StatusNotAcceptable, api.Invalid("Accept", "stream needs a websocket upgrade or Accept: text/event-stream"))
	}
}

func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// shutdowns maps each *http.Server to a channel closed when it shuts down, so that streams end
// with a graceful shutdown instead of holding it up (http.Server.Shutdown does not cancel
// requests). One entry per http.Server ever seen.
var shutdowns sync.Map

func serverShutdown(r *http.Request) <-chan struct{} {
	hs, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if hs == nil {
		return nil
	}
	if ch, ok := shutdowns.Load(hs); ok {
		return ch.(chan struct{})
	}
	ch := make(chan struct{})
	actual, loaded := shutdowns.LoadOrStore(hs, ch)
	if !loaded {
		hs.RegisterOnShutdown(func() { close(ch) })
	}
	return actual.(chan struct{})
}

// releaseUnsent nacks messages that never reached the client, so they go out again at once.
func (s *Server) releaseUnsent(name string, msgs []api.Message) {
	if len(msgs) == 0 {
		return
	}
	hs := make([]string, len(msgs))
	for i := range msgs {
		hs[i] = msgs[i].ReceiptHandle
	}
	if _, err := s.b.Nack(name, hs, 0); err != nil && !errors.Is(err, engine.ErrClosed) {
		s.log.Warn("stream: release unsent messages", "subscription", name, "err", err)
	}
}

// streamEnd describes why a stream ended with an error, as an API error.
func streamEnd(err error) *api.Error {
	var e *api.Error
	if !errors.As(err, &e) {
		e = &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	return e
}

// ---- Server-Sent Events

func (s *Server) streamSSE(ctx context.Context, w http.ResponseWriter, r *http.Request, name string, p streamParams) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if write([]byte(": stream of subscription "+name+"\n\n")) != nil {
		return
	}
	for ctx.Err() == nil {
		msgs, err := s.b.Pull(ctx, name, engine.PullOptions{Max: p.max, Wait: streamPollWait, Visibility: p.visibility})
		if err != nil {
			if ctx.Err() == nil {
				b, _ := json.Marshal(api.ErrorBody{Error: streamEnd(err)})
				_ = write(append(append([]byte("event: error\ndata: "), b...), "\n\n"...))
			}
			return
		}
		if len(msgs) == 0 {
			if write([]byte(": keep-alive\n\n")) != nil {
				return
			}
			continue
		}
		var buf []byte
		for i := range msgs {
			b, _ := json.Marshal(&msgs[i])
			buf = append(buf, "id: "...)
			buf = append(buf, msgs[i].ID...)
			buf = append(buf, "\nevent: message\ndata: "...)
			buf = append(buf, b...)
			buf = append(buf, "\n\n"...)
		}
		if write(buf) != nil {
			// Some may have reached the client; a write error does not say which. Leave them
			// leased (the client may still ack them) unless the request is gone entirely.
			return
		}
	}
}

// ---- websocket

type wsClientFrame struct {
	Ack   []string      `json:"ack,omitempty"`
	Nack  []string      `json:"nack,omitempty"`
	Delay *api.Duration `json:"delay,omitempty"`
}

// wsSession is one websocket client.
type wsSession struct {
	s    *Server
	name string
	c    *websocket.Conn
	p    streamParams

	mu          sync.Mutex
	outstanding map[string]time.Time // receipt handle → lease deadline
	wake        chan struct{}
}

func (s *Server) streamWebsocket(ctx context.Context, w http.ResponseWriter, r *http.Request, name string, p streamParams) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the request
	}
	c.SetReadLimit(4 << 20)
	ws := &wsSession{s: s, name: name, c: c, p: p, outstanding: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	// Reads and pings run until the connection closes, not with ctx: a read whose context ends
	// closes the connection at once, and a shutdown should close it with a proper close frame.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rctx, rcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); defer cancel(); ws.readLoop(rctx) }()
	go func() { defer wg.Done(); defer cancel(); ws.pingLoop(rctx) }()
	end := ws.sendLoop(ctx)
	switch {
	case end != nil:
		b, _ := json.Marshal(api.ErrorBody{Error: end})
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Write(wctx, websocket.MessageText, b)
		wcancel()
		status := websocket.StatusInternalError
		if st := end.Status(); st >= 400 && st < 500 {
			status = websocket.StatusCode(4000 + st)
		}
		c.Close(status, end.Code)
	case serverClosing(r):
		c.Close(websocket.StatusGoingAway, "broker shutting down")
	default:
		c.CloseNow()
	}
	rcancel()
	wg.Wait()
}

func serverClosing(r *http.Request) bool {
	select {
	case <-serverShutdown(r):
		return true
	default:
		return false
	}
}

func (ws *wsSession) signal() {
	select {
	case ws.wake <- struct{}{}:
	default:
	}
}

// free prunes expired leases and returns how many more messages may go out, with the next
// lease deadline (zero if none).
func (ws *wsSession) free(now time.Time) (int, time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var next time.Time
	for h, dl := range ws.outstanding {
		if !now.Before(dl) {
			delete(ws.outstanding, h)
		} else if next.IsZero() || dl.Before(next) {
			next = dl
		}
	}
	return ws.p.maxInFlight - len(ws.outstanding), next
}

// sendLoop leases and sends messages until the connection or the context ends; it returns an
// error to report to the client, or nil.
func (ws *wsSession) sendLoop(ctx context.Context) *api.Error {
	for ctx.Err() == nil {
		n, next := ws.free(time.Now())
		if n <= 0 {
			t := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
			case <-ws.wake:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		msgs, err := ws.s.b.Pull(ctx, ws.name, engine.PullOptions{Max: min(n, ws.p.max), Wait: streamPollWait, Visibility: ws.p.visibility})
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, engine.ErrClosed) {
				return nil
			}
			return streamEnd(err)
		}
		deadline := time.Now().Add(ws.p.visibility)
		ws.mu.Lock()
		for i := range msgs {
			ws.outstanding[msgs[i].ReceiptHandle] = deadline
		}
		ws.mu.Unlock()
		for i := range msgs {
			b, _ := json.Marshal(&msgs[i])
			wctx, cancel := context.WithTimeout(ctx, streamWriteTimeout)
			err := ws.c.Write(wctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				ws.forget(msgs[i:])
				ws.s.releaseUnsent(ws.name, msgs[i+1:]) // msgs[i] may have gone out in part: keep its lease
				return nil
			}
		}
	}
	return nil
}

func (ws *wsSession) forget(msgs []api.Message) {
	ws.mu.Lock()
	for i := range msgs {
		delete(ws.outstanding, msgs[i].ReceiptHandle)
	}
	ws.mu.Unlock()
}

// readLoop handles the client's ack and nack frames.
func (ws *wsSession) readLoop(ctx context.Context) {
	for {
		typ, data, err := ws.c.Read(ctx)
		if err != nil {
			return
		}
		var reply any
		var f wsClientFrame
		switch {
		case typ != websocket.MessageText:
			reply = api.ErrorBody{Error: api.Invalid("frame", "send text frames of JSON")}
		default:
			if e := decodeJSON(data, &f); e != nil {
				reply = api.ErrorBody{Error: e}
				break
			}
			reply = ws.handle(f)
		}
		b, _ := json.Marshal(reply)
		wctx, cancel := context.WithTimeout(ctx, streamWriteTimeout)
		err = ws.c.Write(wctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return
		}
	}
}

func (ws *wsSession) handle(f wsClientFrame) any {
	var handles []string
	var reply any
	switch {
	case len(f.Ack) > 0 && len(f.Nack) > 0:
		return api.ErrorBody{Error: api.Invalid("frame", "send ack and nack in separate frames")}
	case len(f.Ack) > 0:
		if f.Delay != nil {
			return api.ErrorBody{Error: api.Invalid("delay", "delay applies to nack, not ack")}
		}
		res, err := ws.s.b.Ack(ws.name, f.Ack)
		if err != nil {
			return api.ErrorBody{Error: streamEnd(err)}
		}
		handles, reply = f.Ack, res
	case len(f.Nack) > 0:
		var delay time.Duration
		if f.Delay != nil {
			delay = f.Delay.D()
		}
		res, err := ws.s.b.Nack(ws.name, f.Nack, delay)
		if err != nil {
			return api.ErrorBody{Error: streamEnd(err)}
		}
		handles, reply = f.Nack, res
	default:
		return api.ErrorBody{Error: api.Invalid("frame", `want {"ack":[…]} or {"nack":[…]}`)}
	}
	ws.mu.Lock()
	for _, h := range handles {
		delete(ws.outstanding, h)
	}
	ws.mu.Unlock()
	ws.signal()
	return reply
}

func (ws *wsSession) pingLoop(ctx context.Context) {
	t := time.NewTicker(streamPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, streamWriteTimeout)
			err := ws.c.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
		}
	}
}
