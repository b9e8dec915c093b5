package engine

import (
	"log/slog"
	"time"

	"github.com/heraldmq/herald/broker/store"
)

// Config configures a Broker.
type Config struct {
	// DataDir holds the logs and metadata. Required unless Memory is set.
	DataDir string
	// Memory keeps everything in memory (nothing survives a restart): for tests and ephemeral use.
	Memory bool
	// Sync is the fsync policy of the logs and of the ack journals.
	Sync         store.SyncPolicy
	SyncInterval time.Duration
	// SegmentBytes is the log segment size (default 64 MiB).
	SegmentBytes int64
	// DefaultMaxMessageBytes applies to topics that set none (default 1 MiB).
	DefaultMaxMessageBytes int
	// DefaultRetention applies to topics that set none.
	DefaultRetentionMaxAge   time.Duration
	DefaultRetentionMaxBytes int64
	// RetentionCheckInterval is how often retention runs (default 1 minute).
	RetentionCheckInterval time.Duration
	// AllowLinkLocalEndpoints lets push endpoints use link-local or cloud metadata addresses.
	AllowLinkLocalEndpoints bool
	// OnSync observes every fsync's duration (metrics).
	OnSync func(time.Duration)
	Logger *slog.Logger
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
	// Replicator, when set, makes this broker one node of a cluster (see replication.go).
	Replicator Replicator
}

func (c *Config) setDefaults() {
	if c.SegmentBytes == 0 {
		c.SegmentBytes = 64 << 20
	}
	if c.DefaultMaxMessageBytes == 0 {
		c.DefaultMaxMessageBytes = 1 << 20
	}
	if c.RetentionCheckInterval == 0 {
		c.RetentionCheckInterval = time.Minute
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}
