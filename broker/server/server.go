// Package server maps the broker's HTTP API v1 (see README.md and DESIGN.md) onto the engine.
// Handlers only decode, validate shapes, call the engine and encode; every error leaves as the
// JSON error body with a 4xx/5xx status, and no input can make a handler panic or return 500.
package server

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

// maxBodyBytes bounds a request body: the largest message (64 MiB) base64-encoded, plus room.
const maxBodyBytes = 100 << 20

// Backend is what the API's operations run on: the engine of a single broker, or a cluster
// node (broker/cluster) that serves them from whichever broker owns the data.
type Backend interface {
	PutTopic(name string, spec api.TopicSpec) (api.Topic, bool, error)
	GetTopic(name string) (api.Topic, error)
	ListTopics() []api.Topic
	DeleteTopic(name string) error
	Publish(topic string, msgs []api.PublishMessage) ([]api.PublishResult, error)
	PutSubscription(name string, spec api.SubscriptionSpec) (api.Subscription, bool, error)
	GetSubscription(name string) (api.Subscription, error)
	ListSubscriptions() []api.Subscription
	DeleteSubscription(name string) error
	Pull(ctx context.Context, name string, o engine.PullOptions) ([]api.Message, error)
	Ack(name string, handles []string) (api.AckResponse, error)
	Nack(name string, handles []string, delay time.Duration) (api.NackResponse, error)
	ModifyVisibility(name, handle string, vis time.Duration) (string, error)
	Peek(name string, max int) ([]api.Message, error)
	Ready() bool
}

// Server serves the HTTP API of one broker.
type Server struct {
	b   Backend
	eng *engine.Broker // metrics
	log *slog.Logger
	mux *http.ServeMux
	opt Options
}

// Options extend a server for a broker that is one node of a cluster.
type Options struct {
	// Backend replaces the engine for the API's operations.
	Backend Backend
	// Internal serves /v1/internal/ (replication, Raft, forwarding between brokers).
	Internal http.Handler
	// Cluster serves GET /v1/cluster; without it the route says the broker runs alone.
	Cluster http.HandlerFunc
	// ClusterAdmin serves /v1/cluster/… (membership: drain, remove).
	ClusterAdmin http.Handler
}

// New returns the HTTP API over b.
func New(b *engine.Broker, log *slog.Logger) *Server {
	return NewWithOptions(b, log, Options{})
}

// NewWithOptions returns the HTTP API over b, extended by opts.
func NewWithOptions(b *engine.Broker, log *slog.Logger, opts Options) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, eng: b, log: log, mux: http.NewServeMux(), opt: opts}
	if opts.Backend != nil {
		s.b = opts.Backend
	}
	s.routes()
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// ServeMux answers a path with "." or ".." segments or doubled slashes with an HTML redirect
	// to its clean form (which turns a POST into a GET for many clients). No name in this API
	// makes such a path, so it is a JSON 404 like any other unknown path.
	if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && p != cleanPath(p) {
		writeError(w, api.NotFound("path", "no route %s %s: the path is not in canonical form", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cleanPath is ServeMux's canonical form of a path: rooted, no "." or ".." segments, no doubled
// slashes, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// methods maps HTTP methods to handlers for one path; other methods get a JSON 405.
type methods map[string]http.HandlerFunc

func (s *Server) routes() {
	s.handle("/v1/topics", methods{"GET": s.listTopics})
	s.handle("/v1/topics/{topic}", methods{"PUT": s.putTopic, "GET": s.getTopic, "DELETE": s.deleteTopic})
	s.handle("/v1/topics/{topic}/messages", methods{"POST": s.publish})
	s.handle("/v1/subscriptions", methods{"GET": s.listSubscriptions})
	s.handle("/v1/subscriptions/{sub}", methods{"PUT": s.putSubscription, "GET": s.getSubscription, "DELETE": s.deleteSubscription})
	s.handle("/v1/subscriptions/{sub}/pull", methods{"POST": s.pull})
	s.handle("/v1/subscriptions/{sub}/ack", methods{"POST": s.ack})
	s.handle("/v1/subscriptions/{sub}/nack", methods{"POST": s.nack})
	s.handle("/v1/subscriptions/{sub}/visibility", methods{"POST": s.visibility})
	s.handle("/v1/subscriptions/{sub}/peek", methods{"POST": s.peek})
	s.handle("/v1/subscriptions/{sub}/stream", methods{"GET": s.stream})
	s.handle("/v1/cluster", methods{"GET": s.cluster})
	if s.opt.ClusterAdmin != nil {
		s.mux.Handle("/v1/cluster/", s.opt.ClusterAdmin)
	}
	if s.opt.Internal != nil {
		s.mux.Handle("/v1/internal/", s.opt.Internal)
	}
	s.handle("/healthz", methods{"GET": s.healthz})
	s.handle("/readyz", methods{"GET": s.readyz})
	metrics := promhttp.HandlerFor(s.eng.Metrics.Registry, promhttp.HandlerOpts{})
	s.handle("/metrics", methods{"GET": metrics.ServeHTTP})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.NotFound("path", "no route %s %s", r.Method, r.URL.Path))
	})
}

// handle registers a path with its methods, wrapped with metrics and panic recovery.
func (s *Server) handle(pattern string, ms methods) {
	if _, ok := ms["GET"]; ok {
		ms["HEAD"] = ms["GET"]
	}
	allowed := strings.Join(slices.Sorted(maps.Keys(ms)), ", ") // the same every time
	reqs := s.eng.Metrics.HTTPRequests
	secs := s.eng.Metrics.HTTPSeconds.WithLabelValues(pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panic", "path", r.URL.Path, "panic", p)
				if !sw.wrote {
					writeError(sw, &api.Error{Code: api.CodeInternal, Message: "internal error"})
				}
			}
			reqs.WithLabelValues(pattern, strconv.Itoa(sw.code)).Inc()
			secs.Observe(time.Since(start).Seconds())
		}()
		h, ok := ms[r.Method]
		if !ok {
			sw.Header().Set("Allow", allowed)
			writeErrorStatus(sw, http.StatusMethodNotAllowed, &api.Error{Code: api.CodeInvalidArgument, Field: "method", Message: "method " + r.Method + " not allowed; use " + allowed})
			return
		}
		r.Body = http.MaxBytesReader(sw, r.Body, maxBodyBytes)
		h(sw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// cluster serves GET /v1/cluster: a single broker is a cluster of one that leads everything.
func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	if s.opt.Cluster != nil {
		s.opt.Cluster(w, r)
		return
	}
	const self = "standalone"
	out := api.Cluster{Controller: self, Partitions: []api.ClusterPartition{}}
	for _, t := range s.b.ListTopics() {
		for p := 0; p < t.Partitions; p++ {
			out.Partitions = append(out.Partitions, api.ClusterPartition{Topic: t.Name, Partition: p, Leader: self,
				Replicas: []string{self}, InSync: []string{self}})
		}
	}
	n := len(out.Partitions)
	out.Members = []api.ClusterMember{{ID: self, Address: r.Host, Ready: s.b.Ready(), Replicas: n, Leaders: n}}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.b.Ready() {
		writeError(w, api.Unavailable("broker is not ready"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
