package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/push"
	"github.com/heraldmq/herald/broker/server"
	"github.com/heraldmq/herald/broker/store"
)

func init() {
	register("broker", "run the message broker (HTTP API v1)", runBroker)
}

// BrokerConfig is the broker's configuration file (YAML or JSON, --config). Precedence, lowest
// first: built-in defaults, the file, HERALD_* environment variables, flags.
type BrokerConfig struct {
	DataDir string `json:"dataDir,omitempty"`
	Listen  string `json:"listen,omitempty"`
	// Storage is file (default) or memory (nothing survives a restart).
	Storage         string        `json:"storage,omitempty"`
	Fsync           string        `json:"fsync,omitempty"`
	SyncInterval    *api.Duration `json:"syncInterval,omitempty"`
	SegmentBytes    int64         `json:"segmentBytes,omitempty"`
	MaxMessageBytes int           `json:"maxMessageBytes,omitempty"`
	Retention       *struct {
		MaxAge   *api.Duration `json:"maxAge,omitempty"`
		MaxBytes int64         `json:"maxBytes,omitempty"`
	} `json:"retention,omitempty"`
	AllowLinkLocalEndpoints bool   `json:"allowLinkLocalEndpoints,omitempty"`
	LogLevel                string `json:"logLevel,omitempty"`
	LogFormat               string `json:"logFormat,omitempty"`
	// TLS makes the listener serve HTTPS with these PEM files.
	TLS *struct {
		CertFile string `json:"certFile"`
		KeyFile  string `json:"keyFile"`
	} `json:"tls,omitempty"`
	// Cluster describes the broker's peers when the operator runs it as a StatefulSet (see
	// clusterConfig for how it becomes a node id, an advertised address and peers).
	Cluster *struct {
		Name        string `json:"name,omitempty"`
		Namespace   string `json:"namespace,omitempty"`
		StatefulSet string `json:"statefulSet,omitempty"`
		PeerDomain  string `json:"peerDomain,omitempty"`
		Port        int    `json:"port,omitempty"`
	} `json:"cluster,omitempty"`
	// PprofListen serves net/http/pprof on its own address when set (off by default).
	PprofListen string `json:"pprofListen,omitempty"`
	// NodeID, ClusterPeers, ClusterJoin and ClusterAdvertise make the broker one node of a
	// replicated cluster (docs/adr/0001-replication.md).
	NodeID           string `json:"nodeId,omitempty"`
	ClusterPeers     string `json:"clusterPeers,omitempty"`
	ClusterJoin      string `json:"clusterJoin,omitempty"`
	ClusterAdvertise string `json:"clusterAdvertise,omitempty"`
}

type brokerFlags struct {
	configFile, dataDir, listen, storage, fsync, logLevel, logFormat string
	pprofListen, tlsCert, tlsKey                                     string
	nodeID, clusterPeers, clusterJoin, clusterAdvertise              string
	syncInterval, retentionMaxAge                                    time.Duration
	segmentBytes, retentionMaxBytes                                  int64
	maxMessageBytes                                                  int
	allowLinkLocal                                                   bool
}

func runBroker(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f brokerFlags
	fs.StringVar(&f.configFile, "config", "", "configuration file (YAML or JSON); env HERALD_CONFIG")
	fs.StringVar(&f.dataDir, "data-dir", "", "folder for logs and metadata (required unless --storage memory); env HERALD_DATA_DIR")
	fs.StringVar(&f.listen, "listen", "", "HTTP listen address (default 0.0.0.0:8080); env HERALD_LISTEN")
	fs.StringVar(&f.storage, "storage", "", "file or memory (default file); env HERALD_STORAGE")
	fs.StringVar(&f.fsync, "fsync", "", "when acknowledged data is fsync'd: always, interval or never (default always); env HERALD_FSYNC")
	fs.DurationVar(&f.syncInterval, "sync-interval", 0, "fsync period for --fsync interval (default 100ms); env HERALD_SYNC_INTERVAL")
	fs.Int64Var(&f.segmentBytes, "segment-bytes", 0, "log segment size (default 64 MiB); env HERALD_SEGMENT_BYTES")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", 0, "default maxMessageBytes of topics (default 1 MiB); env HERALD_MAX_MESSAGE_BYTES")
	fs.DurationVar(&f.retentionMaxAge, "retention-max-age", 0, "default retention.maxAge of topics (0: keep); env HERALD_RETENTION_MAX_AGE")
	fs.Int64Var(&f.retentionMaxBytes, "retention-max-bytes", 0, "default retention.maxBytes per partition (0: no limit); env HERALD_RETENTION_MAX_BYTES")
	fs.BoolVar(&f.allowLinkLocal, "allow-link-local-endpoints", false, "allow push endpoints on link-local and cloud metadata addresses; env HERALD_ALLOW_LINK_LOCAL_ENDPOINTS")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info); env HERALD_LOG_LEVEL")
	fs.StringVar(&f.logFormat, "log-format", "", "text or json (default text); env HERALD_LOG_FORMAT")
	fs.StringVar(&f.pprofListen, "pprof-listen", "", "serve net/http/pprof on this HOST:PORT (off by default); env HERALD_PPROF_LISTEN")
	fs.StringVar(&f.tlsCert, "tls-cert-file", "", "serve HTTPS with this PEM certificate (with --tls-key-file); env HERALD_TLS_CERT_FILE")
	fs.StringVar(&f.tlsKey, "tls-key-file", "", "PEM key of --tls-cert-file; env HERALD_TLS_KEY_FILE")
	fs.StringVar(&f.nodeID, "node-id", "", "this broker's id in a cluster (default: HERALD_POD_NAME under the operator); env HERALD_NODE_ID")
	fs.StringVar(&f.clusterPeers, "cluster-peers", "", "founding members of a cluster, id=host:port,… including this one; env HERALD_CLUSTER_PEERS")
	fs.StringVar(&f.clusterJoin, "cluster-join", "", "host:port,… of existing members to join through; env HERALD_CLUSTER_JOIN")
	fs.StringVar(&f.clusterAdvertise, "cluster-advertise", "", "host:port peers reach this broker at (default: its address in --cluster-peers, else --listen); env HERALD_CLUSTER_ADVERTISE")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	cfg, err := resolveBrokerConfig(fs, f, os.LookupEnv)
	if err != nil {
		return usageError("%v", err)
	}
	return serveBroker(cfg, stderr)
}

// resolveBrokerConfig merges defaults, the config file, the environment and the flags that were
// set on the command line, in that order.
func resolveBrokerConfig(fs *flag.FlagSet, f brokerFlags, env func(string) (string, bool)) (BrokerConfig, error) {
	cfg := BrokerConfig{Listen: "0.0.0.0:8080", Storage: "file", Fsync: "always", LogLevel: "info", LogFormat: "text"}
	path := f.configFile
	if v, ok := env("HERALD_CONFIG"); ok && !flagSet(fs, "config") {
		path = v
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		var file BrokerConfig
		if err := yaml.UnmarshalStrict(b, &file); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", path, err)
		}
		mergeConfig(&cfg, file)
	}
	var envCfg BrokerConfig
	var errs []error
	str := func(name string, dst *string) {
		if v, ok := env(name); ok {
			*dst = v
		}
	}
	dur := func(name string, dst **api.Duration) {
		if v, ok := env(name); ok {
			d, err := api.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			dd := api.Duration(d)
			*dst = &dd
		}
	}
	num := func(name string, set func(int64)) {
		if v, ok := env(name); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a whole number", name, v))
				return
			}
			set(n)
		}
	}
	str("HERALD_DATA_DIR", &envCfg.DataDir)
	str("HERALD_LISTEN", &envCfg.Listen)
	str("HERALD_STORAGE", &envCfg.Storage)
	str("HERALD_FSYNC", &envCfg.Fsync)
	str("HERALD_LOG_LEVEL", &envCfg.LogLevel)
	str("HERALD_LOG_FORMAT", &envCfg.LogFormat)
	str("HERALD_PPROF_LISTEN", &envCfg.PprofListen)
	str("HERALD_NODE_ID", &envCfg.NodeID)
	str("HERALD_CLUSTER_PEERS", &envCfg.ClusterPeers)
	str("HERALD_CLUSTER_JOIN", &envCfg.ClusterJoin)
	str("HERALD_CLUSTER_ADVERTISE", &envCfg.ClusterAdvertise)
	if c, ok := env("HERALD_TLS_CERT_FILE"); ok {
		k, _ := env("HERALD_TLS_KEY_FILE")
		envCfg.TLS = &struct {
			CertFile string `json:"certFile"`
			KeyFile  string `json:"keyFile"`
		}{c, k}
	}
	dur("HERALD_SYNC_INTERVAL", &envCfg.SyncInterval)
	num("HERALD_SEGMENT_BYTES", func(n int64) { envCfg.SegmentBytes = n })
	num("HERALD_MAX_MESSAGE_BYTES", func(n int64) { envCfg.MaxMessageBytes = int(n) })
	var age *api.Duration
	dur("HERALD_RETENTION_MAX_AGE", &age)
	var maxBytes int64
	num("HERALD_RETENTION_MAX_BYTES", func(n int64) { maxBytes = n })
	if age != nil || maxBytes != 0 {
		envCfg.Retention = &struct {
			MaxAge   *api.Duration `json:"maxAge,omitempty"`
			MaxBytes int64         `json:"maxBytes,omitempty"`
		}{MaxAge: age, MaxBytes: maxBytes}
	}
	if v, ok := env("HERALD_ALLOW_LINK_LOCAL_ENDPOINTS"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("HERALD_ALLOW_LINK_LOCAL_ENDPOINTS: %q is not true or false", v))
		}
		envCfg.AllowLinkLocalEndpoints = b
	}
	if len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}
	mergeConfig(&cfg, envCfg)
	// Flags given on the command line win.
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "data-dir":
			cfg.DataDir = f.dataDir
		case "listen":
			cfg.Listen = f.listen
		case "storage":
			cfg.Storage = f.storage
		case "fsync":
			cfg.Fsync = f.fsync
		case "sync-interval":
			d := api.Duration(f.syncInterval)
			cfg.SyncInterval = &d
		case "segment-bytes":
			cfg.SegmentBytes = f.segmentBytes
		case "max-message-bytes":
			cfg.MaxMessageBytes = f.maxMessageBytes
		case "retention-max-age", "retention-max-bytes":
			if cfg.Retention == nil {
				cfg.Retention = &struct {
					MaxAge   *api.Duration `json:"maxAge,omitempty"`
					MaxBytes int64         `json:"maxBytes,omitempty"`
				}{}
			}
			if fl.Name == "retention-max-age" {
				d := api.Duration(f.retentionMaxAge)
				cfg.Retention.MaxAge = &d
			} else {
				cfg.Retention.MaxBytes = f.retentionMaxBytes
			}
		case "allow-link-local-endpoints":
			cfg.AllowLinkLocalEndpoints = f.allowLinkLocal
		case "log-level":
			cfg.LogLevel = f.logLevel
		case "log-format":
			cfg.LogFormat = f.logFormat
		case "pprof-listen":
			cfg.PprofListen = f.pprofListen
		case "node-id":
			cfg.NodeID = f.nodeID
		case "cluster-peers":
			cfg.ClusterPeers = f.clusterPeers
		case "cluster-join":
			cfg.ClusterJoin = f.clusterJoin
		case "cluster-advertise":
			cfg.ClusterAdvertise = f.clusterAdvertise
		case "tls-cert-file", "tls-key-file":
			cfg.TLS = &struct {
				CertFile string `json:"certFile"`
				KeyFile  string `json:"keyFile"`
			}{f.tlsCert, f.tlsKey}
		}
	})
	return cfg, validateBrokerConfig(cfg)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// mergeConfig copies the fields set in src over dst.
func mergeConfig(dst *BrokerConfig, src BrokerConfig) {
	if src.DataDir != "" {
		dst.DataDir = src.DataDir
	}
	if src.Listen != "" {
		dst.Listen = src.Listen
	}
	if src.Storage != "" {
		dst.Storage = src.Storage
	}
	if src.Fsync != "" {
		dst.Fsync = src.Fsync
	}
	if src.SyncInterval != nil {
		dst.SyncInterval = src.SyncInterval
	}
	if src.SegmentBytes != 0 {
		dst.SegmentBytes = src.SegmentBytes
	}
	if src.MaxMessageBytes != 0 {
		dst.MaxMessageBytes = src.MaxMessageBytes
	}
	if src.Retention != nil {
		dst.Retention = src.Retention
	}
	if src.AllowLinkLocalEndpoints {
		dst.AllowLinkLocalEndpoints = true
	}
	if src.LogLevel != "" {
		dst.LogLevel = src.LogLevel
	}
	if src.LogFormat != "" {
		dst.LogFormat = src.LogFormat
	}
	if src.TLS != nil {
		dst.TLS = src.TLS
	}
	if src.Cluster != nil {
		dst.Cluster = src.Cluster
	}
	if src.PprofListen != "" {
		dst.PprofListen = src.PprofListen
	}
	for _, x := range []struct {
		d *string
		s string
	}{{&dst.NodeID, src.NodeID}, {&dst.ClusterPeers, src.ClusterPeers},
		{&dst.ClusterJoin, src.ClusterJoin}, {&dst.ClusterAdvertise, src.ClusterAdvertise}} {
		if x.s != "" {
			*x.d = x.s
		}
	}
}

func validateBrokerConfig(c BrokerConfig) error {
	if _, err := store.ParseSyncPolicy(c.Fsync); err != nil {
		return fmt.Errorf("--fsync %q: must be always, interval or never", c.Fsync)
	}
	switch c.Storage {
	case "file":
		if c.DataDir == "" {
			return errors.New("--data-dir is required (or --storage memory)")
		}
	case "memory":
	default:
		return fmt.Errorf("--storage %q: must be file or memory", c.Storage)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT", c.Listen)
	}
	if c.SegmentBytes < 0 || (c.SegmentBytes > 0 && c.SegmentBytes < 4096) {
		return fmt.Errorf("--segment-bytes must be at least 4096")
	}
	if c.MaxMessageBytes < 0 {
		return fmt.Errorf("--max-message-bytes must not be negative")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.TLS != nil && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		return errors.New("TLS needs both a certificate and a key file (--tls-cert-file, --tls-key-file)")
	}
	if c.PprofListen != "" {
		if _, _, err := net.SplitHostPort(c.PprofListen); err != nil {
			return fmt.Errorf("--pprof-listen %q: want HOST:PORT", c.PprofListen)
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: must be text or json", c.LogFormat)
	}
	// Check the cluster settings' shape; the pod name is only known where the broker runs.
	asPod := func(k string) string {
		if v := os.Getenv(k); v != "" || k != "HERALD_POD_NAME" || c.Cluster == nil {
			return v
		}
		return c.Cluster.StatefulSet + "-0"
	}
	if _, err := clusterConfig(c, asPod); err != nil {
		return err
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}

// serveBroker runs the broker until SIGINT/SIGTERM, then shuts down gracefully.
func serveBroker(c BrokerConfig, stderr io.Writer) error {
	level, _ := parseLevel(c.LogLevel)
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	policy, _ := store.ParseSyncPolicy(c.Fsync)
	ecfg := engine.Config{DataDir: c.DataDir, Memory: c.Storage == "memory", Sync: policy, SegmentBytes: c.SegmentBytes,
		DefaultMaxMessageBytes: c.MaxMessageBytes, AllowLinkLocalEndpoints: c.AllowLinkLocalEndpoints, Logger: log}
	if c.SyncInterval != nil {
		ecfg.SyncInterval = c.SyncInterval.D()
	}
	if c.Retention != nil {
		if c.Retention.MaxAge != nil {
			ecfg.DefaultRetentionMaxAge = c.Retention.MaxAge.D()
		}
		ecfg.DefaultRetentionMaxBytes = c.Retention.MaxBytes
	}
	// Listen first so the port is taken (and /healthz answers) while the log recovers.
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := &readyGate{}
	srv := &http.Server{Handler: ready, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	serveErr := make(chan error, 1)
	go func() {
		if c.TLS != nil {
			serveErr <- srv.ServeTLS(ln, c.TLS.CertFile, c.TLS.KeyFile)
			return
		}
		serveErr <- srv.Serve(ln)
	}()
	if c.PprofListen != "" {
		go servePprof(c.PprofListen, log)
	}
	log.Info("recovering", "dataDir", c.DataDir, "storage", c.Storage, "fsync", c.Fsync)
	start := time.Now()
	node, err := newClusterNode(c, policy, log)
	if err != nil {
		srv.Close()
		return err
	}
	if node != nil {
		ecfg.Replicator = node
	}
	b, err := engine.Open(ecfg)
	if err != nil {
		srv.Close()
		return err
	}
	var opts server.Options
	if node != nil {
		if err := node.Start(b); err != nil {
			srv.Close()
			b.Close()
			return err
		}
		defer node.Close()
		opts = server.Options{Backend: node, Internal: node.Handler(), Cluster: node.ServeClusterView, ClusterAdmin: node.AdminHandler()}
		log.Info("cluster node started", "id", node.ID())
	}
	pushes := push.NewManager(b, push.Options{Logger: log})
	ready.set(server.NewWithOptions(b, log, opts))
	log.Info("broker ready", "listen", ln.Addr().String(), "recovery", time.Since(start).Round(time.Millisecond))
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		pushes.Close()
		b.Close()
		return err
	}
	log.Info("shutting down")
	if node != nil {
		// Hand leaderships over while still serving, so producers and consumers only retry.
		hctx, hcancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := node.Handoff(hctx); err != nil {
			log.Warn("handing leaderships over", "err", err)
		}
		hcancel()
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shCtx)
	pushes.Close()
	if node != nil {
		node.Close() // before the engine: replication writes into it
	}
	return b.Close()
}
