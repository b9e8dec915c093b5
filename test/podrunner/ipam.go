package podrunner

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// ipam hands out the pods' loopback addresses from a /16 of 127.0.0.0/8 that no other runner on
// the machine uses: 127.A.0.0/16 with A picked at random and held with a lock file (released when
// the process ends), so runners of concurrent test binaries, or of several developers, never
// give the same address to two pods. Addresses are handed out round robin, so a deleted pod's
// address is not reused soon.
type ipam struct {
	lock *os.File
	a    byte
	mu   sync.Mutex
	next int
	used map[string]bool
}

func newIPAM() (*ipam, error) {
	dir := filepath.Join(os.TempDir(), "herald-podrunner")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o1777) // shared by every user of the machine
	for range 200 {
		a := byte(100 + rand.IntN(150)) // 127.100.0.0 … 127.249.255.255
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("127.%d.lock", a)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return nil, err
		}
		if err := lockFile(f); err != nil {
			f.Close()
			continue
		}
		return &ipam{lock: f, a: a, next: 2, used: map[string]bool{}}, nil
	}
	return nil, fmt.Errorf("podrunner: no free 127.x.0.0/16 for the pod network (locks in %s)", dir)
}

func (p *ipam) network() string { return fmt.Sprintf("127.%d.0.0/16", p.a) }

// alloc returns a free address.
func (p *ipam) alloc() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 1 << 16 {
		n := p.next
		p.next++
		if p.next >= 1<<16-1 {
			p.next = 2
		}
		lo := byte(n & 0xff)
		if lo == 0 || lo == 255 {
			continue
		}
		ip := netip.AddrFrom4([4]byte{127, p.a, byte(n >> 8), lo}).String()
		if !p.used[ip] {
			p.used[ip] = true
			return ip, nil
		}
	}
	return "", fmt.Errorf("podrunner: pod network %s exhausted", p.network())
}

func (p *ipam) release(ip string) {
	p.mu.Lock()
	delete(p.used, ip)
	p.mu.Unlock()
}

func (p *ipam) close() {
	if p != nil && p.lock != nil {
		p.lock.Close()
	}
}
