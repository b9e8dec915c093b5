package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// BuildClientService builds the client Service <name>: the address producers and consumers use; it
// balances over the ready broker pods (any broker accepts any request).
func BuildClientService(bc *heraldv1.BrokerCluster) *corev1ac.ServiceApplyConfiguration {
	spec := withDefaults(bc.Spec)
	return corev1ac.Service(ClientServiceName(bc), bc.Namespace).
		WithLabels(CommonLabels(bc)).
		WithOwnerReferences(ownerReference(bc)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(SelectorLabels(bc)).
			WithPorts(corev1ac.ServicePort().
				WithName(BrokerPortName).
				WithProtocol(corev1.ProtocolTCP).
				WithPort(spec.Listeners.HTTP.Port).
				WithTargetPort(intstr.FromString(BrokerPortName))))
}

// Endpoint is the URL of the client Service, e.g. http://orders.default.svc:8080.
func Endpoint(bc *heraldv1.BrokerCluster) string {
	spec := withDefaults(bc.Spec)
	scheme := "http"
	if spec.Listeners.HTTP.TLS != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s.%s.svc:%d", scheme, ClientServiceName(bc), bc.Namespace, spec.Listeners.HTTP.Port)
}
