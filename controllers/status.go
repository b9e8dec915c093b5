package controllers

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// Condition reasons of a BrokerCluster.
const (
	ReasonAllReplicasReady        = "AllReplicasReady"
	ReasonQuorumReady             = "QuorumReady"
	ReasonQuorumNotReady          = "QuorumNotReady"
	ReasonScaledToZero            = "ScaledToZero"
	ReasonCreating                = "Creating"
	ReasonScaling                 = "Scaling"
	ReasonRollingUpdate           = "RollingUpdate"
	ReasonWaitingForReadiness     = "WaitingForReadiness"
	ReasonRolloutComplete         = "RolloutComplete"
	ReasonAsExpected              = "AsExpected"
	ReasonProgressDeadlineExceded = "ProgressDeadlineExceeded"
	// Spec problems that the CRD's validation cannot catch.
	ReasonInvalidSpec       = "InvalidSpec"
	ReasonTLSSecretNotFound = "TLSSecretNotFound"
	ReasonTLSSecretInvalid  = "TLSSecretInvalid"
	ReasonResourceConflict  = "ResourceConflict"
	// A failure talking to the API server; retried with back-off.
	ReasonReconcileError = "ReconcileError"
)

// DefaultProgressDeadline is how long a rollout may go without all brokers ready before the
// BrokerCluster reports Degraded (reason ProgressDeadlineExceeded).
const DefaultProgressDeadline = 10 * time.Minute

// failure is why a reconcile could not build or apply the BrokerCluster's children.
type failure struct {
	Reason  string
	Message string
}

func (f *failure) Error() string { return f.Reason + ": " + f.Message }

// statusInput is everything the status of a BrokerCluster is computed from.
type statusInput struct {
	BC *heraldv1.BrokerCluster
	// StatefulSet as last observed; nil when it does not exist (yet).
	StatefulSet *appsv1.StatefulSet
	// Failure of this reconcile, nil when every child was applied.
	Failure *failure
	// Image the brokers should run.
	Image            string
	Now              time.Time
	ProgressDeadline time.Duration
	// Drain of brokers before a scale-down; nil when none.
	Drain *drainReport
	// Rebalancing, when not empty, says how partitions move between the brokers.
	Rebalancing string
}

// computeStatus returns the BrokerCluster's new status and, while a rollout is in progress, when
// to look again for the progress deadline. Conditions keep their lastTransitionTime while their
// status does not change, so computing the status twice from the same observations gives the
// same result (and no write).
func computeStatus(in statusInput) (heraldv1.BrokerClusterStatus, time.Duration) {
	bc := in.BC
	st := *bc.Status.DeepCopy()
	gen := bc.Generation
	set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
			// Used only when the status changes; the API keeps whole seconds.
			LastTransitionTime: metav1.NewTime(in.Now.Truncate(time.Second)),
		})
	}
	prevPhase := st.Phase
	spec := withDefaults(bc.Spec)
	desired := *spec.Replicas
	st.Endpoint = Endpoint(bc)

	var current, ready, updated int32
	rolledOut := false
	if sts := in.StatefulSet; sts != nil {
		current, ready, updated = sts.Status.Replicas, sts.Status.ReadyReplicas, sts.Status.UpdatedReplicas
		observed := sts.Status.ObservedGeneration >= sts.Generation
		sameRevision := sts.Status.UpdateRevision == sts.Status.CurrentRevision || desired == 0
		rolledOut = observed && sameRevision && current == desired && updated == desired
	}
	st.Replicas, st.ReadyReplicas = current, ready
	drain := in.Drain
	st.Drain = nil
	if drain != nil && drain.Status != nil {
		st.Drain = drain.Status.DeepCopy()
	}
	holding := drain != nil && drain.Holding

	// Available: a majority of the brokers is ready (the Raft group has a quorum). While brokers
	// are drained before a scale-down, they are still members.
	members := desired
	if holding {
		members = max(desired, drain.From)
	}
	quorum := members/2 + 1
	switch {
	case desired == 0:
		set(heraldv1.ConditionAvailable, metav1.ConditionFalse, ReasonScaledToZero, "spec.replicas is 0")
	case ready >= quorum:
		set(heraldv1.ConditionAvailable, metav1.ConditionTrue, ReasonQuorumReady,
			fmt.Sprintf("%d of %d brokers ready (quorum %d)", ready, members, quorum))
	default:
		set(heraldv1.ConditionAvailable, metav1.ConditionFalse, ReasonQuorumNotReady,
			fmt.Sprintf("%d of %d brokers ready (quorum %d)", ready, members, quorum))
	}

	var requeue time.Duration
	if f := in.Failure; f != nil {
		set(heraldv1.ConditionDegraded, metav1.ConditionTrue, f.Reason, f.Message)
		set(heraldv1.ConditionProgressing, metav1.ConditionFalse, f.Reason, "cannot apply the spec: "+f.Message)
		set(heraldv1.ConditionReady, metav1.ConditionFalse, f.Reason, f.Message)
		st.Phase = heraldv1.PhaseFailed
		// observedGeneration moves only after a fully successful reconcile.
		return st, 0
	}
	if drain != nil && drain.SpecBlocked {
		// The scale-down cannot be done until the spec (or the topics) change.
		msg := drain.Status.BlockedReason
		set(heraldv1.ConditionDegraded, metav1.ConditionTrue, ReasonDrainBlocked, msg)
		set(heraldv1.ConditionProgressing, metav1.ConditionFalse, ReasonDrainBlocked, msg)
		set(heraldv1.ConditionReady, metav1.ConditionFalse, ReasonDrainBlocked, msg)
		st.Phase = heraldv1.PhaseFailed
		if st.Version == "" {
			st.Version = ImageVersion(in.Image)
		}
		return st, 0
	}

	allReady := rolledOut && ready == desired
	if allReady {
		switch {
		case drain != nil && drain.Status != nil && len(drain.Status.Members) > 0:
			// Members without a pod (their pods went without a drain: a stop, say) leave the
			// cluster.
			set(heraldv1.ConditionProgressing, metav1.ConditionTrue, ReasonDraining, drainMessage(drain))
		case in.Rebalancing != "":
			set(heraldv1.ConditionProgressing, metav1.ConditionTrue, ReasonRebalancing, in.Rebalancing)
		default:
			set(heraldv1.ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete,
				fmt.Sprintf("%d brokers run the current spec", desired))
		}
		set(heraldv1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "")
		if desired == 0 {
			set(heraldv1.ConditionReady, metav1.ConditionFalse, ReasonScaledToZero, "spec.replicas is 0")
			st.Phase = heraldv1.PhaseStopped
		} else {
			set(heraldv1.ConditionReady, metav1.ConditionTrue, ReasonAllReplicasReady,
				fmt.Sprintf("%d of %d brokers ready", ready, desired))
			st.Phase = heraldv1.PhaseRunning
		}
		st.Version = ImageVersion(in.Image)
	} else {
		reason, msg := progressReason(in.StatefulSet, desired, current, ready, updated)
		if holding {
			reason, msg = ReasonDraining, drainMessage(drain)
			if drain.Status.BlockedReason != "" {
				reason = ReasonDrainBlocked
			}
		}
		set(heraldv1.ConditionProgressing, metav1.ConditionTrue, reason, msg)
		since := meta.FindStatusCondition(st.Conditions, heraldv1.ConditionProgressing).LastTransitionTime.Time
		deadline := in.ProgressDeadline
		if deadline <= 0 {
			deadline = DefaultProgressDeadline
		}
		// A drain that progresses takes as long as moving the data takes.
		exceeded := reason != ReasonDraining && !in.Now.Before(since.Add(deadline))
		if exceeded {
			set(heraldv1.ConditionDegraded, metav1.ConditionTrue, ReasonProgressDeadlineExceded,
				fmt.Sprintf("%d of %d brokers ready, %d of %d updated, after %s", ready, desired, updated, desired, deadline))
			set(heraldv1.ConditionReady, metav1.ConditionFalse, ReasonProgressDeadlineExceded, msg)
		} else {
			set(heraldv1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "")
			set(heraldv1.ConditionReady, metav1.ConditionFalse, reason, msg)
			requeue = since.Add(deadline).Sub(in.Now)
		}
		switch {
		case desired == 0:
			st.Phase = heraldv1.PhaseStopped
		case exceeded:
			st.Phase = heraldv1.PhaseDegraded
		case prevPhase == "" || prevPhase == heraldv1.PhaseCreating || (prevPhase == heraldv1.PhaseFailed && ready == 0):
			// Never ran yet.
			st.Phase = heraldv1.PhaseCreating
		case reason == ReasonWaitingForReadiness && !podsStarting(bc, prevPhase, desired, ready):
			// Every pod runs the current spec, yet some are not ready: a broker crashed or hangs.
			st.Phase = heraldv1.PhaseDegraded
		default:
			st.Phase = heraldv1.PhaseUpdating
		}
		if st.Version == "" {
			st.Version = ImageVersion(in.Image)
		}
	}
	st.ObservedGeneration = gen
	return st, requeue
}

// podsStarting tells pods that are not ready yet because they are new (a scale-up, or the
// pods a rollout just replaced) from pods that were ready and are not any more: the last status
// counted fewer pods than wanted, or the cluster was already updating and no pod lost its
// readiness since. A pod that never gets ready is caught by the progress deadline.
func podsStarting(bc *heraldv1.BrokerCluster, prevPhase heraldv1.BrokerClusterPhase, desired, ready int32) bool {
	return bc.Status.Replicas < desired || (prevPhase == heraldv1.PhaseUpdating && ready >= bc.Status.ReadyReplicas)
}

// drainMessage describes a drain for the Progressing and Ready conditions.
func drainMessage(d *drainReport) string {
	st := d.Status
	what := fmt.Sprintf("draining %s (%d partition replicas left)", strings.Join(st.Members, ", "), st.ReplicasRemaining)
	if st.BlockedReason != "" {
		what = fmt.Sprintf("cannot drain %s: %s", strings.Join(st.Members, ", "), st.BlockedReason)
	}
	if d.Holding {
		return fmt.Sprintf("%s before scaling from %d to %d brokers", what, d.From, d.To)
	}
	return what + " out of the cluster: their pods are gone"
}

// progressReason says what a rollout that is not done is waiting for.
func progressReason(sts *appsv1.StatefulSet, desired, current, ready, updated int32) (string, string) {
	switch {
	case sts == nil || (sts.Status.ObservedGeneration == 0 && current == 0):
		return ReasonCreating, fmt.Sprintf("creating %d brokers", desired)
	case sts.Status.ObservedGeneration < sts.Generation:
		return ReasonRollingUpdate, "the StatefulSet controller has not yet seen the latest spec"
	case current != desired:
		return ReasonScaling, fmt.Sprintf("scaling from %d to %d brokers", current, desired)
	case updated != desired || (sts.Status.UpdateRevision != sts.Status.CurrentRevision && desired > 0):
		return ReasonRollingUpdate, fmt.Sprintf("%d of %d brokers run the current spec", updated, desired)
	default:
		return ReasonWaitingForReadiness, fmt.Sprintf("%d of %d brokers ready", ready, desired)
	}
}
