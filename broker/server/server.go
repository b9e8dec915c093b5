// Package server maps the broker's HTTP API v1 (see README.md and DESIGN.md) onto the engine.
// Handlers only decode, validate shapes, call the engine and encode; every error leaves as the
// JSON error body with a 4xx/5xx status, and no input can make a handler panic or return 500.
package server

import (
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

// Server serves the HTTP API of one broker.
type Server struct {
	b   *engine.Broker
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the HTTP API over b.
func New(b *engine.Broker, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, log: log, mux: http.NewServeMux()}
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
	s.handle("/healthz", methods{"GET": s.healthz})
	s.handle("/readyz", methods{"GET": s.readyz})
	metrics := promhttp.HandlerFor(s.b.Metrics.Registry, promhttp.HandlerOpts{})
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
	reqs := s.b.Metrics.HTTPRequests
	secs := s.b.Metrics.HTTPSeconds.WithLabelValues(pattern)
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

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !s.b.Ready() {
		writeError(w, api.Unavailable("broker is not ready"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
