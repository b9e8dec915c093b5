package push

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	endToEnd *prometheus.HistogramVec
	circuit  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_push_requests_total",
			Help: "Push requests by subscription and outcome (HTTP status code, error or timeout)."}, []string{"subscription", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_push_latency_seconds",
			Help:    "Duration of one push request, from sending to the end of the response.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 17)}, []string{"subscription"}),
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_push_end_to_end_seconds",
			Help:    "Time from publish to the successful push of a message (retries included).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 22)}, []string{"subscription"}),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_push_circuit_open",
			Help: "1 while a push subscription's circuit breaker holds back deliveries to a failing endpoint."}, []string{"subscription"}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.latency = register(reg, m.latency)
		m.endToEnd = register(reg, m.endToEnd)
		m.circuit = register(reg, m.circuit)
	}
	return m
}

// register registers c, or returns the collector already registered under its name (a second
// Manager on one broker).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// forget drops a deleted subscription's series.
func (m *metrics) forget(sub string) {
	l := prometheus.Labels{"subscription": sub}
	m.requests.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.endToEnd.DeletePartialMatch(l)
	m.circuit.DeletePartialMatch(l)
}
