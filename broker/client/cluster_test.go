package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
	"github.com/heraldmq/herald/broker/cluster"
	"github.com/heraldmq/herald/broker/engine"
	"github.com/heraldmq/herald/broker/server"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// The cluster API's wire format: methods, paths, escaping and answers.
func TestClusterMethods(t *testing.T) {
	tests := []struct {
		name string
		call func(ctx context.Context, c *client.Client) (any, error)
		ex   exchange
		want any
	}{
		{
			name: "Cluster",
			call: func(ctx context.Context, c *client.Client) (any, error) { return c.Cluster(ctx) },
			ex: exchange{method: "GET", path: "/v1/cluster", status: 200,
				respBody: `{"controller":"b-0","members":[{"id":"b-0","address":"10.0.0.1:8080","ready":true,"replicas":2,"leaders":1},
					{"id":"b-1","address":"10.0.0.2:8080","ready":false,"draining":true,"leaving":true,"replicas":0,"leaders":0,"drained":true}],
					"partitions":[{"topic":"t","partition":0,"leader":"b-0","epoch":3,"replicas":["b-0","b-1"],"inSync":["b-0"],
					"endOffset":10,"highWatermark":8,"lag":{"b-1":10},"underReplicated":true},
					{"topic":"t","partition":1,"leader":"","epoch":1,"replicas":["b-0"],"inSync":["b-0"],"underReplicated":false}]}`},
			want: api.Cluster{Controller: "b-0",
				Members: []api.ClusterMember{
					{ID: "b-0", Address: "10.0.0.1:8080", Ready: true, Replicas: 2, Leaders: 1},
					{ID: "b-1", Address: "10.0.0.2:8080", Draining: true, Leaving: true, Drained: true},
				},
				Partitions: []api.ClusterPartition{
					{Topic: "t", Partition: 0, Leader: "b-0", Epoch: 3, Replicas: []string{"b-0", "b-1"}, InSync: []string{"b-0"},
						EndOffset: ptr[int64](10), HighWatermark: ptr[int64](8), Lag: map[string]int64{"b-1": 10}, UnderReplicated: true},
					{Topic: "t", Partition: 1, Epoch: 1, Replicas: []string{"b-0"}, InSync: []string{"b-0"}},
				}},
		},
		{
			name: "Cluster during an election, null lists",
			call: func(ctx context.Context, c *client.Client) (any, error) { return c.Cluster(ctx) },
			ex:   exchange{method: "GET", path: "/v1/cluster", status: 200, respBody: `{"controller":"","members":null,"partitions":null}`},
			want: api.Cluster{Members: []api.ClusterMember{}, Partitions: []api.ClusterPartition{}},
		},
		{
			name: "ClusterMember, escaped id",
			call: func(ctx context.Context, c *client.Client) (any, error) { return c.ClusterMember(ctx, "b 1/x") },
			ex: exchange{method: "GET", path: "/v1/cluster/members/b%201%2Fx", status: 200,
				respBody: `{"id":"b 1/x","address":"h:1","ready":true,"replicas":4,"leaders":2}`},
			want: api.ClusterMember{ID: "b 1/x", Address: "h:1", Ready: true, Replicas: 4, Leaders: 2},
		},
		{
			name: "DrainMember",
			call: func(ctx context.Context, c *client.Client) (any, error) { return c.DrainMember(ctx, "b-2") },
			ex: exchange{method: "POST", path: "/v1/cluster/members/b-2/drain", status: 202,
				respBody: `{"id":"b-2","address":"h:2","ready":false,"draining":true,"replicas":3,"leaders":0}`},
			want: api.ClusterMember{ID: "b-2", Address: "h:2", Draining: true, Replicas: 3},
		},
		{
			name: "UndrainMember",
			call: func(ctx context.Context, c *client.Client) (any, error) { return nil, c.UndrainMember(ctx, "b-2") },
			ex: exchange{method: "DELETE", path: "/v1/cluster/members/b-2/drain", status: 202,
				respBody: `{"id":"b-2","address":"h:2","ready":false,"replicas":3,"leaders":0}`},
		},
		{
			name: "RemoveMember",
			call: func(ctx context.Context, c *client.Client) (any, error) { return nil, c.RemoveMember(ctx, "b-2") },
			ex:   exchange{method: "DELETE", path: "/v1/cluster/members/b-2", status: 204},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeBroker(t, tt.ex)
			got, err := tt.call(t.Context(), newClient(t, srv.URL))
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// Errors of the cluster API are *api.Errors, and names the broker cannot route are refused
// before any request.
func TestClusterMethodErrors(t *testing.T) {
	srv := fakeBroker(t, exchange{method: "DELETE", path: "/v1/cluster/members/b-0", status: 409,
		respBody: `{"error":{"code":"FailedPrecondition","message":"member \"b-0\" still holds 2 replicas","field":"id"}}`})
	err := newClient(t, srv.URL).RemoveMember(t.Context(), "b-0")
	var apiErr *api.Error
	if !errors.As(err, &apiErr) || apiErr.Code != api.CodeFailedPrecondition || apiErr.HTTPStatus != 409 || apiErr.Field != "id" {
		t.Errorf("RemoveMember: got %v, want FailedPrecondition 409", err)
	}

	c := newClient(t, "http://127.0.0.1:1") // nothing listens: a request would fail otherwise
	ctx := t.Context()
	for name, call := range map[string]func() error{
		"ClusterMember": func() error { _, err := c.ClusterMember(ctx, ""); return err },
		"DrainMember":   func() error { _, err := c.DrainMember(ctx, ".."); return err },
		"UndrainMember": func() error { return c.UndrainMember(ctx, ".") },
		"RemoveMember":  func() error { return c.RemoveMember(ctx, "") },
	} {
		if err := call(); !errors.As(err, &apiErr) || apiErr.Code != api.CodeInvalidArgument || apiErr.Field != "id" {
			t.Errorf("%s: got %v, want a local InvalidArgument on id", name, err)
		}
	}
}

// A single broker answers GET /v1/cluster as a cluster of one, and has no membership API.
func TestClusterStandalone(t *testing.T) {
	b, err := engine.Open(engine.Config{Memory: true, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(b, quietLog))
	t.Cleanup(func() { b.Close(); srv.Close() })
	c := newClient(t, srv.URL)
	ctx := t.Context()

	v, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	host := srv.Listener.Addr().String()
	want := api.Cluster{Controller: "standalone", Members: []api.ClusterMember{{ID: "standalone", Address: host, Ready: true}},
		Partitions: []api.ClusterPartition{}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("empty broker: got  %#v\nwant %#v", v, want)
	}

	if _, _, err := c.PutTopic(ctx, "orders", api.TopicSpec{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	if v, err = c.Cluster(ctx); err != nil {
		t.Fatal(err)
	}
	one := []string{"standalone"}
	want = api.Cluster{Controller: "standalone",
		Members: []api.ClusterMember{{ID: "standalone", Address: host, Ready: true, Replicas: 2, Leaders: 2}},
		Partitions: []api.ClusterPartition{
			{Topic: "orders", Partition: 0, Leader: "standalone", Replicas: one, InSync: one},
			{Topic: "orders", Partition: 1, Leader: "standalone", Replicas: one, InSync: one},
		}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("with a topic: got  %#v\nwant %#v", v, want)
	}

	var apiErr *api.Error
	if _, err := c.DrainMember(ctx, "standalone"); !errors.As(err, &apiErr) || apiErr.Code != api.CodeNotFound {
		t.Errorf("DrainMember on a single broker: got %v, want NotFound", err)
	}
}

// clusterBroker is one broker of a real in-process cluster: engine, cluster node and HTTP server
// on a loopback port, wired as `herald broker` wires them.
type clusterBroker struct {
	id   string
	url  string
	node *cluster.Node
	eng  *engine.Broker
	srv  *http.Server
}

// startCluster starts a cluster of n brokers b-0 … b-(n-1), in memory, and waits until every
// member is ready and there is a controller.
func startCluster(t *testing.T, n int) []*clusterBroker {
	t.Helper()
	peers := map[string]string{}
	lns := make([]net.Listener, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		peers[fmt.Sprintf("b-%d", i)] = ln.Addr().String()
	}
	var out []*clusterBroker
	for i, ln := range lns {
		b := &clusterBroker{id: fmt.Sprintf("b-%d", i), url: "http://" + ln.Addr().String()}
		node, err := cluster.New(cluster.Config{NodeID: b.id, Advertise: ln.Addr().String(), Peers: peers, Logger: quietLog,
			HeartbeatInterval: 100 * time.Millisecond, RaftHeartbeat: 150 * time.Millisecond, RaftElection: 400 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := engine.Open(engine.Config{Memory: true, Logger: quietLog, Replicator: node})
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(eng); err != nil {
			t.Fatal(err)
		}
		b.node, b.eng = node, eng
		b.srv = &http.Server{Handler: server.NewWithOptions(eng, quietLog, server.Options{Backend: node, Internal: node.Handler(),
			Cluster: node.ServeClusterView, ClusterAdmin: node.AdminHandler()}), ReadHeaderTimeout: 10 * time.Second}
		go b.srv.Serve(ln)
		out = append(out, b)
	}
	t.Cleanup(func() {
		for _, b := range out {
			b.srv.Close()
			b.node.Close() // before the engine: replication writes into it
			b.eng.Close()
		}
	})
	c := newClient(t, out[0].url)
	eventually(t, "a controller and every member ready", func() error {
		v, err := c.Cluster(t.Context())
		if err != nil {
			return err
		}
		if v.Controller == "" || len(v.Members) != n {
			return fmt.Errorf("controller %q, %d members", v.Controller, len(v.Members))
		}
		for _, m := range v.Members {
			if !m.Ready {
				return fmt.Errorf("member %s not ready", m.ID)
			}
		}
		return nil
	})
	return out
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The membership calls against a real cluster of two: a member holding replicas cannot be
// removed; drained, it can.
func TestClusterMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	brokers := startCluster(t, 2)
	ctx := t.Context()

	v, err := newClient(t, brokers[0].url).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The member that goes is not the controller, so its removal needs no controller change;
	// the test asks the controller.
	stay, gone := 0, "b-1"
	if v.Controller == gone {
		stay, gone = 1, "b-0"
	}
	c := newClient(t, brokers[stay].url)
	if v.Members[0].ID != "b-0" || v.Members[1].ID != "b-1" || v.Members[0].Address != brokers[0].url[len("http://"):] {
		t.Fatalf("members %+v", v.Members)
	}

	// A topic on both brokers (replication factor min(3, brokers) = 2).
	if _, _, err := c.PutTopic(ctx, "orders", api.TopicSpec{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the topic's partitions placed and in sync", func() error {
		v, err := c.Cluster(ctx)
		if err != nil {
			return err
		}
		if len(v.Partitions) != 2 {
			return fmt.Errorf("%d partitions", len(v.Partitions))
		}
		for _, p := range v.Partitions {
			if p.Leader == "" || len(p.Replicas) != 2 || p.UnderReplicated {
				return fmt.Errorf("%+v", p)
			}
		}
		return nil
	})
	m, err := c.ClusterMember(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != gone || !m.Ready || m.Replicas != 2 || m.Draining {
		t.Errorf("ClusterMember(%s) = %+v, want ready with 2 replicas", gone, m)
	}
	var apiErr *api.Error
	if err := c.RemoveMember(ctx, gone); !errors.As(err, &apiErr) || apiErr.Code != api.CodeFailedPrecondition || apiErr.HTTPStatus != 409 {
		t.Fatalf("RemoveMember of a member holding replicas: got %v, want FailedPrecondition 409", err)
	}

	// Drain, undrain: the flag follows. (With two brokers and replication factor 2, the
	// replicas have nowhere to go.)
	if m, err = c.DrainMember(ctx, gone); err != nil || !m.Draining || m.ID != gone {
		t.Fatalf("DrainMember = %+v, %v", m, err)
	}
	if err := c.UndrainMember(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if m, err = c.ClusterMember(ctx, gone); err != nil || m.Draining {
		t.Fatalf("after UndrainMember: %+v, %v", m, err)
	}

	// Without the topic the member holds nothing: drained at once, then removed.
	if err := c.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if m, err = c.DrainMember(ctx, gone); err != nil || !m.Draining {
		t.Fatalf("DrainMember = %+v, %v", m, err)
	}
	eventually(t, gone+" drained", func() error {
		m, err := c.ClusterMember(ctx, gone)
		if err != nil {
			return err
		}
		if !m.Drained {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	if err := c.RemoveMember(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if v, err = c.Cluster(ctx); err != nil || len(v.Members) != 1 || v.Members[0].ID == gone {
		t.Fatalf("after RemoveMember: %+v, %v", v, err)
	}
	for _, call := range []func() error{
		func() error { _, err := c.ClusterMember(ctx, gone); return err },
		func() error { _, err := c.DrainMember(ctx, gone); return err },
		func() error { return c.UndrainMember(ctx, gone) },
		func() error { return c.RemoveMember(ctx, gone) },
	} {
		if err := call(); !errors.As(err, &apiErr) || apiErr.Code != api.CodeNotFound {
			t.Errorf("a removed member: got %v, want NotFound", err)
		}
	}
}
