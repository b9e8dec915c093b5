// Package push delivers the messages of push subscriptions to HTTP endpoints (DESIGN.md, "Push
// contract") or forwards them into another topic.
//
// A Manager watches the broker's subscriptions (engine.Broker.Observe) and runs one dispatcher
// per push subscription. The engine owns every piece of delivery state: a dispatcher leases
// messages with Broker.Lease, and ends each lease with Ack (2xx), Retry (retryable failure) or
// Reject (permanent failure), so push and pull share one at-least-once machinery, its journal
// and its dead-lettering. A broker restart mid-delivery redelivers whatever was not acked.
// Changing a subscription takes effect at once: messages already out finish with the settings
// they were sent with and keep their leases; the next ones use the new settings.
//
// # Delivery
//
// Each message is one POST to push.endpoint, with at most push.maxInFlight requests in flight
// per subscription. An ordered subscription never has two messages of one ordering key out at
// once (the engine leases them one at a time), so they arrive in offset order and a failing
// message holds back only its own key.
//
// Outcome of a request, by response:
//
//   - 2xx: the message is acked.
//   - 400 Bad Request, 410 Gone, 413 Content Too Large, 415 Unsupported Media Type and 422
//     Unprocessable Content are permanent: the endpoint rejects this message and would reject it
//     again, so it is dead-lettered at once (engine Reject; the dead-letter attributes carry the
//     reason, the status and the attempts).
//   - Everything else is retried per the subscription's retry policy, with jitter: 429, 5xx,
//     timeouts, connection and TLS errors, and also 3xx that were not followed, 401, 403, 404,
//     408, 409 and the other 4xx. 404 and the auth failures are retried on purpose (as Knative
//     does for 404): they are usually a deployment or configuration in progress, and retrying
//     loses nothing, while dead-lettering would. A Retry-After header (seconds or an HTTP date,
//     capped by Options.MaxRetryAfter) holds the message back at least that long, and holds the
//     whole subscription's leasing for at most Options.BreakerMaxPause.
//
// Without a retry policy a push subscription retries exponentially from 1s to 10m with no
// attempt limit. The policies mns-backoff and mns-exponential-decay reproduce Alibaba MNS's
// BACKOFF_RETRY (4 attempts, 10 to 20 s apart at random) and EXPONENTIAL_DECAY_RETRY (177
// attempts, 1 s doubling up to 512 s, about 24 h); see broker/engine.
//
// Circuit breaker: after Options.BreakerThreshold consecutive retryable failures a subscription
// stops leasing for Options.BreakerMinPause, then sends one probe message; each failed probe
// doubles the pause up to Options.BreakerMaxPause. Any 2xx (or permanent answer, which shows the
// endpoint is up) closes the breaker and full concurrency resumes. Messages are not consumed
// while the breaker is open, so no attempts are burnt on a dead endpoint.
//
// # Request format
//
// Every request carries these headers (values as the engine delivers the message):
//
//	Herald-Message-Id        the message id (also webhook-id when signing)
//	Herald-Subscription      the subscription name
//	Herald-Topic             the topic the message was published to
//	Herald-Partition         its partition
//	Herald-Offset            its offset in the partition
//	Herald-Delivery-Attempt  1 on the first delivery, counting up on each redelivery
//	Herald-Publish-Time      RFC 3339 time the message was published
//	Herald-Key, Herald-Tag, Herald-Ordering-Key   when the message has them
//
// plus push.headers (a Host entry sets the request's Host), which cannot override the headers
// above, the signature headers or the format's own headers.
//
// push.format selects the body:
//
//   - raw (default): the body is the message data as published. Content-Type is the message's
//     content-type attribute (set when it was published as a raw body), else a Content-Type in
//     push.headers, else application/octet-stream. Attributes travel as headers: an attribute
//     named ce-<x> as the header ce-<x> (so a message published in CloudEvents binary mode is
//     pushed as the same binary-mode event), every other attribute <name> as
//     Herald-Attribute-<name>. This mirrors how a raw publish reads attributes from headers.
//     HTTP header names are case-insensitive (receivers should lower-case them); characters of
//     an attribute name that are not valid in a header name are percent-encoded.
//   - json: a Pub/Sub-push-like envelope, Content-Type application/json:
//     {"message":{"id","messageId","data"(base64),"attributes","key","tag","orderingKey",
//     "publishTime","partition","offset"},"subscription","topic","deliveryAttempt"}.
//   - cloudevents-binary and cloudevents-structured: CloudEvents 1.0 over the HTTP binding.
//     specversion 1.0, id = the message id, source = /herald/topics/<topic>, type =
//     dev.herald.message, time = the publish time, datacontenttype = the content-type attribute.
//     A message published as a CloudEvent (its attributes ce-id, ce-source, ce-type, ce-subject,
//     ce-time, ce-<extension>… as binary mode stores them) is pushed as that same event: its
//     ce-* attributes override these defaults. Other attributes whose names are valid
//     CloudEvents attribute names (a-z, 0-9, at most 20 characters, not a context attribute)
//     become extension attributes; the rest travel as Herald-Attribute-<name> headers. In
//     structured mode the data is a JSON value when datacontenttype is JSON and the data is
//     valid JSON, a string when it is text/*, and data_base64 otherwise.
//
// # Signing
//
// With push.signingSecrets, each request is signed per Standard Webhooks: webhook-id (the
// message id, the same on every attempt), webhook-timestamp (Unix seconds of this attempt) and
// webhook-signature, a space-separated list with one "v1,<base64 HMAC-SHA256(key,
// id.timestamp.body)>" per secret, so keys rotate without downtime. A secret whsec_<base64> has
// the decoded bytes as key (Standard Webhooks); any other secret is used as its bytes.
// broker/client.VerifyWebhook checks such a request.
//
// # Safety and isolation
//
// Each subscription has its own dispatcher, its own http.Client and Transport (own connection
// pool, own concurrency bound), so a slow or dead endpoint never delays another subscription.
// The dialer refuses link-local and cloud metadata addresses (engine.IsForbiddenIP) for names
// resolved at connect time and after redirects, unless the broker allows them
// (engine.Config.AllowLinkLocalEndpoints). Redirects are followed at most 5 hops, only to http
// and https. Environment proxies are not used (a proxy would hide the address actually
// reached). Response bodies are read up to Options.MaxResponseBytes and discarded; the first
// bytes of a failure's body go into lastError.
//
// # Forwarding
//
// An endpoint topic:<name> publishes each message (data, key, tag, ordering key, attributes)
// into that topic, like an MNS queue endpoint; it is acked once the publish is durable. A
// missing topic is retried (it may be created later); a message the topic refuses (too large,
// invalid) is dead-lettered.
//
// # Metrics
//
// On the broker's registry: herald_push_requests_total{subscription,code} (code: the HTTP
// status, or "error" / "timeout"), herald_push_latency_seconds{subscription} (one request),
// herald_push_end_to_end_seconds{subscription} (publish to successful push) and
// herald_push_circuit_open{subscription}. Delivered, acked, failed, dead-lettered and lastError
// are the engine's subscription stats.
package push
