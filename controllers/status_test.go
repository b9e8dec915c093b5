package controllers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func stsWith(gen, observed int64, replicas, ready, updated int32, cur, upd string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: gen},
		Status: appsv1.StatefulSetStatus{
			ObservedGeneration: observed, Replicas: replicas, ReadyReplicas: ready, UpdatedReplicas: updated,
			CurrentRevision: cur, UpdateRevision: upd,
		},
	}
}

func cond(st heraldv1.BrokerClusterStatus, typ string) metav1.Condition {
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		return metav1.Condition{Type: typ, Status: "<missing>"}
	}
	return *c
}

func TestComputeStatus(t *testing.T) {
	type want struct {
		phase                               heraldv1.BrokerClusterPhase
		ready, available, progressing, degr metav1.ConditionStatus
		reason                              string // Ready's reason
		observedGeneration                  int64
		requeue                             bool
	}
	tests := []struct {
		name      string
		replicas  int32
		prevPhase heraldv1.BrokerClusterPhase
		// prevReplicas and prevReady: the pods the previous status counted.
		prevReplicas, prevReady int32
		sts                     *appsv1.StatefulSet
		fail                    *failure
		want                    want
	}{
		{
			name: "no statefulset yet", replicas: 3, sts: nil,
			want: want{heraldv1.PhaseCreating, "False", "False", "True", "False", ReasonCreating, 2, true},
		},
		{
			name: "pods created, none ready", replicas: 3, prevPhase: heraldv1.PhaseCreating, sts: stsWith(1, 1, 3, 0, 3, "r1", "r1"),
			want: want{heraldv1.PhaseCreating, "False", "False", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "quorum ready", replicas: 3, prevPhase: heraldv1.PhaseCreating, sts: stsWith(1, 1, 3, 2, 3, "r1", "r1"),
			want: want{heraldv1.PhaseCreating, "False", "True", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "all ready", replicas: 3, prevPhase: heraldv1.PhaseCreating, sts: stsWith(1, 1, 3, 3, 3, "r1", "r1"),
			want: want{heraldv1.PhaseRunning, "True", "True", "False", "False", ReasonAllReplicasReady, 2, false},
		},
		{
			name: "rolling update", replicas: 3, prevPhase: heraldv1.PhaseRunning, sts: stsWith(2, 2, 3, 2, 1, "r1", "r2"),
			want: want{heraldv1.PhaseUpdating, "False", "True", "True", "False", ReasonRollingUpdate, 2, true},
		},
		{
			name: "statefulset controller behind", replicas: 3, prevPhase: heraldv1.PhaseRunning, sts: stsWith(3, 2, 3, 3, 3, "r1", "r1"),
			want: want{heraldv1.PhaseUpdating, "False", "True", "True", "False", ReasonRollingUpdate, 2, true},
		},
		{
			name: "scaling up", replicas: 5, prevPhase: heraldv1.PhaseRunning, sts: stsWith(2, 2, 4, 3, 4, "r1", "r1"),
			want: want{heraldv1.PhaseUpdating, "False", "True", "True", "False", ReasonScaling, 2, true},
		},
		{
			name: "scaling up, first look: the new pods exist, not ready yet", replicas: 5, prevPhase: heraldv1.PhaseRunning,
			prevReplicas: 3, prevReady: 3, sts: stsWith(2, 2, 5, 3, 5, "r1", "r1"),
			want: want{heraldv1.PhaseUpdating, "False", "True", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "scaling up: one of the new pods ready", replicas: 5, prevPhase: heraldv1.PhaseUpdating,
			prevReplicas: 5, prevReady: 3, sts: stsWith(2, 2, 5, 4, 5, "r1", "r1"),
			want: want{heraldv1.PhaseUpdating, "False", "True", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "updating, and a pod lost its readiness", replicas: 5, prevPhase: heraldv1.PhaseUpdating,
			prevReplicas: 5, prevReady: 4, sts: stsWith(2, 2, 5, 3, 5, "r1", "r1"),
			want: want{heraldv1.PhaseDegraded, "False", "True", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "a running pod became unready", replicas: 3, prevPhase: heraldv1.PhaseRunning, prevReplicas: 3, prevReady: 3, sts: stsWith(1, 1, 3, 2, 3, "r1", "r1"),
			want: want{heraldv1.PhaseDegraded, "False", "True", "True", "False", ReasonWaitingForReadiness, 2, true},
		},
		{
			name: "scaled to zero", replicas: 0, prevPhase: heraldv1.PhaseRunning, sts: stsWith(1, 1, 0, 0, 0, "r1", "r1"),
			want: want{heraldv1.PhaseStopped, "False", "False", "False", "False", ReasonScaledToZero, 2, false},
		},
		{
			name: "invalid spec", replicas: 3, prevPhase: heraldv1.PhaseRunning, sts: stsWith(1, 1, 3, 3, 3, "r1", "r1"),
			fail: &failure{Reason: ReasonInvalidSpec, Message: "nope"},
			want: want{heraldv1.PhaseFailed, "False", "True", "False", "True", ReasonInvalidSpec, 1, false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bc := testCluster(func(bc *heraldv1.BrokerCluster) {
				bc.Generation = 2
				bc.Spec.Replicas = ptr.To(tt.replicas)
				bc.Status.ObservedGeneration = 1
				bc.Status.Phase = tt.prevPhase
				bc.Status.Replicas, bc.Status.ReadyReplicas = tt.prevReplicas, tt.prevReady
			})
			in := statusInput{BC: bc, StatefulSet: tt.sts, Failure: tt.fail, Image: "x/herald:v9", Now: t0}
			st, requeue := computeStatus(in)
			w := tt.want
			if st.Phase != w.phase {
				t.Errorf("phase %q, want %q", st.Phase, w.phase)
			}
			for typ, s := range map[string]metav1.ConditionStatus{
				heraldv1.ConditionReady: w.ready, heraldv1.ConditionAvailable: w.available,
				heraldv1.ConditionProgressing: w.progressing, heraldv1.ConditionDegraded: w.degr,
			} {
				c := cond(st, typ)
				if c.Status != s {
					t.Errorf("%s = %s (%s: %s), want %s", typ, c.Status, c.Reason, c.Message, s)
				}
				if c.Reason == "" || c.ObservedGeneration != 2 {
					t.Errorf("%s: reason %q observedGeneration %d", typ, c.Reason, c.ObservedGeneration)
				}
			}
			if r := cond(st, heraldv1.ConditionReady).Reason; r != w.reason {
				t.Errorf("Ready reason %q, want %q", r, w.reason)
			}
			if st.ObservedGeneration != w.observedGeneration {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, w.observedGeneration)
			}
			if (requeue > 0) != w.requeue {
				t.Errorf("requeue %v", requeue)
			}
			if st.Endpoint != "http://orders.shop.svc:8080" {
				t.Errorf("endpoint %q", st.Endpoint)
			}
			if tt.fail == nil && st.Version != "v9" {
				t.Errorf("version %q", st.Version)
			}

			// Idempotent: the same observations later give the same status, so nothing is written.
			bc.Status = st
			in.Now = t0.Add(time.Minute)
			again, _ := computeStatus(in)
			if !equality.Semantic.DeepEqual(again, st) {
				t.Errorf("status changed on a second computation:\n%+v\n%+v", st, again)
			}
		})
	}
}

func TestComputeStatusProgressDeadline(t *testing.T) {
	bc := testCluster(func(bc *heraldv1.BrokerCluster) { bc.Status.Phase = heraldv1.PhaseRunning })
	sts := stsWith(1, 1, 3, 1, 3, "r1", "r1")
	in := statusInput{BC: bc, StatefulSet: sts, Image: "x:v1", Now: t0, ProgressDeadline: 10 * time.Minute}
	st, requeue := computeStatus(in)
	if requeue != 10*time.Minute || cond(st, heraldv1.ConditionDegraded).Status != metav1.ConditionFalse {
		t.Fatalf("requeue %v degraded %v", requeue, cond(st, heraldv1.ConditionDegraded))
	}
	bc.Status = st
	in.Now = t0.Add(4 * time.Minute)
	st, requeue = computeStatus(in)
	if requeue != 6*time.Minute {
		t.Errorf("requeue %v, want 6m", requeue)
	}
	bc.Status = st
	in.Now = t0.Add(10 * time.Minute)
	st, requeue = computeStatus(in)
	if c := cond(st, heraldv1.ConditionDegraded); c.Status != metav1.ConditionTrue || c.Reason != ReasonProgressDeadlineExceded {
		t.Errorf("Degraded %+v", c)
	}
	if st.Phase != heraldv1.PhaseDegraded || requeue != 0 {
		t.Errorf("phase %q requeue %v", st.Phase, requeue)
	}
	// Recovery clears it.
	bc.Status = st
	in.StatefulSet = stsWith(1, 1, 3, 3, 3, "r1", "r1")
	st, _ = computeStatus(in)
	if cond(st, heraldv1.ConditionDegraded).Status != metav1.ConditionFalse || st.Phase != heraldv1.PhaseRunning {
		t.Errorf("after recovery: phase %q Degraded %+v", st.Phase, cond(st, heraldv1.ConditionDegraded))
	}
}
