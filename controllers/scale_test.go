package controllers_test

// The operator's scale benchmark (not a timed test: it measures and reports, and fails only when
// the objects never converge). Run it with
//
//	HERALD_SCALE=1 KUBEBUILDER_ASSETS=$(hack/build-control-plane.sh) \
//	  go test -count=1 -run TestScale -v -timeout 30m ./controllers/
//
// It applies HERALD_SCALE_OBJECTS Topics and as many Subscriptions (default 1000 each; every tenth
// Subscription pushes to a local HTTP endpoint, the others pull) at once, against envtest and one
// real `herald broker`, with the operator at its production settings (resync interval,
// concurrency), and measures: the time until all are Ready, reconciles and API writes per object,
// then the API writes over HERALD_SCALE_STEADY of steady state (default 5m; none expected), then
// over one resync after a message was published to HERALD_SCALE_TRAFFIC topics (default 50; a
// status write expected for each of those Topics and their Subscriptions). HERALD_SCALE_CONCURRENCY
// overrides the operator's concurrent reconciles per kind. With HERALD_SCALE_REPORT=FILE the
// results are also written there as Markdown.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	heraldv1 "github.com/heraldmq/herald/api/v1alpha1"
	"github.com/heraldmq/herald/controllers"
	"github.com/heraldmq/herald/internal/operator"
)

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v >= 0 {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil && v >= 0 {
		return v
	}
	return def
}

// scaleResult is what TestScale measures.
type scaleResult struct {
	Topics, Subscriptions int
	ApplySeconds          float64 // creating every object (the test's own client, 16 at a time)
	AllReadySeconds       float64 // from the first create until every object is Ready
	TopicsReadySeconds    float64
	ReconcilesPerTopic    float64
	ReconcilesPerSub      float64
	WritesPerObject       float64 // operator writes to the API server while converging, per object
	WritesByKind          map[string]int
	BrokerTopics          int
	SteadySeconds         float64
	SteadyWrites          int
	SteadyReconciles      int
	TrafficTopics         int
	TrafficWrites         int
	ResyncInterval        string
	Concurrency           int
	// Load averages (1 min) of the machine before the apply and when all were Ready: the machine
	// is shared, and other work slows convergence down.
	LoadBefore, LoadAtReady string
}

func loadAvg() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		return strings.Fields(string(b))[0]
	}
	return "?"
}

func TestScale(t *testing.T) {
	if !scaleRun {
		t.Skip("the scale benchmark runs with HERALD_SCALE=1")
	}
	g := requireEnv(t)
	g.SetDefaultEventuallyTimeout(10 * time.Minute)
	ctx := context.Background()
	n := envInt("HERALD_SCALE_OBJECTS", 1000)
	steady := envDuration("HERALD_SCALE_STEADY", 5*time.Minute)
	traffic := min(envInt("HERALD_SCALE_TRAFFIC", 50), n)

	// The test's own client, without client-side rate limit (the suite's admin client has
	// client-go's default of 5 requests per second).
	cfg := rest.CopyConfig(adminUser.Config())
	cfg.QPS = -1
	fast, err := client.New(cfg, client.Options{Scheme: operator.NewScheme()})
	g.Expect(err).NotTo(HaveOccurred())

	ns := newNamespace(t, g)
	b := startBroker(t)
	newReadyCluster(t, g, ns, "scale", 1, b)
	recv := newPushEndpoint(t)
	// Let the BrokerCluster settle (its status after the pods became ready).
	g.Eventually(func() []string {
		before := writes.in(ns)
		time.Sleep(2 * time.Second)
		return writes.in(ns)[len(before):]
	}).Should(BeEmpty())

	res := scaleResult{Topics: n, Subscriptions: n, WritesByKind: map[string]int{},
		ResyncInterval: controllers.DefaultResyncInterval.String(),
		Concurrency:    envInt("HERALD_SCALE_CONCURRENCY", 0)}
	if res.Concurrency == 0 {
		res.Concurrency = controllers.DefaultMaxConcurrentReconciles
	}
	w0 := len(writes.in(ns))
	t0, s0 := topicRecons.inNamespace(ns), subRecons.inNamespace(ns)

	// Apply everything at once: Subscriptions and Topics interleaved, 16 requests in flight.
	res.LoadBefore = loadAvg()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var createErr atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= 2*n {
					return
				}
				var obj client.Object
				if i%2 == 0 {
					obj = newTopic(ns, fmt.Sprintf("topic-%04d", i/2), "scale", 1)
				} else {
					s := newSub(ns, fmt.Sprintf("sub-%04d", i/2), "scale", fmt.Sprintf("topic-%04d", i/2))
					if (i/2)%10 == 0 {
						s.Spec.Push = &heraldv1.PushSpec{URI: recv.srv.URL + "/"}
					}
					obj = s
				}
				if err := fast.Create(ctx, obj); err != nil {
					createErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	res.ApplySeconds = time.Since(start).Seconds()
	if err, _ := createErr.Load().(error); err != nil {
		t.Fatalf("creating the objects: %v", err)
	}

	countReady := func() (topics, subs int) {
		tl := &heraldv1.TopicList{}
		g.Expect(fast.List(ctx, tl, client.InNamespace(ns))).To(Succeed())
		for i := range tl.Items {
			if meta.IsStatusConditionTrue(tl.Items[i].Status.Conditions, heraldv1.ConditionReady) {
				topics++
			}
		}
		sl := &heraldv1.SubscriptionList{}
		g.Expect(fast.List(ctx, sl, client.InNamespace(ns))).To(Succeed())
		for i := range sl.Items {
			if meta.IsStatusConditionTrue(sl.Items[i].Status.Conditions, heraldv1.ConditionReady) {
				subs++
			}
		}
		return
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		topics, subs := countReady()
		if topics == n && res.TopicsReadySeconds == 0 {
			res.TopicsReadySeconds = time.Since(start).Seconds()
		}
		if topics == n && subs == n {
			res.AllReadySeconds = time.Since(start).Seconds()
			res.LoadAtReady = loadAvg()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 minutes %d of %d Topics and %d of %d Subscriptions are Ready", topics, n, subs, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	converge := writes.in(ns)[w0:]
	res.WritesPerObject = float64(len(converge)) / float64(2*n)
	for _, w := range converge {
		res.WritesByKind[writeKind(w)]++
	}
	res.ReconcilesPerTopic = float64(topicRecons.inNamespace(ns)-t0) / float64(n)
	res.ReconcilesPerSub = float64(subRecons.inNamespace(ns)-s0) / float64(n)
	bt, err := b.client.ListTopics(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	res.BrokerTopics = len(bt)
	g.Expect(res.BrokerTopics).To(Equal(n))

	// Steady state: let the last reconciles finish, then count.
	time.Sleep(5 * time.Second)
	w1 := len(writes.in(ns))
	r1 := topicRecons.inNamespace(ns) + subRecons.inNamespace(ns)
	t.Logf("all %d objects Ready after %.1fs; steady-state window of %s starts", 2*n, res.AllReadySeconds, steady)
	steadyStart := time.Now()
	time.Sleep(steady)
	res.SteadySeconds = time.Since(steadyStart).Seconds()
	steadyWrites := writes.in(ns)[w1:]
	res.SteadyWrites = len(steadyWrites)
	res.SteadyReconciles = topicRecons.inNamespace(ns) + subRecons.inNamespace(ns) - r1

	// Traffic on some topics: their stats change, so one resync writes their status (and their
	// Subscriptions' backlog).
	res.TrafficTopics = traffic
	w2 := len(writes.in(ns))
	for i := range traffic {
		publish(g, b, fmt.Sprintf("topic-%04d", i*(n/max(traffic, 1))), "tick")
	}
	time.Sleep(controllers.DefaultResyncInterval*11/10 + 5*time.Second)
	res.TrafficWrites = len(writes.in(ns)) - w2

	out, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("scale results:\n%s", out)
	if len(steadyWrites) > 0 {
		t.Logf("steady-state writes (should be none): %v", firstN(steadyWrites, 20))
	}
	if path := os.Getenv("HERALD_SCALE_REPORT"); path != "" {
		g.Expect(os.WriteFile(path, []byte(res.markdown()), 0o644)).To(Succeed())
	}
}

// writeKind is "VERB resource[/subresource]" of a write's URL path.
func writeKind(w string) string {
	verb, path, _ := strings.Cut(w, " ")
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// .../namespaces/<ns>/<resource>/<name>[/<sub>]
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			rest := parts[i+2:]
			kind := rest[0]
			if len(rest) >= 3 {
				kind += "/" + rest[2]
			}
			return verb + " " + kind
		}
	}
	return verb + " " + path
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (r scaleResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Operator at scale (controllers/scale_test.go, `HERALD_SCALE=1`): envtest (kube-apiserver, etcd, kube-controller-manager) and one `herald broker --fsync always` on %d CPUs (1-minute load average %s before the apply, %s when all were Ready); operator resync %s, %d concurrent reconciles per kind.\n\n",
		runtime.NumCPU(), r.LoadBefore, r.LoadAtReady, r.ResyncInterval, r.Concurrency)
	fmt.Fprintf(&b, "| Measure | Value |\n|---|---:|\n")
	fmt.Fprintf(&b, "| Topics + Subscriptions applied at once | %d + %d |\n", r.Topics, r.Subscriptions)
	fmt.Fprintf(&b, "| Creating them (16 client requests in flight) | %.1f s |\n", r.ApplySeconds)
	fmt.Fprintf(&b, "| All Topics Ready | %.1f s |\n", r.TopicsReadySeconds)
	fmt.Fprintf(&b, "| All Topics and Subscriptions Ready (goal < 60 s) | %.1f s |\n", r.AllReadySeconds)
	fmt.Fprintf(&b, "| Reconciles per Topic / per Subscription | %.2f / %.2f |\n", r.ReconcilesPerTopic, r.ReconcilesPerSub)
	fmt.Fprintf(&b, "| Operator API writes per object while converging | %.2f |\n", r.WritesPerObject)
	kinds := make([]string, 0, len(r.WritesByKind))
	for k := range r.WritesByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(&b, "| &nbsp;&nbsp;%s | %d |\n", k, r.WritesByKind[k])
	}
	fmt.Fprintf(&b, "| Steady state: API writes in %.0f s (goal 0) | %d |\n", r.SteadySeconds, r.SteadyWrites)
	fmt.Fprintf(&b, "| Steady state: reconciles in that window | %d |\n", r.SteadyReconciles)
	fmt.Fprintf(&b, "| After one message to %d topics: API writes in the next resync | %d |\n", r.TrafficTopics, r.TrafficWrites)
	return b.String()
}
