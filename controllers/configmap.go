package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/yaml"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
)

// BrokerConfigFile is the broker configuration file (broker.yaml) the operator writes into the
// ConfigMap <name>-config and the broker reads with --config /etc/herald/broker.yaml. The command
// line flags (--listen, --data-dir, --fsync) carry the same values and win over the file.
type BrokerConfigFile struct {
	// Listen is the HTTP listen address, HOST:PORT.
	Listen string `json:"listen"`
	// DataDir holds the partition logs.
	DataDir string `json:"dataDir"`
	// Fsync is the flush policy: always, interval or never.
	Fsync string `json:"fsync"`
	// MaxMessageBytes is the default largest message of topics that do not set their own.
	MaxMessageBytes int32 `json:"maxMessageBytes"`
	// Retention is the default retention of topics that do not set their own.
	Retention RetentionConfig `json:"retention"`
	// TLS, when set, makes the listener serve HTTPS.
	TLS *TLSConfig `json:"tls,omitempty"`
	// Cluster says how the broker finds its peers.
	Cluster ClusterConfig `json:"cluster"`
}

// RetentionConfig is a retention in the broker configuration file.
type RetentionConfig struct {
	// MaxAge is a Go duration string; "0s": no age limit.
	MaxAge string `json:"maxAge"`
	// MaxBytes is the size limit of each partition's log; 0: none.
	MaxBytes int64 `json:"maxBytes"`
}

// TLSConfig names the certificate files of the listener.
type TLSConfig struct {
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// ClusterConfig describes the broker's cluster. The pods are <statefulSet>-0 … -N-1; pod i is
// reachable at <statefulSet>-i.<peerDomain>:<port>. The replica count is deliberately absent (it
// would roll every pod on a scale); a broker learns its peers from the headless Service's DNS
// records and its own name from HERALD_POD_NAME (or its hostname).
type ClusterConfig struct {
	// Name is the BrokerCluster's name.
	Name string `json:"name"`
	// Namespace is the BrokerCluster's namespace.
	Namespace string `json:"namespace"`
	// StatefulSet is the name prefix of the pods.
	StatefulSet string `json:"statefulSet"`
	// PeerDomain is the headless Service's domain, <name>-headless.<namespace>.svc.
	PeerDomain string `json:"peerDomain"`
	// Port is the peers' HTTP port.
	Port int32 `json:"port"`
}

// brokerConfig is the configuration file of a BrokerCluster.
func brokerConfig(bc *heraldv1.BrokerCluster) BrokerConfigFile {
	spec := withDefaults(bc.Spec)
	port := spec.Listeners.HTTP.Port
	cfg := BrokerConfigFile{
		Listen:          fmt.Sprintf("0.0.0.0:%d", port),
		DataDir:         DataDir,
		Fsync:           string(spec.Config.Fsync),
		MaxMessageBytes: *spec.Config.MaxMessageBytes,
		Retention: RetentionConfig{
			MaxAge:   string(*spec.Config.Retention.MaxAge),
			MaxBytes: *spec.Config.Retention.MaxBytes,
		},
		Cluster: ClusterConfig{
			Name:        bc.Name,
			Namespace:   bc.Namespace,
			StatefulSet: StatefulSetName(bc),
			PeerDomain:  fmt.Sprintf("%s.%s.svc", HeadlessServiceName(bc), bc.Namespace),
			Port:        port,
		},
	}
	if spec.Listeners.HTTP.TLS != nil {
		cfg.TLS = &TLSConfig{CertFile: TLSCertFile, KeyFile: TLSKeyFile}
	}
	return cfg
}

// renderBrokerConfig is the text of broker.yaml.
func renderBrokerConfig(bc *heraldv1.BrokerCluster) (string, error) {
	body, err := yaml.Marshal(brokerConfig(bc))
	if err != nil {
		return "", fmt.Errorf("rendering the broker configuration: %w", err)
	}
	return fmt.Sprintf("# Written by the Herald operator from BrokerCluster %s/%s; edits are overwritten.\n%s",
		bc.Namespace, bc.Name, body), nil
}

// configHash is a short, stable hash of the ConfigMap's data; it goes into the pod template.
func configHash(data map[string]string) string {
	h := sha256.New()
	// One key today; hashing key and value (length-prefixed) keeps it unambiguous if more come.
	for _, k := range []string{ConfigFileName} {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(data[k]), data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// BuildConfigMap builds the ConfigMap <name>-config holding broker.yaml, and returns the hash of
// its data for the pod template's AnnotationConfigHash.
func BuildConfigMap(bc *heraldv1.BrokerCluster) (*corev1ac.ConfigMapApplyConfiguration, string, error) {
	text, err := renderBrokerConfig(bc)
	if err != nil {
		return nil, "", err
	}
	data := map[string]string{ConfigFileName: text}
	cm := corev1ac.ConfigMap(ConfigMapName(bc), bc.Namespace).
		WithLabels(CommonLabels(bc)).
		WithOwnerReferences(ownerReference(bc)).
		WithData(data)
	return cm, configHash(data), nil
}
