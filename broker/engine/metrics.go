package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the broker's Prometheus metrics, on a registry of its own so that several brokers
// in one process (tests) do not collide.
type Metrics struct {
	Registry       *prometheus.Registry
	published      *prometheus.CounterVec
	publishedBytes *prometheus.CounterVec
	delivered      *prometheus.CounterVec
	acked          *prometheus.CounterVec
	deadLettered   *prometheus.CounterVec
	fsyncSeconds   prometheus.Histogram
	// HTTPRequests is filled by the server.
	HTTPRequests *prometheus.CounterVec
	HTTPSeconds  *prometheus.HistogramVec
}

func newMetrics(b *Broker) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.published = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_published_total", Help: "Messages appended to topics."}, []string{"topic"})
	m.publishedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_published_bytes_total", Help: "Message data bytes appended to topics."}, []string{"topic"})
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_delivered_total", Help: "Message deliveries (pulls and pushes, redeliveries included)."}, []string{"subscription"})
	m.acked = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_acked_total", Help: "Messages acknowledged."}, []string{"subscription"})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_messages_dead_lettered_total", Help: "Messages that ran out of attempts."}, []string{"subscription"})
	m.fsyncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herald_fsync_duration_seconds", Help: "Duration of fsync calls on logs and journals.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16)})
	m.HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_http_requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"})
	m.HTTPSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herald_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"route"})
	backlog := prometheus.NewDesc("herald_subscription_backlog", "Matching messages a subscription has not acknowledged yet.", []string{"subscription", "topic"}, nil)
	inflight := prometheus.NewDesc("herald_subscription_in_flight", "Messages leased and awaiting ack.", []string{"subscription", "topic"}, nil)
	topicBytes := prometheus.NewDesc("herald_topic_bytes", "Bytes retained by a topic's partition logs.", []string{"topic"}, nil)
	m.Registry.MustRegister(m.published, m.publishedBytes, m.delivered, m.acked, m.deadLettered, m.fsyncSeconds, m.HTTPRequests, m.HTTPSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectorFunc{descs: []*prometheus.Desc{backlog, inflight, topicBytes}, collect: func(ch chan<- prometheus.Metric) {
			for _, s := range b.ListSubscriptions() {
				ch <- prometheus.MustNewConstMetric(backlog, prometheus.GaugeValue, float64(s.Stats.Backlog), s.Name, s.Topic)
				ch <- prometheus.MustNewConstMetric(inflight, prometheus.GaugeValue, float64(s.Stats.InFlight), s.Name, s.Topic)
			}
			for _, t := range b.ListTopics() {
				ch <- prometheus.MustNewConstMetric(topicBytes, prometheus.GaugeValue, float64(t.Stats.Bytes), t.Name)
			}
		}})
	return m
}

func (m *Metrics) observeFsync(d time.Duration) { m.fsyncSeconds.Observe(d.Seconds()) }

// collectorFunc is a prometheus.Collector computed at scrape time.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
