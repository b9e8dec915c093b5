package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
)

// The broker's cluster API (DESIGN.md, ADR 0001), as the operator uses it: the broker's Go client
// (broker/client) speaks it, with the JSON shapes of broker/api.

type (
	// ClusterView is GET /v1/cluster: the cluster's members and every partition's placement.
	ClusterView = api.Cluster
	// ClusterMember is one member of a cluster (a broker pod, its id the pod name).
	ClusterMember = api.ClusterMember
	// ClusterPartition is one partition's placement and replication state.
	ClusterPartition = api.ClusterPartition
)

// clusterClient calls the cluster API of the brokers at one URL (a BrokerCluster's client
// Service, or its override).
type clusterClient struct {
	c *brokerclient.Client
	// err is why no client could be made of the URL; every call returns it.
	err error

	// The last view, for the readers that can live with one a few seconds old (Topics).
	mu      sync.Mutex
	viewAt  time.Time
	view    *ClusterView
	viewErr error
}

// newClusterClient returns a client of the brokers at base whose requests each take at most
// timeout (0: no bound but the context's).
func newClusterClient(base string, timeout time.Duration) *clusterClient {
	c, err := brokerclient.New(base, brokerclient.WithTimeout(timeout), brokerclient.WithUserAgent("herald-operator"))
	return &clusterClient{c: c, err: err}
}

// View returns GET /v1/cluster, asked now.
func (c *clusterClient) View(ctx context.Context) (ClusterView, error) {
	if c.err != nil {
		return ClusterView{}, c.err
	}
	return c.c.Cluster(ctx)
}

// CachedView returns a view at most ttl old and asked no earlier than notBefore (zero: any),
// one request at a time per URL: concurrent callers wait for it and share it. A failure is
// remembered for ttl as well.
func (c *clusterClient) CachedView(ctx context.Context, ttl time.Duration, notBefore time.Time) (*ClusterView, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if age := time.Since(c.viewAt); !c.viewAt.IsZero() && age < ttl && age >= 0 && !c.viewAt.Before(notBefore) {
		return c.view, c.viewErr
	}
	at := time.Now()
	v, err := c.View(ctx)
	c.viewAt, c.view, c.viewErr = at, &v, err
	if err != nil {
		c.view = nil
	}
	return c.view, c.viewErr
}

// Drain asks the cluster to move the member's replicas and leaderships to the others
// (POST /v1/cluster/members/{id}/drain) and returns the member.
func (c *clusterClient) Drain(ctx context.Context, id string) (ClusterMember, error) {
	if c.err != nil {
		return ClusterMember{}, c.err
	}
	return c.c.DrainMember(ctx, id)
}

// Undrain stops draining the member (DELETE /v1/cluster/members/{id}/drain).
func (c *clusterClient) Undrain(ctx context.Context, id string) error {
	if c.err != nil {
		return c.err
	}
	return c.c.UndrainMember(ctx, id)
}

// Remove removes the member from the cluster (DELETE /v1/cluster/members/{id}); the brokers
// refuse it (409 FailedPrecondition) while the member still holds replicas.
func (c *clusterClient) Remove(ctx context.Context, id string) error {
	if c.err != nil {
		return c.err
	}
	return c.c.RemoveMember(ctx, id)
}
