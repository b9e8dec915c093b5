package cluster

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster metrics, collected on scrape from the replicas this node leads (a partition is
// reported by its leader only, as Kafka's UnderReplicatedPartitions is).
var (
	descLed             = prometheus.NewDesc("herald_cluster_partitions_led", "Partitions this broker leads.", nil, nil)
	descUnderReplicated = prometheus.NewDesc("herald_cluster_partitions_under_replicated", "Partitions this broker leads with fewer in-sync replicas than replicas.", nil, nil)
	descInSync          = prometheus.NewDesc("herald_cluster_partition_in_sync_replicas", "In-sync replicas of a partition this broker leads.", []string{"topic", "partition"}, nil)
	descReplicas        = prometheus.NewDesc("herald_cluster_partition_replicas", "Replicas of a partition this broker leads.", []string{"topic", "partition"}, nil)
	descLag             = prometheus.NewDesc("herald_cluster_follower_lag_messages", "How many messages a follower is behind this leader's log end.", []string{"topic", "partition", "follower"}, nil)
	descController      = prometheus.NewDesc("herald_cluster_controller", "1 on the broker that is the Raft leader (the controller).", nil, nil)
	descMembers         = prometheus.NewDesc("herald_cluster_members", "Members in the Raft configuration.", nil, nil)
)

type metricsCollector struct{ n *Node }

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLed, descUnderReplicated, descInSync, descReplicas, descLag, descController, descMembers} {
		ch <- d
	}
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	led, under := 0, 0
	for _, lp := range n.localLed() {
		led++
		r := n.replica(lp.Topic, lp.Partition)
		if r == nil {
			continue
		}
		r.mu.Lock()
		isr, reps := len(r.isr), len(r.replicas)
		r.mu.Unlock()
		if isr < reps {
			under++
		}
		p := strconv.Itoa(lp.Partition)
		ch <- prometheus.MustNewConstMetric(descInSync, prometheus.GaugeValue, float64(isr), lp.Topic, p)
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(reps), lp.Topic, p)
		for id, lag := range lp.Lag {
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(lag), lp.Topic, p, id)
		}
	}
	ch <- prometheus.MustNewConstMetric(descLed, prometheus.GaugeValue, float64(led))
	ch <- prometheus.MustNewConstMetric(descUnderReplicated, prometheus.GaugeValue, float64(under))
	ctl := 0.0
	if n.isLeader() {
		ctl = 1
	}
	ch <- prometheus.MustNewConstMetric(descController, prometheus.GaugeValue, ctl)
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(len(n.members())))
}
