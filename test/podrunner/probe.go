package podrunner

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs a container run's probes as a kubelet does: the startup probe first; once it
// succeeded (or when there is none) the readiness and liveness probes, each on its own period.
// They stop with ctx (the run's end).
func (w *worker) probe(ctx context.Context, c *ctr, rn *run, spec corev1.Container) {
	if p := spec.StartupProbe; p != nil {
		if !w.startupLoop(ctx, &spec, p) {
			return
		}
		w.post(func() {
			if c.run == rn && c.running {
				c.started = true
			}
		})
	}
	if p := spec.ReadinessProbe; p != nil {
		go w.readinessLoop(ctx, &spec, p, func(ready bool) {
			w.post(func() {
				if c.run == rn && c.running {
					c.ready = ready
				}
			})
		})
	}
	if p := spec.LivenessProbe; p != nil {
		go w.livenessLoop(ctx, &spec, p)
	}
}

// startupLoop returns true after successThreshold successes in a row; after failureThreshold
// failures in a row it asks for the container to be killed and returns false.
func (w *worker) startupLoop(ctx context.Context, spec *corev1.Container, p *corev1.Probe) bool {
	period, timeout, succ, fail := probeParams(p)
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return false
	}
	okRun, failRun := 0, 0
	for {
		if w.probeOnce(ctx, spec, p, timeout) {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		if ctx.Err() != nil {
			return false
		}
		if okRun >= succ {
			return true
		}
		if failRun >= fail {
			w.r.events.Event(w.podRef(), corev1.EventTypeWarning, "Unhealthy", fmt.Sprintf("Startup probe of container %s failed %d times", spec.Name, failRun))
			w.requestKill(spec.Name, "failed its startup probe")
			return false
		}
		if !sleepCtx(ctx, period) {
			return false
		}
	}
}

// readinessLoop reports ready after successThreshold successes in a row, unready after
// failureThreshold failures in a row (a container starts unready).
func (w *worker) readinessLoop(ctx context.Context, spec *corev1.Container, p *corev1.Probe, report func(bool)) {
	period, timeout, succ, fail := probeParams(p)
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return
	}
	okRun, failRun := 0, 0
	ready := false
	for {
		if w.probeOnce(ctx, spec, p, timeout) {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case !ready && okRun >= succ:
			ready = true
			report(true)
		case ready && failRun >= fail:
			ready = false
			w.r.events.Event(w.podRef(), corev1.EventTypeWarning, "Unhealthy", fmt.Sprintf("Readiness probe of container %s failed %d times", spec.Name, failRun))
			report(false)
		}
		if !sleepCtx(ctx, period) {
			return
		}
	}
}

// livenessLoop asks for the container to be killed after failureThreshold failures in a row.
func (w *worker) livenessLoop(ctx context.Context, spec *corev1.Container, p *corev1.Probe) {
	period, timeout, _, fail := probeParams(p)
	if !sleepCtx(ctx, time.Duration(p.InitialDelaySeconds)*time.Second) {
		return
	}
	failRun := 0
	for {
		if w.probeOnce(ctx, spec, p, timeout) {
			failRun = 0
		} else if ctx.Err() == nil {
			failRun++
			w.r.events.Event(w.podRef(), corev1.EventTypeWarning, "Unhealthy", fmt.Sprintf("Liveness probe of container %s failed", spec.Name))
			if failRun >= fail {
				w.requestKill(spec.Name, "failed its liveness probe")
				return
			}
		}
		if !sleepCtx(ctx, period) {
			return
		}
	}
}

func probeParams(p *corev1.Probe) (period, timeout time.Duration, succ, fail int) {
	period, timeout, succ, fail = 10*time.Second, time.Second, 1, 3
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	if p.SuccessThreshold > 0 {
		succ = int(p.SuccessThreshold)
	}
	if p.FailureThreshold > 0 {
		fail = int(p.FailureThreshold)
	}
	return
}

// requestKill asks the loop to kill the container's current process (it restarts per policy).
func (w *worker) requestKill(container, reason string) {
	w.post(func() {
		for _, c := range w.ctrs {
			if c.spec.Name == container && c.running && c.run.killReason == "" {
				c.run.killReason = reason
				w.log().info("killing container", "container", container, "reason", reason)
			}
		}
	})
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// probeOnce runs one probe against the pod IP. exec probes cannot run without a container and
// always succeed; grpc probes are a TCP connect.
func (w *worker) probeOnce(ctx context.Context, spec *corev1.Container, p *corev1.Probe, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		port, err := resolvePort(g.Port, spec)
		if err != nil {
			return false
		}
		host := g.Host
		if host == "" {
			host = w.ip
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		path := g.Path
		if path == "" || path[0] != '/' {
			path = "/" + path
		}
		url := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case p.TCPSocket != nil || p.GRPC != nil:
		var port int
		var err error
		host := w.ip
		if p.TCPSocket != nil {
			port, err = resolvePort(p.TCPSocket.Port, spec)
			if p.TCPSocket.Host != "" {
				host = p.TCPSocket.Host
			}
		} else {
			port = int(p.GRPC.Port)
		}
		if err != nil {
			return false
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	default: // exec
		return true
	}
}

var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as kubelet probes
		Proxy:             nil,
	},
}

// resolvePort turns a probe's port (a number or a container port's name) into a number.
func resolvePort(p intstr.IntOrString, spec *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", spec.Name, p.StrVal)
}
