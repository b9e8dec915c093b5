// Package controllers holds Herald's reconcilers. The BrokerCluster reconciler builds, with pure
// functions (one file per child object), a ConfigMap, a headless and a client Service, a
// StatefulSet and a PodDisruptionBudget, applies them with server-side apply only when they differ
// from what it applied before, and reports the cluster's state in the BrokerCluster's status.
package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// +kubebuilder:rbac:groups=herald.dev,resources=brokerclusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=herald.dev,resources=brokerclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=herald.dev,resources=brokerclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=herald.dev,resources=topics,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=configmaps;services,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// conflictRetry is when a reconcile that lost an optimistic-concurrency race runs again.
const conflictRetry = time.Second

// Event reasons (besides the failure reasons of the conditions).
const (
	EventCreated = "Created"
	EventUpdated = "Updated"
	EventReady   = "Ready"
)

// BrokerClusterReconciler reconciles BrokerClusters.
type BrokerClusterReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads from the API server directly: TLS Secrets (not cached) and children missing
	// from the cache (which only holds objects labelled app.kubernetes.io/managed-by=herald-operator).
	APIReader client.Reader
	// Recorder records Events on BrokerClusters.
	Recorder events.EventRecorder
	// DefaultImage is the broker image when spec.image is empty: the operator's own.
	DefaultImage string
	// ProgressDeadline: a rollout not done after this long makes the cluster Degraded.
	// Zero: DefaultProgressDeadline.
	ProgressDeadline time.Duration
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
	// AfterReconcile, if set, is called after every reconcile (instrumentation, tests).
	AfterReconcile func(req ctrl.Request, res ctrl.Result, err error)
	// Brokers reaches the brokers' cluster API (drain before a scale-down, rebalance after a
	// scale-up); nil: the client Service of each cluster, without override.
	Brokers *Brokers
	// DrainPollInterval is how often a drain in progress is looked at; zero:
	// DefaultDrainPollInterval.
	DrainPollInterval time.Duration
	// RebalancePollInterval is how often a rebalance in progress is looked at; zero:
	// DefaultRebalancePollInterval.
	RebalancePollInterval time.Duration
	// DrainStallTimeout: a drain that moves nothing for this long is reported blocked (with what
	// it waits for); zero: DefaultDrainStallTimeout.
	DrainStallTimeout time.Duration

	brokersOnce sync.Once
	drainMu     sync.Mutex
	drainMarks  map[string]drainProgress // by BrokerCluster UID (drain_stall.go)
}

// SetupWithManager registers the reconciler: it watches BrokerClusters and the children they own.
func (r *BrokerClusterReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("brokercluster").
		For(&heraldv1.BrokerCluster{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Complete(r)
}

func (r *BrokerClusterReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile brings a BrokerCluster's children to its spec and reports their state in its status.
// It writes nothing when nothing changed.
func (r *BrokerClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	if r.AfterReconcile != nil {
		defer func() { r.AfterReconcile(req, res, err) }()
	}
	return r.reconcile(ctx, req)
}

func (r *BrokerClusterReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	bc := &heraldv1.BrokerCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, bc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !bc.DeletionTimestamp.IsZero() {
		// The garbage collector deletes the children (owner references).
		return ctrl.Result{}, nil
	}

	sts, err := r.statefulSet(ctx, bc)
	if err != nil {
		return ctrl.Result{}, err
	}
	// The StatefulSet's size: spec.replicas, unless brokers that go must be drained first.
	scaled, err := r.scale(ctx, bc, sts)
	if err != nil {
		return ctrl.Result{}, err
	}

	fail, err := r.reconcileChildren(ctx, bc, scaled.Replicas)
	if err != nil {
		if apierrors.IsConflict(err) {
			// A stale cache; the watch brings the newer object soon.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		fail = &failure{Reason: ReasonReconcileError, Message: err.Error()}
	}

	if sts, err = r.statefulSet(ctx, bc); err != nil {
		return ctrl.Result{}, err
	}

	status, requeue := computeStatus(statusInput{
		BC: bc, StatefulSet: sts, Failure: fail, Image: BrokerImage(bc, r.DefaultImage),
		Now: r.now(), ProgressDeadline: r.ProgressDeadline,
		Drain: scaled.Drain, Rebalancing: scaled.Rebalancing,
	})
	if scaled.Poll > 0 && (requeue == 0 || scaled.Poll < requeue) {
		requeue = scaled.Poll
	}
	if fail != nil && failureIsNew(bc, fail) {
		r.Recorder.Eventf(bc, nil, corev1.EventTypeWarning, fail.Reason, "Reconcile", "%s", fail.Message)
	}
	if !equality.Semantic.DeepEqual(status, bc.Status) {
		wasReady := meta.IsStatusConditionTrue(bc.Status.Conditions, heraldv1.ConditionReady)
		updated := bc.DeepCopy()
		updated.Status = status
		if err := r.Client.Status().Update(ctx, updated); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			if apierrors.IsNotFound(err) {
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("updating the status: %w", err)
		}
		if !wasReady && meta.IsStatusConditionTrue(status.Conditions, heraldv1.ConditionReady) {
			r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventReady, "Reconcile",
				"All %d brokers are ready", status.ReadyReplicas)
		}
	}

	switch {
	case err != nil:
		// Retried with back-off.
		return ctrl.Result{}, err
	case fail != nil && (fail.Reason == ReasonTLSSecretNotFound || fail.Reason == ReasonTLSSecretInvalid ||
		fail.Reason == ReasonResourceConflict):
		// Secrets and foreign objects are not watched: look again later.
		logger.V(1).Info("waiting", "reason", fail.Reason, "message", fail.Message)
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	case requeue > 0:
		// Look again when the progress deadline passes.
		return ctrl.Result{RequeueAfter: requeue}, nil
	}
	return ctrl.Result{}, nil
}

// statefulSet returns bc's StatefulSet from the cache; nil when it does not exist (yet) or is
// not bc's.
func (r *BrokerClusterReconciler) statefulSet(ctx context.Context, bc *heraldv1.BrokerCluster) (*appsv1.StatefulSet, error) {
	sts := &appsv1.StatefulSet{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: bc.Namespace, Name: StatefulSetName(bc)}, sts); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		return nil, nil
	}
	if !metav1.IsControlledBy(sts, bc) {
		return nil, nil
	}
	return sts, nil
}

// failureIsNew reports whether fail is not already the BrokerCluster's Degraded condition, so a
// failure that persists over reconciles is recorded as one Event, not one per reconcile.
func failureIsNew(bc *heraldv1.BrokerCluster, fail *failure) bool {
	c := meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionDegraded)
	return c == nil || c.Status != metav1.ConditionTrue || c.Reason != fail.Reason || c.Message != fail.Message ||
		c.ObservedGeneration != bc.Generation
}

// reconcileChildren applies every child of bc, with a StatefulSet of replicas pods. A *failure
// reports a problem the spec must fix; an error anything else (retried).
func (r *BrokerClusterReconciler) reconcileChildren(ctx context.Context, bc *heraldv1.BrokerCluster, replicas int32) (*failure, error) {
	if fail, err := r.checkTLSSecret(ctx, bc); fail != nil || err != nil {
		return fail, err
	}
	cm, hash, err := BuildConfigMap(bc)
	if err != nil {
		return &failure{Reason: ReasonInvalidSpec, Message: err.Error()}, nil
	}
	sts, err := BuildStatefulSet(bc, StatefulSetParams{DefaultImage: r.DefaultImage, ConfigHash: hash, Replicas: &replicas})
	if err != nil {
		return &failure{Reason: ReasonInvalidSpec, Message: err.Error()}, nil
	}
	children := []child{
		{
			kind: "ConfigMap", name: ConfigMapName(bc), live: &corev1.ConfigMap{}, desired: cm,
			extract: func(o client.Object) (any, error) {
				return corev1ac.ExtractConfigMap(o.(*corev1.ConfigMap), FieldOwner)
			},
		},
		{
			kind: "Service", name: HeadlessServiceName(bc), live: &corev1.Service{}, desired: BuildHeadlessService(bc),
			extract: func(o client.Object) (any, error) { return corev1ac.ExtractService(o.(*corev1.Service), FieldOwner) },
		},
		{
			kind: "Service", name: ClientServiceName(bc), live: &corev1.Service{}, desired: BuildClientService(bc),
			extract: func(o client.Object) (any, error) { return corev1ac.ExtractService(o.(*corev1.Service), FieldOwner) },
		},
		{
			kind: "StatefulSet", name: StatefulSetName(bc), live: &appsv1.StatefulSet{}, desired: sts,
			extract: func(o client.Object) (any, error) {
				managed, err := appsv1ac.ExtractStatefulSet(o.(*appsv1.StatefulSet), FieldOwner)
				normalizeStatefulSet(managed)
				return managed, err
			},
		},
		{
			kind: "PodDisruptionBudget", name: PodDisruptionBudgetName(bc), live: &policyv1.PodDisruptionBudget{},
			desired: BuildPodDisruptionBudget(bc),
			extract: func(o client.Object) (any, error) {
				return policyv1ac.ExtractPodDisruptionBudget(o.(*policyv1.PodDisruptionBudget), FieldOwner)
			},
		},
	}
	for _, c := range children {
		if fail, err := r.apply(ctx, bc, c); fail != nil || err != nil {
			return fail, err
		}
	}
	return nil, nil
}

// checkTLSSecret reports a missing or malformed TLS Secret of the HTTP listener.
func (r *BrokerClusterReconciler) checkTLSSecret(ctx context.Context, bc *heraldv1.BrokerCluster) (*failure, error) {
	tls := bc.Spec.Listeners.HTTP.TLS
	if tls == nil {
		return nil, nil
	}
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: bc.Namespace, Name: tls.SecretName}, secret)
	if apierrors.IsNotFound(err) {
		return &failure{Reason: ReasonTLSSecretNotFound,
			Message: fmt.Sprintf("spec.listeners.http.tls.secretName: Secret %q not found in namespace %q", tls.SecretName, bc.Namespace)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading TLS Secret %s: %w", tls.SecretName, err)
	}
	for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
		if len(secret.Data[key]) == 0 {
			return &failure{Reason: ReasonTLSSecretInvalid,
				Message: fmt.Sprintf("spec.listeners.http.tls.secretName: Secret %q has no %s", tls.SecretName, key)}, nil
		}
	}
	return nil, nil
}

// child is one object a BrokerCluster owns.
type child struct {
	kind, name string
	// live receives the object as it is (an empty object of the child's type).
	live client.Object
	// desired is what the operator applies.
	desired runtime.ApplyConfiguration
	// extract returns the part of a live object that FieldOwner manages, as an apply configuration
	// of the same type as desired, without what the API server adds on its own.
	extract func(client.Object) (any, error)
}

// apply server-side-applies c.desired unless the fields the operator manages on the live object
// already equal it, so a converged cluster costs no writes. Fields another manager took over (say,
// with kubectl edit) are no longer the operator's, so the comparison fails and the apply, with
// force, takes them back.
func (r *BrokerClusterReconciler) apply(ctx context.Context, bc *heraldv1.BrokerCluster, c child) (*failure, error) {
	key := client.ObjectKey{Namespace: bc.Namespace, Name: c.name}
	exists := true
	if err := r.Client.Get(ctx, key, c.live); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading %s %s: %w", c.kind, c.name, err)
		}
		// Not in the cache: absent, not yet seen, or without the managed-by label. Ask the API
		// server, so a foreign object is never overwritten.
		if err := r.APIReader.Get(ctx, key, c.live); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("reading %s %s: %w", c.kind, c.name, err)
			}
			exists = false
		}
	}
	if exists {
		if !metav1.IsControlledBy(c.live, bc) {
			return &failure{Reason: ReasonResourceConflict,
				Message: fmt.Sprintf("%s %s/%s exists and is not controlled by this BrokerCluster; delete or rename it", c.kind, bc.Namespace, c.name)}, nil
		}
		managed, err := c.extract(c.live)
		if err != nil {
			return nil, fmt.Errorf("reading the fields of %s %s: %w", c.kind, c.name, err)
		}
		if equality.Semantic.DeepEqual(managed, c.desired) {
			return nil, nil
		}
		if logger := log.FromContext(ctx).V(2); logger.Enabled() {
			live, _ := json.Marshal(managed)
			want, _ := json.Marshal(c.desired)
			logger.Info("child differs from the spec", "kind", c.kind, "name", c.name, "managed", string(live), "desired", string(want))
		}
	}
	if err := r.Client.Apply(ctx, c.desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || (apierrors.IsForbidden(err) && isSpecRejection(err)) {
			return &failure{Reason: ReasonInvalidSpec,
				Message: fmt.Sprintf("the API server rejected %s %s: %s", c.kind, c.name, apiMessage(err))}, nil
		}
		return nil, fmt.Errorf("applying %s %s: %w", c.kind, c.name, err)
	}
	action, reason, verb := "Update", EventUpdated, "Updated"
	if !exists {
		action, reason, verb = "Create", EventCreated, "Created"
	}
	// The child is the Event's related object: Events of one BrokerCluster that differ only in the
	// child would otherwise be merged into one series.
	related := c.live
	if err := convert(c.desired, related); err != nil || related.GetName() == "" {
		related.SetName(c.name)
		related.SetNamespace(bc.Namespace)
	}
	r.Recorder.Eventf(bc, related, corev1.EventTypeNormal, reason, action, "%s %s %s", verb, c.kind, c.name)
	log.FromContext(ctx).Info(verb+" child", "kind", c.kind, "name", c.name)
	return nil, nil
}

// isSpecRejection tells a Forbidden caused by the object (e.g. an update of an immutable field)
// from one caused by missing permissions.
func isSpecRejection(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && len(d.Causes) > 0
}

func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}
