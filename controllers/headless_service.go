package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// BuildHeadlessService builds <name>-headless, the StatefulSet's governing Service: it gives each
// broker pod a stable DNS name (<name>-i.<name>-headless.<namespace>.svc) and publishes pods before
// they are ready, so brokers can find each other while they start.
func BuildHeadlessService(bc *heraldv1.BrokerCluster) *corev1ac.ServiceApplyConfiguration {
	spec := withDefaults(bc.Spec)
	return corev1ac.Service(HeadlessServiceName(bc), bc.Namespace).
		WithLabels(CommonLabels(bc)).
		WithOwnerReferences(ownerReference(bc)).
		WithSpec(corev1ac.ServiceSpec().
			WithClusterIP(corev1.ClusterIPNone).
			WithPublishNotReadyAddresses(true).
			WithSelector(SelectorLabels(bc)).
			WithPorts(corev1ac.ServicePort().
				WithName(BrokerPortName).
				WithProtocol(corev1.ProtocolTCP).
				WithPort(spec.Listeners.HTTP.Port).
				WithTargetPort(intstr.FromString(BrokerPortName))))
}
