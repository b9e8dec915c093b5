package controllers

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
)

// Defaults of a Subscription that the CRD leaves to the operator, as the brokers apply them
// (broker/engine/subspec.go): the retry defaults depend on the policy.
const (
	defaultAckDeadline  = 30 * time.Second
	defaultPushTimeout  = 10 * time.Second
	defaultMaxInFlight  = 16
	defaultRetryMaxAge  = 24 * time.Hour
	defaultRetryPolicy  = heraldv1.RetryExponential
	defaultStartAt      = "latest"
	defaultServicePort  = int32(80)
	defaultServicePath  = "/"
	maxBrokerObjectName = 249
)

// retryDefaults are minBackoff, maxBackoff and maxAttempts of each policy.
var retryDefaults = map[heraldv1.RetryPolicy]struct {
	min, max time.Duration
	attempts int
}{
	heraldv1.RetryLinear:              {time.Second, 10 * time.Minute, 10},
	heraldv1.RetryExponential:         {time.Second, 10 * time.Minute, 10},
	heraldv1.RetryMNSBackoff:          {10 * time.Second, 20 * time.Second, 4},
	heraldv1.RetryMNSExponentialDecay: {time.Second, 512 * time.Second, 177},
}

// resolvedRefs are what a Subscription's references resolve to.
type resolvedRefs struct {
	// Topic and DeadLetterTopic are broker-side topic names.
	Topic, DeadLetterTopic string
	// Endpoint is the push URL; empty for pull.
	Endpoint string
	// SigningSecrets are the push signing secrets, in a stable order.
	SigningSecrets []string
}

// DesiredSubscriptionSpec is what the operator PUTs for Subscription s, with every default
// explicit so that the subscription a GET returns can be compared with it field by field.
func DesiredSubscriptionSpec(s *heraldv1.Subscription, refs resolvedRefs) (api.SubscriptionSpec, error) {
	spec := s.Spec
	out := api.SubscriptionSpec{
		Topic:           refs.Topic,
		DeadLetterTopic: refs.DeadLetterTopic,
		Filter:          spec.Filter,
		Ordered:         spec.Ordered,
		StartAt:         firstNonEmpty(spec.StartAt, defaultStartAt),
	}
	var err error
	if out.AckDeadline, err = durationOr("spec.ackDeadline", spec.AckDeadline, defaultAckDeadline); err != nil {
		return out, err
	}
	policy := spec.Retry.Policy
	if policy == "" {
		policy = defaultRetryPolicy
	}
	def, ok := retryDefaults[policy]
	if !ok {
		return out, fmt.Errorf("spec.retry.policy: unknown policy %q", policy)
	}
	r := &api.RetryPolicy{Policy: string(policy), MaxAttempts: def.attempts}
	if r.MinBackoff, err = durationOr("spec.retry.minBackoff", spec.Retry.MinBackoff, def.min); err != nil {
		return out, err
	}
	if r.MaxBackoff, err = durationOr("spec.retry.maxBackoff", spec.Retry.MaxBackoff, def.max); err != nil {
		return out, err
	}
	if spec.Retry.MaxAttempts > 0 {
		r.MaxAttempts = int(spec.Retry.MaxAttempts)
	}
	r.MaxAge = api.Duration(defaultRetryMaxAge)
	if spec.Retry.MaxAge != nil {
		// "0s" means no limit here, not the default.
		d, err := parseDuration("spec.retry.maxAge", *spec.Retry.MaxAge)
		if err != nil {
			return out, err
		}
		r.MaxAge = api.Duration(d)
	}
	out.Retry = r
	if p := spec.Push; p != nil {
		push := &api.PushConfig{
			Endpoint:    refs.Endpoint,
			Format:      string(p.Format),
			MaxInFlight: int(p.MaxInFlight),
		}
		if push.Format == "" {
			push.Format = string(heraldv1.PushFormatRaw)
		}
		if push.MaxInFlight == 0 {
			push.MaxInFlight = defaultMaxInFlight
		}
		if push.Timeout, err = durationOr("spec.push.timeout", p.Timeout, defaultPushTimeout); err != nil {
			return out, err
		}
		if len(p.Headers) > 0 {
			push.Headers = maps.Clone(p.Headers)
		}
		if len(refs.SigningSecrets) > 0 {
			push.SigningSecrets = slices.Clone(refs.SigningSecrets)
		}
		out.Push = push
	}
	return out, nil
}

// durationOr parses d; unset or zero gives def (the brokers treat zero as unset).
func durationOr(field string, d *heraldv1.Duration, def time.Duration) (api.Duration, error) {
	if d == nil {
		return api.Duration(def), nil
	}
	v, err := parseDuration(field, *d)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		v = def
	}
	return api.Duration(v), nil
}

// subscriptionDiff lists the fields on which the broker's subscription (have) differs from want.
// The topic is compared by the caller (it cannot change in place) and startAt not at all (it
// applies only when a subscription is created).
func subscriptionDiff(want, have api.SubscriptionSpec) []fieldDiff {
	var out []fieldDiff
	add := func(field string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, fieldDiff{Field: field, Have: quoteEmpty(fmt.Sprint(h)), Want: quoteEmpty(fmt.Sprint(w))})
		}
	}
	add("ackDeadline", have.AckDeadline, want.AckDeadline)
	add("deadLetterTopic", have.DeadLetterTopic, want.DeadLetterTopic)
	add("filter", have.Filter, want.Filter)
	add("ordered", have.Ordered, want.Ordered)
	hr, wr := have.Retry, want.Retry
	if hr == nil {
		hr = &api.RetryPolicy{}
	}
	if wr == nil {
		wr = &api.RetryPolicy{}
	}
	add("retry.policy", hr.Policy, wr.Policy)
	add("retry.minBackoff", hr.MinBackoff, wr.MinBackoff)
	add("retry.maxBackoff", hr.MaxBackoff, wr.MaxBackoff)
	add("retry.maxAttempts", hr.MaxAttempts, wr.MaxAttempts)
	add("retry.maxAge", hr.MaxAge, wr.MaxAge)
	switch hp, wp := have.Push, want.Push; {
	case hp == nil && wp == nil:
	case hp == nil:
		out = append(out, fieldDiff{Field: "push", Have: "pull", Want: "push to " + wp.Endpoint})
	case wp == nil:
		out = append(out, fieldDiff{Field: "push", Have: "push to " + hp.Endpoint, Want: "pull"})
	default:
		add("push.endpoint", hp.Endpoint, wp.Endpoint)
		add("push.format", hp.Format, wp.Format)
		add("push.timeout", hp.Timeout, wp.Timeout)
		add("push.maxInFlight", hp.MaxInFlight, wp.MaxInFlight)
		if !maps.Equal(hp.Headers, wp.Headers) {
			out = append(out, fieldDiff{Field: "push.headers", Have: headerNames(hp.Headers), Want: headerNames(wp.Headers)})
		}
		if !slices.Equal(hp.SigningSecrets, wp.SigningSecrets) {
			// Never show the secrets themselves.
			out = append(out, fieldDiff{Field: "push.signingSecrets"})
		}
	}
	return out
}

func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func headerNames(h map[string]string) string {
	names := slices.Sorted(maps.Keys(h))
	return "[" + strings.Join(names, " ") + "]"
}

// serviceURL is the push URL of a serviceRef: http://<name>.<namespace>.svc:<port><path>.
func serviceURL(namespace string, ref *heraldv1.ServiceReference) string {
	port := defaultServicePort
	if ref.Port != nil {
		port = *ref.Port
	}
	return fmt.Sprintf("http://%s.%s.svc:%d%s", ref.Name, namespace, port, firstNonEmpty(ref.Path, defaultServicePath))
}

// servicePortProblem says why svc cannot receive on the serviceRef's port ("" when it can). An
// ExternalName Service has no ports to check.
func servicePortProblem(svc *corev1.Service, ref *heraldv1.ServiceReference) string {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return ""
	}
	port := defaultServicePort
	if ref.Port != nil {
		port = *ref.Port
	}
	var have []string
	for _, p := range svc.Spec.Ports {
		if p.Port == port && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			return ""
		}
		have = append(have, fmt.Sprint(p.Port))
	}
	return fmt.Sprintf("Service %q has no TCP port %d (its ports: %s); set spec.push.serviceRef.port", svc.Name, port, strings.Join(have, ", "))
}

// signingSecrets are the secrets of the Secret: the value of ref.Key, or of every key (in key
// order) when ref.Key is empty. Surrounding white space (a trailing newline of a file) is dropped.
func signingSecrets(secret *corev1.Secret, ref *heraldv1.SecretReference) ([]string, string) {
	var keys []string
	if ref.Key != "" {
		if _, ok := secret.Data[ref.Key]; !ok {
			return nil, fmt.Sprintf("Secret %q has no key %q", secret.Name, ref.Key)
		}
		keys = []string{ref.Key}
	} else {
		keys = make([]string, 0, len(secret.Data))
		for k := range secret.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	var out []string
	for _, k := range keys {
		if v := strings.TrimSpace(string(secret.Data[k])); v != "" {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("Secret %q holds no signing secret (no non-empty value)", secret.Name)
	}
	return out, ""
}

func subscriptionMode(s *heraldv1.Subscription) heraldv1.SubscriptionMode {
	if s.Spec.Push != nil {
		return heraldv1.ModePush
	}
	return heraldv1.ModePull
}
