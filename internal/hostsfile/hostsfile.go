// Package hostsfile resolves names through a hosts file named by HERALD_HOSTS_FILE, ahead of
// DNS. The local cluster's pod runner (test/podrunner) has no cluster DNS to offer its
// processes, so it writes the cluster's names (<pod>.<svc>.<ns>.svc, <svc>.<ns>.svc) into a file
// in /etc/hosts format and names it in that variable. Without the variable nothing changes:
// names resolve as usual.
package hostsfile

import (
	"bufio"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// EnvVar names the hosts file.
const EnvVar = "HERALD_HOSTS_FILE"

// Table is a hosts file, re-read when it changes (checked at most once a second).
type Table struct {
	path string

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	size    int64
	names   map[string][]string
}

// FromEnv returns the table named by HERALD_HOSTS_FILE, or nil when it is unset.
func FromEnv() *Table {
	p := os.Getenv(EnvVar)
	if p == "" {
		return nil
	}
	return New(p)
}

// New returns a table over the file at path.
func New(path string) *Table { return &Table{path: path} }

// Lookup returns the addresses of host from the file (none if absent). Names match without
// case and without a trailing dot.
func (t *Table) Lookup(host string) []string {
	if t == nil {
		return nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) > time.Second || t.names == nil {
		t.checked = now
		t.reloadLocked()
	}
	return t.names[host]
}

func (t *Table) reloadLocked() {
	info, err := os.Stat(t.path)
	if err != nil {
		t.names = map[string][]string{}
		return
	}
	if t.names != nil && info.ModTime().Equal(t.modTime) && info.Size() == t.size {
		return
	}
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	defer f.Close()
	t.names = Parse(f)
	t.modTime, t.size = info.ModTime(), info.Size()
}

// Parse reads /etc/hosts format: an address, then names; # starts a comment.
func Parse(r interface{ Read([]byte) (int, error) }) map[string][]string {
	names := map[string][]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || net.ParseIP(fields[0]) == nil {
			continue
		}
		for _, n := range fields[1:] {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			names[n] = append(names[n], fields[0])
		}
	}
	return names
}

// DialContext wraps dial so that hosts in the table are dialed at their listed addresses.
func (t *Table) DialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return dial(ctx, network, addr)
		}
		ips := t.Lookup(host)
		if len(ips) == 0 {
			return dial(ctx, network, addr)
		}
		var lastErr error
		for _, ip := range ips {
			c, err := dial(ctx, network, net.JoinHostPort(ip, port))
			if err == nil {
				return c, nil
			}
			lastErr = err
		}
		return nil, lastErr
	}
}
