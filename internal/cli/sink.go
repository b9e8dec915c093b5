package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heraldmq/herald/broker/client"
)

func init() {
	register("sink", "a small HTTP endpoint that receives pushes (tests, demos, benchmarks)", runSink)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// sinkConfig configures a sink server.
type sinkConfig struct {
	listen     string
	status     int
	failFirst  int64
	failStatus int
	retryAfter time.Duration
	delay      time.Duration
	secrets    []string
	quiet      bool
	maxBody    int64
	out        io.Writer
}

// SinkStats is what GET /stats of `herald sink` returns.
type SinkStats struct {
	Requests     int64            `json:"requests"`     // pushes received (POST)
	OK           int64            `json:"ok"`           // answered 2xx
	Failed       int64            `json:"failed"`       // answered otherwise
	BadSignature int64            `json:"badSignature"` // refused by --verify-secret (401)
	Unique       int64            `json:"unique"`       // distinct Herald-Message-Id answered 2xx
	Duplicates   int64            `json:"duplicates"`   // 2xx answers for an id already answered 2xx
	Bytes        int64            `json:"bytes"`        // body bytes received
	ByStatus     map[string]int64 `json:"byStatus"`
	// FirstAt and LastAt are when the first and the latest unique message was answered 2xx.
	FirstAt *time.Time `json:"firstAt,omitempty"`
	LastAt  *time.Time `json:"lastAt,omitempty"`
	// Publish-to-receive latency of unique messages (from their Herald-Publish-Time header), in
	// milliseconds; a benchmark reads these.
	LatencyP50Ms  float64 `json:"latencyP50Ms"`
	LatencyP99Ms  float64 `json:"latencyP99Ms"`
	LatencyP999Ms float64 `json:"latencyP999Ms"`
	LatencyMaxMs  float64 `json:"latencyMaxMs"`
}

// maxLatencySamples bounds the sink's memory: a benchmark's worth of samples.
const maxLatencySamples = 4 << 20

type sink struct {
	cfg  sinkConfig
	mu   sync.Mutex
	st   SinkStats
	seen map[string]struct{}
	lat  []time.Duration // publish-to-receive latency of unique messages
}

func runSink(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c sinkConfig
	var secrets stringList
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8090", "HOST:PORT to listen on (port 0: any free port; the address is printed)")
	fs.IntVar(&c.status, "status", 200, "HTTP status of every answer (after --fail-first)")
	fs.Int64Var(&c.failFirst, "fail-first", 0, "answer the first N pushes with --fail-status")
	fs.IntVar(&c.failStatus, "fail-status", 503, "status of the --fail-first answers")
	fs.DurationVar(&c.retryAfter, "retry-after", 0, "send Retry-After (seconds, rounded up) with non-2xx answers")
	fs.DurationVar(&c.delay, "delay", 0, "wait this long before answering each push")
	fs.Var(&secrets, "verify-secret", "verify Standard Webhooks signatures with this secret (repeatable); a bad signature is answered 401")
	fs.BoolVar(&c.quiet, "quiet", false, "do not print a line per push")
	fs.Int64Var(&c.maxBody, "max-body", 64<<20, "largest body accepted")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	if c.status < 100 || c.status > 599 || c.failStatus < 100 || c.failStatus > 599 {
		return usageError("--status and --fail-status must be HTTP status codes")
	}
	if c.failFirst < 0 || c.delay < 0 || c.retryAfter < 0 {
		return usageError("--fail-first, --delay and --retry-after must not be negative")
	}
	c.secrets = secrets
	c.out = stdout
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveSink(ctx, ln, c, stderr)
}

// serveSink serves until ctx ends.
func serveSink(ctx context.Context, ln net.Listener, c sinkConfig, stderr io.Writer) error {
	s := &sink{cfg: c, seen: map[string]struct{}{}, st: SinkStats{ByStatus: map[string]int64{}}}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "herald sink: listening on %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shCtx)
	st := s.stats()
	fmt.Fprintf(stderr, "herald sink: %d pushes, %d ok (%d unique, %d duplicates), %d failed, %d bad signatures\n",
		st.Requests, st.OK, st.Unique, st.Duplicates, st.Failed, st.BadSignature)
	return nil
}

func (s *sink) stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.ByStatus = make(map[string]int64, len(s.st.ByStatus))
	for k, v := range s.st.ByStatus {
		st.ByStatus[k] = v
	}
	if len(s.lat) > 0 {
		lat := slices.Clone(s.lat)
		slices.Sort(lat)
		pct := func(p float64) float64 {
			i := int(math.Ceil(p*float64(len(lat)))) - 1
			return float64(lat[max(i, 0)]) / 1e6
		}
		st.LatencyP50Ms, st.LatencyP99Ms, st.LatencyP999Ms, st.LatencyMaxMs = pct(0.50), pct(0.99), pct(0.999), pct(1)
	}
	return st
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/stats":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(s.stats())
		return
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST pushes; GET /stats", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.maxBody))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	if s.cfg.delay > 0 {
		select {
		case <-time.After(s.cfg.delay):
		case <-r.Context().Done():
			return
		}
	}
	id := r.Header.Get("Herald-Message-Id")
	if id == "" {
		id = r.Header.Get("ce-id")
	}
	code, note := s.cfg.status, ""
	s.mu.Lock()
	s.st.Requests++
	s.st.Bytes += int64(len(body))
	n := s.st.Requests
	s.mu.Unlock()
	if len(s.cfg.secrets) > 0 {
		if err := client.VerifyWebhook(s.cfg.secrets, r.Header, body, 0); err != nil {
			code, note = http.StatusUnauthorized, err.Error()
		}
	}
	if code != http.StatusUnauthorized && n <= s.cfg.failFirst {
		code, note = s.cfg.failStatus, fmt.Sprintf("failing the first %d", s.cfg.failFirst)
	}
	ok := code >= 200 && code < 300
	s.mu.Lock()
	s.st.ByStatus[strconv.Itoa(code)]++
	switch {
	case ok:
		s.st.OK++
		if _, dup := s.seen[id]; dup && id != "" {
			s.st.Duplicates++
		} else {
			s.seen[id] = struct{}{}
			s.st.Unique++
			now := time.Now()
			if s.st.FirstAt == nil {
				s.st.FirstAt = &now
			}
			s.st.LastAt = &now
			if pt, err := time.Parse(time.RFC3339Nano, r.Header.Get("Herald-Publish-Time")); err == nil && len(s.lat) < maxLatencySamples {
				s.lat = append(s.lat, now.Sub(pt))
			}
		}
	case code == http.StatusUnauthorized && note != "":
		s.st.BadSignature++
		s.st.Failed++
	default:
		s.st.Failed++
	}
	s.mu.Unlock()
	if !s.cfg.quiet {
		line := fmt.Sprintf("%s %d id=%s attempt=%s sub=%s bytes=%d type=%q",
			time.Now().UTC().Format("15:04:05.000"), code, id, r.Header.Get("Herald-Delivery-Attempt"),
			r.Header.Get("Herald-Subscription"), len(body), r.Header.Get("Content-Type"))
		if note != "" {
			line += " (" + note + ")"
		} else if len(body) > 0 && len(body) <= 80 && isPrintable(body) {
			line += fmt.Sprintf(" body=%q", body)
		}
		s.mu.Lock()
		fmt.Fprintln(s.cfg.out, line)
		s.mu.Unlock()
	}
	if !ok && s.cfg.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((s.cfg.retryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(code)
	if note != "" {
		io.WriteString(w, note+"\n")
	}
}

func isPrintable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
