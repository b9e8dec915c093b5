package server

// A single-pass decoder for the publish request, the one body on the hot path. encoding/json
// scans each value twice (once to find its end, once to decode it), copies every string out of
// the body before base64-decoding it into yet another slice, and allocates per message; for a
// batch of 1 KiB messages that was most of the broker's CPU.
//
// decodePublish accepts only input it is certain about and decodes it exactly as
// decodeJSON(body, &api.PublishRequest{}) would (encoding/json with DisallowUnknownFields, one
// value, nothing but whitespace after it). On anything else (an unknown or differently cased
// field, a duplicate field, a value of an unexpected type, bad base64, a bad duration or time,
// trailing data, any syntax error) it reports false, and the caller decodes with encoding/json,
// so errors and their messages stay those of decodeJSON. FuzzPublishDecodeMatchesEncodingJSON
// checks the equivalence.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
)

// publishDecoder is the state of one decode. Its scratch buffers are pooled: nothing it returns
// aliases them or the body.
type publishDecoder struct {
	b   []byte
	pos int
	// data is the shared buffer that base64 data is decoded into (len = bytes used). Each
	// message's Data is a capacity-capped sub-slice of it. It is new for every request: the
	// messages own it.
	data []byte
	esc  []byte               // unquoted strings with escapes (pooled scratch)
	msgs []api.PublishMessage // messages while decoding (pooled scratch)
}

var publishDecoders = sync.Pool{New: func() any { return new(publishDecoder) }}

// dataChunk bounds one allocation of the shared data buffer beyond what the current message
// needs, so a huge body that is mostly text does not reserve room for data it never has.
const dataChunk = 4 << 20

// decodePublish decodes body as an api.PublishRequest when it can be sure to do so exactly as
// encoding/json would; ok is false otherwise (see above), and req is then meaningless.
func decodePublish(body []byte) (req api.PublishRequest, ok bool) {
	d := publishDecoders.Get().(*publishDecoder)
	d.b, d.pos, d.data = body, 0, nil
	ok = d.request(&req)
	clear(d.msgs) // drop references to what the request owns
	d.b, d.data, d.msgs = nil, nil, d.msgs[:0]
	if cap(d.esc) > 64<<10 {
		d.esc = nil
	}
	if cap(d.msgs) > 1024 {
		d.msgs = nil
	}
	publishDecoders.Put(d)
	if !ok {
		return api.PublishRequest{}, false
	}
	return req, true
}

func (d *publishDecoder) request(req *api.PublishRequest) bool {
	d.ws()
	if !d.consume('{') {
		return false
	}
	d.ws()
	if d.consume('}') {
		return d.end() // {}: Messages stays nil, as encoding/json leaves it
	}
	key, ok := d.str()
	if !ok || string(key) != "messages" {
		return false // unknown, differently cased or escaped-and-unusual: encoding/json decides
	}
	if !d.colon() {
		return false
	}
	switch {
	case d.null():
		// Messages stays nil.
	case d.consume('['):
		msgs, ok := d.messages()
		if !ok {
			return false
		}
		req.Messages = msgs
	default:
		return false
	}
	d.ws()
	// A second "messages" would merge into the first in encoding/json: leave that to it.
	return d.consume('}') && d.end()
}

// messages decodes the elements of the array whose '[' was consumed.
func (d *publishDecoder) messages() ([]api.PublishMessage, bool) {
	d.ws()
	if d.consume(']') {
		return []api.PublishMessage{}, true // encoding/json makes an empty list non-nil
	}
	d.msgs = d.msgs[:0]
	for {
		d.ws()
		if !d.consume('{') {
			return nil, false // null elements, and every other type, go to encoding/json
		}
		d.msgs = append(d.msgs, api.PublishMessage{})
		if !d.message(&d.msgs[len(d.msgs)-1]) {
			return nil, false
		}
		d.ws()
		if d.consume(']') {
			break
		}
		if !d.consume(',') {
			return nil, false
		}
	}
	msgs := make([]api.PublishMessage, len(d.msgs))
	copy(msgs, d.msgs)
	return msgs, true
}

// The fields of a message, as bits of a set to refuse duplicates.
const (
	fieldData = 1 << iota
	fieldText
	fieldKey
	fieldAttributes
	fieldTag
	fieldOrderingKey
	fieldDelay
	fieldDeliverAt
)

// message decodes one message object whose '{' was consumed into the zero message m.
func (d *publishDecoder) message(m *api.PublishMessage) bool {
	d.ws()
	if d.consume('}') {
		return true
	}
	seen := 0
	for {
		d.ws()
		key, ok := d.str()
		if !ok {
			return false
		}
		var f int
		switch string(key) { // exact names only: encoding/json also matches them case-insensitively
		case "data":
			f = fieldData
		case "text":
			f = fieldText
		case "key":
			f = fieldKey
		case "attributes":
			f = fieldAttributes
		case "tag":
			f = fieldTag
		case "orderingKey":
			f = fieldOrderingKey
		case "delay":
			f = fieldDelay
		case "deliverAt":
			f = fieldDeliverAt
		default:
			return false
		}
		if seen&f != 0 {
			return false // a repeated field: encoding/json merges or overwrites, let it
		}
		seen |= f
		if !d.colon() {
			return false
		}
		// null leaves every field of a fresh message at its zero value in encoding/json:
		// pointers, the slice and the map nil, strings "".
		if !d.null() {
			if !d.field(m, f) {
				return false
			}
		}
		d.ws()
		if d.consume('}') {
			return true
		}
		if !d.consume(',') {
			return false
		}
	}
}

// field decodes the (non-null) value of field f into m.
func (d *publishDecoder) field(m *api.PublishMessage, f int) bool {
	if f == fieldAttributes {
		if !d.consume('{') {
			return false
		}
		attrs, ok := d.attributes()
		m.Attributes = attrs
		return ok
	}
	if d.pos >= len(d.b) || d.b[d.pos] != '"' {
		return false // numbers, bools, objects, lists: type errors for encoding/json
	}
	switch f {
	case fieldData:
		return d.base64Data(m)
	case fieldDeliverAt:
		start := d.pos
		if _, ok := d.str(); !ok {
			return false
		}
		// time.Time.UnmarshalJSON takes the literal with its quotes, unescaped: hand it just
		// that, as encoding/json does.
		t := new(time.Time)
		if t.UnmarshalJSON(d.b[start:d.pos]) != nil {
			return false
		}
		m.DeliverAt = t
		return true
	}
	s, ok := d.str()
	if !ok {
		return false
	}
	switch f {
	case fieldText:
		t := string(s)
		m.Text = &t
	case fieldKey:
		m.Key = string(s)
	case fieldTag:
		m.Tag = string(s)
	case fieldOrderingKey:
		m.OrderingKey = string(s)
	case fieldDelay:
		// api.Duration.UnmarshalJSON unquotes the literal as encoding/json does (which is what
		// str did), then parses it.
		v, err := api.ParseDuration(string(s))
		if err != nil {
			return false
		}
		dur := api.Duration(v)
		m.Delay = &dur
	}
	return true
}

// attributes decodes the members of the object whose '{' was consumed. Like encoding/json, {}
// is an empty non-nil map and a repeated name keeps its last value.
func (d *publishDecoder) attributes() (map[string]string, bool) {
	attrs := make(map[string]string)
	d.ws()
	if d.consume('}') {
		return attrs, true
	}
	for {
		d.ws()
		k, ok := d.str()
		if !ok {
			return nil, false
		}
		name := string(k)
		if !d.colon() {
			return nil, false
		}
		if d.pos >= len(d.b) || d.b[d.pos] != '"' {
			return nil, false // null ("" in encoding/json) and other types: not here
		}
		v, ok := d.str()
		if !ok {
			return nil, false
		}
		attrs[name] = string(v)
		d.ws()
		if d.consume('}') {
			return attrs, true
		}
		if !d.consume(',') {
			return nil, false
		}
	}
}

// base64Data decodes the data string at d.pos straight into the shared data buffer. Only a
// string without escapes is taken here: then its bytes are exactly what encoding/json hands to
// base64.StdEncoding.Decode.
func (d *publishDecoder) base64Data(m *api.PublishMessage) bool {
	start := d.pos + 1
	n := bytes.IndexByte(d.b[start:], '"')
	if n < 0 {
		return false
	}
	src := d.b[start : start+n]
	if bytes.IndexByte(src, '\\') >= 0 {
		return false
	}
	need := base64.StdEncoding.DecodedLen(len(src))
	if d.data == nil || cap(d.data)-len(d.data) < need {
		// Room for every data string still ahead (they all lie in the rest of the body),
		// within reason.
		size := min(base64.StdEncoding.DecodedLen(len(d.b)-start), max(dataChunk, need))
		d.data = make([]byte, 0, size)
	}
	off := len(d.data)
	w, err := base64.StdEncoding.Decode(d.data[off:off+need], src)
	if err != nil {
		return false
	}
	// base64 skips '\r' and '\n', which a JSON string cannot hold raw. Every other byte of a
	// string that decodes is in the base64 alphabet, so the string is valid JSON.
	if bytes.IndexByte(src, '\n') >= 0 || bytes.IndexByte(src, '\r') >= 0 {
		return false
	}
	d.data = d.data[:off+w]
	m.Data = d.data[off : off+w : off+w] // non-nil even when empty, like encoding/json's
	d.pos = start + n + 1
	return true
}

// str reads the JSON string at d.pos and returns its value unquoted exactly as encoding/json
// unquotes (escapes, surrogate pairs, invalid UTF-8 and lone surrogates as U+FFFD). The result
// aliases the body or d.esc: copy it before the next call.
func (d *publishDecoder) str() ([]byte, bool) {
	b := d.b
	if d.pos >= len(b) || b[d.pos] != '"' {
		return nil, false
	}
	start := d.pos + 1
	i := start
	for i < len(b) {
		c := b[i]
		if c == '"' {
			d.pos = i + 1
			return b[start:i], true
		}
		if c == '\\' || c < ' ' {
			break
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	out := append(d.esc[:0], b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			d.esc = out
			d.pos = i + 1
			return out, true
		case c < ' ':
			return nil, false
		case c == '\\':
			if i+1 >= len(b) {
				return nil, false
			}
			switch b[i+1] {
			case '"', '\\', '/':
				out = append(out, b[i+1])
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := hex4(b, i+2)
				if r < 0 {
					return nil, false
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// A pair only with a \u escape right after; otherwise U+FFFD and the next
					// escape stands on its own.
					r1 := rune(-1)
					if i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
						r1 = hex4(b, i+2)
					}
					if dec := utf16.DecodeRune(r, r1); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return nil, false
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			out = utf8.AppendRune(out, r) // U+FFFD for each invalid byte
			i += size
		}
	}
	return nil, false
}

// hex4 is the value of the 4 hex digits at b[i:], or -1.
func hex4(b []byte, i int) rune {
	if i+4 > len(b) {
		return -1
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// ws skips JSON whitespace.
func (d *publishDecoder) ws() {
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// consume takes c if it is next.
func (d *publishDecoder) consume(c byte) bool {
	if d.pos < len(d.b) && d.b[d.pos] == c {
		d.pos++
		return true
	}
	return false
}

// colon takes the ':' after a member name and the whitespace around it.
func (d *publishDecoder) colon() bool {
	d.ws()
	if !d.consume(':') {
		return false
	}
	d.ws()
	return true
}

// null takes a null literal if it is next (what follows is checked by the caller, which wants
// a ',' or a closing bracket).
func (d *publishDecoder) null() bool {
	if len(d.b)-d.pos >= 4 && string(d.b[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (d *publishDecoder) end() bool {
	d.ws()
	return d.pos == len(d.b)
}

// Request bodies are read into pooled buffers; a buffer larger than maxPooledBody is left to the
// GC. Content-Length presizes the buffer up to maxPresize: beyond that it grows as the bytes
// arrive, so a client cannot make the server allocate 100 MiB by announcing it.
const (
	maxPooledBody = 8 << 20
	maxPresize    = 1 << 20
	minBodyBuffer = 512
)

var bodyBuffers = sync.Pool{New: func() any { return new([]byte) }}

// readBody reads the whole body (under the server's MaxBytesReader) into a pooled buffer, sized
// from Content-Length when there is one. Errors are decodeBody's. Give the buffer back with
// putBody once nothing refers to its bytes any more.
func readBody(r *http.Request) (*[]byte, *api.Error) {
	bp := bodyBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	want := minBodyBuffer
	if n := r.ContentLength; n > 0 {
		// One byte more than announced, so that reading up to EOF needs no growth.
		want = int(min(n+1, maxPresize))
	}
	if cap(buf) < want {
		buf = make([]byte, 0, want)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow as io.ReadAll does
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf
			putBody(bp)
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, api.TooLarge("body", "request body exceeds %d bytes", mbe.Limit)
			}
			return nil, api.Invalid("body", "read body: %v", err)
		}
	}
	*bp = buf
	return bp, nil
}

func putBody(bp *[]byte) {
	if cap(*bp) > maxPooledBody {
		*bp = nil
	}
	*bp = (*bp)[:0]
	bodyBuffers.Put(bp)
}

// decodePublishBody is decodeBody(r, req, false) for the publish request: the same errors, the
// fast decoder when it is sure, encoding/json otherwise.
func decodePublishBody(r *http.Request, req *api.PublishRequest) *api.Error {
	bp, e := readBody(r)
	if e != nil {
		return e
	}
	defer putBody(bp)
	body := *bp
	if len(bytes.TrimSpace(body)) == 0 {
		return api.Invalid("body", "request body is required (JSON)")
	}
	if fast, ok := decodePublish(body); ok {
		*req = fast
		return nil
	}
	return decodeJSON(body, req)
}

// writePublishResponse writes resp as writeJSON(w, 200, resp) does, byte for byte, without
// reflection. Anything unusual (an ID that needs escaping, a time MarshalJSON refuses) goes to
// writeJSON.
func writePublishResponse(w http.ResponseWriter, resp api.PublishResponse) {
	bp := bodyBuffers.Get().(*[]byte)
	defer putBody(bp)
	out, ok := appendPublishResponse((*bp)[:0], resp)
	*bp = out
	if !ok {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	out = append(out, '\n')
	*bp = out
	w.Write(out)
}

// appendPublishResponse appends the JSON of resp as json.Marshal writes it; false when that
// needs more than this knows (then dst is garbage).
func appendPublishResponse(dst []byte, resp api.PublishResponse) ([]byte, bool) {
	if resp.Results == nil {
		return append(dst, `{"results":null}`...), true
	}
	dst = append(dst, `{"results":[`...)
	for i := range resp.Results {
		r := &resp.Results[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":"`...)
		for k := 0; k < len(r.ID); k++ {
			// json.Marshal writes these bytes as they are; it escapes the rest (quotes,
			// backslashes, control characters, <, >, &, non-ASCII that may need it).
			if c := r.ID[k]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return dst, false
			}
		}
		dst = append(dst, r.ID...)
		dst = append(dst, `","partition":`...)
		dst = strconv.AppendInt(dst, int64(r.Partition), 10)
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendInt(dst, r.Offset, 10)
		if r.DeliverAt != nil {
			t, err := r.DeliverAt.MarshalJSON()
			if err != nil {
				return dst, false
			}
			dst = append(dst, `,"deliverAt":`...)
			dst = append(dst, t...)
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...), true
}
