package controllers

import (
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// ownerReference makes the BrokerCluster the controller of a child, so the child is
// garbage-collected with it and its changes wake the BrokerCluster's reconciler.
func ownerReference(bc *heraldv1.BrokerCluster) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(heraldv1.GroupVersion.String()).
		WithKind("BrokerCluster").
		WithName(bc.Name).
		WithUID(bc.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}
