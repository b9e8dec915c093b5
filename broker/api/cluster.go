package api

// Cluster is GET /v1/cluster: the cluster's members and every partition's placement and
// replication state. A single broker answers as a cluster of one (member "standalone") that
// leads every partition.
type Cluster struct {
	// Controller is the member that leads the metadata (Raft) group; "" during an election.
	Controller string `json:"controller"`
	// Members are the cluster's members, by id; never null.
	Members []ClusterMember `json:"members"`
	// Partitions are every topic's partitions, by topic then partition; never null.
	Partitions []ClusterPartition `json:"partitions"`
}

// ClusterMember is one member of a cluster (a broker; under the operator, a pod named
// <cluster>-<i>). GET /v1/cluster/members/{id} and POST /v1/cluster/members/{id}/drain return
// one as well.
type ClusterMember struct {
	// ID names the member (the broker's --node-id; the pod name under the operator).
	ID string `json:"id"`
	// Address is the host:port the other members reach it at.
	Address string `json:"address"`
	// Ready: the member answered its readiness check (GET /readyz) just now.
	Ready bool `json:"ready"`
	// Draining: its replicas and leaderships are being moved to the other members
	// (POST /v1/cluster/members/{id}/drain).
	Draining bool `json:"draining,omitempty"`
	// Leaving: it is handing its leaderships over before it stops (SIGTERM).
	Leaving bool `json:"leaving,omitempty"`
	// Replicas counts the partitions placed on it.
	Replicas int `json:"replicas"`
	// Leaders counts the partitions it leads.
	Leaders int `json:"leaders"`
	// Drained: draining and holding no replica any more, so it can be removed
	// (DELETE /v1/cluster/members/{id}).
	Drained bool `json:"drained,omitempty"`
}

// ClusterPartition is one partition's placement and replication state.
type ClusterPartition struct {
	// Topic is the partition's topic.
	Topic string `json:"topic"`
	// Partition is the partition's number within its topic, from 0.
	Partition int `json:"partition"`
	// Leader is the member that leads the partition ("" while it has none).
	Leader string `json:"leader"`
	// Epoch is the partition's leader epoch: it grows at every change of leader (a lost leader
	// included).
	Epoch uint64 `json:"epoch"`
	// Replicas are the members that keep a copy of the partition, the preferred leader first.
	Replicas []string `json:"replicas"`
	// InSync are the replicas that are caught up with the leader (the ISR).
	InSync []string `json:"inSync"`
	// EndOffset is the leader's log end offset (the offset of its next message). Absent when the
	// leader did not answer.
	EndOffset *int64 `json:"endOffset,omitempty"`
	// HighWatermark is the leader's high watermark: messages below it are committed (held by
	// every in-sync replica). Absent when the leader did not answer.
	HighWatermark *int64 `json:"highWatermark,omitempty"`
	// Lag is, per follower, how many messages it is behind the leader's end (as of its last
	// fetch). Absent when the leader did not answer.
	Lag map[string]int64 `json:"lag,omitempty"`
	// UnderReplicated: fewer in-sync replicas than replicas.
	UnderReplicated bool `json:"underReplicated"`
}
