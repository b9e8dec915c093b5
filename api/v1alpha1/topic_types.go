package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TopicSpec is the desired state of a topic on a BrokerCluster.
type TopicSpec struct {
	// The BrokerCluster, in this namespace, that holds the topic. Immutable.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterRef is immutable; create a new Topic instead"
	ClusterRef ClusterReference `json:"clusterRef"`

	// Name of the topic on the brokers. Unset: metadata.name. Immutable.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=249
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9._-]+$`
	// +optional
	TopicName string `json:"topicName,omitempty"`

	// Number of partitions. Messages with the same key always land in the same partition. Can grow,
	// never shrink.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="partitions cannot be decreased (messages are spread over the existing partitions); create a new Topic instead"
	// +optional
	Partitions int32 `json:"partitions,omitempty"`

	// Number of brokers holding a copy of each partition; at most the BrokerCluster's replicas.
	// A publish is acknowledged once every in-sync copy has it and at least
	// replicationFactor/2+1 copies are in sync, so 3 survives the loss of a broker without losing
	// an acknowledged message or refusing writes; 1 keeps a single copy. While a Topic keeps
	// more copies than a smaller spec.replicas of its BrokerCluster, the scale-down waits.
	// Immutable.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=99
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="replicationFactor is immutable; create a new Topic instead"
	// +optional
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`

	// How long, and how much, the topic keeps messages. Unset fields take the BrokerCluster's
	// spec.config.retention.
	// +optional
	Retention *TopicRetention `json:"retention,omitempty"`

	// Messages older than this are no longer delivered to subscriptions (they may still be kept by
	// retention). "0s" or unset: no limit.
	// +optional
	MessageTTL *Duration `json:"messageTTL,omitempty"`

	// Largest message, in bytes; a larger one is refused (413 TooLarge). Unset: the BrokerCluster's
	// spec.config.maxMessageBytes.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxMessageBytes *int32 `json:"maxMessageBytes,omitempty"`

	// What happens to the topic on the brokers, and its messages, when this Topic is deleted:
	// Delete removes it, Retain keeps it.
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// TopicRetention is the retention of one topic.
type TopicRetention struct {
	// How long messages are kept. "0s": until maxBytes removes them.
	// +optional
	MaxAge *Duration `json:"maxAge,omitempty"`

	// Largest size, in bytes, of each partition's log before the oldest messages are removed.
	// 0: no size limit.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxBytes *int64 `json:"maxBytes,omitempty"`
}

// TopicStats are broker-side statistics of a topic.
type TopicStats struct {
	// Messages currently kept, over all partitions.
	// +optional
	Messages int64 `json:"messages,omitempty"`

	// Bytes currently kept, over all partitions.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`
}

// TopicStatus is the observed state of a Topic.
type TopicStatus struct {
	// The metadata.generation the operator last reconciled completely.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Name of the topic on the brokers (spec.topicName, or metadata.name).
	// +optional
	TopicName string `json:"topicName,omitempty"`

	// Number of partitions the topic has on the brokers.
	// +optional
	Partitions int32 `json:"partitions,omitempty"`

	// Replication factor of the topic on the brokers.
	// +optional
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`

	// Number of partitions with fewer in-sync copies than the replication factor (a broker is
	// down or a copy is catching up); the UnderReplicated condition names them. Refreshed
	// periodically.
	// +optional
	UnderReplicatedPartitions int32 `json:"underReplicatedPartitions"`

	// Broker-side statistics, refreshed periodically.
	// +optional
	Stats *TopicStats `json:"stats,omitempty"`

	// Latest observations: Ready (reason Conflict when an older Topic claims the same topicName),
	// Drifted, UnderReplicated (True, reason UnderReplicated, naming the partitions and their
	// in-sync copies; False, reason FullyReplicated).
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Topic is a topic on a BrokerCluster: a partitioned, retained log that producers publish to and
// Subscriptions read from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=htopic,categories=herald
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterRef.name`
// +kubebuilder:printcolumn:name="Partitions",type=integer,JSONPath=`.spec.partitions`
// +kubebuilder:printcolumn:name="RF",type=integer,JSONPath=`.spec.replicationFactor`,description="Replication factor"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Under-Replicated",type=integer,JSONPath=`.status.underReplicatedPartitions`,priority=1,description="Partitions with fewer in-sync copies than the replication factor"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="(has(self.spec.topicName) ? self.spec.topicName : self.metadata.name) == (has(oldSelf.spec.topicName) ? oldSelf.spec.topicName : oldSelf.metadata.name)",message="spec.topicName is immutable",fieldPath=".spec.topicName"
// +kubebuilder:validation:XValidation:rule="has(self.spec.topicName) || size(self.metadata.name) <= 249",message="metadata.name is longer than a topic name may be (249); set spec.topicName"
type Topic struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Desired state.
	Spec TopicSpec `json:"spec"`

	// Observed state, written by the operator.
	// +optional
	Status TopicStatus `json:"status,omitempty"`
}

// EffectiveTopicName is the name of the topic on the brokers: spec.topicName, or metadata.name.
func (t *Topic) EffectiveTopicName() string {
	if t.Spec.TopicName != "" {
		return t.Spec.TopicName
	}
	return t.Name
}

// TopicList is a list of Topics.
// +kubebuilder:object:root=true
type TopicList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Topic `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Topic{}, &TopicList{})
}
