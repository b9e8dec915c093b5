package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PushFormat is how a pushed message is encoded in the HTTP request to the subscriber.
// +kubebuilder:validation:Enum=raw;json;cloudevents-binary;cloudevents-structured
type PushFormat string

const (
	// PushFormatRaw: the body is the message data as published, its attributes in headers.
	PushFormatRaw PushFormat = "raw"
	// PushFormatJSON: the body is a JSON envelope with the data and metadata of the message.
	PushFormatJSON PushFormat = "json"
	// PushFormatCloudEventsBinary: CloudEvents 1.0 HTTP binding, binary mode.
	PushFormatCloudEventsBinary PushFormat = "cloudevents-binary"
	// PushFormatCloudEventsStructured: CloudEvents 1.0 HTTP binding, structured mode.
	PushFormatCloudEventsStructured PushFormat = "cloudevents-structured"
)

// RetryPolicy is how the delay between delivery attempts grows.
// +kubebuilder:validation:Enum=linear;exponential;mns-backoff;mns-exponential-decay
type RetryPolicy string

const (
	// RetryLinear waits minBackoff, 2×minBackoff, 3×minBackoff, … up to maxBackoff.
	RetryLinear RetryPolicy = "linear"
	// RetryExponential waits minBackoff, 2×minBackoff, 4×minBackoff, … up to maxBackoff.
	RetryExponential RetryPolicy = "exponential"
	// RetryMNSBackoff is Alibaba MNS's BACKOFF_RETRY: a random delay between minBackoff and
	// maxBackoff (defaults 10s and 20s), 4 attempts by default.
	RetryMNSBackoff RetryPolicy = "mns-backoff"
	// RetryMNSExponentialDecay is Alibaba MNS's EXPONENTIAL_DECAY_RETRY: 1s, 2s, 4s, … up to
	// maxBackoff (default 512s), 177 attempts by default (about 24 hours).
	RetryMNSExponentialDecay RetryPolicy = "mns-exponential-decay"
)

// SubscriptionMode is how a subscription delivers: Push or Pull.
type SubscriptionMode string

const (
	// ModePush: the brokers POST each message to spec.push's endpoint.
	ModePush SubscriptionMode = "Push"
	// ModePull: consumers pull (or stream) messages from the broker API.
	ModePull SubscriptionMode = "Pull"
)

// SubscriptionSpec is the desired state of a subscription to a Topic.
type SubscriptionSpec struct {
	// The BrokerCluster, in this namespace, that holds the subscription and its topic. Immutable.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterRef is immutable; create a new Subscription instead"
	ClusterRef ClusterReference `json:"clusterRef"`

	// Name of the Topic object, in this namespace, to subscribe to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Topic string `json:"topic"`

	// Deliver messages by HTTP POST to an endpoint. Unset: a pull subscription (consumers pull,
	// or stream over a websocket or server-sent events).
	// +optional
	Push *PushSpec `json:"push,omitempty"`

	// When and how often a message that is not acknowledged is delivered again.
	// +kubebuilder:default={}
	// +optional
	Retry RetrySpec `json:"retry,omitempty"`

	// Name of a Topic object, in this namespace, that receives the messages delivered
	// retry.maxAttempts times (or for longer than retry.maxAge) without acknowledgement. Unset:
	// such messages are dropped and counted in status.deadLettered.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	DeadLetterTopic string `json:"deadLetterTopic,omitempty"`

	// How long a consumer has to acknowledge a delivered message before it is delivered again.
	// +kubebuilder:default="30s"
	// +optional
	AckDeadline *Duration `json:"ackDeadline,omitempty"`

	// CEL expression over tag (string), key (string) and attributes (map of string to string), e.g.
	// "tag == 'eu' && attributes.priority == 'high'". Only messages it accepts are delivered; the
	// others are skipped and never count as backlog. Unset: every message.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Filter string `json:"filter,omitempty"`

	// Deliver the messages of one key (or orderingKey) one at a time, in publish order.
	// +kubebuilder:default=false
	// +optional
	Ordered bool `json:"ordered,omitempty"`

	// Where a new subscription starts reading: latest (only messages published from now on),
	// earliest (every retained message), or an RFC 3339 time such as 2024-05-01T12:00:00Z.
	// +kubebuilder:default=latest
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self == 'latest' || self == 'earliest' || self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$')",message="must be latest, earliest or an RFC 3339 time such as 2024-05-01T12:00:00Z"
	// +optional
	StartAt string `json:"startAt,omitempty"`

	// What happens to the subscription on the brokers, and its position, when this Subscription is
	// deleted: Delete removes it, Retain keeps it.
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// PushSpec is where and how a push subscription delivers. Exactly one of uri and serviceRef.
// +kubebuilder:validation:XValidation:rule="has(self.uri) != has(self.serviceRef)",message="push needs exactly one of uri or serviceRef"
type PushSpec struct {
	// Absolute http or https URL the messages are POSTed to.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'http' || url(self).getScheme() == 'https') && url(self).getHostname() != ''",message="uri must be an absolute http or https URL"
	// +optional
	URI string `json:"uri,omitempty"`

	// A Service, in this namespace, the messages are POSTed to; resolved to
	// http://<name>.<namespace>.svc:<port><path>.
	// +optional
	ServiceRef *ServiceReference `json:"serviceRef,omitempty"`

	// Encoding of the message in the request: raw (the body is the message data, attributes in
	// headers), json, cloudevents-binary or cloudevents-structured.
	// +kubebuilder:default=raw
	// +optional
	Format PushFormat `json:"format,omitempty"`

	// How long one delivery request may take before it counts as failed.
	// +kubebuilder:default="10s"
	// +optional
	Timeout *Duration `json:"timeout,omitempty"`

	// Most deliveries of this subscription in flight at once.
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxInFlight int32 `json:"maxInFlight,omitempty"`

	// Extra HTTP headers of every delivery request.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Headers map[string]string `json:"headers,omitempty"`

	// A Secret, in this namespace, with the Standard Webhooks signing secrets (whsec_…). Each
	// request is signed with every secret (one webhook-signature entry each), so a secret can be
	// rotated without downtime. Unset: requests are not signed.
	// +optional
	SigningSecretRef *SecretReference `json:"signingSecretRef,omitempty"`
}

// ServiceReference is a Service that receives pushed messages.
type ServiceReference struct {
	// Name of the Service, in the Subscription's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Port of the Service. Unset: 80.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`

	// Path of the request URL, starting with "/". Unset: "/".
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="path must start with /"
	// +optional
	Path string `json:"path,omitempty"`
}

// SecretReference names a Secret, and optionally one key of it.
type SecretReference struct {
	// Name of the Secret, in the Subscription's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key of the Secret holding the signing secret. Unset: every key of the Secret holds one.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Key string `json:"key,omitempty"`
}

// RetrySpec is when a message is delivered again.
// +kubebuilder:validation:XValidation:rule="!has(self.minBackoff) || !has(self.maxBackoff) || duration(self.minBackoff) <= duration(self.maxBackoff)",message="retry.minBackoff must not exceed retry.maxBackoff"
type RetrySpec struct {
	// How the delay between attempts grows: linear, exponential, or one of the presets of Alibaba
	// MNS: mns-backoff (a random delay between minBackoff and maxBackoff) and
	// mns-exponential-decay (exponential up to 512s, for about a day). The defaults of minBackoff,
	// maxBackoff and maxAttempts depend on the policy.
	// +kubebuilder:default=exponential
	// +optional
	Policy RetryPolicy `json:"policy,omitempty"`

	// Delay before the first redelivery. Unset: 1s (10s for mns-backoff).
	// +optional
	MinBackoff *Duration `json:"minBackoff,omitempty"`

	// Longest delay between two attempts. Unset: 10m (20s for mns-backoff, 512s for
	// mns-exponential-decay).
	// +optional
	MaxBackoff *Duration `json:"maxBackoff,omitempty"`

	// Deliveries of one message before it goes to deadLetterTopic (or is dropped). Unset: 10 (4
	// for mns-backoff, 177 for mns-exponential-decay).
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxAttempts int32 `json:"maxAttempts,omitempty"`

	// How long after its first delivery a message is retried before it goes to deadLetterTopic
	// (or is dropped). "0s": no limit.
	// +kubebuilder:default="24h"
	// +optional
	MaxAge *Duration `json:"maxAge,omitempty"`
}

// SubscriptionStatus is the observed state of a Subscription.
type SubscriptionStatus struct {
	// The metadata.generation the operator last reconciled completely.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Push or Pull.
	// +optional
	Mode SubscriptionMode `json:"mode,omitempty"`

	// The resolved push URL (spec.push.uri, or the URL of spec.push.serviceRef). Empty for pull.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Messages accepted by the filter and not yet acknowledged.
	// +optional
	Backlog int64 `json:"backlog"`

	// Messages delivered (first deliveries and redeliveries).
	// +optional
	Delivered int64 `json:"delivered,omitempty"`

	// Failed delivery attempts.
	// +optional
	Failed int64 `json:"failed,omitempty"`

	// Messages moved to the dead-letter topic, or dropped, after their last attempt.
	// +optional
	DeadLettered int64 `json:"deadLettered,omitempty"`

	// Last delivery error the brokers reported, if any.
	// +optional
	LastError string `json:"lastError,omitempty"`

	// Latest observations: Ready (reasons such as TopicNotReady, ServiceNotFound,
	// SigningSecretNotFound, ClusterNotReady, BrokerUnreachable), Drifted.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// Subscription is a subscription to a Topic: pull (consumers fetch messages) or push (the brokers
// POST them to an HTTP endpoint), with retries and dead-lettering.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hsub,categories=herald
// +kubebuilder:printcolumn:name="Topic",type=string,JSONPath=`.spec.topic`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.status.mode`
// +kubebuilder:printcolumn:name="Endpoint",type=string,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Backlog",type=integer,JSONPath=`.status.backlog`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Subscription struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Desired state.
	Spec SubscriptionSpec `json:"spec"`

	// Observed state, written by the operator.
	// +optional
	Status SubscriptionStatus `json:"status,omitempty"`
}

// SubscriptionList is a list of Subscriptions.
// +kubebuilder:object:root=true
type SubscriptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Subscription `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Subscription{}, &SubscriptionList{})
}
