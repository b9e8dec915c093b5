package controllers

import (
	"fmt"
	"strings"
	"time"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
)

// DesiredTopicSpec is what the operator PUTs for Topic t on BrokerCluster bc. Every field is
// explicit (unset ones take the cluster's spec.config defaults, as the brokers would), so the
// topic a GET returns can be compared with it field by field; the exception is
// replicationFactor, which the brokers choose when the Topic leaves it 0 (min(3, brokers)) and
// which never changes (topicDiff leaves it out; see replicationFactorMismatch).
func DesiredTopicSpec(t *heraldv1.Topic, bc *heraldv1.BrokerCluster) (api.TopicSpec, error) {
	cfg := withDefaults(bc.Spec).Config
	s := api.TopicSpec{
		Partitions:        int(max(t.Spec.Partitions, 1)),
		Retention:         &api.Retention{},
		MaxMessageBytes:   int(*cfg.MaxMessageBytes),
		ReplicationFactor: int(max(t.Spec.ReplicationFactor, 0)),
	}
	maxAge := *cfg.Retention.MaxAge
	maxBytes := *cfg.Retention.MaxBytes
	if r := t.Spec.Retention; r != nil {
		if r.MaxAge != nil {
			maxAge = *r.MaxAge
		}
		if r.MaxBytes != nil {
			maxBytes = *r.MaxBytes
		}
	}
	d, err := parseDuration("spec.retention.maxAge", maxAge)
	if err != nil {
		return s, err
	}
	s.Retention.MaxAge, s.Retention.MaxBytes = api.Duration(d), maxBytes
	if t.Spec.MessageTTL != nil {
		d, err := parseDuration("spec.messageTTL", *t.Spec.MessageTTL)
		if err != nil {
			return s, err
		}
		s.MessageTTL = api.Duration(d)
	}
	if t.Spec.MaxMessageBytes != nil {
		s.MaxMessageBytes = int(*t.Spec.MaxMessageBytes)
	}
	return s, nil
}

func parseDuration(field string, d heraldv1.Duration) (time.Duration, error) {
	v, err := api.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("%s: %v", field, err)
	}
	return v, nil
}

// fieldDiff is one field on which the broker differs from the spec.
type fieldDiff struct {
	Field string
	// Have is the broker's value, Want the spec's ("" for values not to be shown, like secrets).
	Have, Want string
}

// asUpdate renders diffs for an Event about a spec change: "partitions 1 → 3".
func asUpdate(diffs []fieldDiff) []string {
	out := make([]string, 0, len(diffs))
	for _, d := range diffs {
		if d.Have == "" && d.Want == "" {
			out = append(out, d.Field+" changed")
			continue
		}
		out = append(out, fmt.Sprintf("%s %s → %s", d.Field, d.Have, d.Want))
	}
	return out
}

// asDrift renders diffs for the Drifted condition: "partitions was 1 on the broker, restored to 3".
func asDrift(diffs []fieldDiff) []string {
	out := make([]string, 0, len(diffs))
	for _, d := range diffs {
		if d.Have == "" && d.Want == "" {
			out = append(out, d.Field+" was changed on the broker, restored")
			continue
		}
		out = append(out, fmt.Sprintf("%s was %s on the broker, restored to %s", d.Field, d.Have, d.Want))
	}
	return out
}

// topicDiff lists the fields on which the broker's topic (have) differs from want.
func topicDiff(want, have api.TopicSpec) []fieldDiff {
	var out []fieldDiff
	add := func(field string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, fieldDiff{Field: field, Have: fmt.Sprint(h), Want: fmt.Sprint(w)})
		}
	}
	add("partitions", have.Partitions, want.Partitions)
	hr, wr := retentionOf(have), retentionOf(want)
	add("retention.maxAge", hr.MaxAge, wr.MaxAge)
	add("retention.maxBytes", hr.MaxBytes, wr.MaxBytes)
	add("messageTTL", have.MessageTTL, want.MessageTTL)
	add("maxMessageBytes", have.MaxMessageBytes, want.MaxMessageBytes)
	return out
}

// replicationFactorMismatch describes a broker topic whose replication factor (immutable) is not
// the one wanted; "" when they agree or want leaves it to the brokers (0).
func replicationFactorMismatch(name, cluster string, want api.TopicSpec, have api.TopicSpec) string {
	if want.ReplicationFactor == 0 || have.ReplicationFactor == 0 || want.ReplicationFactor == have.ReplicationFactor {
		return ""
	}
	return fmt.Sprintf("topic %q has replicationFactor %d on BrokerCluster %q, not %d (spec.replicationFactor); a topic's replication factor never changes: delete the topic on the brokers, or create a Topic with replicationFactor %d",
		name, have.ReplicationFactor, cluster, want.ReplicationFactor, have.ReplicationFactor)
}

// underReplication reads the replication state of topic's partitions from a cluster view: how
// many partitions have fewer in-sync copies than rf (0: as many as they have replicas), and a
// message naming them. found is false when the view has no partition of the topic (a view older
// than the topic).
func underReplication(view *ClusterView, topic string, rf int) (count int32, msg string, found bool) {
	const listed = 10
	total := 0
	var parts []string
	for _, p := range view.Partitions {
		if p.Topic != topic {
			continue
		}
		total++
		want := rf
		if want <= 0 || want > len(p.Replicas) {
			// Without a known factor, or while a copy is being added: every replica.
			want = len(p.Replicas)
		}
		if len(p.InSync) >= want && p.Leader != "" {
			continue
		}
		count++
		if len(parts) < listed {
			s := fmt.Sprintf("partition %d has %d of %d copies in sync", p.Partition, len(p.InSync), want)
			if p.Leader == "" {
				s += " and no leader"
			}
			parts = append(parts, s)
		}
	}
	if total == 0 {
		return 0, "", false
	}
	if count == 0 {
		return 0, fmt.Sprintf("all %d partitions have every copy in sync", total), true
	}
	msg = fmt.Sprintf("%d of %d partitions are under-replicated: %s", count, total, strings.Join(parts, ", "))
	if int(count) > listed {
		msg += fmt.Sprintf(", and %d more", int(count)-listed)
	}
	return count, msg, true
}

// partitionsIn counts the partitions of topic in a view.
func partitionsIn(view *ClusterView, topic string) int {
	n := 0
	for _, p := range view.Partitions {
		if p.Topic == topic {
			n++
		}
	}
	return n
}

func retentionOf(s api.TopicSpec) api.Retention {
	if s.Retention == nil {
		return api.Retention{}
	}
	return *s.Retention
}

func topicStats(t api.Topic) *heraldv1.TopicStats {
	st := &heraldv1.TopicStats{}
	if t.Stats != nil {
		st.Messages, st.Bytes = t.Stats.Messages, t.Stats.Bytes
	}
	return st
}
