package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/broker/api"
	brokerclient "github.com/heraldmq/herald/broker/client"
)

// DefaultBrokerTimeout bounds one request of the operator to a broker, so that an unreachable
// broker holds a reconcile worker for seconds, not minutes.
const DefaultBrokerTimeout = 10 * time.Second

// BrokerURLResolver overrides how the operator reaches the brokers of a BrokerCluster. Without
// one (or when it answers false) the operator uses the cluster's client Service, the URL in its
// status.endpoint (http://<name>.<namespace>.svc:<port>).
type BrokerURLResolver interface {
	// BrokerURL returns the base URL of the brokers of the BrokerCluster namespace/name, and false
	// when the cluster's status.endpoint is to be used.
	BrokerURL(namespace, name string) (string, bool)
}

// BrokerURLOverride is a static BrokerURLResolver, the value of `herald operator
// --broker-url-override`: a comma-separated list of entries, each either
//
//	NAMESPACE/NAME=URL   the brokers of that one BrokerCluster
//	URL                  the brokers of every other BrokerCluster (at most one such entry)
//
// A URL may contain the placeholders {namespace} and {name}, replaced by the BrokerCluster's.
// Examples: "http://127.0.0.1:18080" (every cluster is the broker on that port, say through
// kubectl port-forward), "team-a/orders=http://127.0.0.1:18080,http://{name}.{namespace}.example:8080".
type BrokerURLOverride struct {
	// Clusters maps one BrokerCluster to its URL (template).
	Clusters map[types.NamespacedName]string
	// Default is the URL (template) of every cluster not in Clusters; empty: none.
	Default string
}

// ParseBrokerURLOverride parses the --broker-url-override syntax; an empty string gives nil
// (no override).
func ParseBrokerURLOverride(s string) (*BrokerURLOverride, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	o := &BrokerURLOverride{Clusters: map[types.NamespacedName]string{}}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		key, u, hasKey := strings.Cut(entry, "=")
		if !hasKey || strings.Contains(key, "://") {
			// A bare URL (which may hold "=" in its path).
			hasKey, u = false, entry
		}
		if err := checkURLTemplate(u); err != nil {
			return nil, fmt.Errorf("broker URL override %q: %w", entry, err)
		}
		if !hasKey {
			if o.Default != "" {
				return nil, fmt.Errorf("broker URL override: two default URLs (%q and %q); give NAMESPACE/NAME=URL for all but one", o.Default, u)
			}
			o.Default = u
			continue
		}
		ns, name, ok := strings.Cut(strings.TrimSpace(key), "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("broker URL override %q: want NAMESPACE/NAME=URL or URL", entry)
		}
		nn := types.NamespacedName{Namespace: ns, Name: name}
		if _, dup := o.Clusters[nn]; dup {
			return nil, fmt.Errorf("broker URL override: BrokerCluster %s given twice", nn)
		}
		o.Clusters[nn] = u
	}
	if o.Default == "" && len(o.Clusters) == 0 {
		return nil, nil
	}
	return o, nil
}

func checkURLTemplate(t string) error {
	u, err := url.Parse(expandURL(t, "ns", "name"))
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an absolute http or https URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("no query or fragment allowed")
	}
	return nil
}

func expandURL(t, namespace, name string) string {
	return strings.NewReplacer("{namespace}", namespace, "{name}", name).Replace(t)
}

// BrokerURL implements BrokerURLResolver.
func (o *BrokerURLOverride) BrokerURL(namespace, name string) (string, bool) {
	if o == nil {
		return "", false
	}
	if t, ok := o.Clusters[types.NamespacedName{Namespace: namespace, Name: name}]; ok {
		return expandURL(t, namespace, name), true
	}
	if o.Default != "" {
		return expandURL(o.Default, namespace, name), true
	}
	return "", false
}

// String renders the override in the flag's syntax.
func (o *BrokerURLOverride) String() string {
	if o == nil {
		return ""
	}
	var parts []string
	for nn, u := range o.Clusters {
		parts = append(parts, nn.String()+"="+u)
	}
	sort.Strings(parts)
	if o.Default != "" {
		parts = append(parts, o.Default)
	}
	return strings.Join(parts, ",")
}

// Brokers gives the Topic and Subscription reconcilers the state of a BrokerCluster and a client
// of its brokers. Clients are cached by URL, so every reconcile reuses one pool of keep-alive
// connections per cluster.
type Brokers struct {
	// Client reads BrokerClusters (from the manager's cache).
	Client client.Reader
	// Override, if set, says where the brokers of a cluster are instead of its status.endpoint.
	Override BrokerURLResolver
	// Timeout bounds one broker request; zero: DefaultBrokerTimeout.
	Timeout time.Duration
	// ViewTTL is how long the Topic reconciles share one GET /v1/cluster of a cluster (its
	// partitions' replication state); zero: DefaultClusterViewTTL.
	ViewTTL time.Duration

	mu             sync.Mutex
	clients        map[string]*brokerclient.Client
	clusterClients map[string]*clusterClient
}

// DefaultClusterViewTTL is how long the Topic reconciles of one BrokerCluster share one view of
// its replication state, so that a resync of every Topic costs one GET /v1/cluster per cluster
// every few seconds, not one per Topic.
const DefaultClusterViewTTL = 5 * time.Second

// clusterState is what a reconcile needs to know about the BrokerCluster of an object.
type clusterState struct {
	// BC is the BrokerCluster; nil when it does not exist.
	BC *heraldv1.BrokerCluster
	// Gone: the cluster does not exist or is being deleted, so there is nothing to clean up on its
	// brokers: finalizers are released at once.
	Gone bool
	// Reason and Message say why the cluster cannot be used now (empty when it can).
	Reason, Message string
	// Broker is a client of its brokers; nil when their URL is not known yet.
	Broker *brokerclient.Client
	// Cluster is a client of their cluster API; nil when Broker is.
	Cluster *clusterClient
}

// usable reports whether the cluster's brokers can be asked.
func (c *clusterState) usable() bool { return c.Reason == "" && c.Broker != nil }

// cluster looks up the BrokerCluster namespace/name. A cluster is usable when it is Available
// (a majority of its brokers is ready) and its brokers' URL is known.
func (b *Brokers) cluster(ctx context.Context, namespace, name string) (*clusterState, error) {
	bc := &heraldv1.BrokerCluster{}
	if err := b.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, bc); err != nil {
		if apierrors.IsNotFound(err) {
			return &clusterState{Gone: true, Reason: ReasonClusterNotFound,
				Message: fmt.Sprintf("BrokerCluster %q not found in namespace %q", name, namespace)}, nil
		}
		return nil, fmt.Errorf("reading BrokerCluster %s: %w", name, err)
	}
	st := &clusterState{BC: bc}
	if !bc.DeletionTimestamp.IsZero() {
		st.Gone, st.Reason, st.Message = true, ReasonClusterDeleting, fmt.Sprintf("BrokerCluster %q is being deleted", name)
		return st, nil
	}
	u := bc.Status.Endpoint
	if o, ok := b.override(namespace, name); ok {
		u = o
	}
	if u != "" {
		c, err := b.client(u)
		if err != nil {
			st.Reason, st.Message = ReasonClusterNotReady, fmt.Sprintf("BrokerCluster %q: %v", name, err)
			return st, nil
		}
		st.Broker = c
		st.Cluster = b.clusterClient(u)
	}
	if avail := meta.FindStatusCondition(bc.Status.Conditions, heraldv1.ConditionAvailable); avail == nil || avail.Status != "True" {
		why := "its status reports no Available condition yet"
		if avail != nil {
			why = fmt.Sprintf("not Available: %s", firstNonEmpty(avail.Message, avail.Reason))
		}
		st.Reason, st.Message = ReasonClusterNotReady, fmt.Sprintf("BrokerCluster %q is not ready (%s)", name, why)
		return st, nil
	}
	if st.Broker == nil {
		st.Reason, st.Message = ReasonClusterNotReady, fmt.Sprintf("BrokerCluster %q has no status.endpoint yet", name)
	}
	return st, nil
}

// brokerClusterURL is where the BrokerCluster reconciler reaches bc's brokers: the override, or
// the client Service.
func (b *Brokers) brokerClusterURL(bc *heraldv1.BrokerCluster) string {
	if u, ok := b.override(bc.Namespace, bc.Name); ok {
		return u
	}
	return Endpoint(bc)
}

// clusterClient returns the (cached) cluster API client of the brokers at u.
func (b *Brokers) clusterClient(u string) *clusterClient {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.clusterClients[u]; ok {
		return c
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = DefaultBrokerTimeout
	}
	c := newClusterClient(strings.TrimRight(u, "/"), timeout)
	if b.clusterClients == nil {
		b.clusterClients = map[string]*clusterClient{}
	}
	b.clusterClients[u] = c
	return c
}

func (b *Brokers) viewTTL() time.Duration {
	if b.ViewTTL > 0 {
		return b.ViewTTL
	}
	return DefaultClusterViewTTL
}

func (b *Brokers) override(namespace, name string) (string, bool) {
	if b.Override == nil {
		return "", false
	}
	return b.Override.BrokerURL(namespace, name)
}

func (b *Brokers) client(u string) (*brokerclient.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.clients[u]; ok {
		return c, nil
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = DefaultBrokerTimeout
	}
	c, err := brokerclient.New(u, brokerclient.WithTimeout(timeout), brokerclient.WithUserAgent("herald-operator"))
	if err != nil {
		return nil, err
	}
	if b.clients == nil {
		b.clients = map[string]*brokerclient.Client{}
	}
	b.clients[u] = c
	return c, nil
}

// brokerFailure classifies an error of a broker request as a condition reason and message, and
// says whether it is transient (retried with back-off) or a rejection of the spec.
func brokerFailure(err error, what string) (reason, message string, transient bool) {
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case api.CodeInvalidArgument, api.CodeTooLarge:
			return ReasonInvalidSpec, fmt.Sprintf("the broker rejected %s: %s", what, apiErr.Message), false
		case api.CodeFailedPrecondition, api.CodeAlreadyExists:
			return ReasonRejected, fmt.Sprintf("the broker refused %s: %s", what, apiErr.Message), false
		case api.CodeUnavailable:
			return ReasonBrokerUnavailable, fmt.Sprintf("%s: the broker is unavailable: %s", what, apiErr.Message), true
		}
		return ReasonBrokerError, fmt.Sprintf("%s: %s (HTTP %d)", what, apiErr.Message, apiErr.HTTPStatus), true
	}
	return ReasonBrokerUnreachable, fmt.Sprintf("%s: %v", what, err), true
}

func isNotFound(err error) bool {
	var apiErr *api.Error
	return errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
