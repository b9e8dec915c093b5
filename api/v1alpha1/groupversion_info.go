// Package v1alpha1 holds Herald's Kubernetes API, group herald.dev, version v1alpha1:
// BrokerCluster (a cluster of Herald brokers), Topic and Subscription (objects on those brokers).
//
// The CustomResourceDefinitions in config/crd/bases and zz_generated.deepcopy.go are generated from
// these types by controller-gen (`make manifests generate`); every field's doc comment is what
// `kubectl explain` shows.
//
// +kubebuilder:object:generate=true
// +groupName=herald.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "herald.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group and version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
