package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// benchFake is a broker stand-in that checks each publish and answers one result per message.
func benchFake(t *testing.T, status int) (*httptest.Server, *sync.Map) {
	t.Helper()
	seen := &sync.Map{} // "PUT topic" / "json n size" / "raw size" -> true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/topics/bt":
			seen.Store("PUT "+string(body), true)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"name":"bt"}`)
			return
		case r.Method != http.MethodPost || r.URL.Path != "/v1/topics/bt/messages":
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if status != http.StatusOK {
			w.WriteHeader(status)
			io.WriteString(w, `{"error":{"code":"Unavailable","message":"down"}}`)
			return
		}
		n := 1
		if r.Header.Get("Content-Type") == "application/json" {
			var req api.PublishRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			n = len(req.Messages)
			seen.Store(fmt.Sprintf("json %d %d", n, len(req.Messages[0].Data)), true)
		} else {
			seen.Store(fmt.Sprintf("raw %d", len(body)), true)
		}
		var resp api.PublishResponse
		for i := 0; i < n; i++ {
			resp.Results = append(resp.Results, api.PublishResult{ID: fmt.Sprint(i), Offset: int64(i)})
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

func TestBenchJSONBatches(t *testing.T) {
	srv, seen := benchFake(t, http.StatusOK)
	var out, errb bytes.Buffer
	code := Main([]string{"bench", "--server", srv.URL, "--topic", "bt", "--partitions", "3", "--size", "100",
		"--batch", "7", "--concurrency", "3", "--messages", "50", "--output", "json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res BenchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	// 50 messages in batches of 7: 8 requests, 56 messages.
	if res.System != "herald" || res.Requests != 8 || res.Messages != 56 || res.Batch != 7 || res.Size != 100 {
		t.Errorf("result %+v", res)
	}
	if res.P50Ms <= 0 || res.P50Ms > res.P99Ms || res.P99Ms > res.P999Ms || res.P999Ms > res.MaxMs {
		t.Errorf("percentiles out of order: %+v", res)
	}
	for _, k := range []string{`PUT {"partitions":3}`, "json 7 100"} {
		if _, ok := seen.Load(k); !ok {
			t.Errorf("the broker never saw %q", k)
		}
	}
}

func TestBenchRawDuration(t *testing.T) {
	srv, seen := benchFake(t, http.StatusOK)
	var out, errb bytes.Buffer
	code := Main([]string{"bench", "--server", srv.URL, "--topic", "bt", "--partitions", "0", "--mode", "raw",
		"--size", "64", "--duration", "100ms", "--warmup", "20ms"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "herald raw:") || !strings.Contains(out.String(), "p99.9") {
		t.Errorf("text output %q", out.String())
	}
	if _, ok := seen.Load("raw 64"); !ok {
		t.Error("no raw 64-byte message seen")
	}
	if _, ok := seen.Load(`PUT {"partitions":0}`); ok {
		t.Error("--partitions 0 must not create the topic")
	}
}

func TestBenchFailsOnError(t *testing.T) {
	srv, _ := benchFake(t, http.StatusServiceUnavailable)
	var out, errb bytes.Buffer
	code := Main([]string{"bench", "--server", srv.URL, "--topic", "bt", "--messages", "10"}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "503") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--batch", "0"},
		{"--mode", "raw", "--batch", "2"},
		{"--mode", "xml"},
		{"--output", "yaml"},
		{"--server", "ftp://x"},
		{"--duration", "0s"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := Main(append([]string{"bench"}, args...), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

func TestBenchPercentiles(t *testing.T) {
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[len(lat)-1-i] = time.Duration(i+1) * time.Millisecond // 1..1000 ms, reversed
	}
	r := BenchResult{Size: 1000}
	r.fill(2000, lat, 2*time.Second)
	if r.P50Ms != 500 || r.P90Ms != 900 || r.P99Ms != 990 || r.P999Ms != 999 || r.MaxMs != 1000 || r.MeanMs != 500.5 {
		t.Errorf("percentiles %+v", r)
	}
	if r.MsgPerSec != 1000 || r.MBPerSec != 1 || r.Requests != 1000 {
		t.Errorf("throughput %+v", r)
	}
}
