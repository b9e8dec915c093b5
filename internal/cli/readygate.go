package cli

import (
	"net/http"
	"sync/atomic"
)

// readyGate answers /healthz at once and everything else with 503 until the broker has
// recovered its log and set the real handler.
type readyGate struct {
	h atomic.Pointer[http.Handler]
}

func (g *readyGate) set(h http.Handler) { g.h.Store(&h) }

func (g *readyGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/healthz" {
		w.Write([]byte(`{"status":"ok"}` + "\n"))
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	w.Write([]byte(`{"error":{"code":"Unavailable","message":"broker is recovering its log"}}` + "\n"))
}
