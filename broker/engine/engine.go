// Package engine is the broker's core: topics of partition logs, publishing, delayed messages,
// and subscriptions with leases, acks and dead-lettering. It knows nothing of HTTP: broker/server
// maps requests onto it, and its errors are *api.Error values the server renders as they are.
//
// Persistent layout under Config.DataDir:
//
//	meta.json                  catalogue of topics and subscriptions (rewritten atomically)
//	logs/topics/<topic>/<p>/   partition logs (format: broker/store)
//	logs/delay/<topic>/        the topic's delayed messages, in publish order
//	journals/delay/<topic>/    which delayed messages were moved to the topic (see journal)
//	journals/subs/<sub>/       which messages a subscription is done with (see journal)
package engine

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

// Broker is one single-node broker. All methods are safe for concurrent use.
type Broker struct {
	cfg Config
	st  store.Store

	mu          sync.RWMutex // guards topics, subs, incarnation, closed, and meta.json writes
	topics      map[string]*topic
	subs        map[string]*subscription
	incarnation uint64
	closed      bool
	observers   []SubscriptionObserver

	delays  *delayQueue
	idBase  uint64 // random per process start: message ids stay unique across restarts
	idSeq   atomic.Uint64
	ready   atomic.Bool
	stop    chan struct{}
	wg      sync.WaitGroup
	Metrics *Metrics
}

// ErrClosed is returned after Close.
var ErrClosed = api.Unavailable("broker is shutting down")

// Open recovers the broker's state from cfg.DataDir (or starts empty in memory) and starts its
// background work (delayed messages, lease expiry, retention).
func Open(cfg Config) (*Broker, error) {
	cfg.setDefaults()
	b := &Broker{cfg: cfg, topics: map[string]*topic{}, subs: map[string]*subscription{}, stop: make(chan struct{})}
	b.Metrics = newMetrics(b)
	onSync := func(d time.Duration) {
		b.Metrics.fsyncSeconds.Observe(d.Seconds())
		if cfg.OnSync != nil {
			cfg.OnSync(d)
		}
	}
	opts := store.Options{Sync: cfg.Sync, SyncInterval: cfg.SyncInterval, SegmentBytes: cfg.SegmentBytes, OnSync: onSync}
	if w, ok := cfg.Replicator.(LogWriteObserver); ok {
		opts.OnWrite = w.LogWritten
	}
	if cfg.Memory {
		b.st = store.NewMemoryStore(opts)
	} else {
		if cfg.DataDir == "" {
			return nil, errors.New("engine: a data dir is required")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, err
		}
		st, err := store.NewFileStore(filepath.Join(cfg.DataDir, "logs"), opts)
		if err != nil {
			return nil, err
		}
		b.st = st
	}
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	b.idBase = binary.LittleEndian.Uint64(seed[:]) & (1<<48 - 1)
	b.delays = newDelayQueue(b)
	if err := b.recover(onSync); err != nil {
		b.st.Close()
		return nil, err
	}
	b.wg.Add(2)
	go b.delays.run()
	go b.housekeeping()
	b.ready.Store(true)
	return b, nil
}

// recover loads meta.json, opens every topic and subscription and replays their journals.
func (b *Broker) recover(onSync func(time.Duration)) error {
	if b.cfg.Memory {
		return nil
	}
	m, err := loadMeta(b.cfg.DataDir)
	if err != nil {
		return err
	}
	for _, tm := range m.Topics {
		parts, err := b.openPartitions(tm.Name, 0, tm.Spec.Partitions)
		if err != nil {
			return err
		}
		t := &topic{name: tm.Name, meta: tm, parts: parts}
		b.topics[tm.Name] = t
		if tm.Incarnation > b.incarnation {
			b.incarnation = tm.Incarnation
		}
		if err := b.delays.recoverTopic(t, onSync); err != nil {
			return err
		}
	}
	for _, sm := range m.Subscriptions {
		s, err := b.openSubscription(sm)
		if err != nil {
			return fmt.Errorf("engine: recover subscription %q: %w", sm.Name, err)
		}
		b.subs[sm.Name] = s
	}
	return nil
}

// Ready reports whether recovery has finished.
func (b *Broker) Ready() bool { return b.ready.Load() }

// Close stops background work, flushes journals and closes the logs.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.ready.Store(false)
	close(b.stop)
	subs := make([]*subscription, 0, len(b.subs))
	for _, s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	b.wg.Wait()
	var firstErr error
	for _, s := range subs {
		if err := s.close(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := b.delays.close(); err != nil && firstErr == nil {
		firstErr = err
	}
	if err := b.st.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

func (b *Broker) checkOpen() error {
	if b.closed {
		return ErrClosed
	}
	return nil
}

// saveMetaLocked rewrites meta.json from the in-memory catalogue; the caller holds b.mu.
func (b *Broker) saveMetaLocked() error {
	if b.cfg.Memory {
		return nil
	}
	m := &metaFile{}
	for _, t := range b.topics {
		m.Topics = append(m.Topics, t.meta)
	}
	for _, s := range b.subs {
		m.Subscriptions = append(m.Subscriptions, s.metaCopy())
	}
	sort.Slice(m.Topics, func(i, k int) bool { return m.Topics[i].Name < m.Topics[k].Name })
	sort.Slice(m.Subscriptions, func(i, k int) bool { return m.Subscriptions[i].Name < m.Subscriptions[k].Name })
	if err := saveMeta(b.cfg.DataDir, m); err != nil {
		return fmt.Errorf("engine: save meta.json: %w", err)
	}
	return nil
}

func (b *Broker) journalDir(kind, name string) string {
	if b.cfg.Memory {
		return ""
	}
	return filepath.Join(b.cfg.DataDir, "journals", kind, name)
}

// housekeeping runs retention and lease expiry on timers until Close.
func (b *Broker) housekeeping() {
	defer b.wg.Done()
	leases := time.NewTicker(time.Second)
	defer leases.Stop()
	retention := time.NewTicker(b.cfg.RetentionCheckInterval)
	defer retention.Stop()
	flush := time.NewTicker(b.cfg.SyncInterval)
	defer flush.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-leases.C:
			for _, s := range b.subscriptionList() {
				s.sweep()
			}
		case <-retention.C:
			b.EnforceRetention()
		case <-flush.C:
			if b.cfg.Sync == store.SyncInterval {
				for _, s := range b.subscriptionList() {
					if err := s.journal.flushIfDirty(); err != nil {
						b.cfg.Logger.Error("flush ack journal", "subscription", s.name, "err", err)
					}
				}
				b.delays.flush()
			}
		}
	}
}

// EnforceRetention applies every topic's retention limits now.
func (b *Broker) EnforceRetention() {
	b.mu.RLock()
	ts := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, t)
	}
	b.mu.RUnlock()
	b.delays.dropMoved()
	now := b.cfg.Now()
	for _, t := range ts {
		spec := t.spec()
		if spec.Retention == nil || (spec.Retention.MaxAge == 0 && spec.Retention.MaxBytes == 0) {
			continue
		}
		for _, p := range t.partitions() {
			if _, err := p.log.EnforceRetention(now, spec.Retention.MaxAge.D(), spec.Retention.MaxBytes); err != nil {
				b.cfg.Logger.Error("retention", "topic", t.name, "partition", p.index, "err", err)
			}
		}
	}
}

func (b *Broker) subscriptionList() []*subscription {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]*subscription, 0, len(b.subs))
	for _, s := range b.subs {
		out = append(out, s)
	}
	return out
}

func sortByName[T any](xs []T, name func(T) string) {
	sort.Slice(xs, func(i, k int) bool { return name(xs[i]) < name(xs[k]) })
}
