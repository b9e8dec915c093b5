package controllers

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// The defaults of the BrokerCluster API. The API server applies them (+kubebuilder:default in
// api/v1alpha1); withDefaults applies the same ones again so the builders never see an unset field,
// whatever created the object.
const (
	DefaultReplicas        = int32(3)
	DefaultPort            = int32(8080)
	DefaultFsync           = heraldv1.FsyncAlways
	DefaultMaxMessageBytes = int32(1048576)
	DefaultRetentionMaxAge = heraldv1.Duration("168h")
	DefaultStorageSize     = "1Gi"
)

// withDefaults returns a copy of spec with every unset field that has a default set to it.
func withDefaults(in heraldv1.BrokerClusterSpec) heraldv1.BrokerClusterSpec {
	s := *in.DeepCopy()
	if s.Replicas == nil {
		s.Replicas = ptr.To(DefaultReplicas)
	}
	if s.Storage.Size == nil || s.Storage.Size.IsZero() {
		s.Storage.Size = ptr.To(resource.MustParse(DefaultStorageSize))
	}
	pvc := &s.Storage.PersistentVolumeClaimRetentionPolicy
	if pvc.WhenDeleted == "" {
		pvc.WhenDeleted = heraldv1.PVCRetain
	}
	if pvc.WhenScaled == "" {
		pvc.WhenScaled = heraldv1.PVCRetain
	}
	if s.Config.Fsync == "" {
		s.Config.Fsync = DefaultFsync
	}
	if s.Config.MaxMessageBytes == nil {
		s.Config.MaxMessageBytes = ptr.To(DefaultMaxMessageBytes)
	}
	if s.Config.Retention.MaxAge == nil {
		s.Config.Retention.MaxAge = ptr.To(DefaultRetentionMaxAge)
	}
	if s.Config.Retention.MaxBytes == nil {
		s.Config.Retention.MaxBytes = ptr.To(int64(0))
	}
	if s.Listeners.HTTP.Port == 0 {
		s.Listeners.HTTP.Port = DefaultPort
	}
	if s.Disruption.MaxUnavailable == nil {
		s.Disruption.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	}
	return s
}
