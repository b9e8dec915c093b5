package controllers

import (
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// BuildPodDisruptionBudget builds the PodDisruptionBudget <name>: voluntary disruptions (drains,
// evictions) take down at most spec.disruption.maxUnavailable broker pods at once.
func BuildPodDisruptionBudget(bc *heraldv1.BrokerCluster) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	spec := withDefaults(bc.Spec)
	return policyv1ac.PodDisruptionBudget(PodDisruptionBudgetName(bc), bc.Namespace).
		WithLabels(CommonLabels(bc)).
		WithOwnerReferences(ownerReference(bc)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(*spec.Disruption.MaxUnavailable).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(bc))))
}
