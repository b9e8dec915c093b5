package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDurationParse(t *testing.T) {
	tests := map[Duration]time.Duration{"30s": 30 * time.Second, "1m30s": 90 * time.Second, "168h": 168 * time.Hour, "0": 0}
	for in, want := range tests {
		got, err := in.Parse()
		if err != nil || got != want {
			t.Errorf("Duration(%q).Parse() = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := Duration("7 days").Parse(); err == nil {
		t.Error("7 days parsed")
	}
}

func TestEffectiveTopicName(t *testing.T) {
	topic := &Topic{ObjectMeta: metav1.ObjectMeta{Name: "orders"}}
	if got := topic.EffectiveTopicName(); got != "orders" {
		t.Errorf("unset topicName: %q", got)
	}
	topic.Spec.TopicName = "Orders.v2"
	if got := topic.EffectiveTopicName(); got != "Orders.v2" {
		t.Errorf("topicName: %q", got)
	}
}

func TestDeepCopy(t *testing.T) {
	n := int32(5)
	in := &BrokerCluster{Spec: BrokerClusterSpec{Replicas: &n, PodTemplate: PodTemplateOverrides{Labels: map[string]string{"a": "b"}}}}
	out := in.DeepCopy()
	*out.Spec.Replicas = 7
	out.Spec.PodTemplate.Labels["a"] = "c"
	if *in.Spec.Replicas != 5 || in.Spec.PodTemplate.Labels["a"] != "b" {
		t.Error("DeepCopy shares memory with the original")
	}
}
