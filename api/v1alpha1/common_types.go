package v1alpha1

import (
	"time"
)

// Condition types. Every kind has Ready; the others are kind-specific.
const (
	// ConditionReady is True when the object is fully reconciled and usable.
	ConditionReady = "Ready"
	// ConditionAvailable (BrokerCluster) is True when a majority of the broker pods is ready, so the
	// cluster serves requests.
	ConditionAvailable = "Available"
	// ConditionProgressing (BrokerCluster) is True while pods are being created, scaled or rolled.
	ConditionProgressing = "Progressing"
	// ConditionDegraded (BrokerCluster) is True when the cluster cannot reach its desired state: an
	// invalid spec, a rejected child object, or pods that stay unready.
	ConditionDegraded = "Degraded"
	// ConditionDrifted (Topic, Subscription) is True when the broker-side object was deleted or
	// changed behind the operator's back; the operator corrects it and reports what it corrected.
	// It returns to False once a later resync finds the broker in sync.
	ConditionDrifted = "Drifted"
	// ConditionUnderReplicated (Topic) is True when some partition of the topic has fewer in-sync
	// copies than its replication factor (a broker is down, or a copy is catching up), False
	// when every partition has all of them.
	ConditionUnderReplicated = "UnderReplicated"
)

// ClusterReference names the BrokerCluster, in the same namespace, that holds an object.
type ClusterReference struct {
	// Name of the BrokerCluster, in the namespace of this object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// Duration is a Go/Kubernetes duration string such as "30s", "1m30s" or "168h"
// (units ns, us, ms, s, m, h; no sign).
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+)$')",message="must be a duration such as 30s, 1m30s or 168h"
type Duration string

// Parse returns the duration as a time.Duration.
func (d Duration) Parse() (time.Duration, error) { return time.ParseDuration(string(d)) }

// DeletionPolicy says what happens to the broker-side object when its Kubernetes object is
// deleted.
// +kubebuilder:validation:Enum=Delete;Retain
type DeletionPolicy string

const (
	// DeletionPolicyDelete deletes the broker-side object (and its messages).
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyRetain keeps the broker-side object; only the Kubernetes object goes away.
	DeletionPolicyRetain DeletionPolicy = "Retain"
)
