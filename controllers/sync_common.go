package controllers

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime/pkg/reconcile"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// Finalizer is put on Topics and Subscriptions before the operator creates them on the brokers; it
// deletes the broker-side object (unless deletionPolicy is Retain) before the Kubernetes object
// goes. It is released at once when the BrokerCluster is gone or being deleted.
const Finalizer = "herald.dev/finalizer"

// DefaultResyncInterval is how often each Topic and Subscription is compared with the brokers:
// drift is corrected and the status's statistics refreshed (written only when they changed).
const DefaultResyncInterval = 30 * time.Second

// DefaultMaxConcurrentReconciles is how many Topics, and how many Subscriptions, are reconciled at
// once (each reconcile mostly waits on the brokers and the API server).
const DefaultMaxConcurrentReconciles = 4

// Back-off of reconciles that wait for something that is not watched (a broker that is down, a
// cluster that is not ready): from backoffBase, doubling, up to backoffMax.
const (
	backoffBase = time.Second
	backoffMax  = 2 * time.Minute
)

// Condition reasons of Topics and Subscriptions.
const (
	// ReasonSynced: the broker-side object matches the spec.
	ReasonSynced = "Synced"
	// ReasonClusterNotFound: spec.clusterRef names no BrokerCluster.
	ReasonClusterNotFound = "ClusterNotFound"
	// ReasonClusterDeleting: the BrokerCluster is being deleted.
	ReasonClusterDeleting = "ClusterDeleting"
	// ReasonClusterNotReady: the BrokerCluster is not Available (or has no endpoint yet).
	ReasonClusterNotReady = "ClusterNotReady"
	// ReasonReplicationFactorTooLarge: a Topic's replicationFactor exceeds the cluster's replicas.
	ReasonReplicationFactorTooLarge = "ReplicationFactorTooLarge"
	// ReasonReplicationFactorMismatch: the broker's topic has another (immutable) replication
	// factor than spec.replicationFactor.
	ReasonReplicationFactorMismatch = "ReplicationFactorMismatch"
	// ReasonUnderReplicated (UnderReplicated=True): some partitions lack in-sync copies.
	ReasonUnderReplicated = "UnderReplicated"
	// ReasonFullyReplicated (UnderReplicated=False): every partition has every copy in sync.
	ReasonFullyReplicated = "FullyReplicated"
	// ReasonConflict: an older Topic claims the same topic name on the same cluster.
	ReasonConflict = "Conflict"
	// ReasonPartitionsCannotShrink: the broker's topic has more partitions than spec.partitions.
	ReasonPartitionsCannotShrink = "PartitionsCannotShrink"
	// ReasonInvalidName: the object's name is not a valid broker-side name.
	ReasonInvalidName = "InvalidName"
	// ReasonRejected: the broker refused the change (409).
	ReasonRejected = "Rejected"
	// ReasonBrokerUnreachable: no answer from the brokers (connection refused, timeout).
	ReasonBrokerUnreachable = "BrokerUnreachable"
	// ReasonBrokerUnavailable: the brokers answered 503 Unavailable.
	ReasonBrokerUnavailable = "BrokerUnavailable"
	// ReasonBrokerError: the brokers answered with another error.
	ReasonBrokerError = "BrokerError"
	// ReasonDeleteFailed: the broker-side object could not be deleted (the finalizer waits).
	ReasonDeleteFailed = "DeleteFailed"
	// ReasonTopicNotFound: a Subscription's spec.topic names no Topic.
	ReasonTopicNotFound = "TopicNotFound"
	// ReasonTopicNotReady: a Subscription's Topic is not Ready (yet).
	ReasonTopicNotReady = "TopicNotReady"
	// ReasonDeadLetterTopicNotReady: a Subscription's dead-letter Topic is missing or not Ready.
	ReasonDeadLetterTopicNotReady = "DeadLetterTopicNotReady"
	// ReasonServiceNotFound: push.serviceRef names no Service.
	ReasonServiceNotFound = "ServiceNotFound"
	// ReasonServicePortNotFound: the Service has no port push.serviceRef.port.
	ReasonServicePortNotFound = "ServicePortNotFound"
	// ReasonSigningSecretNotFound: push.signingSecretRef names no Secret.
	ReasonSigningSecretNotFound = "SigningSecretNotFound"
	// ReasonSigningSecretInvalid: the Secret lacks the key, or holds no usable secret.
	ReasonSigningSecretInvalid = "SigningSecretInvalid"
	// ReasonCorrected (Drifted=True): the operator restored a broker-side object that was changed
	// or deleted behind its back.
	ReasonCorrected = "Corrected"
	// ReasonInSync (Drifted=False): the last resync found the broker as the spec says.
	ReasonInSync = "InSync"
)

// Event reasons of Topics and Subscriptions (besides Created, Updated and the failure reasons).
const (
	EventDeleted   = "Deleted"
	EventRetained  = "Retained"
	EventDrifted   = "Drifted"
	EventRecreated = "Recreated"
	EventReleased  = "Released"
)

// outcome is how far a reconcile got: Ready, or why not.
type outcome struct {
	ready   bool
	reason  string
	message string
	// transient failures are retried with back-off; others wait for a watched change (or the
	// periodic resync).
	transient bool
}

func notReady(reason, message string, transient bool) outcome {
	return outcome{reason: reason, message: message, transient: transient}
}

// backoff hands out growing delays per object for transient failures, and forgets an object once
// it succeeds.
type backoff struct {
	once sync.Once
	rl   workqueue.TypedRateLimiter[types.NamespacedName]
}

func (b *backoff) limiter() workqueue.TypedRateLimiter[types.NamespacedName] {
	b.once.Do(func() {
		b.rl = workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](backoffBase, backoffMax)
	})
	return b.rl
}

func (b *backoff) next(key types.NamespacedName) time.Duration { return b.limiter().When(key) }
func (b *backoff) reset(key types.NamespacedName)              { b.limiter().Forget(key) }

// jittered spreads periodic resyncs of many objects: d ± 10%.
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	spread := int64(d) / 5
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread))
}

// setCondition sets a condition; its lastTransitionTime changes only when its status does.
func setCondition(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, msg string, gen int64, now time.Time) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(msg, 32768), ObservedGeneration: gen,
		LastTransitionTime: metav1.NewTime(now.Truncate(time.Second)),
	})
}

// readyCondition sets Ready from an outcome.
func readyCondition(conds *[]metav1.Condition, o outcome, okMessage string, gen int64, now time.Time) {
	if o.ready {
		setCondition(conds, heraldv1.ConditionReady, metav1.ConditionTrue, ReasonSynced, okMessage, gen, now)
		return
	}
	setCondition(conds, heraldv1.ConditionReady, metav1.ConditionFalse, o.reason, o.message, gen, now)
}

// driftCondition maintains Drifted: True with what was corrected when corrected is not empty; back
// to False once a resync at least one resync interval later finds nothing to correct. A reconcile
// that could not compare (the broker unreachable) leaves it as it is.
func driftCondition(conds *[]metav1.Condition, corrected []string, compared bool, gen int64, now time.Time, interval time.Duration) {
	prev := meta.FindStatusCondition(*conds, heraldv1.ConditionDrifted)
	switch {
	case len(corrected) > 0:
		setCondition(conds, heraldv1.ConditionDrifted, metav1.ConditionTrue, ReasonCorrected,
			"changed on the broker behind the operator's back, restored: "+strings.Join(corrected, "; "), gen, now)
	case !compared:
	case prev == nil:
		setCondition(conds, heraldv1.ConditionDrifted, metav1.ConditionFalse, ReasonInSync, "the broker matches the spec", gen, now)
	case prev.Status == metav1.ConditionTrue && now.Sub(prev.LastTransitionTime.Time) >= interval:
		setCondition(conds, heraldv1.ConditionDrifted, metav1.ConditionFalse, ReasonInSync,
			fmt.Sprintf("the broker matches the spec (last correction at %s: %s)",
				prev.LastTransitionTime.UTC().Format(time.RFC3339), strings.TrimPrefix(prev.Message, "changed on the broker behind the operator's back, restored: ")), gen, now)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// isWaiting reports whether a not-Ready reason is a wait for something that is expected to come
// (a cluster, a Topic): the condition says so, without an Event (thousands of objects applied at
// once would otherwise flood the namespace with them).
func isWaiting(reason string) bool {
	switch reason {
	case ReasonClusterNotFound, ReasonClusterNotReady, ReasonClusterDeleting, ReasonTopicNotFound, ReasonTopicNotReady,
		ReasonDeadLetterTopicNotReady:
		return true
	}
	return false
}

// conditionIsNew reports whether the Ready condition does not already say reason and message, so
// a failure that persists over reconciles is recorded as one Event, not one per reconcile.
func conditionIsNew(conds []metav1.Condition, reason, message string) bool {
	c := meta.FindStatusCondition(conds, heraldv1.ConditionReady)
	return c == nil || c.Reason != reason || c.Message != message
}

// resultFor turns an outcome into when to look again: the periodic resync, or back-off.
func resultFor(o outcome, key types.NamespacedName, bo *backoff, interval time.Duration) ctrl.Result {
	if o.transient {
		return ctrl.Result{RequeueAfter: bo.next(key)}
	}
	bo.reset(key)
	return ctrl.Result{RequeueAfter: jittered(interval)}
}

// nowOr is now() of the sync reconcilers: their clock, or the real one.
func nowOr(now func() time.Time) time.Time {
	if now != nil {
		return now()
	}
	return time.Now()
}

// resyncOr is their resync interval, or DefaultResyncInterval when unset.
func resyncOr(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return DefaultResyncInterval
}
