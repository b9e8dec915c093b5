package controllers

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// StatefulSetParams is what BuildStatefulSet needs besides the BrokerCluster.
type StatefulSetParams struct {
	// DefaultImage is the broker image when spec.image is empty: the operator's own.
	DefaultImage string
	// ConfigHash is the hash of the ConfigMap's data (from BuildConfigMap).
	ConfigHash string
	// Replicas is the StatefulSet's replica count; nil: spec.replicas. During a scale-down it is
	// the current count until the brokers that go are drained and removed from the cluster
	// (the reconciler decides; see drain.go).
	Replicas *int32
}

// DefaultTerminationGracePeriodSeconds is the broker pods' grace period unless
// spec.podTemplate.terminationGracePeriodSeconds sets one: a stopping broker hands its partition
// leaderships over (up to 15 s), then shuts down (up to 10 s); the rest is margin.
const DefaultTerminationGracePeriodSeconds = int64(45)

// BrokerImage is the image of bc's brokers: spec.image, else defaultImage.
func BrokerImage(bc *heraldv1.BrokerCluster, defaultImage string) string {
	if bc.Spec.Image != "" {
		return bc.Spec.Image
	}
	return defaultImage
}

// BrokerArgs are the broker container's arguments. Paths and the listen address are flags (not
// only in broker.yaml) so that a node agent that relocates volumes, such as the local cluster's
// pod runner, can rewrite them.
func BrokerArgs(bc *heraldv1.BrokerCluster) []string {
	spec := withDefaults(bc.Spec)
	args := []string{
		"broker",
		"--data-dir", DataDir,
		"--listen", "0.0.0.0:" + strconv.Itoa(int(spec.Listeners.HTTP.Port)),
		"--fsync", string(spec.Config.Fsync),
		"--config", ConfigFile,
	}
	if spec.Listeners.HTTP.TLS != nil {
		args = append(args, "--tls-cert-file", TLSCertFile, "--tls-key-file", TLSKeyFile)
	}
	return args
}

// normalizeStatefulSet drops from the fields the operator manages on a live StatefulSet what the
// API server adds to them on its own: volumeClaimTemplates is an atomic list, so the status it
// defaults into each claim template counts as the operator's.
func normalizeStatefulSet(managed any) {
	sts, ok := managed.(*appsv1ac.StatefulSetApplyConfiguration)
	if !ok || sts == nil || sts.Spec == nil {
		return
	}
	for i := range sts.Spec.VolumeClaimTemplates {
		sts.Spec.VolumeClaimTemplates[i].Status = nil
	}
}

// BuildStatefulSet builds the StatefulSet <name> of broker pods <name>-0 … <name>-N-1.
func BuildStatefulSet(bc *heraldv1.BrokerCluster, p StatefulSetParams) (*appsv1ac.StatefulSetApplyConfiguration, error) {
	spec := withDefaults(bc.Spec)
	pod, err := buildPodTemplate(bc, spec, p)
	if err != nil {
		return nil, err
	}
	replicas := *spec.Replicas
	if p.Replicas != nil {
		replicas = *p.Replicas
	}
	sts := appsv1ac.StatefulSetSpec().
		WithReplicas(replicas).
		WithServiceName(HeadlessServiceName(bc)).
		// Brokers start together: a Raft group needs its peers up to elect a leader, and a pod
		// waiting for the previous one to be ready would never see them.
		WithPodManagementPolicy(appsv1.ParallelPodManagement).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(bc))).
		WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().WithType(appsv1.RollingUpdateStatefulSetStrategyType)).
		WithTemplate(pod)
	if !spec.Storage.Ephemeral {
		pvc := corev1ac.PersistentVolumeClaimSpec().
			WithAccessModes(corev1.ReadWriteOnce).
			WithResources(corev1ac.VolumeResourceRequirements().
				WithRequests(corev1.ResourceList{corev1.ResourceStorage: *spec.Storage.Size}))
		if spec.Storage.StorageClassName != nil {
			pvc.WithStorageClassName(*spec.Storage.StorageClassName)
		}
		pvc.WithVolumeMode(corev1.PersistentVolumeFilesystem) // the API server's default, made explicit
		// No kind, apiVersion or namespace: the API server stores claim templates without them.
		claim := &corev1ac.PersistentVolumeClaimApplyConfiguration{}
		sts.WithVolumeClaimTemplates(claim.
			WithName(DataVolumeName).
			WithLabels(SelectorLabels(bc)).
			WithSpec(pvc)).
			WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
				WithWhenDeleted(appsv1.PersistentVolumeClaimRetentionPolicyType(spec.Storage.PersistentVolumeClaimRetentionPolicy.WhenDeleted)).
				WithWhenScaled(appsv1.PersistentVolumeClaimRetentionPolicyType(spec.Storage.PersistentVolumeClaimRetentionPolicy.WhenScaled)))
	}
	return appsv1ac.StatefulSet(StatefulSetName(bc), bc.Namespace).
		WithLabels(CommonLabels(bc)).
		WithOwnerReferences(ownerReference(bc)).
		WithSpec(sts), nil
}

func buildPodTemplate(bc *heraldv1.BrokerCluster, spec heraldv1.BrokerClusterSpec, p StatefulSetParams) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
	o := spec.PodTemplate
	port := spec.Listeners.HTTP.Port
	scheme := corev1.URISchemeHTTP
	if spec.Listeners.HTTP.TLS != nil {
		scheme = corev1.URISchemeHTTPS
	}

	labels := maps.Clone(o.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, CommonLabels(bc)) // the operator's labels win
	annotations := maps.Clone(o.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationConfigHash] = p.ConfigHash

	container := corev1ac.Container().
		WithName(BrokerContainerName).
		WithImage(BrokerImage(bc, p.DefaultImage)).
		WithArgs(BrokerArgs(bc)...).
		// The broker's HTTP port is the first container port.
		WithPorts(corev1ac.ContainerPort().
			WithName(BrokerPortName).
			WithContainerPort(port).
			WithProtocol(corev1.ProtocolTCP)).
		WithEnv(
			corev1ac.EnvVar().WithName("HERALD_POD_NAME").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("metadata.name"))),
			corev1ac.EnvVar().WithName("HERALD_POD_NAMESPACE").WithValueFrom(corev1ac.EnvVarSource().
				WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("metadata.namespace"))),
		).
		WithReadinessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath("/readyz").WithPort(intstr.FromString(BrokerPortName)).WithScheme(scheme)).
			WithPeriodSeconds(5).
			WithTimeoutSeconds(2).
			WithFailureThreshold(3)).
		WithLivenessProbe(corev1ac.Probe().
			WithHTTPGet(corev1ac.HTTPGetAction().
				WithPath("/healthz").WithPort(intstr.FromString(BrokerPortName)).WithScheme(scheme)).
			WithPeriodSeconds(10).
			WithTimeoutSeconds(5).
			WithFailureThreshold(6)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithRunAsNonRoot(true).
			WithReadOnlyRootFilesystem(true).
			WithAllowPrivilegeEscalation(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName(DataVolumeName).WithMountPath(DataDir),
			corev1ac.VolumeMount().WithName(ConfigVolumeName).WithMountPath(ConfigDir).WithReadOnly(true),
			// The root file system is read-only; scratch files go here.
			corev1ac.VolumeMount().WithName(TmpVolumeName).WithMountPath("/tmp"),
		)
	if !isEmptyResources(spec.Resources) {
		var res corev1ac.ResourceRequirementsApplyConfiguration
		if err := convert(spec.Resources, &res); err != nil {
			return nil, fmt.Errorf("spec.resources: %w", err)
		}
		container.WithResources(&res)
	}

	volumes := []*corev1ac.VolumeApplyConfiguration{
		corev1ac.Volume().WithName(ConfigVolumeName).WithConfigMap(corev1ac.ConfigMapVolumeSource().
			WithName(ConfigMapName(bc))),
		corev1ac.Volume().WithName(TmpVolumeName).WithEmptyDir(corev1ac.EmptyDirVolumeSource()),
	}
	if spec.Storage.Ephemeral {
		volumes = append(volumes, corev1ac.Volume().WithName(DataVolumeName).WithEmptyDir(
			corev1ac.EmptyDirVolumeSource().WithSizeLimit(*spec.Storage.Size)))
	}
	if tls := spec.Listeners.HTTP.TLS; tls != nil {
		volumes = append(volumes, corev1ac.Volume().WithName(TLSVolumeName).WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(tls.SecretName)))
		container.WithVolumeMounts(corev1ac.VolumeMount().WithName(TLSVolumeName).WithMountPath(TLSDir).WithReadOnly(true))
	}

	podSpec := corev1ac.PodSpec().
		WithContainers(container).
		WithVolumes(volumes...).
		// The brokers never call the Kubernetes API.
		WithAutomountServiceAccountToken(false).
		// No <SERVICE>_PORT variables: a Service named "herald" would otherwise inject HERALD_PORT,
		// which the broker would read as configuration.
		WithEnableServiceLinks(false).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(brokerUID).
			WithRunAsGroup(brokerUID).
			WithFSGroup(brokerUID).
			WithFSGroupChangePolicy(corev1.FSGroupChangeOnRootMismatch).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
	if len(o.NodeSelector) > 0 {
		podSpec.WithNodeSelector(o.NodeSelector)
	}
	if o.PriorityClassName != "" {
		podSpec.WithPriorityClassName(o.PriorityClassName)
	}
	grace := DefaultTerminationGracePeriodSeconds
	if o.TerminationGracePeriodSeconds != nil {
		grace = *o.TerminationGracePeriodSeconds
	}
	podSpec.WithTerminationGracePeriodSeconds(grace)
	if len(o.Tolerations) > 0 {
		var tol []*corev1ac.TolerationApplyConfiguration
		if err := convert(o.Tolerations, &tol); err != nil {
			return nil, fmt.Errorf("spec.podTemplate.tolerations: %w", err)
		}
		podSpec.WithTolerations(tol...)
	}
	if o.Affinity != nil {
		var aff corev1ac.AffinityApplyConfiguration
		if err := convert(o.Affinity, &aff); err != nil {
			return nil, fmt.Errorf("spec.podTemplate.affinity: %w", err)
		}
		podSpec.WithAffinity(&aff)
	}
	if len(o.TopologySpreadConstraints) > 0 {
		var tsc []*corev1ac.TopologySpreadConstraintApplyConfiguration
		if err := convert(o.TopologySpreadConstraints, &tsc); err != nil {
			return nil, fmt.Errorf("spec.podTemplate.topologySpreadConstraints: %w", err)
		}
		podSpec.WithTopologySpreadConstraints(tsc...)
	} else {
		// Default: spread the brokers over nodes when possible, but still schedule them when not
		// (a one-node development cluster).
		podSpec.WithTopologySpreadConstraints(corev1ac.TopologySpreadConstraint().
			WithMaxSkew(1).
			WithTopologyKey(corev1.LabelHostname).
			WithWhenUnsatisfiable(corev1.ScheduleAnyway).
			WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(bc))))
	}

	return corev1ac.PodTemplateSpec().
		WithLabels(labels).
		WithAnnotations(annotations).
		WithSpec(podSpec), nil
}

func isEmptyResources(r corev1.ResourceRequirements) bool {
	return len(r.Limits) == 0 && len(r.Requests) == 0 && len(r.Claims) == 0
}

// convert turns a typed API value into its apply configuration (same JSON shape).
func convert(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}
