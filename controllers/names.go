package controllers

import (
	"strings"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of everything the operator writes.
const FieldOwner = "herald-operator"

// Labels and annotations the operator puts on the objects it builds.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"

	// AppName is the value of app.kubernetes.io/name on every broker object.
	AppName = "herald"
	// ManagedBy is the value of app.kubernetes.io/managed-by; the operator's cache only holds
	// ConfigMaps, Services, StatefulSets and PodDisruptionBudgets that carry it.
	ManagedBy = "herald-operator"

	// AnnotationConfigHash on the pod template is the hash of the broker configuration, so a
	// configuration change rolls the pods.
	AnnotationConfigHash = "herald.dev/config-hash"
)

// Paths and names inside the broker pods.
const (
	BrokerContainerName = "broker"
	BrokerPortName      = "http"
	DataDir             = "/var/lib/herald"
	ConfigDir           = "/etc/herald"
	ConfigFileName      = "broker.yaml"
	ConfigFile          = ConfigDir + "/" + ConfigFileName
	TLSDir              = "/etc/herald-tls"
	TLSCertFile         = TLSDir + "/tls.crt"
	TLSKeyFile          = TLSDir + "/tls.key"
	DataVolumeName      = "data"
	ConfigVolumeName    = "config"
	TLSVolumeName       = "tls"
	TmpVolumeName       = "tmp"
	brokerUID           = int64(65532)
)

// Names of the children of a BrokerCluster.

// StatefulSetName is the StatefulSet's name: the BrokerCluster's (pods <name>-0, <name>-1, …).
func StatefulSetName(bc *heraldv1.BrokerCluster) string { return bc.Name }

// ClientServiceName is the client Service: <name>.<namespace>.svc.
func ClientServiceName(bc *heraldv1.BrokerCluster) string { return bc.Name }

// HeadlessServiceName is the headless Service that gives each pod a stable DNS name
// (<name>-0.<name>-headless.<namespace>.svc).
func HeadlessServiceName(bc *heraldv1.BrokerCluster) string { return bc.Name + "-headless" }

// ConfigMapName holds the broker configuration file.
func ConfigMapName(bc *heraldv1.BrokerCluster) string { return bc.Name + "-config" }

// PodDisruptionBudgetName is the PDB of the broker pods.
func PodDisruptionBudgetName(bc *heraldv1.BrokerCluster) string { return bc.Name }

// SelectorLabels select the broker pods of one BrokerCluster (the StatefulSet's selector;
// never changes).
func SelectorLabels(bc *heraldv1.BrokerCluster) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: bc.Name}
}

// CommonLabels are on every child object and pod.
func CommonLabels(bc *heraldv1.BrokerCluster) map[string]string {
	l := SelectorLabels(bc)
	l[LabelComponent] = "broker"
	l[LabelManagedBy] = ManagedBy
	return l
}

// ImageVersion is the version an image reference names: its tag ("v0.1.0"), else its digest,
// else "latest".
func ImageVersion(image string) string {
	ref, digest, hasDigest := strings.Cut(image, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		return last[i+1:]
	}
	if hasDigest {
		return digest
	}
	return "latest"
}
