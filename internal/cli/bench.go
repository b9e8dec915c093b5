package cli

// herald bench: a publish load generator for the broker's HTTP API. It is built to be cheap, as
// it shares the machine with the broker it measures: request bodies are encoded once and reused,
// responses are checked without decoding them, and every latency goes into a preallocated slice
// that is sorted once at the end. test/bench/natsbench reports the same JSON shape for NATS.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	register("bench", "measure publish throughput and latency against a broker", runBench)
}

type benchConfig struct {
	server      string
	topic       string
	partitions  int
	size        int
	messages    int
	duration    time.Duration
	warmup      time.Duration
	batch       int
	concurrency int
	mode        string
	output      string
	label       string
	timeout     time.Duration
}

// BenchResult is the report of one run (--output json). natsbench writes the same shape.
type BenchResult struct {
	System      string  `json:"system"`
	Label       string  `json:"label,omitempty"`
	Mode        string  `json:"mode"`
	Size        int     `json:"size"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Partitions  int     `json:"partitions,omitempty"`
	Messages    int64   `json:"messages"`
	Requests    int64   `json:"requests"`
	Seconds     float64 `json:"seconds"`
	MsgPerSec   float64 `json:"msgPerSec"`
	MBPerSec    float64 `json:"mbPerSec"` // payload bytes, 10^6 per MB
	// Latency of one request (one message unbatched; a whole batch batched), in milliseconds.
	P50Ms  float64 `json:"p50Ms"`
	P90Ms  float64 `json:"p90Ms"`
	P99Ms  float64 `json:"p99Ms"`
	P999Ms float64 `json:"p999Ms"`
	MaxMs  float64 `json:"maxMs"`
	MeanMs float64 `json:"meanMs"`
}

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: herald bench [flags]\n\n"+
			"Publishes --size byte messages to --topic for --duration (or --messages in all), --batch per\n"+
			"request with --concurrency requests in flight, then prints the throughput and the latency\n"+
			"percentiles of the requests. The topic is created with --partitions unless that is 0.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var c benchConfig
	fs.StringVar(&c.server, "server", defaultServer, "broker `URL`")
	fs.StringVar(&c.topic, "topic", "bench", "topic to publish to")
	fs.IntVar(&c.partitions, "partitions", 1, "create (or grow) the topic with this many partitions first; 0: leave it as it is")
	fs.IntVar(&c.size, "size", 1024, "message size in bytes")
	fs.IntVar(&c.messages, "messages", 0, "stop after this many messages (rounded up to whole batches); 0: run for --duration")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to measure, when --messages is 0")
	fs.DurationVar(&c.warmup, "warmup", 0, "publish this long before measuring (not counted)")
	fs.IntVar(&c.batch, "batch", 1, "messages per request (json mode)")
	fs.IntVar(&c.concurrency, "concurrency", 1, "requests in flight")
	fs.StringVar(&c.mode, "mode", "json", "json ({\"messages\":[{\"data\":base64}…]}) or raw (the body is one message)")
	fs.StringVar(&c.output, "output", "text", "text or json")
	fs.StringVar(&c.label, "label", "", "free text copied into the report")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "timeout of one request")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError("%v", err)
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments %q", fs.Args())
	}
	if err := c.check(); err != nil {
		return err
	}
	res, err := benchRun(context.Background(), c)
	if err != nil {
		return err
	}
	if c.output == "json" {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	fmt.Fprint(stdout, res.Text())
	return nil
}

func (c *benchConfig) check() error {
	switch {
	case c.size < 0:
		return usageError("--size must not be negative")
	case c.batch < 1:
		return usageError("--batch must be at least 1")
	case c.concurrency < 1:
		return usageError("--concurrency must be at least 1")
	case c.messages < 0:
		return usageError("--messages must not be negative")
	case c.messages == 0 && c.duration <= 0:
		return usageError("--duration must be positive (or set --messages)")
	case c.warmup < 0:
		return usageError("--warmup must not be negative")
	case c.partitions < 0:
		return usageError("--partitions must not be negative")
	case c.mode != "json" && c.mode != "raw":
		return usageError("--mode must be json or raw, not %q", c.mode)
	case c.mode == "raw" && c.batch != 1:
		return usageError("--mode raw sends one message per request: --batch must be 1")
	case c.output != "text" && c.output != "json":
		return usageError("--output must be text or json, not %q", c.output)
	case c.topic == "" || strings.ContainsAny(c.topic, "/?#%"):
		return usageError("--topic %q is not a topic name", c.topic)
	}
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError("--server %q: want http://HOST:PORT", c.server)
	}
	c.server = strings.TrimRight(c.server, "/")
	return nil
}

// Text renders the result as a few human-readable lines.
func (r BenchResult) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d messages of %d bytes in %d requests (batch %d, concurrency %d) in %.2fs\n",
		r.System, r.Mode, r.Messages, r.Size, r.Requests, r.Batch, r.Concurrency, r.Seconds)
	fmt.Fprintf(&b, "throughput: %.0f msg/s, %.2f MB/s\n", r.MsgPerSec, r.MBPerSec)
	fmt.Fprintf(&b, "latency per request (ms): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
		r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms, r.MaxMs, r.MeanMs)
	return b.String()
}

// benchBody is one request body, encoded once and sent many times.
type benchBody struct {
	data []byte
	n    int // messages in it
}

// benchBodies builds a few distinct bodies of batch messages each (random payloads, so that no
// layer can profit from repetition), plus one of the remainder when --messages is not a
// multiple of --batch.
func benchBodies(c benchConfig) ([]benchBody, error) {
	const distinct = 8
	mk := func(n int) (benchBody, error) {
		if c.mode == "raw" {
			p := make([]byte, c.size)
			if _, err := rand.Read(p); err != nil {
				return benchBody{}, err
			}
			return benchBody{data: p, n: 1}, nil
		}
		var b bytes.Buffer
		b.Grow(16 + n*(base64.StdEncoding.EncodedLen(c.size)+12))
		b.WriteString(`{"messages":[`)
		p := make([]byte, c.size)
		enc := make([]byte, base64.StdEncoding.EncodedLen(c.size))
		for i := 0; i < n; i++ {
			if _, err := rand.Read(p); err != nil {
				return benchBody{}, err
			}
			base64.StdEncoding.Encode(enc, p)
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"data":"`)
			b.Write(enc)
			b.WriteString(`"}`)
		}
		b.WriteString("]}")
		return benchBody{data: b.Bytes(), n: n}, nil
	}
	var out []benchBody
	for i := 0; i < distinct; i++ {
		b, err := mk(c.batch)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// benchTransport is tuned for many small requests to one host: enough idle connections for
// every request in flight, no compression, no proxy, bigger buffers for batched bodies.
func benchTransport(concurrency int) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		MaxIdleConns:        2 * concurrency,
		MaxIdleConnsPerHost: 2 * concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
		ForceAttemptHTTP2:   false,
	}
}

func benchCreateTopic(ctx context.Context, hc *http.Client, c benchConfig) error {
	body := fmt.Sprintf(`{"partitions":%d}`, c.partitions)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.server+"/v1/topics/"+c.topic, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("create topic %s: %s: %s", c.topic, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// benchWorker is one request loop; its latencies stay its own until the run ends.
type benchWorker struct {
	lat      []time.Duration
	messages int64
	buf      []byte
}

var benchIDField = []byte(`"id":`)

// publish sends one body and checks that the answer is a 200 with one result per message. The
// check counts "id": fields instead of decoding the response, to keep the client cheap.
func (w *benchWorker) publish(ctx context.Context, hc *http.Client, target, contentType string, b benchBody) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(b.data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	buf := bytes.NewBuffer(w.buf[:0])
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	w.buf = buf.Bytes()
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: %s: %s", resp.Status, bytes.TrimSpace(w.buf))
	}
	if got := bytes.Count(w.buf, benchIDField); got != b.n {
		return fmt.Errorf("publish: %d results for %d messages: %.200s", got, b.n, w.buf)
	}
	return nil
}

func benchRun(ctx context.Context, c benchConfig) (BenchResult, error) {
	hc := &http.Client{Transport: benchTransport(c.concurrency), Timeout: c.timeout}
	defer hc.CloseIdleConnections()
	if c.partitions > 0 {
		if err := benchCreateTopic(ctx, hc, c); err != nil {
			return BenchResult{}, err
		}
	}
	bodies, err := benchBodies(c)
	if err != nil {
		return BenchResult{}, err
	}
	target := c.server + "/v1/topics/" + c.topic + "/messages"
	contentType := "application/json"
	if c.mode == "raw" {
		contentType = "application/octet-stream"
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		firstErr  error
		errOnce   sync.Once
		measuring atomic.Bool
		stop      atomic.Bool
		requests  atomic.Int64 // requests left to send, in --messages mode
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; stop.Store(true); cancel() })
	}
	total := 0
	if c.messages > 0 {
		total = (c.messages + c.batch - 1) / c.batch
		requests.Store(int64(total))
	}
	// Preallocate the latency slices so recording never allocates while measuring.
	perWorker := 1 << 16
	if total > 0 {
		perWorker = total/c.concurrency + 1
	}
	workers := make([]*benchWorker, c.concurrency)
	// Without a warm-up, measure from the first request on.
	measuring.Store(c.warmup == 0)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		w := &benchWorker{lat: make([]time.Duration, 0, perWorker), buf: make([]byte, 0, 64<<10)}
		workers[i] = w
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := i; !stop.Load(); n++ {
				if total > 0 && measuring.Load() && requests.Add(-1) < 0 {
					return
				}
				b := bodies[n%len(bodies)]
				counted := measuring.Load()
				start := time.Now()
				if err := w.publish(ctx, hc, target, contentType, b); err != nil {
					if !stop.Load() || ctx.Err() == nil {
						fail(err)
					}
					return
				}
				if counted {
					w.lat = append(w.lat, time.Since(start))
					w.messages += int64(b.n)
				}
			}
		}(i)
	}
	if c.warmup > 0 {
		select {
		case <-time.After(c.warmup):
		case <-ctx.Done():
		}
		start = time.Now()
		measuring.Store(true)
	}
	if total == 0 {
		select {
		case <-time.After(c.duration):
		case <-ctx.Done():
		}
		stop.Store(true)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return BenchResult{}, firstErr
	}
	var lat []time.Duration
	var msgs int64
	for _, w := range workers {
		lat = append(lat, w.lat...)
		msgs += w.messages
	}
	res := BenchResult{System: "herald", Label: c.label, Mode: c.mode, Size: c.size, Batch: c.batch,
		Concurrency: c.concurrency, Partitions: c.partitions}
	res.fill(msgs, lat, elapsed)
	return res, nil
}

// fill computes throughput and latency percentiles (nearest rank over every request).
func (r *BenchResult) fill(msgs int64, lat []time.Duration, elapsed time.Duration) {
	r.Messages, r.Requests, r.Seconds = msgs, int64(len(lat)), elapsed.Seconds()
	if r.Seconds > 0 {
		r.MsgPerSec = float64(msgs) / r.Seconds
		r.MBPerSec = float64(msgs) * float64(r.Size) / r.Seconds / 1e6
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1 // nearest rank
		i = max(0, min(i, len(lat)-1))
		return ms(lat[i])
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms = pct(0.50), pct(0.90), pct(0.99), pct(0.999)
	r.MaxMs, r.MeanMs = ms(lat[len(lat)-1]), ms(sum)/float64(len(lat))
}
