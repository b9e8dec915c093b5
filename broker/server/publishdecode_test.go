package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// refDecodePublish is what decodeJSON does with a publish body, minus the error rendering:
// encoding/json with DisallowUnknownFields, one value, nothing after it.
func refDecodePublish(body []byte) (api.PublishRequest, error) {
	var req api.PublishRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, err
	}
	if dec.More() {
		return req, fmt.Errorf("more")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return req, fmt.Errorf("trailing data: %v", err)
	}
	return req, nil
}

// checkFastDecode fails when the fast decoder accepts body and encoding/json rejects it or
// decodes something else. It reports whether the fast decoder took body.
func checkFastDecode(t *testing.T, body []byte) bool {
	t.Helper()
	in := bytes.Clone(body)
	got, ok := decodePublish(in)
	if !ok {
		return false
	}
	want, err := refDecodePublish(body)
	if err != nil {
		t.Fatalf("fast decoder accepted what encoding/json rejects (%v): %q", err, body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fast decoder disagrees with encoding/json on %q:\n got %s\nwant %s", body, dump(got), dump(want))
	}
	// Nothing may alias the (pooled) body, and no message's data may reach into another's.
	for i := range in {
		in[i] = '#'
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded request aliases the body: %q", body)
	}
	for i, m := range got.Messages {
		if cap(m.Data) != len(m.Data) {
			t.Fatalf("messages[%d].data has cap %d > len %d", i, cap(m.Data), len(m.Data))
		}
	}
	return true
}

func dump(r api.PublishRequest) string {
	var b strings.Builder
	if r.Messages == nil {
		return "messages=nil"
	}
	fmt.Fprintf(&b, "%d messages:", len(r.Messages))
	for _, m := range r.Messages {
		fmt.Fprintf(&b, " {data=%q(nil=%v)", m.Data, m.Data == nil)
		if m.Text != nil {
			fmt.Fprintf(&b, " text=%q", *m.Text)
		}
		fmt.Fprintf(&b, " key=%q tag=%q ok=%q attrs=%q(nil=%v)", m.Key, m.Tag, m.OrderingKey, m.Attributes, m.Attributes == nil)
		if m.Delay != nil {
			fmt.Fprintf(&b, " delay=%v", *m.Delay)
		}
		if m.DeliverAt != nil {
			fmt.Fprintf(&b, " deliverAt=%v", *m.DeliverAt)
		}
		b.WriteString("}")
	}
	return b.String()
}

var publishDecodeCases = []struct {
	name string
	body string
	fast bool // the fast decoder takes it (else encoding/json decides)
}{
	{"text", `{"messages":[{"text":"hi"}]}`, true},
	{"all fields", `{"messages":[{"data":"aGVsbG8=","key":"k1","attributes":{"a":"1","b":""},"tag":"t1","orderingKey":"o1"},{"text":"x","delay":"30s"},{"text":"y","deliverAt":"2030-01-02T15:04:05Z"}]}`, true},
	{"any order and whitespace", " \t\r\n{ \"messages\" :\n[ { \"tag\" : \"t\" , \"data\" : \"\" } ,{\"deliverAt\":\"2030-01-02T15:04:05.123+02:00\",\"text\":\"\"}\n] } \n\t", true},
	{"empty data is non-nil", `{"messages":[{"data":""}]}`, true},
	{"empty list is non-nil", `{"messages":[]}`, true},
	{"empty object", `{}`, true},
	{"null messages", `{"messages":null}`, true},
	{"null fields", `{"messages":[{"data":null,"text":null,"key":null,"attributes":null,"tag":null,"orderingKey":null,"delay":null,"deliverAt":null}]}`, true},
	{"empty attributes are non-nil", `{"messages":[{"text":"a","attributes":{}}]}`, true},
	{"repeated attribute keeps the last", `{"messages":[{"text":"a","attributes":{"a":"1","\u0061":"2"}}]}`, true},
	{"escapes", `{"messages":[{"text":"\"\\\/\b\f\n\r\t\u0000\u00e9\u20AC","key":"a\u0001"}]}`, true},
	{"surrogate pair", `{"messages":[{"text":"\ud83d\ude00"}]}`, true},
	{"lone high surrogate", `{"messages":[{"text":"\ud83dx"}]}`, true},
	{"lone low surrogate", `{"messages":[{"text":"\ude00\ud83d"}]}`, true},
	{"surrogate then other escape", `{"messages":[{"text":"\ud83d\u0041"}]}`, true},
	{"surrogate then high", `{"messages":[{"text":"\ud83d\ud83d\ude00"}]}`, true},
	{"raw unicode", `{"messages":[{"text":"héllo €😀","attributes":{"ключ":"значение"}}]}`, true},
	{"invalid utf-8 becomes U+FFFD", "{\"messages\":[{\"text\":\"a\xffb\xed\xa0\x80c\xe2\x82\"}]}", true},
	{"escaped key", `{"messages":[{"\u0074ext":"a"}]}`, true},
	{"delay zero", `{"messages":[{"text":"a","delay":"0s"}]}`, true},
	{"delay escaped", `{"messages":[{"text":"a","delay":"3\u0030s"}]}`, true},
	{"data many", `{"messages":[{"data":"AA=="},{"data":"AAE="},{"data":"AAEC"},{"data":"/+/+"}]}`, true},
	{"data non-canonical padding bits", `{"messages":[{"data":"QR=="}]}`, true},

	{"case-insensitive field", `{"messages":[{"Text":"a"}]}`, false},
	{"case-insensitive top", `{"MESSAGES":[{"text":"a"}]}`, false},
	{"unknown field", `{"messages":[{"text":"a","unknown":1}]}`, false},
	{"unknown top field", `{"messages":[],"x":1}`, false},
	{"duplicate messages", `{"messages":[{"text":"a"}],"messages":[{"key":"k"}]}`, false},
	{"duplicate field", `{"messages":[{"text":"a","text":"b"}]}`, false},
	{"duplicate attributes", `{"messages":[{"attributes":{"a":"1"},"attributes":{"b":"2"}}]}`, false},
	{"number text", `{"messages":[{"text":5}]}`, false},
	{"huge number", `{"messages":[{"text":1e999999999999}]}`, false},
	{"bool key", `{"messages":[{"text":"a","key":true}]}`, false},
	{"number attribute", `{"messages":[{"text":"a","attributes":{"a":1}}]}`, false},
	{"null attribute", `{"messages":[{"text":"a","attributes":{"a":null}}]}`, false},
	{"null element", `{"messages":[null]}`, false},
	{"nested lists", `{"messages":[[[[]]]]}`, false},
	{"list of strings", `{"messages":["a"]}`, false},
	{"messages object", `{"messages":{}}`, false},
	{"bad base64", `{"messages":[{"data":"not base64"}]}`, false},
	{"base64 without padding", `{"messages":[{"data":"aGk"}]}`, false},
	{"base64 with escaped newline", `{"messages":[{"data":"aGVs\nbG8="}]}`, false},
	{"base64 escaped", `{"messages":[{"data":"aG\u0056sbG8="}]}`, false},
	{"base64 url alphabet", `{"messages":[{"data":"-_-_"}]}`, false},
	{"bad delay", `{"messages":[{"text":"a","delay":"soon"}]}`, false},
	{"negative delay", `{"messages":[{"text":"a","delay":"-1s"}]}`, false},
	{"number delay", `{"messages":[{"text":"a","delay":30}]}`, false},
	{"bad deliverAt", `{"messages":[{"text":"a","deliverAt":"tomorrow"}]}`, false},
	{"escaped deliverAt", `{"messages":[{"text":"a","deliverAt":"2030-01-02T15:04:05\u005a"}]}`, false},
	{"trailing data", `{"messages":[{"text":"a"}]} {}`, false},
	{"trailing garbage", `{"messages":[{"text":"a"}]}x`, false},
	{"truncated", `{"messages":[{"text":"a"}]`, false},
	{"trailing comma", `{"messages":[{"text":"a"},]}`, false},
	{"trailing comma in message", `{"messages":[{"text":"a",}]}`, false},
	{"raw control character", "{\"messages\":[{\"text\":\"a\nb\"}]}", false},
	{"bad escape", `{"messages":[{"text":"\x"}]}`, false},
	{"bad unicode escape", `{"messages":[{"text":"\u12g4"}]}`, false},
	{"single quotes", `{'messages':[]}`, false},
	{"top-level null", `null`, false},
	{"top-level list", `[]`, false},
	{"bom", "\ufeff{\"messages\":[]}", false},
	{"nul", `{"messages":[{"text":"a"}]}` + "\x00", false},
}

func TestPublishDecode(t *testing.T) {
	for _, c := range publishDecodeCases {
		t.Run(c.name, func(t *testing.T) {
			if got := checkFastDecode(t, []byte(c.body)); got != c.fast {
				t.Errorf("fast decoder took it: %v, want %v", got, c.fast)
			}
		})
	}
}

// ioReadAllDecodeBody is decodeBody as it was before readBody: io.ReadAll, then decodeJSON.
func ioReadAllDecodeBody(r *http.Request, v any) *api.Error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.TooLarge("body", "request body exceeds %d bytes", mbe.Limit)
		}
		return api.Invalid("body", "read body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return api.Invalid("body", "request body is required (JSON)")
	}
	return decodeJSON(body, v)
}

// TestDecodePublishBodyErrors: what the fast decoder leaves alone still gets the exact error it
// got before, a too large body its 413, with or without Content-Length; decodeBody too.
func TestDecodePublishBodyErrors(t *testing.T) {
	bodies := []string{"", "  \n", "{", "[]", "null", `{"messages":null}`}
	for _, c := range publishDecodeCases {
		bodies = append(bodies, c.body)
	}
	bodies = append(bodies, string(publishBody(50, 1024)))
	for _, limit := range []int64{maxBodyBytes, 20, 40000} {
		for _, body := range bodies {
			req := func(chunked bool) *http.Request {
				r := httptest.NewRequest("POST", "/v1/topics/t/messages", strings.NewReader(body))
				if chunked {
					r.ContentLength = -1
				}
				r.Body = http.MaxBytesReader(nil, r.Body, limit)
				return r
			}
			var want api.PublishRequest
			wantErr := ioReadAllDecodeBody(req(false), &want)
			if int64(len(body)) > limit && (wantErr == nil || wantErr.Status() != http.StatusRequestEntityTooLarge) {
				t.Fatalf("limit %d, body %q: %v, want a 413", limit, body, wantErr)
			}
			for _, chunked := range []bool{false, true} {
				var got api.PublishRequest
				gotErr := decodePublishBody(req(chunked), &got)
				if !reflect.DeepEqual(gotErr, wantErr) {
					t.Errorf("limit %d, body %q: error %v, want %v", limit, body, gotErr, wantErr)
				}
				if wantErr == nil && !reflect.DeepEqual(got, want) {
					t.Errorf("limit %d, body %q: got %s, want %s", limit, body, dump(got), dump(want))
				}
				var viaDecodeBody api.PublishRequest
				if e := decodeBody(req(chunked), &viaDecodeBody, false); !reflect.DeepEqual(e, wantErr) || wantErr == nil && !reflect.DeepEqual(viaDecodeBody, want) {
					t.Errorf("limit %d, body %q: decodeBody: %v, want %v", limit, body, e, wantErr)
				}
			}
		}
	}
}

// publishBody is a request of n messages of size random bytes each, as herald bench sends.
func publishBody(n, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	p := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		for k := range p {
			p[k] = byte(rng.Uint32())
		}
		b.WriteString(`{"data":"`)
		b.WriteString(base64.StdEncoding.EncodeToString(p))
		b.WriteString(`"}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// publishBodyMixed has every field in every message.
func publishBodyMixed(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"text":"message %d with \"quotes\" and é","key":"user-%d","attributes":{"source":"bench","seq":"%d"},"tag":"t%d","orderingKey":"o","delay":"1s"}`, i, i%17, i, i%3)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func TestPublishDecodeLarge(t *testing.T) {
	for _, body := range [][]byte{publishBody(250, 1024), publishBody(3, 100000), publishBodyMixed(100)} {
		if !checkFastDecode(t, body) {
			t.Fatalf("fast decoder refused a valid body")
		}
	}
}

// TestPublishDecodeAllocs: a batch of data messages costs a constant number of allocations (the
// message list and the shared data buffer), not some per message.
func TestPublishDecodeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	body := publishBody(250, 1024)
	decodePublish(body) // warm the pool
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := decodePublish(body); !ok {
			t.Fatal("refused")
		}
	})
	t.Logf("%.0f allocations for 250 messages", allocs)
	if allocs > 4 {
		t.Errorf("%.0f allocations for 250 messages, want at most 4", allocs)
	}
}

func FuzzPublishDecodeMatchesEncodingJSON(f *testing.F) {
	for _, c := range publishDecodeCases {
		f.Add([]byte(c.body))
	}
	for _, s := range []string{
		`{"messages":[{"text":"a","attributes":{"":"v","\u0000deliverAt":"1"}}]}`,
		`{"messages":[{"text":"` + strings.Repeat("x", 5000) + `"}]}`,
		`{"messages":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		`{"messages":[{"text":"a","delay":"9999999h"}]}`,
		`{"messages":[{"text":"a","deliverAt":"9999-12-31T23:59:59Z"}]}`,
		`{"messages":[{"text":"a","deliverAt":"2030-01-02T15:04:05.999999999-07:00"}]}`,
		`{"messages":[{"text":"a","deliverAt":"2030-01-02 15:04:05Z"}]}`,
		`{"messages":[{"data":"aGVsbG8=","ſey":"k"}]}`,
		`{"messages":[{"data":"aGVsbG8=","\u212aey":"k"}]}`,
		`{"messages":[{"data":"aGVs\rbG8="}]}`,
		`{"messages":[{"data":"aGVsbG8=\\n"}]}`,
		`{"messages":[{"data":"====" }]}`,
		`{"messages":[{"data":"AAAA\u003d"}]}`,
		`{"messages":[{"text":"\ud800\udc00\udbff\udfff\ud800"}]}`,
		`{"messages":[{"text":-0.5e+10}]}`,
		`{"messages":[{"text":"a"}],"messages":null}`,
		`{"messages":[{}]}`,
		`{"messages":[{"data":"","text":""}]}`,
		"{\"messages\":[{\"text\":\"\xc0\xaf\xf4\x90\x80\x80\"}]}",
		string(publishBody(2, 5)),
		string(publishBodyMixed(2)),
	} {
		f.Add([]byte(s))
	}
	for _, s := range []string{"aGVsbG8=", `\ud83d\ude00`, `\ud83d`, "\xff\xfe", "30s", "2030-01-02T15:04:05Z", `a\"b`, `\u0000`, "key", "data"} {
		f.Add([]byte(s))
	}
	// Most mutations of a body break its JSON: also try the input inside strings, so that the
	// unquoting (escapes, surrogates, invalid UTF-8), base64 and time parsing see arbitrary bytes.
	wraps := [][2]string{
		{`{"messages":[{"text":"`, `"}]}`},
		{`{"messages":[{"data":"`, `"}]}`},
		{`{"messages":[{"text":"","attributes":{"`, `":"v","a":"`},
		{`{"messages":[{"text":"","delay":"`, `"}]}`},
		{`{"messages":[{"text":"","deliverAt":"`, `"}]}`},
		{`{"messages":[{"`, `":"x"}]}`},
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkFastDecode(t, body)
		for _, w := range wraps {
			in := append(append([]byte(w[0]), body...), w[1]...)
			if w[1] == `":"v","a":"` {
				in = append(in, append(bytes.Clone(body), `"}}]}`...)...)
			}
			checkFastDecode(t, in)
		}
	})
}

func BenchmarkPublishDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"data-250x1KiB", publishBody(250, 1024)},
		{"allfields-250", publishBodyMixed(250)},
	} {
		b.Run(c.name+"/fast", func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := decodePublish(c.body); !ok {
					b.Fatal("refused")
				}
			}
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			for b.Loop() {
				var req api.PublishRequest
				if e := decodeJSON(c.body, &req); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

// BenchmarkPublishBody is the whole body path of the handler: read, then decode.
func BenchmarkPublishBody(b *testing.B) {
	body := publishBody(250, 1024)
	newReq := func() *http.Request {
		r := httptest.NewRequest("POST", "/v1/topics/t/messages", bytes.NewReader(body))
		r.Body = http.MaxBytesReader(nil, r.Body, maxBodyBytes)
		return r
	}
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var req api.PublishRequest
			if e := decodePublishBody(newReq(), &req); e != nil {
				b.Fatal(e)
			}
		}
	})
	b.Run("decodeBody", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var req api.PublishRequest
			if e := decodeBody(newReq(), &req, false); e != nil {
				b.Fatal(e)
			}
		}
	})
}

func publishResults(n int) api.PublishResponse {
	res := make([]api.PublishResult, n)
	at := time.Date(2030, 1, 2, 15, 4, 5, 123456789, time.UTC)
	for i := range res {
		res[i] = api.PublishResult{ID: fmt.Sprintf("0123456789ab-%012x", i), Partition: i % 3, Offset: int64(1000000 + i)}
		if i%50 == 7 {
			res[i].Offset = -1
			res[i].DeliverAt = &at
		}
	}
	return api.PublishResponse{Results: res}
}

func TestAppendPublishResponse(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	zone := time.Date(2030, 1, 2, 15, 4, 5, 0, time.FixedZone("x", -7*3600))
	for _, resp := range []api.PublishResponse{
		{},
		{Results: []api.PublishResult{}},
		publishResults(1),
		publishResults(300),
		{Results: []api.PublishResult{{ID: `a"b\c<d>&é` + "\x01\xff\u2028", Partition: -1, Offset: -9223372036854775808}}},
		{Results: []api.PublishResult{{ID: "a", DeliverAt: &zone}}},
		{Results: []api.PublishResult{{ID: "a", DeliverAt: &far}}}, // MarshalJSON fails: writeJSON's 500
	} {
		rec := httptest.NewRecorder()
		writeJSON(rec, http.StatusOK, resp)
		got := httptest.NewRecorder()
		writePublishResponse(got, resp)
		if got.Code != rec.Code || got.Body.String() != rec.Body.String() || !reflect.DeepEqual(got.Header(), rec.Header()) {
			t.Errorf("writePublishResponse: %d %v %q\nwriteJSON: %d %v %q", got.Code, got.Header(), got.Body, rec.Code, rec.Header(), rec.Body)
		}
	}
}

func BenchmarkPublishResponse(b *testing.B) {
	resp := publishResults(250)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writePublishResponse(discardWriter{}, resp)
		}
	})
	b.Run("writeJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeJSON(discardWriter{}, http.StatusOK, resp)
		}
	})
}

type discardWriter struct{}

var discardHeader = http.Header{}

func (discardWriter) Header() http.Header         { return discardHeader }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
