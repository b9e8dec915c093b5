package cli

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/heraldmq/herald/broker/cluster"
	"github.com/heraldmq/herald/broker/store"
)

// nodeSettings is how this broker joins a cluster; nil settings: it runs alone.
type nodeSettings struct {
	id, advertise string
	peers         map[string]string
	join          []string
}

// clusterConfig works out the cluster settings from the flags (or environment) and, under
// the operator, from the configuration file's cluster block: the node id is the pod name,
// the advertised address <pod>.<peerDomain>:<port>; pod 0 founds the cluster and the others
// join through their lower-numbered siblings.
func clusterConfig(c BrokerConfig, getenv func(string) string) (*nodeSettings, error) {
	s := &nodeSettings{id: c.NodeID, advertise: c.ClusterAdvertise}
	if c.ClusterPeers != "" {
		peers, err := cluster.ParsePeers(c.ClusterPeers)
		if err != nil {
			return nil, fmt.Errorf("--cluster-peers: %w", err)
		}
		s.peers = peers
	}
	s.join = cluster.ParseJoin(c.ClusterJoin)
	if s.id == "" && c.Cluster != nil && c.Cluster.StatefulSet != "" {
		// Under the operator every broker is a cluster node (of one, at first), named by its pod.
		s.id = getenv("HERALD_POD_NAME")
		if s.id == "" {
			s.id, _ = os.Hostname()
		}
	}
	if s.id == "" && (s.peers != nil || len(s.join) > 0) {
		return nil, fmt.Errorf("--node-id is required with --cluster-peers or --cluster-join")
	}
	if s.id != "" && s.peers == nil && len(s.join) == 0 && c.Cluster != nil && c.Cluster.StatefulSet != "" && c.Cluster.PeerDomain != "" && c.Cluster.Port > 0 {
		// Under the operator: derive peers from the StatefulSet's stable names.
		prefix := c.Cluster.StatefulSet + "-"
		ord, err := strconv.Atoi(strings.TrimPrefix(s.id, prefix))
		if !strings.HasPrefix(s.id, prefix) || err != nil || ord < 0 {
			return nil, fmt.Errorf("node id %q is not a pod of StatefulSet %q", s.id, c.Cluster.StatefulSet)
		}
		addr := func(i int) string {
			return net.JoinHostPort(c.Cluster.StatefulSet+"-"+strconv.Itoa(i)+"."+c.Cluster.PeerDomain, strconv.Itoa(c.Cluster.Port))
		}
		if s.advertise == "" {
			s.advertise = addr(ord)
		}
		if ord == 0 {
			// Pod 0 founds the cluster — unless it lost its data while the others kept theirs:
			// then it must join them, and the join list covers that (see cluster.Config.Join).
			s.peers = map[string]string{s.id: s.advertise}
			for i := 1; i <= 8; i++ {
				s.join = append(s.join, addr(i))
			}
		} else {
			for i := 0; i < ord+8; i++ {
				if i != ord {
					s.join = append(s.join, addr(i))
				}
			}
		}
	}
	if s.id == "" {
		return nil, nil
	}
	if s.peers != nil {
		if _, ok := s.peers[s.id]; !ok {
			return nil, fmt.Errorf("--cluster-peers must include this node (%s)", s.id)
		}
		if s.advertise == "" {
			s.advertise = s.peers[s.id]
		}
	}
	if s.advertise == "" {
		host, port, err := net.SplitHostPort(c.Listen)
		if err != nil || host == "" || host == "0.0.0.0" || host == "::" {
			return nil, fmt.Errorf("--cluster-advertise is required when --listen (%s) names no host peers can reach", c.Listen)
		}
		s.advertise = net.JoinHostPort(host, port)
	}
	if s.peers == nil && len(s.join) == 0 {
		return nil, fmt.Errorf("--node-id needs --cluster-peers (founding members) or --cluster-join (existing members)")
	}
	return s, nil
}

// newClusterNode returns the cluster node this broker is, or nil when it runs alone.
func newClusterNode(c BrokerConfig, policy store.SyncPolicy, log *slog.Logger) (*cluster.Node, error) {
	s, err := clusterConfig(c, os.Getenv)
	if err != nil || s == nil {
		return nil, err
	}
	if c.Storage == "memory" {
		return nil, fmt.Errorf("a cluster node needs --storage file: a member that forgets its Raft state on restart could elect a leader without the data")
	}
	cfg := cluster.Config{NodeID: s.id, Advertise: s.advertise, Peers: s.peers, Join: s.join, DataDir: c.DataDir + "/cluster", Sync: policy, Logger: log}
	if c.TLS != nil {
		// Peers present the same certificate: trust it (and the system roots).
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if pem, err := os.ReadFile(c.TLS.CertFile); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return cluster.New(cfg)
}
