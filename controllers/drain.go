package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
)

// Scaling a replicated cluster. A scale-up needs nothing from the operator: the new pods join the
// cluster and the brokers move partitions onto them. A scale-down must not take a broker away
// while it holds partition replicas, so the operator keeps the StatefulSet at its size while it
//
//  1. asks the brokers to drain each member whose pod goes (ordinal >= spec.replicas):
//     POST /v1/cluster/members/{id}/drain; the cluster's controller moves its replicas and
//     leaderships to the members that stay;
//  2. waits (polling every DrainPollInterval) until the member is drained (holds nothing);
//  3. removes it from the cluster: DELETE /v1/cluster/members/{id};
//
// and shrinks the StatefulSet once every member that goes is removed. The cluster's state is the
// brokers' (the draining flag lives in their metadata), so a restarted operator carries on where
// it stopped. A scale-down is refused while a topic keeps more copies than the new count of
// brokers (the drain could never finish). Members that stay but are draining (a scale-down that
// was called off) are undrained. spec.replicas 0 stops every pod at once, without a drain.

// Condition reasons of a BrokerCluster's scaling.
const (
	// ReasonDraining (Progressing=True): brokers are drained before the StatefulSet shrinks.
	ReasonDraining = "Draining"
	// ReasonDrainBlocked: the drain cannot go on; status.drain.blockedReason says why.
	ReasonDrainBlocked = "DrainBlocked"
	// ReasonRebalancing (Progressing=True): partitions move between the brokers (after a
	// scale-up, or while copies catch up).
	ReasonRebalancing = "Rebalancing"
)

// Event reasons of scaling.
const (
	EventDraining   = "Draining"
	EventDrained    = "Drained"
	EventRemoved    = "RemovedMember"
	EventUndrained  = "Undrained"
	EventRebalanced = "Rebalanced"
)

// Polling of the brokers while they do work the operator waits for.
const (
	// DefaultDrainPollInterval: how often a drain in progress (or blocked) is looked at.
	DefaultDrainPollInterval = 5 * time.Second
	// DefaultRebalancePollInterval: how often a rebalance in progress is looked at.
	DefaultRebalancePollInterval = 10 * time.Second
)

// drainReport is what the scaling step found and did, for the status.
type drainReport struct {
	// Status is status.drain (nil: no drain).
	Status *heraldv1.DrainStatus
	// Holding: the StatefulSet is kept above spec.replicas until the drain is done.
	Holding bool
	// From is the StatefulSet's size being held, To spec.replicas.
	From, To int32
	// SpecBlocked: only a change of the spec (or of the topics) can unblock the drain.
	SpecBlocked bool
}

// scaleOutcome is the outcome of the scaling step of one reconcile.
type scaleOutcome struct {
	// Replicas is the StatefulSet's replica count to apply.
	Replicas int32
	// Drain is nil when no broker is drained (and none was).
	Drain *drainReport
	// Rebalancing, when not empty, says how partitions are moving between the brokers.
	Rebalancing string
	// Poll: look again after this long (0: no need).
	Poll time.Duration
}

// memberOrdinal returns the pod ordinal of a cluster member of bc: member ids are pod names,
// <statefulset>-<ordinal>.
func memberOrdinal(bc *heraldv1.BrokerCluster, id string) (int32, bool) {
	rest, ok := strings.CutPrefix(id, StatefulSetName(bc)+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return int32(n), true
}

// podName is the name of bc's pod (and cluster member) with that ordinal.
func podName(bc *heraldv1.BrokerCluster, ordinal int32) string {
	return fmt.Sprintf("%s-%d", StatefulSetName(bc), ordinal)
}

// drainPlan is what a cluster view asks of the operator for spec.replicas = desired.
type drainPlan struct {
	// Undrain: members that stay (ordinal < desired) but are draining.
	Undrain []string
	// Leaving: members whose pod goes (ordinal >= desired), by ordinal.
	Leaving []ClusterMember
}

// planDrain reads a cluster view: which members must be drained and removed, which undrained.
// Members whose id is not a pod name of bc (a broker running alone calls itself "standalone")
// are left alone.
func planDrain(bc *heraldv1.BrokerCluster, desired int32, view *ClusterView) drainPlan {
	var p drainPlan
	for _, m := range view.Members {
		ord, ok := memberOrdinal(bc, m.ID)
		switch {
		case !ok:
		case ord >= desired:
			p.Leaving = append(p.Leaving, m)
		case m.Draining:
			p.Undrain = append(p.Undrain, m.ID)
		}
	}
	sort.Slice(p.Leaving, func(i, j int) bool {
		a, _ := memberOrdinal(bc, p.Leaving[i].ID)
		b, _ := memberOrdinal(bc, p.Leaving[j].ID)
		return a < b
	})
	return p
}

// rfBlocker is a topic that keeps more copies of each partition than the brokers that stay can
// hold.
type rfBlocker struct {
	What string // Topic "orders", or topic "x" on the brokers
	RF   int32
}

// replicationBlockers lists the topics that keep more copies of each partition than desired
// brokers can hold: the Topics of the cluster (not being deleted) and the topics on the brokers
// (created by the Topics or by anyone else).
func replicationBlockers(bc *heraldv1.BrokerCluster, topics []heraldv1.Topic, onBrokers []api.Topic, desired int32) []rfBlocker {
	var out []rfBlocker
	claimed := map[string]bool{}
	sorted := slices.Clone(topics)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, t := range sorted {
		if t.Spec.ClusterRef.Name != bc.Name || !t.DeletionTimestamp.IsZero() {
			continue
		}
		if t.Spec.ReplicationFactor > desired {
			out = append(out, rfBlocker{What: fmt.Sprintf("Topic %q", t.Name), RF: t.Spec.ReplicationFactor})
			claimed[t.EffectiveTopicName()] = true
		}
	}
	sortedB := slices.Clone(onBrokers)
	sort.Slice(sortedB, func(i, j int) bool { return sortedB[i].Name < sortedB[j].Name })
	for _, t := range sortedB {
		if int32(t.ReplicationFactor) > desired && !claimed[t.Name] {
			out = append(out, rfBlocker{What: fmt.Sprintf("topic %q on the brokers", t.Name), RF: int32(t.ReplicationFactor)})
		}
	}
	return out
}

// blockedMessage says why the drain of members cannot start or finish.
func blockedMessage(members []string, blockers []rfBlocker, desired int32) string {
	names := make([]string, 0, len(blockers))
	need := int32(0)
	for _, b := range blockers {
		names = append(names, fmt.Sprintf("%s (replicationFactor %d)", b.What, b.RF))
		need = max(need, b.RF)
	}
	verb, pronoun := "keep", "them"
	if len(blockers) == 1 {
		verb, pronoun = "keeps", "it"
	}
	return fmt.Sprintf("cannot scale down to %d brokers: %s %s more copies of each partition than %d brokers can hold, so %s cannot be drained; delete %s or set spec.replicas to at least %d",
		desired, strings.Join(names, ", "), verb, desired, strings.Join(members, ", "), pronoun, need)
}

// rebalancing says whether partitions are still moving between the brokers, and how they are
// spread: the brokers move replicas until the members that can take them (ready, not draining)
// hold within one replica of each other, and a copy that was added (or came back) catches up
// before it counts as in sync.
func rebalancing(view *ClusterView) string {
	ready := map[string]bool{}
	var hosts []ClusterMember
	for _, m := range view.Members {
		if m.Ready {
			ready[m.ID] = true
			if !m.Draining {
				hosts = append(hosts, m)
			}
		}
	}
	catchingUp := 0
	for _, p := range view.Partitions {
		if len(p.InSync) >= len(p.Replicas) {
			continue
		}
		all := true
		for _, id := range p.Replicas {
			all = all && ready[id]
		}
		if all {
			catchingUp++
		}
	}
	uneven := false
	if len(hosts) > 1 {
		lo, hi := hosts[0].Replicas, hosts[0].Replicas
		for _, m := range hosts[1:] {
			lo, hi = min(lo, m.Replicas), max(hi, m.Replicas)
		}
		uneven = hi-lo > 1
	}
	if !uneven && catchingUp == 0 {
		return ""
	}
	loads := make([]string, 0, len(hosts))
	for _, m := range hosts {
		loads = append(loads, fmt.Sprintf("%s %d", m.ID, m.Replicas))
	}
	msg := "partitions are moving between the brokers (partition replicas per broker: " + strings.Join(loads, ", ") + ")"
	if catchingUp > 0 {
		msg += fmt.Sprintf("; %d partitions have a copy catching up", catchingUp)
	}
	return msg
}

// BrokerClusterReconciler's scaling step.

func (r *BrokerClusterReconciler) brokers() *Brokers {
	r.brokersOnce.Do(func() {
		if r.Brokers == nil {
			r.Brokers = &Brokers{Client: r.Client}
		}
	})
	return r.Brokers
}

func (r *BrokerClusterReconciler) drainPoll() time.Duration {
	if r.DrainPollInterval > 0 {
		return r.DrainPollInterval
	}
	return DefaultDrainPollInterval
}

func (r *BrokerClusterReconciler) rebalancePoll() time.Duration {
	if r.RebalancePollInterval > 0 {
		return r.RebalancePollInterval
	}
	return DefaultRebalancePollInterval
}

// scale decides the StatefulSet's replica count, draining and removing the brokers that go
// before a scale-down (see the top of this file), and looks at the rebalance that follows a
// scale-up. sts is the live StatefulSet (nil when there is none yet). An error is an API server
// failure; the brokers' are reported in the result.
func (r *BrokerClusterReconciler) scale(ctx context.Context, bc *heraldv1.BrokerCluster, sts *appsv1.StatefulSet) (scaleOutcome, error) {
	desired := *withDefaults(bc.Spec).Replicas
	res := scaleOutcome{Replicas: desired}
	if desired == 0 || sts == nil {
		// Stopping: every pod goes at once, nothing to drain (nor anyone to ask).
		return res, nil
	}
	current := desired
	if sts.Spec.Replicas != nil {
		current = *sts.Spec.Replicas
	}
	pending := current > desired
	if !pending && bc.Status.Drain == nil && !r.rebalanceCheckDue(bc, sts, desired) {
		return res, nil
	}
	if pending {
		res.Replicas = current
	}

	brokers := r.brokers()
	u := brokers.brokerClusterURL(bc)
	cc := brokers.clusterClient(u)
	view, err := cc.View(ctx)
	if err != nil {
		_, msg, _ := brokerFailure(err, fmt.Sprintf("asking the brokers at %s for the cluster's members", u))
		switch {
		case pending:
			var members []string
			for i := desired; i < current; i++ {
				members = append(members, podName(bc, i))
			}
			res.Drain = &drainReport{Holding: true, From: current, To: desired,
				Status: &heraldv1.DrainStatus{Members: members, BlockedReason: msg}}
			if prev := bc.Status.Drain; prev != nil && slices.Equal(prev.Members, members) {
				res.Drain.Status.ReplicasRemaining = prev.ReplicasRemaining
			}
			res.Poll = r.drainPoll()
		case bc.Status.Drain != nil:
			// A drain that was called off, or that finished while the brokers stopped
			// answering: keep reporting it until they answer.
			prev := bc.Status.Drain.DeepCopy()
			prev.BlockedReason = msg
			res.Drain = &drainReport{Status: prev, From: max(current, desired), To: desired}
			res.Poll = r.drainPoll()
		case isRebalancing(bc):
			// Say what was last seen until the brokers answer again.
			res.Rebalancing = meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionProgressing).Message
			res.Poll = r.rebalancePoll()
		}
		r.recordBlocked(bc, res.Drain)
		return res, nil
	}

	plan := planDrain(bc, desired, &view)
	var undrainErr string
	for _, id := range plan.Undrain {
		if err := cc.Undrain(ctx, id); err != nil && !isNotFound(err) {
			_, msg, _ := brokerFailure(err, fmt.Sprintf("undraining broker %s", id))
			undrainErr = msg
			continue
		}
		r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventUndrained, "Scale",
			"Stopped draining broker %s: spec.replicas is %d", id, desired)
		log.FromContext(ctx).Info("undrained broker", "member", id)
	}

	if len(plan.Leaving) == 0 {
		// Nothing (left) to drain: the StatefulSet takes spec.replicas.
		r.forgetDrain(bc)
		res.Replicas = desired
		if pending && bc.Status.Drain != nil {
			r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventDrained, "Scale",
				"Every broker that goes is drained and removed from the cluster; scaling from %d to %d brokers", current, desired)
		}
		if undrainErr != "" {
			prev := bc.Status.Drain
			if prev == nil {
				prev = &heraldv1.DrainStatus{}
			}
			res.Drain = &drainReport{Status: &heraldv1.DrainStatus{Members: prev.Members, BlockedReason: undrainErr},
				From: desired, To: desired}
			res.Poll = r.drainPoll()
			return res, nil
		}
		if msg := rebalancing(&view); msg != "" {
			res.Rebalancing = msg
			res.Poll = r.rebalancePoll()
		} else if isRebalancing(bc) {
			r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventRebalanced, "Scale",
				"The partitions are spread evenly over %d brokers", desired)
		}
		return res, nil
	}

	// Members go: drain them, remove the drained ones.
	rep := &drainReport{Holding: pending, From: max(current, desired), To: desired, Status: &heraldv1.DrainStatus{}}
	res.Drain = rep
	res.Poll = r.drainPoll()
	for _, m := range plan.Leaving {
		rep.Status.Members = append(rep.Status.Members, m.ID)
		rep.Status.ReplicasRemaining += int32(m.Replicas)
	}

	blockers, err := r.replicationBlockers(ctx, bc, desired)
	if err != nil {
		return res, err
	}
	if len(blockers) > 0 {
		rep.SpecBlocked = true
		rep.Status.BlockedReason = blockedMessage(rep.Status.Members, blockers, desired)
		r.recordBlocked(bc, rep)
		return res, nil
	}

	removed := 0
	var problems []string
	for _, m := range plan.Leaving {
		drained := m.Drained
		if !m.Draining {
			got, err := cc.Drain(ctx, m.ID)
			switch {
			case isNotFound(err):
				removed++
				continue
			case err != nil:
				_, msg, _ := brokerFailure(err, fmt.Sprintf("draining broker %s", m.ID))
				problems = append(problems, msg)
				continue
			}
			drained = got.Drained
			if rep.Holding {
				r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventDraining, "Scale",
					"Draining broker %s (%d partition replicas) before scaling from %d to %d brokers", m.ID, m.Replicas, current, desired)
			} else {
				r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventDraining, "Scale",
					"Draining broker %s (%d partition replicas) out of the cluster: spec.replicas is %d", m.ID, m.Replicas, desired)
			}
			log.FromContext(ctx).Info("draining broker", "member", m.ID, "replicas", m.Replicas)
		}
		if !drained {
			continue
		}
		err := cc.Remove(ctx, m.ID)
		var apiErr *api.Error
		switch {
		case err == nil || isNotFound(err):
			removed++
			rep.Status.ReplicasRemaining -= int32(m.Replicas)
			r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventRemoved, "Scale",
				"Removed the drained broker %s from the cluster", m.ID)
			log.FromContext(ctx).Info("removed drained broker", "member", m.ID)
		case errors.As(err, &apiErr) && apiErr.Code == api.CodeFailedPrecondition:
			// It took a replica again since the view: wait.
		default:
			_, msg, _ := brokerFailure(err, fmt.Sprintf("removing broker %s from the cluster", m.ID))
			problems = append(problems, msg)
		}
	}
	if undrainErr != "" {
		problems = append(problems, undrainErr)
	}
	rep.Status.ReplicasRemaining = max(rep.Status.ReplicasRemaining, 0)
	if removed == len(plan.Leaving) {
		// Done: every member that goes is out of the cluster; the StatefulSet shrinks now.
		r.forgetDrain(bc)
		res.Replicas = desired
		res.Drain = nil
		res.Poll = 0
		if pending {
			r.Recorder.Eventf(bc, nil, corev1.EventTypeNormal, EventDrained, "Scale",
				"Every broker that goes is drained and removed from the cluster; scaling from %d to %d brokers", current, desired)
		}
		return res, nil
	}
	var leavingIDs []string
	for _, m := range plan.Leaving {
		leavingIDs = append(leavingIDs, m.ID)
	}
	now := r.now()
	idle := r.trackDrain(bc, rep.Status, measureDrain(&view, leavingIDs, rep.Status.ReplicasRemaining), now)
	if len(problems) == 0 && idle >= r.drainStallTimeout() {
		problems = append(problems, stallMessage(&view, leavingIDs, idle))
	}
	rep.Status.BlockedReason = strings.Join(problems, "; ")
	r.recordBlocked(bc, rep)
	return res, nil
}

// rebalanceCheckDue says whether to look at the brokers' partition spread: once all desired
// pods are ready after a change of the ready pods (a scale-up done, pods back), and again while
// they are rebalancing.
func (r *BrokerClusterReconciler) rebalanceCheckDue(bc *heraldv1.BrokerCluster, sts *appsv1.StatefulSet, desired int32) bool {
	if desired < 2 || sts.Status.Replicas != desired || sts.Status.ReadyReplicas != desired {
		return false
	}
	return isRebalancing(bc) || bc.Status.ReadyReplicas != sts.Status.ReadyReplicas ||
		bc.Status.Phase != heraldv1.PhaseRunning
}

func isRebalancing(bc *heraldv1.BrokerCluster) bool {
	c := meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionProgressing)
	return c != nil && c.Reason == ReasonRebalancing
}

// replicationBlockers lists the topics that keep more copies than desired brokers can hold: the
// cluster's Topics, and the topics on its brokers.
func (r *BrokerClusterReconciler) replicationBlockers(ctx context.Context, bc *heraldv1.BrokerCluster, desired int32) ([]rfBlocker, error) {
	list := &heraldv1.TopicList{}
	if err := r.Client.List(ctx, list, client.InNamespace(bc.Namespace)); err != nil {
		return nil, fmt.Errorf("listing Topics: %w", err)
	}
	var onBrokers []api.Topic
	brokers := r.brokers()
	if c, err := brokers.client(brokers.brokerClusterURL(bc)); err == nil {
		// Best effort: the Topics are checked in any case.
		if ts, err := c.ListTopics(ctx); err == nil {
			onBrokers = ts
		} else {
			log.FromContext(ctx).V(1).Info("listing the brokers' topics", "err", err)
		}
	}
	return replicationBlockers(bc, list.Items, onBrokers, desired), nil
}

// recordBlocked records a Warning Event when a drain's blocked reason is new.
func (r *BrokerClusterReconciler) recordBlocked(bc *heraldv1.BrokerCluster, rep *drainReport) {
	if rep == nil || rep.Status == nil || rep.Status.BlockedReason == "" {
		return
	}
	if prev := bc.Status.Drain; prev != nil && prev.BlockedReason == rep.Status.BlockedReason {
		return
	}
	r.Recorder.Eventf(bc, nil, corev1.EventTypeWarning, ReasonDrainBlocked, "Scale", "%s", rep.Status.BlockedReason)
}
