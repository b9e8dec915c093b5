package controllers

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// DefaultDrainStallTimeout: a drain that moves nothing for this long is reported blocked, with
// the partitions it waits for.
const DefaultDrainStallTimeout = 5 * time.Minute

// drainProgress is what tells a moving drain from a stuck one: the partition replicas the
// draining brokers still hold, and how far behind the copies that replace them are. Either
// going down is progress (a big partition takes a while to copy before a replica can move).
type drainProgress struct {
	remaining int32
	lag       int64
}

// measureDrain reads the drain's progress from a cluster view: the lag, summed over the
// partitions that still have a replica on a leaving member, of their replicas that are not in
// sync yet (the copies being made).
func measureDrain(view *ClusterView, leaving []string, remaining int32) drainProgress {
	p := drainProgress{remaining: remaining}
	for _, part := range view.Partitions {
		if !onLeaving(part, leaving) {
			continue
		}
		for _, id := range part.Replicas {
			if !slices.Contains(part.InSync, id) {
				p.lag += max(part.Lag[id], 1) // a copy not fetching yet has no lag entry
			}
		}
	}
	return p
}

// onLeaving reports whether a partition still has a replica on one of the leaving members.
func onLeaving(p ClusterPartition, leaving []string) bool {
	return slices.ContainsFunc(p.Replicas, func(id string) bool { return slices.Contains(leaving, id) })
}

// progressed reports whether cur shows progress since prev.
func (cur drainProgress) progressed(prev drainProgress) bool {
	return cur.remaining < prev.remaining || cur.lag < prev.lag
}

// stallMessage says what a drain that stopped moving waits for: up to three partitions that
// still have a replica on a leaving member, with their replicas and in-sync replicas, and the
// members that are not ready.
func stallMessage(view *ClusterView, leaving []string, idle time.Duration) string {
	var parts []string
	n := 0
	for _, p := range view.Partitions {
		if !onLeaving(p, leaving) {
			continue
		}
		n++
		if len(parts) < 3 {
			parts = append(parts, fmt.Sprintf("%s/%d (replicas %s, in sync %s)", p.Topic, p.Partition,
				strings.Join(p.Replicas, ","), strings.Join(p.InSync, ",")))
		}
	}
	msg := fmt.Sprintf("no partition replica moved off %s for %s", strings.Join(leaving, ", "), idle.Round(time.Second))
	if n > 0 {
		msg += fmt.Sprintf("; %d partitions wait for their new copies to get in sync, e.g. %s", n, strings.Join(parts, "; "))
	}
	var down []string
	for _, m := range view.Members {
		if !m.Ready {
			down = append(down, m.ID)
		}
	}
	sort.Strings(down)
	if len(down) > 0 {
		msg += fmt.Sprintf("; brokers not ready: %s", strings.Join(down, ", "))
	}
	return msg
}

// trackDrain carries the drain's last progress time over from the previous status (the drain
// of the same members), moves it to now on progress, and returns how long the drain has not
// progressed. The progress measure itself is kept in memory per BrokerCluster: after an
// operator restart the drain gets a fresh timeout.
func (r *BrokerClusterReconciler) trackDrain(bc *heraldv1.BrokerCluster, st *heraldv1.DrainStatus, cur drainProgress, now time.Time) time.Duration {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	if r.drainMarks == nil {
		r.drainMarks = map[string]drainProgress{}
	}
	key := string(bc.UID)
	prevMark, known := r.drainMarks[key]
	r.drainMarks[key] = cur
	prev := bc.Status.Drain
	if !known || prev == nil || prev.LastProgressTime == nil || !slices.Equal(prev.Members, st.Members) || cur.progressed(prevMark) {
		st.LastProgressTime = &metav1.Time{Time: now}
		return 0
	}
	st.LastProgressTime = prev.LastProgressTime.DeepCopy()
	return now.Sub(prev.LastProgressTime.Time)
}

// forgetDrain drops the in-memory progress of a BrokerCluster that is not draining.
func (r *BrokerClusterReconciler) forgetDrain(bc *heraldv1.BrokerCluster) {
	r.drainMu.Lock()
	delete(r.drainMarks, string(bc.UID))
	r.drainMu.Unlock()
}

func (r *BrokerClusterReconciler) drainStallTimeout() time.Duration {
	if r.DrainStallTimeout > 0 {
		return r.DrainStallTimeout
	}
	return DefaultDrainStallTimeout
}
