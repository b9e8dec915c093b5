package controllers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
)

// +kubebuilder:rbac:groups=herald.dev,resources=topics,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=herald.dev,resources=topics/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=herald.dev,resources=topics/finalizers,verbs=update

// TopicReconciler makes each Topic real on the brokers of its BrokerCluster: it creates the topic,
// grows its partitions and applies retention, TTL and size changes, restores it when it was
// changed or deleted on the brokers behind the operator's back, refreshes its statistics
// periodically, and deletes it (unless deletionPolicy is Retain) when the Topic is deleted.
type TopicReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// Brokers finds BrokerClusters and their brokers.
	Brokers *Brokers
	// Recorder records Events on Topics.
	Recorder events.EventRecorder
	// ResyncInterval is how often each Topic is compared with the brokers (drift, statistics);
	// zero: DefaultResyncInterval.
	ResyncInterval time.Duration
	// MaxConcurrentReconciles: zero means DefaultMaxConcurrentReconciles.
	MaxConcurrentReconciles int
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
	// AfterReconcile, if set, is called after every reconcile (instrumentation, tests).
	AfterReconcile func(req ctrl.Request, res ctrl.Result, err error)

	backoff backoff
	// applied is the spec last applied to (or found on) the brokers, per Topic UID: a broker that
	// differs from it was changed behind the operator's back (drift), not by a spec change.
	applied sync.Map
}

// Field indexes (on the manager's cache) the watches map changes with.
const (
	// IndexClusterRef indexes Topics and Subscriptions by spec.clusterRef.name.
	IndexClusterRef = "spec.clusterRef.name"
	// IndexTopicKey indexes Topics by "<clusterRef>/<effective topic name>" (name conflicts).
	IndexTopicKey = "herald.dev/topicKey"
)

func topicKey(t *heraldv1.Topic) string { return t.Spec.ClusterRef.Name + "/" + t.EffectiveTopicName() }

// SetupWithManager registers the reconciler, its field indexes and watches.
func (r *TopicReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &heraldv1.Topic{}, IndexClusterRef, func(o client.Object) []string {
		return []string{o.(*heraldv1.Topic).Spec.ClusterRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &heraldv1.Topic{}, IndexTopicKey, func(o client.Object) []string {
		return []string{topicKey(o.(*heraldv1.Topic))}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("topic").
		For(&heraldv1.Topic{}, builder.WithPredicates(specOrMetaChanged())).
		Watches(&heraldv1.BrokerCluster{}, handler.EnqueueRequestsFromMapFunc(r.topicsOfCluster),
			builder.WithPredicates(clusterChanged())).
		// A Topic that goes away (or starts to) may end another's name conflict.
		Watches(&heraldv1.Topic{}, handler.EnqueueRequestsFromMapFunc(r.peers), builder.WithPredicates(createdOrDeleted())).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: defaultInt(r.MaxConcurrentReconciles, DefaultMaxConcurrentReconciles),
		}).
		Complete(r)
}

func (r *TopicReconciler) topicsOfCluster(ctx context.Context, bc client.Object) []reconcile.Request {
	list := &heraldv1.TopicList{}
	if err := r.Client.List(ctx, list, client.InNamespace(bc.GetNamespace()), client.MatchingFields{IndexClusterRef: bc.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "listing the Topics of a BrokerCluster", "brokerCluster", bc.GetName())
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

func (r *TopicReconciler) peers(ctx context.Context, o client.Object) []reconcile.Request {
	t := o.(*heraldv1.Topic)
	list := &heraldv1.TopicList{}
	if err := r.Client.List(ctx, list, client.InNamespace(t.Namespace), client.MatchingFields{IndexTopicKey: topicKey(t)}); err != nil {
		log.FromContext(ctx).Error(err, "listing Topics of one topic name", "topic", t.Name)
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if list.Items[i].UID != t.UID {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

func (r *TopicReconciler) now() time.Time          { return nowOr(r.Now) }
func (r *TopicReconciler) interval() time.Duration { return resyncOr(r.ResyncInterval) }

// Reconcile brings the broker-side topic to the Topic's spec and reports it in the status. It
// writes to the API server only what changed.
func (r *TopicReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	if r.AfterReconcile != nil {
		defer func() { r.AfterReconcile(req, res, err) }()
	}
	return r.reconcile(ctx, req)
}

func (r *TopicReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	t := &heraldv1.Topic{}
	if err := r.Client.Get(ctx, req.NamespacedName, t); err != nil {
		if apierrors.IsNotFound(err) {
			r.backoff.reset(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cl, err := r.Brokers.cluster(ctx, t.Namespace, t.Spec.ClusterRef.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !t.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, t, cl)
	}

	status := t.Status.DeepCopy()
	status.TopicName = t.EffectiveTopicName()
	o, drift, compared, err := r.sync(ctx, t, cl, status)
	if err != nil {
		return apiErrorResult(err)
	}
	now := r.now()
	readyCondition(&status.Conditions, o, fmt.Sprintf("topic %q has %d partitions on BrokerCluster %q",
		status.TopicName, status.Partitions, t.Spec.ClusterRef.Name), t.Generation, now)
	driftCondition(&status.Conditions, drift, compared, t.Generation, now, r.interval())
	if compared || o.reason == ReasonReplicationFactorMismatch {
		// The topic exists on the brokers.
		r.replicationCondition(ctx, cl, status, t.Generation, now)
	}
	if o.ready {
		status.ObservedGeneration = t.Generation
	}
	if !o.ready && !isWaiting(o.reason) && conditionIsNew(t.Status.Conditions, o.reason, o.message) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, o.reason, "Reconcile", "%s", o.message)
	}
	if res, err, done := r.writeStatus(ctx, t, status); done {
		return res, err
	}
	return resultFor(o, req.NamespacedName, &r.backoff, r.interval()), nil
}

// replicationCondition sets UnderReplicated and status.underReplicatedPartitions from the
// cluster's view of the topic's partitions (shared by the cluster's Topics for a few seconds). A
// view that cannot be had, or that does not show the topic yet, leaves them as they are.
func (r *TopicReconciler) replicationCondition(ctx context.Context, cl *clusterState, status *heraldv1.TopicStatus, gen int64, now time.Time) {
	if cl.Cluster == nil {
		return
	}
	// The topic exists on the brokers since before this moment.
	exists := time.Now()
	view, err := cl.Cluster.CachedView(ctx, r.Brokers.viewTTL(), time.Time{})
	if err == nil && partitionsIn(view, status.TopicName) < int(status.Partitions) {
		// A view older than the topic (or than its last partitions): ask for a newer one, so a
		// new Topic's status is complete at once rather than one resync later.
		view, err = cl.Cluster.CachedView(ctx, r.Brokers.viewTTL(), exists)
	}
	if err != nil {
		log.FromContext(ctx).V(1).Info("reading the cluster's replication state", "err", err)
		return
	}
	count, msg, found := underReplication(view, status.TopicName, int(status.ReplicationFactor))
	if !found {
		return
	}
	status.UnderReplicatedPartitions = count
	if count > 0 {
		setCondition(&status.Conditions, heraldv1.ConditionUnderReplicated, metav1.ConditionTrue, ReasonUnderReplicated, msg, gen, now)
	} else {
		setCondition(&status.Conditions, heraldv1.ConditionUnderReplicated, metav1.ConditionFalse, ReasonFullyReplicated, msg, gen, now)
	}
}

// writeStatus updates the status subresource if it changed. done reports a result to return at
// once (a lost race or an error).
func (r *TopicReconciler) writeStatus(ctx context.Context, t *heraldv1.Topic, st *heraldv1.TopicStatus) (ctrl.Result, error, bool) {
	if equality.Semantic.DeepEqual(*st, t.Status) {
		return ctrl.Result{}, nil, false
	}
	u := t.DeepCopy()
	u.Status = *st
	return statusUpdateResult(r.Client.Status().Update(ctx, u))
}

// sync checks the cluster, the spec and name conflicts, then makes the brokers' topic match.
// status receives partitions and statistics. drift lists what was corrected; compared says the
// broker's topic was compared with the spec. An error is an API server failure.
func (r *TopicReconciler) sync(ctx context.Context, t *heraldv1.Topic, cl *clusterState, status *heraldv1.TopicStatus) (o outcome, drift []string, compared bool, err error) {
	if cl.Reason != "" || cl.Broker == nil {
		return notReady(cl.Reason, cl.Message, cl.Reason == ReasonClusterNotReady), nil, false, nil
	}
	// The brokers there are: spec.replicas, or more while a scale-down drains them.
	if replicas := max(*withDefaults(cl.BC.Spec).Replicas, cl.BC.Status.Replicas); t.Spec.ReplicationFactor > replicas {
		return notReady(ReasonReplicationFactorTooLarge, fmt.Sprintf(
			"spec.replicationFactor is %d but BrokerCluster %q has %d replicas; scale the cluster to at least %d brokers or create a Topic with a smaller replicationFactor",
			t.Spec.ReplicationFactor, cl.BC.Name, replicas, t.Spec.ReplicationFactor), false), nil, false, nil
	}
	winner, err := r.olderClaimant(ctx, t)
	if err != nil {
		return o, nil, false, err
	}
	if winner != nil {
		msg := fmt.Sprintf("Topic %q, created earlier (%s), already claims topic name %q on BrokerCluster %q",
			winner.Name, winner.CreationTimestamp.UTC().Format(time.RFC3339), t.EffectiveTopicName(), t.Spec.ClusterRef.Name)
		if !winner.DeletionTimestamp.IsZero() {
			msg += "; it is being deleted"
		}
		return notReady(ReasonConflict, msg, false), nil, false, nil
	}
	desired, err := DesiredTopicSpec(t, cl.BC)
	if err != nil {
		return notReady(ReasonInvalidSpec, err.Error(), false), nil, false, nil
	}
	if err := ensureFinalizer(ctx, r.Client, t); err != nil {
		return o, nil, false, err
	}

	name := t.EffectiveTopicName()
	broker := cl.Broker
	last, known := r.applied.Load(t.UID)
	wasSynced := isSynced(t.Status.Conditions, t.Status.ObservedGeneration, t.Generation)
	got, err := broker.GetTopic(ctx, name)
	switch {
	case isNotFound(err):
		created, _, err := broker.PutTopic(ctx, name, desired)
		if err != nil {
			reason, msg, transient := brokerFailure(err, fmt.Sprintf("creating topic %q", name))
			return notReady(reason, msg, transient), nil, false, nil
		}
		r.applied.Store(t.UID, desired)
		status.Partitions = int32(desired.Partitions)
		status.ReplicationFactor = int32(created.ReplicationFactor)
		status.Stats = &heraldv1.TopicStats{}
		if known || wasSynced {
			drift = []string{"the topic was deleted on the broker; re-created it (its messages are lost)"}
			r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, EventDrifted, "Create",
				"Topic %q was deleted on BrokerCluster %q behind the operator's back; re-created it", name, cl.BC.Name)
		} else {
			r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventCreated, "Create",
				"Created topic %q with %d partitions on BrokerCluster %q", name, desired.Partitions, cl.BC.Name)
		}
		return outcome{ready: true}, drift, true, nil
	case err != nil:
		reason, msg, transient := brokerFailure(err, fmt.Sprintf("reading topic %q", name))
		return notReady(reason, msg, transient), nil, false, nil
	}

	status.Partitions = int32(got.Partitions)
	status.ReplicationFactor = int32(got.ReplicationFactor)
	status.Stats = topicStats(got)
	if msg := replicationFactorMismatch(name, cl.BC.Name, desired, got.TopicSpec); msg != "" {
		return notReady(ReasonReplicationFactorMismatch, msg, false), nil, false, nil
	}
	diffs := topicDiff(desired, got.TopicSpec)
	if len(diffs) == 0 {
		r.applied.Store(t.UID, desired)
		return outcome{ready: true}, nil, true, nil
	}
	put := desired
	shrink := got.Partitions > desired.Partitions
	if shrink {
		// Partitions never shrink: apply everything else.
		put.Partitions = got.Partitions
	}
	isDrift := wasSynced
	if known {
		isDrift = len(topicDiff(last.(api.TopicSpec), got.TopicSpec)) > 0
	}
	if rest := topicDiff(put, got.TopicSpec); len(rest) > 0 {
		if _, _, err := broker.PutTopic(ctx, name, put); err != nil {
			reason, msg, transient := brokerFailure(err, fmt.Sprintf("updating topic %q", name))
			return notReady(reason, msg, transient), nil, true, nil
		}
		r.applied.Store(t.UID, put)
		status.Partitions = int32(put.Partitions)
		if isDrift {
			drift = asDrift(rest)
			r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, EventDrifted, "Update",
				"Topic %q was changed on BrokerCluster %q behind the operator's back; restored: %s", name, cl.BC.Name, strings.Join(asUpdate(rest), ", "))
		} else {
			r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventUpdated, "Update",
				"Updated topic %q on BrokerCluster %q: %s", name, cl.BC.Name, strings.Join(asUpdate(rest), ", "))
		}
	}
	if shrink {
		return notReady(ReasonPartitionsCannotShrink, fmt.Sprintf(
			"topic %q has %d partitions on BrokerCluster %q, more than spec.partitions (%d); partitions never shrink: set spec.partitions to at least %d",
			name, got.Partitions, cl.BC.Name, desired.Partitions, got.Partitions), false), drift, true, nil
	}
	return outcome{ready: true}, drift, true, nil
}

// olderClaimant returns the oldest other Topic of the namespace that claims t's topic name on t's
// cluster, if it is older than t (nil otherwise).
func (r *TopicReconciler) olderClaimant(ctx context.Context, t *heraldv1.Topic) (*heraldv1.Topic, error) {
	list := &heraldv1.TopicList{}
	if err := r.Client.List(ctx, list, client.InNamespace(t.Namespace), client.MatchingFields{IndexTopicKey: topicKey(t)}); err != nil {
		return nil, fmt.Errorf("listing Topics: %w", err)
	}
	var winner *heraldv1.Topic
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == t.UID || topicKey(o) != topicKey(t) || !olderThan(o, t) {
			continue
		}
		if winner == nil || olderThan(o, winner) {
			winner = o
		}
	}
	return winner, nil
}

// olderThan orders the claims of Topics on one topic name: by creation time; within one second
// (timestamps have whole seconds), the Topic that already holds the finalizer (it created or
// adopted the topic) comes first, then the name decides.
func olderThan(a, b client.Object) bool {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	if fa, fb := controllerutil.ContainsFinalizer(a, Finalizer), controllerutil.ContainsFinalizer(b, Finalizer); fa != fb {
		return fa
	}
	return a.GetName() < b.GetName()
}

// finalize deletes the broker-side topic (unless deletionPolicy is Retain, the cluster is gone, or
// another Topic claims the name) and releases the finalizer.
func (r *TopicReconciler) finalize(ctx context.Context, t *heraldv1.Topic, cl *clusterState) (ctrl.Result, error) {
	key := client.ObjectKeyFromObject(t)
	if !controllerutil.ContainsFinalizer(t, Finalizer) {
		return ctrl.Result{}, nil
	}
	name := t.EffectiveTopicName()
	switch {
	case cl.Gone:
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventReleased, "Delete",
			"%s; nothing to delete on its brokers", cl.Message)
	case t.Spec.DeletionPolicy == heraldv1.DeletionPolicyRetain:
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventRetained, "Delete",
			"Kept topic %q on BrokerCluster %q (deletionPolicy Retain)", name, cl.BC.Name)
	default:
		other, err := r.otherClaimant(ctx, t)
		if err != nil {
			return ctrl.Result{}, err
		}
		if other != "" {
			r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventRetained, "Delete",
				"Kept topic %q on BrokerCluster %q: Topic %q claims it too", name, cl.BC.Name, other)
			break
		}
		var derr error
		if cl.Broker == nil {
			derr = fmt.Errorf("%s", cl.Message)
		} else if derr = cl.Broker.DeleteTopic(ctx, name); isNotFound(derr) {
			derr = nil
		}
		if derr != nil {
			_, msg, _ := brokerFailure(derr, fmt.Sprintf("deleting topic %q", name))
			msg += " (the Topic keeps its finalizer until this succeeds; set deletionPolicy: Retain to keep the topic instead)"
			return r.deleteFailed(ctx, t, msg)
		}
		r.Recorder.Eventf(t, nil, corev1.EventTypeNormal, EventDeleted, "Delete",
			"Deleted topic %q from BrokerCluster %q", name, cl.BC.Name)
	}
	if err := removeFinalizer(ctx, r.Client, t); err != nil {
		return apiErrorResult(err)
	}
	r.applied.Delete(t.UID)
	r.backoff.reset(key)
	return ctrl.Result{}, nil
}

// otherClaimant names another Topic, not being deleted, that claims t's topic name.
func (r *TopicReconciler) otherClaimant(ctx context.Context, t *heraldv1.Topic) (string, error) {
	list := &heraldv1.TopicList{}
	if err := r.Client.List(ctx, list, client.InNamespace(t.Namespace), client.MatchingFields{IndexTopicKey: topicKey(t)}); err != nil {
		return "", fmt.Errorf("listing Topics: %w", err)
	}
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID != t.UID && o.DeletionTimestamp.IsZero() && topicKey(o) == topicKey(t) {
			return o.Name, nil
		}
	}
	return "", nil
}

func (r *TopicReconciler) deleteFailed(ctx context.Context, t *heraldv1.Topic, msg string) (ctrl.Result, error) {
	st := t.Status.DeepCopy()
	if conditionIsNew(st.Conditions, ReasonDeleteFailed, msg) {
		r.Recorder.Eventf(t, nil, corev1.EventTypeWarning, ReasonDeleteFailed, "Delete", "%s", msg)
	}
	setCondition(&st.Conditions, heraldv1.ConditionReady, metav1.ConditionFalse, ReasonDeleteFailed, msg, t.Generation, r.now())
	if res, err, done := r.writeStatus(ctx, t, st); done {
		return res, err
	}
	return ctrl.Result{RequeueAfter: r.backoff.next(client.ObjectKeyFromObject(t))}, nil
}

// isSynced reports whether the object was Ready for its current generation: the broker then held
// what the spec says, so a difference found now is drift.
func isSynced(conds []metav1.Condition, observed, generation int64) bool {
	return meta.IsStatusConditionTrue(conds, heraldv1.ConditionReady) && observed == generation
}

// ensureFinalizer adds Finalizer to obj (one write, the first time).
func ensureFinalizer(ctx context.Context, c client.Client, obj client.Object) error {
	if controllerutil.ContainsFinalizer(obj, Finalizer) {
		return nil
	}
	orig := obj.DeepCopyObject().(client.Object)
	controllerutil.AddFinalizer(obj, Finalizer)
	return c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// removeFinalizer removes Finalizer from obj.
func removeFinalizer(ctx context.Context, c client.Client, obj client.Object) error {
	orig := obj.DeepCopyObject().(client.Object)
	if !controllerutil.RemoveFinalizer(obj, Finalizer) {
		return nil
	}
	err := c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// apiErrorResult turns a failed API server write into a result: a lost optimistic-concurrency
// race is retried soon (the watch brings the newer object), anything else with back-off.
func apiErrorResult(err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	if apierrors.IsNotFound(err) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, err
}

func statusUpdateResult(err error) (ctrl.Result, error, bool) {
	if err == nil {
		return ctrl.Result{}, nil, false
	}
	res, err := apiErrorResult(err)
	if err != nil {
		err = fmt.Errorf("updating the status: %w", err)
	}
	return res, err, true
}

func defaultInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// specOrMetaChanged passes events of the reconciled kind except updates of the status alone: the
// operator's own status writes need no reconcile.
func specOrMetaChanged() predicate.Predicate {
	return predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{},
		predicate.LabelChangedPredicate{}, predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return !equality.Semantic.DeepEqual(e.ObjectOld.GetFinalizers(), e.ObjectNew.GetFinalizers()) ||
					!e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp())
			},
			CreateFunc:  func(event.CreateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})
}

// createdOrDeleted passes creations, deletions, and the start of a deletion.
func createdOrDeleted() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

// clusterChanged passes the BrokerCluster changes that matter to its Topics and Subscriptions:
// creation, deletion, readiness, endpoint, replicas and topic defaults.
func clusterChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, okA := e.ObjectOld.(*heraldv1.BrokerCluster)
			b, okB := e.ObjectNew.(*heraldv1.BrokerCluster)
			return !okA || !okB || clusterFingerprint(a) != clusterFingerprint(b)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func clusterFingerprint(bc *heraldv1.BrokerCluster) string {
	spec := withDefaults(bc.Spec)
	avail := "?"
	if c := meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionAvailable); c != nil {
		avail = string(c.Status)
	}
	return fmt.Sprintf("%s|%s|%d|%s|%d|%d|%v", avail, bc.Status.Endpoint, *spec.Replicas, *spec.Config.Retention.MaxAge,
		*spec.Config.Retention.MaxBytes, *spec.Config.MaxMessageBytes, bc.DeletionTimestamp.IsZero())
}
