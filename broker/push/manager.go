package push

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// Options tune a Manager. Zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// UserAgent of push requests (default "herald-push/1").
	UserAgent string
	// LeaseWait is how long a dispatcher's lease call waits for messages (default 5s).
	LeaseWait time.Duration
	// MaxResponseBytes caps how much of a response body is read (default 64 KiB).
	MaxResponseBytes int64
	// MaxRetryAfter caps a Retry-After header (default 1h).
	MaxRetryAfter time.Duration
	// BreakerThreshold is how many consecutive retryable failures open a subscription's
	// circuit breaker (default 5).
	BreakerThreshold int
	// BreakerMinPause and BreakerMaxPause bound the breaker's pause (defaults 1s and 1m).
	BreakerMinPause, BreakerMaxPause time.Duration
	// ShutdownGrace is how long Close lets deliveries in flight finish before cancelling them
	// (default 5s). A cancelled delivery is not acked: it is redelivered.
	ShutdownGrace time.Duration
	// Resolver resolves endpoint names (default the system's); tests point it elsewhere.
	Resolver *net.Resolver
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.UserAgent == "" {
		o.UserAgent = "herald-push/1"
	}
	if o.LeaseWait <= 0 {
		o.LeaseWait = 5 * time.Second
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 64 << 10
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = time.Hour
	}
	if o.BreakerThreshold <= 0 {
		o.BreakerThreshold = 5
	}
	if o.BreakerMinPause <= 0 {
		o.BreakerMinPause = time.Second
	}
	if o.BreakerMaxPause < o.BreakerMinPause {
		o.BreakerMaxPause = max(time.Minute, o.BreakerMinPause)
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 5 * time.Second
	}
}

// Manager runs one dispatcher per push subscription of a broker, starting, reconfiguring and
// stopping them as subscriptions are created, changed and deleted.
type Manager struct {
	b       *engine.Broker
	o       Options
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	active map[string]*dispatcher   // by subscription
	all    map[*dispatcher]struct{} // active and retiring (finishing their deliveries)
	dirty  map[string]struct{}
	closed bool
	kick   chan struct{}
	done   chan struct{}
	loopWG sync.WaitGroup
	dispWG sync.WaitGroup
}

// NewManager starts pushing for every push subscription of b, now and to come. Call Close
// before closing b.
func NewManager(b *engine.Broker, o Options) *Manager {
	o.setDefaults()
	m := &Manager{b: b, o: o, log: o.Logger.With("component", "push"), metrics: newMetrics(b.Metrics.Registry),
		active: map[string]*dispatcher{}, all: map[*dispatcher]struct{}{}, dirty: map[string]struct{}{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	m.loopWG.Add(1)
	go m.reconcileLoop()
	b.Observe(m.observe)
	return m
}

// observe is the engine's subscription observer: it only marks the subscription for the
// reconcile loop, which reads the current spec itself (notifications of concurrent changes may
// arrive out of order; reading the latest state converges anyway).
func (m *Manager) observe(name string, _ *api.SubscriptionSpec) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.dirty[name] = struct{}{}
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Manager) reconcileLoop() {
	defer m.loopWG.Done()
	for {
		select {
		case <-m.done:
			return
		case <-m.kick:
		}
		m.mu.Lock()
		names := make([]string, 0, len(m.dirty))
		for n := range m.dirty {
			names = append(names, n)
		}
		clear(m.dirty)
		m.mu.Unlock()
		for _, n := range names {
			m.reconcile(n)
		}
	}
}

// reconcile brings the dispatcher of one subscription in line with its current spec.
func (m *Manager) reconcile(name string) {
	spec, err := m.b.PushSpec(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	d := m.active[name]
	if err != nil || spec.Push == nil {
		if d != nil {
			delete(m.active, name)
			m.log.Info("push stopped", "subscription", name)
			d.retire()
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotFound {
			m.metrics.forget(name)
		}
		return
	}
	var prev *target
	if d != nil {
		prev = d.cur.Load()
	}
	t, err := m.newTarget(name, spec, prev)
	if err != nil {
		m.log.Error("push subscription has unusable settings; not pushing", "subscription", name, "err", err)
		if d != nil {
			delete(m.active, name)
			d.retire()
		}
		return
	}
	if d != nil {
		d.configure(t)
		m.log.Info("push reconfigured", "subscription", name, "endpoint", t.push.Endpoint)
		return
	}
	d = newDispatcher(m, name, t)
	m.active[name] = d
	m.all[d] = struct{}{}
	m.dispWG.Add(1)
	go func() {
		defer m.dispWG.Done()
		d.run()
		m.mu.Lock()
		delete(m.all, d)
		m.mu.Unlock()
	}()
	m.log.Info("push started", "subscription", name, "endpoint", t.push.Endpoint, "format", t.push.Format, "maxInFlight", t.push.MaxInFlight)
}

// Close stops every dispatcher: no new leases, ShutdownGrace for the deliveries in flight,
// then those are cancelled (and not acked, so redelivered later). Safe to call twice.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	ds := make([]*dispatcher, 0, len(m.all))
	for d := range m.all {
		ds = append(ds, d)
	}
	m.mu.Unlock()
	close(m.done)
	m.loopWG.Wait()
	for _, d := range ds {
		d.retire()
	}
	finished := make(chan struct{})
	go func() {
		m.dispWG.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(m.o.ShutdownGrace):
		for _, d := range ds {
			d.abort()
		}
		<-finished
	}
}
