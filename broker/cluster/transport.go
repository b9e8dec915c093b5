package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Raft runs over the broker's own HTTP port: a peer opens a connection, asks for
// "GET /v1/internal/raft" with "Upgrade: herald-raft", and after the 101 the connection carries
// hashicorp/raft's NetworkTransport protocol. One port per pod, and TLS (when the listener has
// it) covers Raft too.
const (
	raftPath    = "/v1/internal/raft"
	raftUpgrade = "herald-raft"
)

// streamLayer implements raft.StreamLayer: Accept returns upgraded HTTP connections, Dial
// makes them.
type streamLayer struct {
	advertise net.Addr
	tls       *tls.Config // client side; nil for plain TCP
	// dial, when set, opens connections (the node's dialer, which knows the local cluster's
	// hosts file); nil: a plain net.Dialer.
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	conns     chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}

	mu       sync.Mutex
	accepted map[*raftConn]struct{} // handed to Raft, until its handler closes them
}

// raftConn is an accepted connection; done is closed when Raft's handler closes it (it has
// finished with it), or when the stream layer gives up on it.
type raftConn struct {
	net.Conn
	l    *streamLayer
	once sync.Once
	done chan struct{}
}

func (c *raftConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.l.mu.Lock()
		delete(c.l.accepted, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// closeWait bounds how long Close waits for Raft's handlers of accepted connections to finish
// the request they are processing.
const closeWait = 250 * time.Millisecond

func newStreamLayer(advertise string, tlsConfig *tls.Config) (*streamLayer, error) {
	addr, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		// A name that does not resolve yet (a pod's DNS record appears once it is ready) is
		// still a fine address to advertise.
		addr = nil
	}
	l := &streamLayer{tls: tlsConfig, conns: make(chan net.Conn), closed: make(chan struct{}), accepted: map[*raftConn]struct{}{}}
	if addr != nil {
		l.advertise = addr
	} else {
		l.advertise = stringAddr(advertise)
	}
	return l, nil
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// Accept implements net.Listener.
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, errors.New("cluster: raft listener closed")
	}
}

// Close implements net.Listener. It also closes the connections Raft accepted and waits (a
// little) for their handlers to finish the request at hand: the node closes Raft's stores
// next, and hashicorp/raft's handler of a heartbeat that arrived just before the shutdown would
// still save the term in them — and panic, the store being closed.
func (l *streamLayer) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.mu.Lock()
		var open []*raftConn
		for c := range l.accepted {
			open = append(open, c)
		}
		l.mu.Unlock()
		for _, c := range open {
			c.Conn.Close() // the handler's next read or write fails: it returns and closes c
		}
		deadline := time.NewTimer(closeWait)
		defer deadline.Stop()
		for _, c := range open {
			select {
			case <-c.done:
			case <-deadline.C:
				return // a handler waiting for the (stopped) Raft loop: it touches no store
			}
		}
	})
	return nil
}

// Addr implements net.Listener: the address peers reach this node at.
func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Dial implements raft.StreamLayer.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	var conn net.Conn
	var err error
	switch {
	case l.dial != nil:
		// Through the node's dialer: the local cluster's hosts file resolves peers' names.
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		conn, err = l.dial(ctx, "tcp", string(address))
		cancel()
		if err == nil && l.tls != nil {
			cfg := l.tls.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName, _, _ = net.SplitHostPort(string(address))
			}
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(time.Now().Add(timeout))
			if err = tc.Handshake(); err != nil {
				conn.Close()
			}
			conn = tc
		}
	case l.tls != nil:
		conn, err = tls.DialWithDialer(&d, "tcp", string(address), l.tls)
	default:
		conn, err = d.Dial("tcp", string(address))
	}
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", raftPath, address, raftUpgrade)
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cluster: raft upgrade to %s: %w", address, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("cluster: raft upgrade to %s: status %s", address, resp.Status)
	}
	conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// The server speaks only after the client; nothing may be buffered, but be exact.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ServeHTTP takes over an upgrade request and hands the connection to Raft.
func (l *streamLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != raftUpgrade {
		http.Error(w, `{"error":{"code":"InvalidArgument","message":"expected Upgrade: herald-raft","field":"Upgrade"}}`, http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + raftUpgrade + "\r\n\r\n"); err != nil {
		conn.Close()
		return
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	conn.SetDeadline(time.Time{}) // the HTTP server's timeouts do not apply to Raft
	var c net.Conn = conn
	if brw.Reader.Buffered() > 0 {
		c = &bufferedConn{Conn: conn, r: brw.Reader}
	}
	rc := &raftConn{Conn: c, l: l, done: make(chan struct{})}
	l.mu.Lock()
	select {
	case <-l.closed:
		l.mu.Unlock()
		conn.Close()
		return
	default:
	}
	l.accepted[rc] = struct{}{}
	l.mu.Unlock()
	select {
	case l.conns <- rc:
	case <-l.closed:
		rc.Close()
	case <-time.After(10 * time.Second):
		rc.Close()
	}
}
