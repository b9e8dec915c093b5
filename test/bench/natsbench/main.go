// Command natsbench is the NATS JetStream peer of `herald bench`: it publishes --size byte
// messages to a file-storage stream and reports the same JSON shape (msg/s, MB/s and latency
// percentiles over every request). It lives in its own module so that nats.go never enters
// Herald's go.mod; hack/bench.sh builds it with `go -C test/bench/natsbench build`.
//
// With --batch 1 every worker publishes synchronously, one message at a time (js.Publish waits
// for the stream's ack): the "unbatched" workload, where a request is one message. With
// --batch N > 1 every worker sends N messages with js.PublishAsync, then waits for all N acks
// before the next N: one "request" is one batch of N messages, exactly as one Herald request of
// N messages, and --concurrency workers keep concurrency×N messages in flight.
//
// Against a JetStream cluster, --replicas 3 creates an R3 stream; it waits until the stream has
// a leader and every replica is current before publishing, and with --leader (and every server
// of the cluster in --server, comma-separated) it publishes over a connection to the stream
// leader's server, as `herald bench` publishes to the partition leader: no extra route hop.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Result matches the JSON of `herald bench --output json` (internal/cli/bench.go BenchResult).
type Result struct {
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
	MBPerSec    float64 `json:"mbPerSec"`
	P50Ms       float64 `json:"p50Ms"`
	P90Ms       float64 `json:"p90Ms"`
	P99Ms       float64 `json:"p99Ms"`
	P999Ms      float64 `json:"p999Ms"`
	MaxMs       float64 `json:"maxMs"`
	MeanMs      float64 `json:"meanMs"`
	// NATS only: the stream's replicas and the server the publisher was connected to.
	Replicas int    `json:"replicas,omitempty"`
	Server   string `json:"server,omitempty"`
}

type config struct {
	server, stream, subject, output, label string
	size, messages, batch, concurrency     int
	replicas                               int
	leader                                 bool
	duration, warmup, timeout, setup       time.Duration
	log                                    io.Writer
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "natsbench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("natsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := config{log: stderr}
	fs.StringVar(&c.server, "server", nats.DefaultURL, "NATS `URL`s, comma-separated")
	fs.StringVar(&c.stream, "stream", "BENCH", "stream to create (file storage, --replicas replicas)")
	fs.IntVar(&c.replicas, "replicas", 1, "replicas of the stream (3 on a 3-node JetStream cluster)")
	fs.BoolVar(&c.leader, "leader", false, "publish over a connection to the stream leader's server (one of --server)")
	fs.DurationVar(&c.setup, "setup-timeout", 30*time.Second, "how long to retry creating the stream and wait for its replicas")
	fs.StringVar(&c.subject, "subject", "bench", "subject to publish to")
	fs.IntVar(&c.size, "size", 1024, "message size in bytes")
	fs.IntVar(&c.messages, "messages", 0, "stop after this many messages (rounded up to whole batches); 0: run for --duration")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to measure, when --messages is 0")
	fs.DurationVar(&c.warmup, "warmup", 0, "publish this long before measuring (not counted)")
	fs.IntVar(&c.batch, "batch", 1, "1: synchronous js.Publish; N: N js.PublishAsync then wait for their acks")
	fs.IntVar(&c.concurrency, "concurrency", 1, "publishers (batches) in flight")
	fs.StringVar(&c.output, "output", "text", "text or json")
	fs.StringVar(&c.label, "label", "", "free text copied into the report")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "timeout of one request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.size < 0, c.batch < 1, c.concurrency < 1, c.messages < 0, c.warmup < 0, c.replicas < 1:
		return errors.New("--size, --messages, --warmup must not be negative; --batch, --concurrency and --replicas at least 1")
	case c.messages == 0 && c.duration <= 0:
		return errors.New("--duration must be positive (or set --messages)")
	case c.output != "text" && c.output != "json":
		return fmt.Errorf("--output must be text or json, not %q", c.output)
	}
	res, err := bench(c)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "%s %s: %d messages of %d bytes in %d requests (batch %d, concurrency %d) in %.2fs\n",
		res.System, res.Mode, res.Messages, res.Size, res.Requests, res.Batch, res.Concurrency, res.Seconds)
	fmt.Fprintf(stdout, "throughput: %.0f msg/s, %.2f MB/s\n", res.MsgPerSec, res.MBPerSec)
	fmt.Fprintf(stdout, "latency per request (ms): p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
		res.P50Ms, res.P90Ms, res.P99Ms, res.P999Ms, res.MaxMs, res.MeanMs)
	return nil
}

// connect opens a connection to url (one URL or a comma-separated list) and its JetStream context.
func connect(c config, url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("natsbench"))
	if err != nil {
		return nil, nil, err
	}
	maxPending := max(4000, 2*c.batch*c.concurrency)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(c.timeout), jetstream.WithDefaultTimeout(c.timeout))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// setupStream creates the stream, retrying for --setup-timeout (a new cluster may still be
// electing its meta leader or meeting its peers), then waits until it has a leader and every
// replica is current. It returns the leader's server name ("" with one replica).
func setupStream(ctx context.Context, js jetstream.JetStream, c config) (string, error) {
	deadline := time.Now().Add(c.setup)
	cfg := jetstream.StreamConfig{Name: c.stream, Subjects: []string{c.subject},
		Storage: jetstream.FileStorage, Replicas: c.replicas}
	var stream jetstream.Stream
	for tries := 0; ; tries++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.CreateOrUpdateStream(sctx, cfg)
		cancel()
		if err == nil {
			stream = s
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("create stream: %w", err)
		}
		if tries == 0 {
			fmt.Fprintf(c.log, "natsbench: create stream: %v; retrying for %s\n", err, c.setup)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if c.replicas == 1 {
		return "", nil
	}
	var last string
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := stream.Info(sctx)
		cancel()
		switch {
		case err != nil:
			last = err.Error()
		case info.Cluster == nil || info.Cluster.Leader == "":
			last = "no leader"
		case len(info.Cluster.Replicas) != c.replicas-1:
			last = fmt.Sprintf("%d replicas besides the leader, want %d", len(info.Cluster.Replicas), c.replicas-1)
		default:
			current := true
			for _, p := range info.Cluster.Replicas {
				if !p.Current || p.Offline {
					current, last = false, "replica "+p.Name+" not current"
				}
			}
			if current {
				return info.Cluster.Leader, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("stream %s not ready with %d replicas after %s: %s", c.stream, c.replicas, c.setup, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func bench(c config) (Result, error) {
	nc, js, err := connect(c, c.server)
	if err != nil {
		return Result{}, err
	}
	defer func() { nc.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader, err := setupStream(ctx, js, c)
	if err != nil {
		return Result{}, err
	}
	if c.leader && leader != "" && nc.ConnectedServerName() != leader {
		found := false
		for _, u := range strings.Split(c.server, ",") {
			lnc, ljs, err := connect(c, strings.TrimSpace(u))
			if err != nil {
				return Result{}, err
			}
			if lnc.ConnectedServerName() == leader {
				nc.Close()
				nc, js, found = lnc, ljs, true
				break
			}
			lnc.Close()
		}
		if !found {
			return Result{}, fmt.Errorf("the stream leader %s is none of --server %s", leader, c.server)
		}
	}
	if leader != "" {
		fmt.Fprintf(c.log, "natsbench: stream %s R%d, leader %s; publishing via %s\n", c.stream, c.replicas, leader, nc.ConnectedServerName())
	}

	payloads := make([][]byte, 8)
	for i := range payloads {
		payloads[i] = make([]byte, c.size)
		if _, err := rand.Read(payloads[i]); err != nil {
			return Result{}, err
		}
	}
	var (
		firstErr  error
		errOnce   sync.Once
		measuring atomic.Bool
		stop      atomic.Bool
		requests  atomic.Int64
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; stop.Store(true); cancel() })
	}
	total := 0
	if c.messages > 0 {
		total = (c.messages + c.batch - 1) / c.batch
		requests.Store(int64(total))
	}
	perWorker := 1 << 16
	if total > 0 {
		perWorker = total/c.concurrency + 1
	}
	type worker struct {
		lat      []time.Duration
		messages int64
	}
	workers := make([]*worker, c.concurrency)
	// Without a warm-up, measure from the first request on.
	measuring.Store(c.warmup == 0)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{lat: make([]time.Duration, 0, perWorker)}
		workers[i] = w
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			futures := make([]jetstream.PubAckFuture, c.batch)
			for n := i; !stop.Load(); n++ {
				if total > 0 && measuring.Load() && requests.Add(-1) < 0 {
					return
				}
				counted := measuring.Load()
				start := time.Now()
				var err error
				if c.batch == 1 {
					_, err = js.Publish(ctx, c.subject, payloads[n%len(payloads)])
				} else {
					err = publishBatch(ctx, js, c, payloads, n, futures)
				}
				if err != nil {
					if !stop.Load() || ctx.Err() == nil {
						fail(err)
					}
					return
				}
				if counted {
					w.lat = append(w.lat, time.Since(start))
					w.messages += int64(c.batch)
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
		return Result{}, firstErr
	}
	var lat []time.Duration
	var msgs int64
	for _, w := range workers {
		lat = append(lat, w.lat...)
		msgs += w.messages
	}
	mode := "sync"
	if c.batch > 1 {
		mode = "async"
	}
	res := Result{System: "nats-jetstream", Label: c.label, Mode: mode, Size: c.size, Batch: c.batch, Concurrency: c.concurrency,
		Replicas: c.replicas, Server: nc.ConnectedServerName()}
	res.fill(msgs, lat, elapsed)
	return res, nil
}

// publishBatch sends c.batch messages with PublishAsync, then waits for every ack.
func publishBatch(ctx context.Context, js jetstream.JetStream, c config, payloads [][]byte, n int, futures []jetstream.PubAckFuture) error {
	for k := range futures {
		f, err := js.PublishAsync(c.subject, payloads[(n+k)%len(payloads)])
		if err != nil {
			return err
		}
		futures[k] = f
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// fill computes throughput and latency percentiles (nearest rank over every request).
func (r *Result) fill(msgs int64, lat []time.Duration, elapsed time.Duration) {
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
		i := int(math.Ceil(p*float64(len(lat)))) - 1
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
