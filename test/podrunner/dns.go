package podrunner

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Cluster DNS without a DNS server: the runner writes hosts files (/etc/hosts format: an
// address, then names; one line per address here) from the Services and their endpoints: the
// pods their selector matches that are ready (or not terminating, with
// publishNotReadyAddresses), or the EndpointSlices of a Service without a selector:
//
//   - a headless Service: <svc>.<ns>.svc → the address of every endpoint, and
//     <hostname>.<svc>.<ns>.svc → the pod's address for pods whose spec.subdomain is the
//     Service and that have a spec.hostname (the pods of a StatefulSet whose serviceName is the
//     Service);
//   - a ClusterIP Service: <svc>.<ns>.svc → the address of one ready endpoint (kept while it
//     stays ready), a stand-in for kube-proxy: it only works when the Service's port equals the
//     target port;
//   - ExternalName Services and Services without ready endpoints have no entry.
//
// Each name is there as <name>.svc and <name>.svc.cluster.local, and also as <svc>.<ns> and
// <hostname>.<svc>.<ns> (the svc.cluster.local search domain). dns/<ns>.hosts, the file of the
// processes of namespace ns, adds <svc> and <hostname>.<svc> for the Services of ns (the
// <ns>.svc.cluster.local search domain). dns/cluster.hosts has the fully qualified names only.
// Files are replaced atomically (rename) whenever something changes.
type dnsWriter struct {
	r    *Runner
	kick chan struct{}

	mu     sync.Mutex
	chosen map[string]string // ClusterIP Service → the endpoint address its name points to
	known  map[string]bool   // namespaces with a hosts file
}

func newDNSWriter(r *Runner) *dnsWriter {
	return &dnsWriter{r: r, kick: make(chan struct{}, 1), chosen: map[string]string{}, known: map[string]bool{}}
}

func (d *dnsWriter) poke() {
	if d == nil {
		return
	}
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *dnsWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		}
		// Let a burst of changes settle.
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		if err := d.write(); err != nil {
			d.r.o.Logger.Warn("writing hosts files", "err", err)
		}
	}
}

// ensure makes sure namespace ns has a hosts file (before a process of ns starts).
func (d *dnsWriter) ensure(ns string) error {
	d.mu.Lock()
	known := d.known[ns]
	d.known[ns] = true
	d.mu.Unlock()
	if known {
		if _, err := os.Stat(d.r.HostsFile(ns)); err == nil {
			return nil
		}
	}
	return d.write()
}

type hostEntry struct {
	ip   string
	name []string // name parts: host (optional), svc, ns
}

func (d *dnsWriter) write() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.r
	if r.services == nil || r.slices == nil {
		return nil
	}
	// Endpoints by Service. The API server refuses loopback addresses in EndpointSlices, so the
	// EndpointSlice controller cannot publish the pods here: the endpoints of a Service with a
	// selector come from the pods themselves, by the controller's rules (ready pods, or all
	// running ones with publishNotReadyAddresses; a hostname when the pod's subdomain is the
	// Service). Services without a selector use their EndpointSlices.
	type ep struct{ ip, host string }
	eps := map[string][]ep{}
	podsByNS := map[string][]*corev1.Pod{}
	for _, o := range r.pods.GetStore().List() {
		p := o.(*corev1.Pod)
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		podsByNS[p.Namespace] = append(podsByNS[p.Namespace], p)
	}
	for _, o := range r.services.GetStore().List() {
		svc := o.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, p := range podsByNS[svc.Namespace] {
			if !sel.Matches(labels.Set(p.Labels)) || (!podReady(p) && !svc.Spec.PublishNotReadyAddresses) {
				continue
			}
			x := ep{ip: p.Status.PodIP}
			if p.Spec.Subdomain == svc.Name && p.Spec.Hostname != "" {
				x.host = p.Spec.Hostname
			}
			eps[svc.Namespace+"/"+svc.Name] = append(eps[svc.Namespace+"/"+svc.Name], x)
		}
	}
	selectorless := map[string]bool{}
	for _, o := range r.services.GetStore().List() {
		if svc := o.(*corev1.Service); len(svc.Spec.Selector) == 0 {
			selectorless[svc.Namespace+"/"+svc.Name] = true
		}
	}
	for _, o := range r.slices.GetStore().List() {
		s := o.(*discoveryv1.EndpointSlice)
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" || !selectorless[s.Namespace+"/"+svc] || s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				x := ep{ip: a}
				if e.Hostname != nil {
					x.host = *e.Hostname
				}
				eps[s.Namespace+"/"+svc] = append(eps[s.Namespace+"/"+svc], x)
			}
		}
	}
	var entries []hostEntry
	chosen := map[string]string{}
	for _, o := range r.services.GetStore().List() {
		svc := o.(*corev1.Service)
		key := svc.Namespace + "/" + svc.Name
		list := eps[key]
		sort.Slice(list, func(i, j int) bool { return list[i].ip < list[j].ip })
		switch {
		case svc.Namespace == metav1.NamespaceDefault && svc.Name == "kubernetes":
			// The API server: reach it through KUBECONFIG, not a name.
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
		case svc.Spec.ClusterIP == corev1.ClusterIPNone:
			seen := map[string]bool{}
			for _, e := range list {
				if !seen[e.ip] {
					seen[e.ip] = true
					entries = append(entries, hostEntry{e.ip, []string{"", svc.Name, svc.Namespace}})
				}
				if e.host != "" {
					entries = append(entries, hostEntry{e.ip, []string{e.host, svc.Name, svc.Namespace}})
				}
			}
		case len(list) > 0:
			ip := list[0].ip
			for _, e := range list {
				if e.ip == d.chosen[key] {
					ip = e.ip
				}
			}
			chosen[key] = ip
			entries = append(entries, hostEntry{ip, []string{"", svc.Name, svc.Namespace}})
		}
	}
	d.chosen = chosen
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		if a.name[2] != b.name[2] {
			return a.name[2] < b.name[2]
		}
		if a.name[1] != b.name[1] {
			return a.name[1] < b.name[1]
		}
		if a.name[0] != b.name[0] {
			return a.name[0] < b.name[0]
		}
		return a.ip < b.ip
	})

	namespaces := r.workerNamespaces()
	for ns := range d.known {
		if !slices.Contains(namespaces, ns) {
			namespaces = append(namespaces, ns)
		}
	}
	if err := writeIfChanged(r.ClusterHostsFile(), render(entries, "", false)); err != nil {
		return err
	}
	for _, ns := range namespaces {
		d.known[ns] = true
		if err := writeIfChanged(r.HostsFile(ns), render(entries, ns, true)); err != nil {
			return err
		}
	}
	return nil
}

// render is a hosts file; with short names, for the processes of namespace ns.
func render(entries []hostEntry, ns string, short bool) []byte {
	var b bytes.Buffer
	b.WriteString("# Cluster DNS names of the local cluster, written by the Herald pod runner (test/podrunner).\n")
	if short {
		fmt.Fprintf(&b, "# For the processes of namespace %s: short names resolve as with the search path\n# %s.svc.cluster.local svc.cluster.local cluster.local.\n", ns, ns)
	}
	for _, e := range entries {
		base := strings.Join(nonEmpty(e.name), ".") // [host.]svc.ns
		names := []string{base + ".svc", base + ".svc.cluster.local"}
		if short {
			names = append(names, base)
			if e.name[2] == ns {
				names = append(names, strings.Join(nonEmpty(e.name[:2]), "."))
			}
		}
		fmt.Fprintf(&b, "%s\t%s\n", e.ip, strings.Join(names, " "))
	}
	return b.Bytes()
}

func nonEmpty(parts []string) []string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o644)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
