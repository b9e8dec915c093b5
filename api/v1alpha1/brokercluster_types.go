package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FsyncPolicy says when a broker flushes appended messages to stable storage.
// +kubebuilder:validation:Enum=always;interval;never
type FsyncPolicy string

const (
	// FsyncAlways acknowledges a publish only after its messages are fsync'd (group commit).
	FsyncAlways FsyncPolicy = "always"
	// FsyncInterval acknowledges after the write; a background flush fsyncs periodically.
	FsyncInterval FsyncPolicy = "interval"
	// FsyncNever leaves flushing to the operating system.
	FsyncNever FsyncPolicy = "never"
)

// PVCRetentionPolicyType says what happens to a broker pod's PersistentVolumeClaim.
// +kubebuilder:validation:Enum=Retain;Delete
type PVCRetentionPolicyType string

const (
	// PVCRetain keeps the claim (and its data).
	PVCRetain PVCRetentionPolicyType = "Retain"
	// PVCDelete deletes the claim (and, depending on the storage class, its data).
	PVCDelete PVCRetentionPolicyType = "Delete"
)

// BrokerClusterPhase is a one-word summary of a BrokerCluster's state; the conditions carry the
// details.
type BrokerClusterPhase string

const (
	// PhaseCreating: the broker pods are being created and none is ready yet.
	PhaseCreating BrokerClusterPhase = "Creating"
	// PhaseRunning: every desired broker pod runs the current spec and is ready.
	PhaseRunning BrokerClusterPhase = "Running"
	// PhaseUpdating: pods are being added, removed or rolled to a new spec.
	PhaseUpdating BrokerClusterPhase = "Updating"
	// PhaseDegraded: the rollout is done but some broker pods are not ready.
	PhaseDegraded BrokerClusterPhase = "Degraded"
	// PhaseFailed: the spec cannot be applied (see the Degraded condition's reason and message).
	PhaseFailed BrokerClusterPhase = "Failed"
	// PhaseStopped: spec.replicas is 0.
	PhaseStopped BrokerClusterPhase = "Stopped"
)

// BrokerClusterSpec is the desired state of a cluster of Herald brokers.
type BrokerClusterSpec struct {
	// Number of broker pods. The pods form one replicated cluster: a Raft metadata group, with
	// each partition kept on spec.replicationFactor brokers (a Topic's); any pod serves any
	// request, and with a replicationFactor of 3 a pod may fail without losing acknowledged
	// messages. A scale-up adds pods
	// that join and receive a share of the partitions (status.conditions Progressing, reason
	// Rebalancing, while they move). A scale-down first drains the pods that go (their
	// partitions and leaderships move to the pods that stay, status.drain shows the progress,
	// condition Progressing reason Draining) and removes them from the cluster; only then does
	// the StatefulSet shrink. It is refused (reason DrainBlocked) while a topic keeps more
	// copies than the new count of brokers. 0 stops every pod at once, without a drain, and
	// keeps the volumes.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=99
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Container image of the brokers. Empty: the operator's own image, so the operator and the
	// brokers it runs are always the same version.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Storage of each broker pod's partition logs.
	// +kubebuilder:default={}
	// +optional
	Storage BrokerStorage `json:"storage,omitempty"`

	// Compute resources (CPU, memory) of each broker container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// Broker configuration: durability and the defaults for topics that do not set their own.
	// A change rolls the broker pods one at a time.
	// +kubebuilder:default={}
	// +optional
	Config BrokerConfig `json:"config,omitempty"`

	// Network listeners of the brokers.
	// +kubebuilder:default={}
	// +optional
	Listeners BrokerListeners `json:"listeners,omitempty"`

	// Overrides for the broker pods' template: extra labels and annotations, and scheduling.
	// +optional
	PodTemplate PodTemplateOverrides `json:"podTemplate,omitempty"`

	// Voluntary disruption budget of the broker pods (node drains, evictions).
	// +kubebuilder:default={}
	// +optional
	Disruption DisruptionSpec `json:"disruption,omitempty"`
}

// BrokerStorage describes each broker pod's volume.
// +kubebuilder:validation:XValidation:rule="(has(self.ephemeral) && self.ephemeral) == (has(oldSelf.ephemeral) && oldSelf.ephemeral)",message="storage.ephemeral is immutable (a StatefulSet's volumes cannot change); create a new BrokerCluster instead"
// +kubebuilder:validation:XValidation:rule="!has(self.size) || !has(oldSelf.size) || self.size == oldSelf.size",message="storage.size is immutable (a StatefulSet's volumeClaimTemplates cannot change); expand the PersistentVolumeClaims directly instead"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="storage.storageClassName is immutable (a StatefulSet's volumeClaimTemplates cannot change)"
type BrokerStorage struct {
	// Size of each broker pod's PersistentVolumeClaim (or, when ephemeral, the size limit of its
	// emptyDir). Immutable.
	// +kubebuilder:default="1Gi"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`

	// StorageClass of the PersistentVolumeClaims. Unset: the cluster's default StorageClass.
	// Immutable.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`

	// Keep the partition logs in an emptyDir instead of a PersistentVolumeClaim: data is lost when a
	// pod is deleted or moves. For tests and development only. Immutable.
	// +kubebuilder:default=false
	// +optional
	Ephemeral bool `json:"ephemeral,omitempty"`

	// What happens to the PersistentVolumeClaims when the BrokerCluster is deleted or scaled down.
	// +kubebuilder:default={}
	// +optional
	PersistentVolumeClaimRetentionPolicy PVCRetentionPolicy `json:"persistentVolumeClaimRetentionPolicy,omitempty"`
}

// PVCRetentionPolicy says what happens to the broker pods' PersistentVolumeClaims (the
// StatefulSet's persistentVolumeClaimRetentionPolicy).
type PVCRetentionPolicy struct {
	// What happens to the claims when the BrokerCluster is deleted: Retain keeps them (and the
	// data), Delete deletes them.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted PVCRetentionPolicyType `json:"whenDeleted,omitempty"`

	// What happens to the claims of the pods removed by a scale-down: Retain keeps them (a later
	// scale-up reuses them), Delete deletes them.
	// +kubebuilder:default=Retain
	// +optional
	WhenScaled PVCRetentionPolicyType `json:"whenScaled,omitempty"`
}

// BrokerConfig is the broker configuration file the operator writes into a ConfigMap.
type BrokerConfig struct {
	// When the brokers flush appended messages to disk: always (a publish is acknowledged only once
	// fsync'd; concurrent publishes share one fsync), interval (acknowledged after the write,
	// flushed periodically), or never (left to the operating system).
	// +kubebuilder:default=always
	// +optional
	Fsync FsyncPolicy `json:"fsync,omitempty"`

	// Default retention of topics that do not set spec.retention.
	// +kubebuilder:default={}
	// +optional
	Retention RetentionDefaults `json:"retention,omitempty"`

	// Default largest message, in bytes, for topics that do not set spec.maxMessageBytes. A larger
	// message is refused (413 TooLarge).
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxMessageBytes *int32 `json:"maxMessageBytes,omitempty"`
}

// RetentionDefaults is the retention of topics that do not set their own.
type RetentionDefaults struct {
	// How long messages are kept. "0s" keeps them until maxBytes removes them.
	// +kubebuilder:default="168h"
	// +optional
	MaxAge *Duration `json:"maxAge,omitempty"`

	// Largest size, in bytes, of each partition's log before the oldest messages are removed.
	// 0: no size limit.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxBytes *int64 `json:"maxBytes,omitempty"`
}

// BrokerListeners are the brokers' network listeners.
type BrokerListeners struct {
	// The HTTP listener: the broker API (publish, pull, admin), health probes and metrics.
	// +kubebuilder:default={}
	// +optional
	HTTP HTTPListener `json:"http,omitempty"`
}

// HTTPListener is the brokers' HTTP listener.
type HTTPListener struct {
	// Port the brokers listen on, and the port of the client Service.
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// Serve HTTPS with the certificate of this Secret. Unset: plain HTTP.
	// +optional
	TLS *ListenerTLS `json:"tls,omitempty"`
}

// ListenerTLS names the certificate of a listener.
type ListenerTLS struct {
	// Name of a Secret of type kubernetes.io/tls (keys tls.crt and tls.key) in the BrokerCluster's
	// namespace. The certificate should cover the client Service's and the pods' DNS names.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
}

// PodTemplateOverrides are merged into the broker pods' template.
type PodTemplateOverrides struct {
	// Extra labels of the broker pods. The operator's own labels (app.kubernetes.io/name and
	// app.kubernetes.io/instance, the StatefulSet's selector) cannot be overridden.
	// +kubebuilder:validation:XValidation:rule="!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/instance' in self)",message="podTemplate.labels cannot set app.kubernetes.io/name or app.kubernetes.io/instance (the operator's selector labels)"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// Extra annotations of the broker pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// Node labels a node must have to run a broker pod.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the broker pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity and anti-affinity of the broker pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// How the broker pods spread across the topology. Unset: at most one pod more on any node than
	// on another, when possible (maxSkew 1 over kubernetes.io/hostname, ScheduleAnyway).
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClass of the broker pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// Seconds a broker pod gets to stop once asked to (a rolling restart, a scale-down, a node
	// drain) before it is killed. A stopping broker first hands its partition leaderships to
	// the other brokers (up to 15 s), then finishes its requests and closes its logs (up to
	// 10 s). Unset: 45.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
}

// DisruptionSpec configures the PodDisruptionBudget of the broker pods.
type DisruptionSpec struct {
	// Most broker pods that a voluntary disruption (a drain, an eviction) may take down at once: a
	// number or a percentage of spec.replicas such as "25%".
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="must be a non-negative number or a percentage such as 25%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// BrokerClusterStatus is the observed state of a BrokerCluster.
type BrokerClusterStatus struct {
	// The metadata.generation the operator last reconciled completely.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Number of broker pods that exist.
	// +optional
	Replicas int32 `json:"replicas"`

	// Number of broker pods that are ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// One-word summary: Creating, Running, Updating, Degraded, Failed or Stopped.
	// +optional
	Phase BrokerClusterPhase `json:"phase,omitempty"`

	// URL of the client Service, for producers and consumers in the cluster, e.g.
	// http://orders.default.svc:8080.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Version (image tag) of the brokers.
	// +optional
	Version string `json:"version,omitempty"`

	// The scale-down in progress, while spec.replicas is below the pods that exist: the brokers
	// that go are drained and removed from the cluster before the StatefulSet shrinks. Unset
	// when no broker is being drained.
	// +optional
	Drain *DrainStatus `json:"drain,omitempty"`

	// Latest observations: Ready, Available, Progressing, Degraded. Progressing has reason
	// Draining while brokers are drained before a scale-down, DrainBlocked when the drain cannot
	// go on (see status.drain.blockedReason; with Degraded=True when only a spec change can
	// unblock it, such as a Topic whose replicationFactor exceeds the new replicas), and
	// Rebalancing while partitions move between the brokers after a scale-up.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// DrainStatus is the progress of a scale-down.
type DrainStatus struct {
	// The brokers (pod names, which are their cluster member ids) being drained: their partition
	// replicas and leaderships move to the brokers that stay. Each is removed from the cluster
	// once it holds nothing, and the StatefulSet shrinks when all are.
	// +listType=atomic
	// +optional
	Members []string `json:"members,omitempty"`

	// Partition replicas the draining brokers still hold.
	// +optional
	ReplicasRemaining int32 `json:"replicasRemaining"`

	// Why the drain does not progress: a Topic (or a topic on the brokers) that keeps more copies
	// than the new count of brokers, brokers that do not answer, or no replica moved for the
	// operator's --drain-stall-timeout (with the partitions it waits for). Empty while it
	// progresses.
	// +optional
	BlockedReason string `json:"blockedReason,omitempty"`

	// When the drain last made progress (a replica moved off a draining broker, or the copies
	// replacing them got closer to in sync), or started.
	// +optional
	LastProgressTime *metav1.Time `json:"lastProgressTime,omitempty"`
}

// BrokerCluster is a cluster of Herald brokers: a StatefulSet of `herald broker` pods with their
// Services, configuration and disruption budget.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hbc,categories=herald
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`,description="Desired broker pods"
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`,description="Ready broker pods"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter): the Services are named after it"
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 52",message="metadata.name must be at most 52 characters: the StatefulSet and its pods are named after it"
type BrokerCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Desired state.
	// +kubebuilder:default={}
	// +optional
	Spec BrokerClusterSpec `json:"spec,omitempty"`

	// Observed state, written by the operator.
	// +optional
	Status BrokerClusterStatus `json:"status,omitempty"`
}

// BrokerClusterList is a list of BrokerClusters.
// +kubebuilder:object:root=true
type BrokerClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BrokerCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&BrokerCluster{}, &BrokerClusterList{})
}
