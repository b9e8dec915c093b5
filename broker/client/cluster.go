package client

import (
	"context"
	"net/http"

	"github.com/heraldmq/herald/broker/api"
)

// Cluster returns the cluster's members and every partition's placement and replication state
// (GET /v1/cluster). A single broker answers as a cluster of one. Members and Partitions are
// never nil on success.
func (c *Client) Cluster(ctx context.Context) (api.Cluster, error) {
	var v api.Cluster
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster"}, &v); err != nil {
		return api.Cluster{}, err
	}
	if v.Members == nil {
		v.Members = []api.ClusterMember{}
	}
	if v.Partitions == nil {
		v.Partitions = []api.ClusterPartition{}
	}
	return v, nil
}

// ClusterMember returns one member of the cluster with its replica and leader counts
// (GET /v1/cluster/members/{id}); NotFound if the cluster has no such member.
func (c *Client) ClusterMember(ctx context.Context, id string) (api.ClusterMember, error) {
	seg, err := segment("id", id)
	if err != nil {
		return api.ClusterMember{}, err
	}
	var m api.ClusterMember
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cluster/members/" + seg}, &m); err != nil {
		return api.ClusterMember{}, err
	}
	return m, nil
}

// DrainMember asks the cluster to move the member's replicas and leaderships to the other
// members (POST /v1/cluster/members/{id}/drain; 202 Accepted) and returns the member as it is
// now: Drained once it holds no replica any more. NotFound if the cluster has no such member.
func (c *Client) DrainMember(ctx context.Context, id string) (api.ClusterMember, error) {
	seg, err := segment("id", id)
	if err != nil {
		return api.ClusterMember{}, err
	}
	var m api.ClusterMember
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cluster/members/" + seg + "/drain"}, &m); err != nil {
		return api.ClusterMember{}, err
	}
	return m, nil
}

// UndrainMember stops draining the member (DELETE /v1/cluster/members/{id}/drain): it may be
// given replicas again. NotFound if the cluster has no such member.
func (c *Client) UndrainMember(ctx context.Context, id string) error {
	seg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/members/" + seg + "/drain"}, nil)
	return err
}

// RemoveMember removes the member from the cluster (DELETE /v1/cluster/members/{id}). The
// cluster refuses it with FailedPrecondition (409) while the member still holds replicas:
// drain it first (DrainMember) and wait until it is Drained. NotFound if the cluster has no
// such member.
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	seg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/cluster/members/" + seg}, nil)
	return err
}
