// Package operator wires Herald's controllers into a controller-runtime manager: the scheme, the
// cache (namespaces, label-filtered children), leader election, metrics and health probes. The
// `herald operator` command (internal/cli) and the envtest suites use it.
package operator

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/controllers"
	"github.com/heraldmq/herald/internal/version"
)

// ImageRepository is where Herald's image is published.
const ImageRepository = "ghcr.io/heraldmq/herald"

// EventSource is the reporting controller of the operator's Events.
const EventSource = "herald-operator"

// DefaultBrokerImage is the operator's own image: brokers run the operator's version unless a
// BrokerCluster sets spec.image.
func DefaultBrokerImage() string { return ImageRepository + ":" + version.Get() }

// Options configure the operator.
type Options struct {
	// MetricsBindAddress serves Prometheus metrics (/metrics); "0" disables them.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "0" disables them.
	HealthProbeBindAddress string
	// LeaderElection: only the replica holding the Lease reconciles.
	LeaderElection bool
	// LeaderElectionNamespace holds the Lease; empty: the operator pod's namespace (in cluster).
	LeaderElectionNamespace string
	// LeaderElectionID is the Lease's name.
	LeaderElectionID string
	// WatchNamespaces limits the operator to these namespaces; empty: all namespaces.
	WatchNamespaces []string
	// BrokerImage is the image of brokers whose BrokerCluster sets no spec.image.
	BrokerImage string
	// ProgressDeadline: a rollout not done after this long makes a BrokerCluster Degraded.
	ProgressDeadline time.Duration
	// DrainStallTimeout: a drain that moves nothing for this long is reported blocked; zero:
	// controllers.DefaultDrainStallTimeout.
	DrainStallTimeout time.Duration
	// Now, if set, replaces time.Now in the reconcilers (tests).
	Now func() time.Time
	// AfterReconcile, if set, is called after every BrokerCluster reconcile (tests, instrumentation).
	AfterReconcile func(req ctrl.Request, res ctrl.Result, err error)
	// AfterTopicReconcile and AfterSubscriptionReconcile, if set, are called after every Topic and
	// Subscription reconcile (tests, instrumentation).
	AfterTopicReconcile        func(req ctrl.Request, res ctrl.Result, err error)
	AfterSubscriptionReconcile func(req ctrl.Request, res ctrl.Result, err error)

	// BrokerURLOverride, if set, says where the brokers of a BrokerCluster are, instead of the
	// cluster's client Service (status.endpoint): for out-of-cluster runs and tests.
	BrokerURLOverride controllers.BrokerURLResolver
	// ResyncInterval is how often each Topic and Subscription is compared with the brokers (drift
	// is corrected, statistics refreshed); zero: controllers.DefaultResyncInterval.
	ResyncInterval time.Duration
	// MaxConcurrentReconciles of the Topic and of the Subscription controller; zero:
	// controllers.DefaultMaxConcurrentReconciles.
	MaxConcurrentReconciles int
	// BrokerTimeout bounds one request to a broker; zero: controllers.DefaultBrokerTimeout.
	BrokerTimeout time.Duration
}

// DefaultLeaderElectionID is the default name of the leader-election Lease.
const DefaultLeaderElectionID = "herald-operator.herald.dev"

// ParseNamespaces splits a comma-separated namespace list, dropping blanks and duplicates.
func ParseNamespaces(s string) []string {
	var out []string
	seen := map[string]bool{}
	for _, ns := range strings.Split(s, ",") {
		ns = strings.TrimSpace(ns)
		if ns != "" && !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

// NewScheme has the built-in kinds and Herald's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(heraldv1.AddToScheme(s))
	return s
}

// NewManager builds a manager with Herald's controllers registered; start it with Start.
func NewManager(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	if o.BrokerImage == "" {
		o.BrokerImage = DefaultBrokerImage()
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = DefaultLeaderElectionID
	}
	cacheOpts := cache.Options{
		// The operator only needs the children it manages, not every ConfigMap, Service,
		// StatefulSet and PodDisruptionBudget of the cluster.
		ByObject: map[client.Object]cache.ByObject{},
	}
	managed := labels.SelectorFromSet(labels.Set{controllers.LabelManagedBy: controllers.ManagedBy})
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &appsv1.StatefulSet{}, &policyv1.PodDisruptionBudget{}} {
		cacheOpts.ByObject[obj] = cache.ByObject{Label: managed}
	}
	// Every Service, since Subscriptions push to Services of their namespace (spec.push.serviceRef);
	// of those the operator does not manage, only what resolving a serviceRef needs is kept.
	cacheOpts.ByObject[&corev1.Service{}] = cache.ByObject{Transform: stripUnmanagedService}
	// Secrets are watched by their metadata only (signing-secret rotation); their data is read
	// when needed, never cached. Annotations go too: kubectl's last-applied-configuration would
	// hold the data.
	cacheOpts.DefaultTransform = stripPartialMetadata
	if len(o.WatchNamespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.WatchNamespaces {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  NewScheme(),
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        o.LeaderElectionID,
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Step down at once on shutdown, so a new leader need not wait for the Lease to expire.
		LeaderElectionReleaseOnCancel: true,
		// A process runs one manager with one controller per kind, but tests start several
		// managers in one process; the name check is only about the metrics they share.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Client: client.Options{
			// Secrets are read only when needed (TLS), never cached.
			Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	brokers := &controllers.Brokers{Client: mgr.GetClient(), Override: o.BrokerURLOverride, Timeout: o.BrokerTimeout}
	if err := (&controllers.BrokerClusterReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder(EventSource),
		DefaultImage:      o.BrokerImage,
		ProgressDeadline:  o.ProgressDeadline,
		DrainStallTimeout: o.DrainStallTimeout,
		Now:               o.Now,
		AfterReconcile:    o.AfterReconcile,
		Brokers:           brokers,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the BrokerCluster controller: %w", err)
	}
	if err := (&controllers.TopicReconciler{
		Client:                  mgr.GetClient(),
		Brokers:                 brokers,
		Recorder:                mgr.GetEventRecorder(EventSource),
		ResyncInterval:          o.ResyncInterval,
		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		Now:                     o.Now,
		AfterReconcile:          o.AfterTopicReconcile,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Topic controller: %w", err)
	}
	if err := (&controllers.SubscriptionReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Brokers:                 brokers,
		Recorder:                mgr.GetEventRecorder(EventSource),
		ResyncInterval:          o.ResyncInterval,
		MaxConcurrentReconciles: o.MaxConcurrentReconciles,
		Now:                     o.Now,
		AfterReconcile:          o.AfterSubscriptionReconcile,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Subscription controller: %w", err)
	}
	if o.HealthProbeBindAddress != "" && o.HealthProbeBindAddress != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return nil, err
		}
		// Ready once the caches are in sync.
		if err := mgr.AddReadyzCheck("informers", func(req *http.Request) error {
			if !mgr.GetCache().WaitForCacheSync(req.Context()) {
				return fmt.Errorf("caches not synced")
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}

// Run runs the operator until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	mgr, err := NewManager(cfg, o)
	if err != nil {
		return err
	}
	override := ""
	if o.BrokerURLOverride != nil {
		override = fmt.Sprint(o.BrokerURLOverride)
	}
	ctrl.Log.WithName("operator").Info("starting", "version", version.Get(), "brokerImage", firstNonEmpty(o.BrokerImage, DefaultBrokerImage()),
		"watchNamespaces", o.WatchNamespaces, "leaderElection", o.LeaderElection, "brokerURLOverride", override,
		"resyncInterval", firstNonZero(o.ResyncInterval, controllers.DefaultResyncInterval))
	return mgr.Start(ctx)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func firstNonZero(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}

// stripUnmanagedService keeps, of a Service the operator does not manage, what resolving a
// Subscription's serviceRef needs; the operator's own Services keep their managedFields (the
// BrokerCluster controller compares them with what it applies).
func stripUnmanagedService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok || svc.Labels[controllers.LabelManagedBy] == controllers.ManagedBy {
		return obj, nil
	}
	svc.ManagedFields = nil
	svc.Annotations = nil
	svc.Status = corev1.ServiceStatus{}
	return svc, nil
}

// stripPartialMetadata drops the annotations and managedFields of objects watched by metadata only
// (Secrets).
func stripPartialMetadata(obj any) (any, error) {
	if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
		m.ManagedFields = nil
		m.Annotations = nil
	}
	return obj, nil
}
