package controllers

import (
	"context"
	"fmt"
	"slices"
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

// +kubebuilder:rbac:groups=herald.dev,resources=subscriptions,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=herald.dev,resources=subscriptions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=herald.dev,resources=subscriptions/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch

// More field indexes of Subscriptions.
const (
	// IndexTopicRefs indexes Subscriptions by the Topic objects they name (spec.topic,
	// spec.deadLetterTopic).
	IndexTopicRefs = "herald.dev/topicRefs"
	// IndexServiceRef indexes Subscriptions by spec.push.serviceRef.name.
	IndexServiceRef = "spec.push.serviceRef.name"
	// IndexSigningSecretRef indexes Subscriptions by spec.push.signingSecretRef.name.
	IndexSigningSecretRef = "spec.push.signingSecretRef.name"
)

// SubscriptionReconciler makes each Subscription real on the brokers: it waits for its Topic (and
// dead-letter Topic) to be Ready, resolves push.serviceRef to a URL and reads the signing secrets,
// creates or updates the subscription, restores it when it was changed or deleted behind the
// operator's back, refreshes its delivery statistics periodically, and deletes it (unless
// deletionPolicy is Retain) when the Subscription is deleted.
type SubscriptionReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads Secrets (never cached: the operator watches only their metadata).
	APIReader client.Reader
	// Brokers finds BrokerClusters and their brokers.
	Brokers *Brokers
	// Recorder records Events on Subscriptions.
	Recorder events.EventRecorder
	// ResyncInterval is how often each Subscription is compared with the brokers (drift,
	// statistics); zero: DefaultResyncInterval.
	ResyncInterval time.Duration
	// MaxConcurrentReconciles: zero means DefaultMaxConcurrentReconciles.
	MaxConcurrentReconciles int
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
	// AfterReconcile, if set, is called after every reconcile (instrumentation, tests).
	AfterReconcile func(req ctrl.Request, res ctrl.Result, err error)

	backoff backoff
	// applied is the spec last applied to (or found on) the brokers, per Subscription UID.
	applied sync.Map
}

// SetupWithManager registers the reconciler, its field indexes and watches.
func (r *SubscriptionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	indexes := map[string]client.IndexerFunc{
		IndexClusterRef: func(o client.Object) []string { return []string{o.(*heraldv1.Subscription).Spec.ClusterRef.Name} },
		IndexTopicRefs: func(o client.Object) []string {
			s := o.(*heraldv1.Subscription)
			if s.Spec.DeadLetterTopic != "" && s.Spec.DeadLetterTopic != s.Spec.Topic {
				return []string{s.Spec.Topic, s.Spec.DeadLetterTopic}
			}
			return []string{s.Spec.Topic}
		},
		IndexServiceRef: func(o client.Object) []string {
			if p := o.(*heraldv1.Subscription).Spec.Push; p != nil && p.ServiceRef != nil {
				return []string{p.ServiceRef.Name}
			}
			return nil
		},
		IndexSigningSecretRef: func(o client.Object) []string {
			if p := o.(*heraldv1.Subscription).Spec.Push; p != nil && p.SigningSecretRef != nil {
				return []string{p.SigningSecretRef.Name}
			}
			return nil
		},
	}
	for name, fn := range indexes {
		if err := idx.IndexField(ctx, &heraldv1.Subscription{}, name, fn); err != nil {
			return err
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("subscription").
		For(&heraldv1.Subscription{}, builder.WithPredicates(specOrMetaChanged())).
		Watches(&heraldv1.BrokerCluster{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(IndexClusterRef)),
			builder.WithPredicates(clusterChanged())).
		Watches(&heraldv1.Topic{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(IndexTopicRefs)),
			builder.WithPredicates(topicChanged())).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(IndexServiceRef)),
			builder.WithPredicates(serviceChanged())).
		// Only the Secrets' metadata is watched (and cached): a change of their data changes their
		// resourceVersion, and the reconcile reads the Secret itself.
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.mapBy(IndexSigningSecretRef))).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: defaultInt(r.MaxConcurrentReconciles, DefaultMaxConcurrentReconciles),
		}).
		Complete(r)
}

// mapBy maps an object to the Subscriptions of its namespace whose index field holds its name.
func (r *SubscriptionReconciler) mapBy(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		list := &heraldv1.SubscriptionList{}
		if err := r.Client.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			log.FromContext(ctx).Error(err, "listing Subscriptions", "index", index, "name", o.GetName())
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
		return out
	}
}

func (r *SubscriptionReconciler) now() time.Time          { return nowOr(r.Now) }
func (r *SubscriptionReconciler) interval() time.Duration { return resyncOr(r.ResyncInterval) }

// Reconcile brings the broker-side subscription to the Subscription's spec and reports it in the
// status. It writes to the API server only what changed.
func (r *SubscriptionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	if r.AfterReconcile != nil {
		defer func() { r.AfterReconcile(req, res, err) }()
	}
	return r.reconcile(ctx, req)
}

func (r *SubscriptionReconciler) reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &heraldv1.Subscription{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		if apierrors.IsNotFound(err) {
			r.backoff.reset(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cl, err := r.Brokers.cluster(ctx, s.Namespace, s.Spec.ClusterRef.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !s.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, s, cl)
	}

	status := s.Status.DeepCopy()
	status.Mode = subscriptionMode(s)
	o, drift, compared, err := r.sync(ctx, s, cl, status)
	if err != nil {
		return apiErrorResult(err)
	}
	now := r.now()
	okMsg := fmt.Sprintf("pull subscription %q on BrokerCluster %q", s.Name, s.Spec.ClusterRef.Name)
	if status.Mode == heraldv1.ModePush {
		okMsg = fmt.Sprintf("subscription %q on BrokerCluster %q pushes to %s", s.Name, s.Spec.ClusterRef.Name, status.Endpoint)
	}
	readyCondition(&status.Conditions, o, okMsg, s.Generation, now)
	driftCondition(&status.Conditions, drift, compared, s.Generation, now, r.interval())
	if o.ready {
		status.ObservedGeneration = s.Generation
	}
	if !o.ready && !isWaiting(o.reason) && conditionIsNew(s.Status.Conditions, o.reason, o.message) {
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, o.reason, "Reconcile", "%s", o.message)
	}
	if res, err, done := r.writeStatus(ctx, s, status); done {
		return res, err
	}
	return resultFor(o, req.NamespacedName, &r.backoff, r.interval()), nil
}

func (r *SubscriptionReconciler) writeStatus(ctx context.Context, s *heraldv1.Subscription, st *heraldv1.SubscriptionStatus) (ctrl.Result, error, bool) {
	if equality.Semantic.DeepEqual(*st, s.Status) {
		return ctrl.Result{}, nil, false
	}
	u := s.DeepCopy()
	u.Status = *st
	return statusUpdateResult(r.Client.Status().Update(ctx, u))
}

// resolveTopic returns the broker-side name of the Topic object name, or why it cannot be used.
func (r *SubscriptionReconciler) resolveTopic(ctx context.Context, s *heraldv1.Subscription, name, field, notReadyReason string) (string, *outcome, error) {
	t := &heraldv1.Topic{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, t); err != nil {
		if apierrors.IsNotFound(err) {
			reason := notReadyReason
			if field == "spec.topic" {
				reason = ReasonTopicNotFound
			}
			o := notReady(reason, fmt.Sprintf("%s: waiting for Topic %q in namespace %q (not found)", field, name, s.Namespace), false)
			return "", &o, nil
		}
		return "", nil, fmt.Errorf("reading Topic %s: %w", name, err)
	}
	if t.Spec.ClusterRef.Name != s.Spec.ClusterRef.Name {
		o := notReady(ReasonInvalidSpec, fmt.Sprintf("%s: Topic %q is on BrokerCluster %q, not on %q", field, name,
			t.Spec.ClusterRef.Name, s.Spec.ClusterRef.Name), false)
		return "", &o, nil
	}
	if !t.DeletionTimestamp.IsZero() {
		o := notReady(notReadyReason, fmt.Sprintf("%s: Topic %q is being deleted", field, name), false)
		return "", &o, nil
	}
	if c := meta.FindStatusCondition(t.Status.Conditions, heraldv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		why := "not reconciled yet"
		if c != nil {
			why = c.Reason + ": " + c.Message
		}
		o := notReady(notReadyReason, fmt.Sprintf("%s: waiting for Topic %q to be Ready (%s)", field, name, why), false)
		return "", &o, nil
	}
	return t.EffectiveTopicName(), nil, nil
}

// resolve resolves the Subscription's references: its Topics, its push endpoint and its signing
// secrets. status receives the endpoint.
func (r *SubscriptionReconciler) resolve(ctx context.Context, s *heraldv1.Subscription, status *heraldv1.SubscriptionStatus) (resolvedRefs, *outcome, error) {
	var refs resolvedRefs
	var o *outcome
	var err error
	if p := s.Spec.Push; p != nil {
		switch {
		case p.ServiceRef != nil:
			refs.Endpoint = serviceURL(s.Namespace, p.ServiceRef)
			status.Endpoint = refs.Endpoint
			svc := &corev1.Service{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: p.ServiceRef.Name}, svc); err != nil {
				if !apierrors.IsNotFound(err) {
					return refs, nil, fmt.Errorf("reading Service %s: %w", p.ServiceRef.Name, err)
				}
				o := notReady(ReasonServiceNotFound, fmt.Sprintf("spec.push.serviceRef: Service %q not found in namespace %q", p.ServiceRef.Name, s.Namespace), false)
				return refs, &o, nil
			}
			if msg := servicePortProblem(svc, p.ServiceRef); msg != "" {
				o := notReady(ReasonServicePortNotFound, "spec.push.serviceRef: "+msg, false)
				return refs, &o, nil
			}
		default:
			refs.Endpoint = p.URI
			status.Endpoint = refs.Endpoint
		}
	} else {
		status.Endpoint = ""
	}
	if refs.Topic, o, err = r.resolveTopic(ctx, s, s.Spec.Topic, "spec.topic", ReasonTopicNotReady); o != nil || err != nil {
		return refs, o, err
	}
	if s.Spec.DeadLetterTopic != "" {
		if refs.DeadLetterTopic, o, err = r.resolveTopic(ctx, s, s.Spec.DeadLetterTopic, "spec.deadLetterTopic", ReasonDeadLetterTopicNotReady); o != nil || err != nil {
			return refs, o, err
		}
	}
	if p := s.Spec.Push; p != nil && p.SigningSecretRef != nil {
		secret := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: p.SigningSecretRef.Name}, secret); err != nil {
			if !apierrors.IsNotFound(err) {
				return refs, nil, fmt.Errorf("reading Secret %s: %w", p.SigningSecretRef.Name, err)
			}
			o := notReady(ReasonSigningSecretNotFound, fmt.Sprintf("spec.push.signingSecretRef: Secret %q not found in namespace %q", p.SigningSecretRef.Name, s.Namespace), false)
			return refs, &o, nil
		}
		secrets, problem := signingSecrets(secret, p.SigningSecretRef)
		if problem != "" {
			o := notReady(ReasonSigningSecretInvalid, "spec.push.signingSecretRef: "+problem, false)
			return refs, &o, nil
		}
		refs.SigningSecrets = secrets
	}
	return refs, nil, nil
}

// sync checks the cluster and the references, then makes the brokers' subscription match.
// status receives the endpoint and the statistics. drift lists what was corrected; compared says
// the broker's subscription was compared with the spec. An error is an API server failure.
func (r *SubscriptionReconciler) sync(ctx context.Context, s *heraldv1.Subscription, cl *clusterState, status *heraldv1.SubscriptionStatus) (o outcome, drift []string, compared bool, err error) {
	refs, fail, err := r.resolve(ctx, s, status)
	if err != nil || fail != nil {
		if fail != nil {
			o = *fail
		}
		if cl.Reason != "" {
			// The cluster is the first thing to fix.
			o = notReady(cl.Reason, cl.Message, cl.Reason == ReasonClusterNotReady)
		}
		return o, nil, false, err
	}
	if cl.Reason != "" || cl.Broker == nil {
		return notReady(cl.Reason, cl.Message, cl.Reason == ReasonClusterNotReady), nil, false, nil
	}
	if len(s.Name) > maxBrokerObjectName {
		return notReady(ReasonInvalidName, fmt.Sprintf("the name is %d characters long; a broker-side subscription name has at most %d", len(s.Name), maxBrokerObjectName), false), nil, false, nil
	}
	desired, err := DesiredSubscriptionSpec(s, refs)
	if err != nil {
		return notReady(ReasonInvalidSpec, err.Error(), false), nil, false, nil
	}
	if err := ensureFinalizer(ctx, r.Client, s); err != nil {
		return o, nil, false, err
	}

	name := s.Name
	broker := cl.Broker
	last, known := r.applied.Load(s.UID)
	wasSynced := isSynced(s.Status.Conditions, s.Status.ObservedGeneration, s.Generation)
	create := func(what string) (outcome, bool) {
		got, _, err := broker.PutSubscription(ctx, name, desired)
		if err != nil {
			if isNotFound(err) {
				return notReady(ReasonTopicNotReady, fmt.Sprintf("%s: topic %q does not exist on BrokerCluster %q (yet)", what, desired.Topic, cl.BC.Name), true), false
			}
			reason, msg, transient := brokerFailure(err, what)
			return notReady(reason, msg, transient), false
		}
		r.applied.Store(s.UID, got.SubscriptionSpec)
		setSubscriptionStats(status, api.Subscription{})
		return outcome{ready: true}, true
	}

	got, err := broker.GetSubscription(ctx, name)
	switch {
	case isNotFound(err):
		o, ok := create(fmt.Sprintf("creating subscription %q", name))
		if !ok {
			return o, nil, false, nil
		}
		if known || wasSynced {
			drift = []string{"the subscription was deleted on the broker; re-created it (from startAt " + desired.StartAt + ")"}
			r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, EventDrifted, "Create",
				"Subscription %q was deleted on BrokerCluster %q behind the operator's back; re-created it", name, cl.BC.Name)
		} else {
			r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, EventCreated, "Create",
				"Created %s subscription %q to topic %q on BrokerCluster %q", strings.ToLower(string(status.Mode)), name, desired.Topic, cl.BC.Name)
		}
		return o, drift, true, nil
	case err != nil:
		reason, msg, transient := brokerFailure(err, fmt.Sprintf("reading subscription %q", name))
		return notReady(reason, msg, transient), nil, false, nil
	}

	setSubscriptionStats(status, got)
	isDrift := wasSynced
	if known {
		l := last.(api.SubscriptionSpec)
		isDrift = l.Topic != got.Topic || len(subscriptionDiff(l, got.SubscriptionSpec)) > 0
	}
	if got.Topic != desired.Topic {
		// A subscription's topic cannot change in place: delete and re-create it.
		if err := broker.DeleteSubscription(ctx, name); err != nil && !isNotFound(err) {
			reason, msg, transient := brokerFailure(err, fmt.Sprintf("deleting subscription %q to move it to topic %q", name, desired.Topic))
			return notReady(reason, msg, transient), nil, true, nil
		}
		o, ok := create(fmt.Sprintf("re-creating subscription %q on topic %q", name, desired.Topic))
		if !ok {
			return o, nil, true, nil
		}
		evType := corev1.EventTypeNormal
		if isDrift {
			evType = corev1.EventTypeWarning
			drift = []string{fmt.Sprintf("topic was %q on the broker; re-created the subscription on %q (from startAt %s)", got.Topic, desired.Topic, desired.StartAt)}
		}
		r.Recorder.Eventf(s, nil, evType, EventRecreated, "Update",
			"Re-created subscription %q on topic %q (it was on %q; a subscription's topic cannot change in place)", name, desired.Topic, got.Topic)
		return o, drift, true, nil
	}
	diffs := subscriptionDiff(desired, got.SubscriptionSpec)
	if len(diffs) == 0 {
		r.applied.Store(s.UID, got.SubscriptionSpec)
		return outcome{ready: true}, nil, true, nil
	}
	put := desired
	// startAt applies only when a subscription is created; the broker refuses another value.
	put.StartAt = got.StartAt
	updated, _, err := broker.PutSubscription(ctx, name, put)
	if err != nil {
		reason, msg, transient := brokerFailure(err, fmt.Sprintf("updating subscription %q", name))
		return notReady(reason, msg, transient), nil, true, nil
	}
	r.applied.Store(s.UID, updated.SubscriptionSpec)
	if isDrift {
		drift = asDrift(diffs)
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, EventDrifted, "Update",
			"Subscription %q was changed on BrokerCluster %q behind the operator's back; restored: %s", name, cl.BC.Name, strings.Join(asUpdate(diffs), ", "))
	} else {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, EventUpdated, "Update",
			"Updated subscription %q on BrokerCluster %q: %s", name, cl.BC.Name, strings.Join(asUpdate(diffs), ", "))
	}
	return outcome{ready: true}, drift, true, nil
}

func setSubscriptionStats(st *heraldv1.SubscriptionStatus, s api.Subscription) {
	var stats api.SubscriptionStats
	if s.Stats != nil {
		stats = *s.Stats
	}
	st.Backlog, st.Delivered, st.Failed, st.DeadLettered, st.LastError =
		stats.Backlog, stats.Delivered, stats.Failed, stats.DeadLettered, truncate(stats.LastError, 1024)
}

// finalize deletes the broker-side subscription (unless deletionPolicy is Retain or the cluster is
// gone) and releases the finalizer.
func (r *SubscriptionReconciler) finalize(ctx context.Context, s *heraldv1.Subscription, cl *clusterState) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(s, Finalizer) {
		return ctrl.Result{}, nil
	}
	switch {
	case cl.Gone:
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, EventReleased, "Delete",
			"%s; nothing to delete on its brokers", cl.Message)
	case s.Spec.DeletionPolicy == heraldv1.DeletionPolicyRetain:
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, EventRetained, "Delete",
			"Kept subscription %q on BrokerCluster %q (deletionPolicy Retain)", s.Name, cl.BC.Name)
	default:
		var derr error
		if cl.Broker == nil {
			derr = fmt.Errorf("%s", cl.Message)
		} else if derr = cl.Broker.DeleteSubscription(ctx, s.Name); isNotFound(derr) {
			derr = nil
		}
		if derr != nil {
			_, msg, _ := brokerFailure(derr, fmt.Sprintf("deleting subscription %q", s.Name))
			msg += " (the Subscription keeps its finalizer until this succeeds; set deletionPolicy: Retain to keep the subscription instead)"
			return r.deleteFailed(ctx, s, msg)
		}
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, EventDeleted, "Delete",
			"Deleted subscription %q from BrokerCluster %q", s.Name, cl.BC.Name)
	}
	if err := removeFinalizer(ctx, r.Client, s); err != nil {
		return apiErrorResult(err)
	}
	r.applied.Delete(s.UID)
	r.backoff.reset(client.ObjectKeyFromObject(s))
	return ctrl.Result{}, nil
}

func (r *SubscriptionReconciler) deleteFailed(ctx context.Context, s *heraldv1.Subscription, msg string) (ctrl.Result, error) {
	st := s.Status.DeepCopy()
	if conditionIsNew(st.Conditions, ReasonDeleteFailed, msg) {
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, ReasonDeleteFailed, "Delete", "%s", msg)
	}
	setCondition(&st.Conditions, heraldv1.ConditionReady, metav1.ConditionFalse, ReasonDeleteFailed, msg, s.Generation, r.now())
	if res, err, done := r.writeStatus(ctx, s, st); done {
		return res, err
	}
	return ctrl.Result{RequeueAfter: r.backoff.next(client.ObjectKeyFromObject(s))}, nil
}

// topicChanged passes the Topic changes that matter to its Subscriptions: creation, deletion,
// readiness, and its broker-side name.
func topicChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, okA := e.ObjectOld.(*heraldv1.Topic)
			b, okB := e.ObjectNew.(*heraldv1.Topic)
			return !okA || !okB || topicFingerprint(a) != topicFingerprint(b)
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func topicFingerprint(t *heraldv1.Topic) string {
	return fmt.Sprintf("%v|%s|%s|%v", meta.IsStatusConditionTrue(t.Status.Conditions, heraldv1.ConditionReady),
		t.EffectiveTopicName(), t.Spec.ClusterRef.Name, t.DeletionTimestamp.IsZero())
}

// serviceChanged passes creations, deletions and changes of a Service's ports or type.
func serviceChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		DeleteFunc: func(event.DeleteEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, okA := e.ObjectOld.(*corev1.Service)
			b, okB := e.ObjectNew.(*corev1.Service)
			return !okA || !okB || a.Spec.Type != b.Spec.Type || !slices.EqualFunc(a.Spec.Ports, b.Spec.Ports,
				func(x, y corev1.ServicePort) bool { return x.Port == y.Port && x.Protocol == y.Protocol })
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
