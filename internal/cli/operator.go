package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/heraldmq/herald/controllers"
	"github.com/heraldmq/herald/internal/operator"
)

func init() {
	register("operator", "Run the Kubernetes operator (reconciles BrokerClusters, Topics, Subscriptions).", runOperator)
}

func runOperator(args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herald operator [flags]\n\n"+
			"Runs the operator against the cluster of --kubeconfig, $KUBECONFIG, the pod's service account,\n"+
			"or ~/.kube/config (in that order).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var o operator.Options
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080",
		`address of the Prometheus metrics endpoint (/metrics); "0" disables it`)
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081",
		`address of the health probes (/healthz, /readyz); "0" disables them`)
	fs.BoolVar(&o.LeaderElection, "leader-elect", false,
		"elect a leader (a Lease) so that only one of several operator replicas reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "",
		"namespace of the leader-election Lease (default: the operator pod's namespace)")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", operator.DefaultLeaderElectionID,
		"name of the leader-election Lease")
	watch := fs.String("watch-namespaces", os.Getenv("HERALD_WATCH_NAMESPACES"),
		"comma-separated namespaces to watch; empty: all namespaces (env HERALD_WATCH_NAMESPACES)")
	fs.StringVar(&o.BrokerImage, "broker-image", operatorEnvOr("HERALD_BROKER_IMAGE", operator.DefaultBrokerImage()),
		"image of brokers whose BrokerCluster sets no spec.image: the operator's own (env HERALD_BROKER_IMAGE)")
	fs.DurationVar(&o.ProgressDeadline, "progress-deadline", controllers.DefaultProgressDeadline,
		"a BrokerCluster whose rollout is not done after this long is reported Degraded")
	fs.DurationVar(&o.DrainStallTimeout, "drain-stall-timeout", controllers.DefaultDrainStallTimeout,
		"a scale-down drain that moves no partition replica for this long is reported blocked, with the partitions it waits for")
	override := fs.String("broker-url-override", os.Getenv("HERALD_BROKER_URL_OVERRIDE"),
		"where the operator reaches the brokers, instead of each BrokerCluster's client Service (its status.endpoint,\n"+
			"http://NAME.NAMESPACE.svc:PORT): for runs outside the cluster and tests. A comma-separated list of\n"+
			"NAMESPACE/NAME=URL (one BrokerCluster) and at most one bare URL (every other BrokerCluster); a URL may\n"+
			"contain {namespace} and {name}. Examples: http://127.0.0.1:18080 (say, through kubectl port-forward),\n"+
			"team-a/orders=http://127.0.0.1:18080,http://{name}.{namespace}.example:8080 (env HERALD_BROKER_URL_OVERRIDE)")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", controllers.DefaultResyncInterval,
		"how often each Topic and Subscription is compared with the brokers: drift (a change or deletion behind the\n"+
			"operator's back) is corrected and the statistics in its status refreshed (written only when they changed)")
	fs.IntVar(&o.MaxConcurrentReconciles, "max-concurrent-reconciles", controllers.DefaultMaxConcurrentReconciles,
		"Topics, and Subscriptions, reconciled at once")
	fs.DurationVar(&o.BrokerTimeout, "broker-timeout", controllers.DefaultBrokerTimeout,
		"bound on one request of the operator to a broker")
	ctrlconfig.RegisterFlags(fs) // --kubeconfig
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs) // --zap-log-level, --zap-devel, ...
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments: %v", fs.Args())
	}
	if o.BrokerImage == "" {
		return usageError("--broker-image must not be empty")
	}
	if o.ProgressDeadline <= 0 {
		return usageError("--progress-deadline must be positive")
	}
	if o.DrainStallTimeout <= 0 {
		return usageError("--drain-stall-timeout must be positive")
	}
	if o.ResyncInterval <= 0 {
		return usageError("--resync-interval must be positive")
	}
	if o.MaxConcurrentReconciles <= 0 {
		return usageError("--max-concurrent-reconciles must be positive")
	}
	if o.BrokerTimeout <= 0 {
		return usageError("--broker-timeout must be positive")
	}
	ov, err := controllers.ParseBrokerURLOverride(*override)
	if err != nil {
		return usageError("--broker-url-override: %v", err)
	}
	if ov != nil {
		o.BrokerURLOverride = ov
	}
	o.WatchNamespaces = operator.ParseNamespaces(*watch)

	logger := zap.New(zap.UseFlagOptions(&zapOpts), zap.WriteTo(stderr))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger) // client-go (leader election, events) logs the same way
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("finding the cluster: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second signal while shutting down exits at once.
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(ch)
		select {
		case <-ch:
			fmt.Fprintln(stderr, "herald operator: second signal, exiting")
			os.Exit(1)
		case <-finished:
		}
	}()
	return operator.Run(ctx, cfg, o)
}

func operatorEnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
