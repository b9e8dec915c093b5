package api

import "time"

// Retention bounds how long a topic keeps messages: whichever limit is hit first removes the
// oldest segments. Zero means no limit.
type Retention struct {
	MaxAge   Duration `json:"maxAge"`
	MaxBytes int64    `json:"maxBytes"`
}

// TopicSpec is the body of PUT /v1/topics/{topic}.
type TopicSpec struct {
	// Partitions may grow, never shrink. Default 1.
	Partitions int        `json:"partitions"`
	Retention  *Retention `json:"retention,omitempty"`
	// MessageTTL: a message older than this is not delivered any more (0: no TTL).
	MessageTTL Duration `json:"messageTTL"`
	// MaxMessageBytes caps one message's data; default 1 MiB.
	MaxMessageBytes int `json:"maxMessageBytes"`
	// ReplicationFactor is how many brokers of a cluster keep each partition (immutable). On a
	// single broker it is 1; in a cluster the default is min(3, brokers).
	ReplicationFactor int `json:"replicationFactor,omitempty"`
}

// Topic is what GET /v1/topics/{topic} returns.
type Topic struct {
	Name string `json:"name"`
	TopicSpec
	CreateTime time.Time   `json:"createTime"`
	Stats      *TopicStats `json:"stats,omitempty"`
}

// TopicStats are broker-side counters of a topic.
type TopicStats struct {
	Messages   int64            `json:"messages"` // messages currently retained
	Bytes      int64            `json:"bytes"`
	Delayed    int64            `json:"delayed"` // scheduled, not yet due
	Partitions []PartitionStats `json:"partitions"`
}

// PartitionStats describe one partition log.
type PartitionStats struct {
	Partition   int   `json:"partition"`
	StartOffset int64 `json:"startOffset"`
	EndOffset   int64 `json:"endOffset"`
	Bytes       int64 `json:"bytes"`
}

// TopicList is GET /v1/topics.
type TopicList struct {
	Topics []Topic `json:"topics"`
}

// PublishMessage is one message of a publish request. Exactly one of Data (base64 in JSON) and
// Text may be set; an empty message is allowed only with Text "".
type PublishMessage struct {
	Data        []byte            `json:"data,omitempty"`
	Text        *string           `json:"text,omitempty"`
	Key         string            `json:"key,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	Tag         string            `json:"tag,omitempty"`
	OrderingKey string            `json:"orderingKey,omitempty"`
	// Delay or DeliverAt schedule the message for later (at most one of them).
	Delay     *Duration  `json:"delay,omitempty"`
	DeliverAt *time.Time `json:"deliverAt,omitempty"`
}

// PublishRequest is the JSON body of POST /v1/topics/{topic}/messages.
type PublishRequest struct {
	Messages []PublishMessage `json:"messages"`
}

// PublishResult says where one message went. A delayed message has its partition already
// chosen, Offset -1 and DeliverAt set: it gets its offset when it becomes due.
type PublishResult struct {
	ID        string     `json:"id"`
	Partition int        `json:"partition"`
	Offset    int64      `json:"offset"`
	DeliverAt *time.Time `json:"deliverAt,omitempty"`
}

// PublishResponse answers a publish, one result per message in request order.
type PublishResponse struct {
	Results []PublishResult `json:"results"`
}

// PushConfig makes a subscription push to an HTTP endpoint.
type PushConfig struct {
	Endpoint       string            `json:"endpoint"`
	Format         string            `json:"format,omitempty"` // raw|json|cloudevents-binary|cloudevents-structured
	Timeout        Duration          `json:"timeout,omitempty"`
	MaxInFlight    int               `json:"maxInFlight,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	SigningSecrets []string          `json:"signingSecrets,omitempty"`
}

// RetryPolicy says how failed deliveries are retried.
type RetryPolicy struct {
	Policy      string   `json:"policy,omitempty"` // linear|exponential
	MinBackoff  Duration `json:"minBackoff,omitempty"`
	MaxBackoff  Duration `json:"maxBackoff,omitempty"`
	MaxAttempts int      `json:"maxAttempts,omitempty"`
	MaxAge      Duration `json:"maxAge,omitempty"`
}

// SubscriptionSpec is the body of PUT /v1/subscriptions/{sub}. No Push means pull.
type SubscriptionSpec struct {
	Topic           string       `json:"topic"`
	Push            *PushConfig  `json:"push,omitempty"`
	Retry           *RetryPolicy `json:"retry,omitempty"`
	DeadLetterTopic string       `json:"deadLetterTopic,omitempty"`
	AckDeadline     Duration     `json:"ackDeadline,omitempty"`
	Filter          string       `json:"filter,omitempty"`
	Ordered         bool         `json:"ordered,omitempty"`
	StartAt         string       `json:"startAt,omitempty"` // latest|earliest|RFC 3339 time
}

// Subscription is what GET /v1/subscriptions/{sub} returns.
type Subscription struct {
	Name string `json:"name"`
	SubscriptionSpec
	CreateTime time.Time          `json:"createTime"`
	Stats      *SubscriptionStats `json:"stats,omitempty"`
}

// SubscriptionStats are the subscription's delivery counters.
type SubscriptionStats struct {
	Backlog      int64  `json:"backlog"`  // matching messages not yet acked (in flight included)
	InFlight     int64  `json:"inFlight"` // leased, awaiting ack
	Delivered    int64  `json:"delivered"`
	Acked        int64  `json:"acked"`
	Failed       int64  `json:"failed"`
	DeadLettered int64  `json:"deadLettered"`
	Expired      int64  `json:"expired"` // skipped because older than the topic's messageTTL
	LastError    string `json:"lastError"`
	// LastErrorTime is when LastError happened.
	LastErrorTime *time.Time `json:"lastErrorTime,omitempty"`
}

// SubscriptionList is GET /v1/subscriptions.
type SubscriptionList struct {
	Subscriptions []Subscription `json:"subscriptions"`
}

// PullRequest is the body of POST /v1/subscriptions/{sub}/pull.
type PullRequest struct {
	Max        int      `json:"max,omitempty"`        // default 1, at most 1000
	Wait       Duration `json:"wait,omitempty"`       // long poll, at most 30s
	Visibility Duration `json:"visibility,omitempty"` // lease; default the subscription's ackDeadline
}

// Message is one delivered (or peeked) message.
type Message struct {
	ID              string            `json:"id"`
	ReceiptHandle   string            `json:"receiptHandle,omitempty"`
	Partition       int               `json:"partition"`
	Offset          int64             `json:"offset"`
	Data            []byte            `json:"data"`
	Attributes      map[string]string `json:"attributes"`
	Key             string            `json:"key"`
	Tag             string            `json:"tag"`
	OrderingKey     string            `json:"orderingKey,omitempty"`
	PublishTime     time.Time         `json:"publishTime"`
	DeliveryAttempt int               `json:"deliveryAttempt"`
}

// PullResponse answers pull and peek.
type PullResponse struct {
	Messages []Message `json:"messages"`
}

// AckRequest is the body of ack and nack.
type AckRequest struct {
	ReceiptHandles []string `json:"receiptHandles"`
	// Delay (nack only): redeliver after this long; default 0.
	Delay Duration `json:"delay,omitempty"`
}

// AckResponse answers ack: handles that were expired or unknown are listed, not fatal.
type AckResponse struct {
	Acked   int      `json:"acked"`
	Invalid []string `json:"invalid"`
}

// NackResponse answers nack.
type NackResponse struct {
	Nacked  int      `json:"nacked"`
	Invalid []string `json:"invalid"`
}

// VisibilityRequest changes one lease's deadline.
type VisibilityRequest struct {
	ReceiptHandle string   `json:"receiptHandle"`
	Visibility    Duration `json:"visibility"`
}

// VisibilityResponse carries the new handle to use from then on.
type VisibilityResponse struct {
	ReceiptHandle string `json:"receiptHandle"`
}

// PeekRequest is the body of peek.
type PeekRequest struct {
	Max int `json:"max,omitempty"`
}
