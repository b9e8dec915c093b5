package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
)

// The broker's cluster API (DESIGN.md, ADR 0001), as the operator uses it. The broker's Go client
// (broker/client) has no methods for it yet; these few calls speak it directly.

// ClusterView is GET /v1/cluster: the cluster's members and every partition's placement.
type ClusterView struct {
	// Controller is the member that leads the metadata group ("" during an election).
	Controller string             `json:"controller"`
	Members    []ClusterMember    `json:"members"`
	Partitions []ClusterPartition `json:"partitions"`
}

// ClusterMember is one member of a cluster (a broker pod, its id the pod name).
type ClusterMember struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Ready: the member answered its readiness check just now.
	Ready bool `json:"ready"`
	// Draining: its replicas and leaderships are being moved to the other members.
	Draining bool `json:"draining,omitempty"`
	// Leaving: it is handing its leaderships over before it stops (SIGTERM).
	Leaving bool `json:"leaving,omitempty"`
	// Replicas and Leaders count the partitions placed on it and led by it.
	Replicas int `json:"replicas"`
	Leaders  int `json:"leaders"`
	// Drained: draining and holding no replica any more; it can be removed.
	Drained bool `json:"drained,omitempty"`
}

// ClusterPartition is one partition's placement and replication state.
type ClusterPartition struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Leader    string   `json:"leader"`
	Epoch     uint64   `json:"epoch"`
	Replicas  []string `json:"replicas"`
	InSync    []string `json:"inSync"`
	// UnderReplicated: fewer in-sync replicas than replicas.
	UnderReplicated bool `json:"underReplicated"`
}

// clusterClient calls the cluster API of the brokers at one URL (a BrokerCluster's client
// Service, or its override).
type clusterClient struct {
	base    string
	hc      *http.Client
	timeout time.Duration

	// The last view, for the readers that can live with one a few seconds old (Topics).
	mu      sync.Mutex
	viewAt  time.Time
	view    *ClusterView
	viewErr error
}

// clusterHTTP is the transport of every clusterClient: the broker client's (keep-alive pool,
// the local cluster's hosts file).
var clusterHTTP = sync.OnceValue(func() *http.Client {
	return &http.Client{Transport: brokerclient.NewTransport()}
})

func newClusterClient(base string, timeout time.Duration) *clusterClient {
	return &clusterClient{base: base, hc: clusterHTTP(), timeout: timeout}
}

// View returns GET /v1/cluster, asked now.
func (c *clusterClient) View(ctx context.Context) (ClusterView, error) {
	var v ClusterView
	_, err := c.do(ctx, http.MethodGet, "/v1/cluster", &v)
	return v, err
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
	var m ClusterMember
	_, err := c.do(ctx, http.MethodPost, "/v1/cluster/members/"+url.PathEscape(id)+"/drain", &m)
	return m, err
}

// Undrain stops draining the member (DELETE /v1/cluster/members/{id}/drain).
func (c *clusterClient) Undrain(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(id)+"/drain", nil)
	return err
}

// Remove removes the member from the cluster (DELETE /v1/cluster/members/{id}); the brokers
// refuse it (409 FailedPrecondition) while the member still holds replicas.
func (c *clusterClient) Remove(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(id), nil)
	return err
}

// do sends a request without a body and decodes a 2xx JSON answer into out (unless nil). An
// answer outside 2xx is an *api.Error, as the broker client returns them.
func (c *clusterClient) do(ctx context.Context, method, path string, out any) (int, error) {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "herald-operator")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb api.ErrorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
			eb.Error.HTTPStatus = resp.StatusCode
			return resp.StatusCode, eb.Error
		}
		msg := string(bytes.TrimSpace(body))
		if msg == "" {
			msg = resp.Status
		}
		return resp.StatusCode, &api.Error{Code: brokerclient.CodeForStatus(resp.StatusCode), Message: msg, HTTPStatus: resp.StatusCode}
	}
	if out != nil && len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}
