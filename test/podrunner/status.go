package podrunner

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// status is the pod's status as a kubelet would report it.
func (w *worker) status(pod *corev1.Pod) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	// Our own conditions come from what we last wrote: the informer's copy may lag behind it.
	if w.lastSent != nil {
		for _, c := range w.lastSent.Conditions {
			if _, ours := conditionOrder[c.Type]; ours {
				replaceCondition(&st, c)
			}
		}
	}
	st.ObservedGeneration = pod.Generation
	st.HostIP = "127.0.0.1"
	st.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	if w.ip != "" {
		st.PodIP = w.ip
		st.PodIPs = []corev1.PodIP{{IP: w.ip}}
	}
	if st.StartTime == nil {
		st.StartTime = ptr.To(w.startTime)
	}
	st.Reason, st.Message = "", ""

	initDone := true
	var incompleteInit []string
	st.InitContainerStatuses = nil
	for _, c := range w.initCtrs {
		st.InitContainerStatuses = append(st.InitContainerStatuses, w.containerStatus(c, false))
		if !c.done {
			initDone = false
			incompleteInit = append(incompleteInit, c.spec.Name)
		}
	}
	st.ContainerStatuses = nil
	var unready []string
	running, waiting, stopped, succeeded := 0, 0, 0, 0
	for _, c := range w.ctrs {
		cs := w.containerStatus(c, !initDone)
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			unready = append(unready, c.spec.Name)
		}
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.LastTerminationState.Terminated != nil:
			stopped++
		default:
			waiting++
		}
	}

	policy := pod.Spec.RestartPolicy
	switch {
	case w.failed:
		st.Phase = corev1.PodFailed
	case !initDone:
		st.Phase = corev1.PodPending
	case waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case stopped > 0:
		switch {
		case policy == corev1.RestartPolicyAlways || policy == "":
			st.Phase = corev1.PodRunning
		case stopped == succeeded:
			st.Phase = corev1.PodSucceeded
		case policy == corev1.RestartPolicyOnFailure:
			st.Phase = corev1.PodRunning
		default:
			st.Phase = corev1.PodFailed
		}
	default:
		st.Phase = corev1.PodPending
	}
	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed

	setCondition(&st, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})
	if w.prepared {
		setCondition(&st, corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue})
	} else {
		setCondition(&st, corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse})
	}
	if initDone {
		setCondition(&st, corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionTrue})
	} else {
		setCondition(&st, corev1.PodCondition{Type: corev1.PodInitialized, Status: corev1.ConditionFalse,
			Reason: "ContainersNotInitialized", Message: fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(incompleteInit, " "))})
	}
	switch {
	case terminal:
		setCondition(&st, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "PodCompleted"})
		setCondition(&st, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "PodCompleted"})
	case len(unready) > 0:
		msg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
		setCondition(&st, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: msg})
		setCondition(&st, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: msg})
	default:
		setCondition(&st, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue})
		var gates []string
		for _, g := range pod.Spec.ReadinessGates {
			ok := false
			for _, c := range st.Conditions {
				if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
					ok = true
				}
			}
			if !ok {
				gates = append(gates, string(g.ConditionType))
			}
		}
		if len(gates) > 0 {
			setCondition(&st, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ReadinessGatesNotReady",
				Message: fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist or is not true", strings.Join(gates, ", "))})
		} else {
			setCondition(&st, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
		}
	}
	sortConditions(st.Conditions)
	return st
}

// containerStatus is one container's status; blockedByInit: the init containers have not
// completed yet.
func (w *worker) containerStatus(c *ctr, blockedByInit bool) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      "herald-podrunner://" + w.r.o.HeraldBinary,
		RestartCount: c.restarts,
	}
	last := func(n int) *corev1.ContainerStateTerminated {
		if len(c.terms) >= n {
			t := c.terms[len(c.terms)-n]
			return &t
		}
		return nil
	}
	switch {
	case c.running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: c.run.startedAt}
		cs.ContainerID = fmt.Sprintf("herald://%d", c.run.pid)
		cs.LastTerminationState.Terminated = last(1)
		cs.Started = ptr.To(c.started)
		cs.Ready = c.started && (c.spec.ReadinessProbe == nil || c.ready) && !c.init
	case w.prepWaiting != nil && w.prepWaiting[c.spec.Name][0] != "":
		wt := w.prepWaiting[c.spec.Name]
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: wt[0], Message: wt[1]}
		cs.Started = ptr.To(false)
	case c.waiting[0] != "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waiting[0], Message: c.waiting[1]}
		cs.LastTerminationState.Terminated = last(1)
		cs.Started = ptr.To(false)
	case c.run != nil:
		cs.State.Terminated = last(1)
		cs.LastTerminationState.Terminated = last(2)
		cs.ContainerID = cs.State.Terminated.ContainerID
		cs.Started = ptr.To(false)
	case blockedByInit:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		cs.Started = ptr.To(false)
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		cs.Started = ptr.To(false)
	}
	if c.init && c.done {
		cs.Ready = true
	}
	return cs
}

// setCondition sets a condition, keeping its transition time when its status does not change.
func setCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type != c.Type {
			continue
		}
		if st.Conditions[i].Status == c.Status {
			c.LastTransitionTime = st.Conditions[i].LastTransitionTime
		} else {
			c.LastTransitionTime = metav1.Now()
		}
		c.LastProbeTime = st.Conditions[i].LastProbeTime
		c.ObservedGeneration = st.ObservedGeneration
		st.Conditions[i] = c
		return
	}
	c.LastTransitionTime = metav1.Now()
	c.ObservedGeneration = st.ObservedGeneration
	st.Conditions = append(st.Conditions, c)
}

func replaceCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

var conditionOrder = map[corev1.PodConditionType]int{
	corev1.PodReadyToStartContainers: 0,
	corev1.PodInitialized:            1,
	corev1.PodReady:                  2,
	corev1.ContainersReady:           3,
	corev1.PodScheduled:              4,
}

func sortConditions(cs []corev1.PodCondition) {
	sort.SliceStable(cs, func(i, j int) bool {
		oi, ok := conditionOrder[cs[i].Type]
		if !ok {
			oi = 10
		}
		oj, ok := conditionOrder[cs[j].Type]
		if !ok {
			oj = 10
		}
		return oi < oj
	})
}
