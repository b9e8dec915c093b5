package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/heraldmq/herald/broker/api"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &api.Error{Code: api.CodeInternal, Message: "encode response: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeError renders err as the API's JSON error body. An error that is not an *api.Error is
// an internal failure (disk, ...): it is a 500 with its text, never a panic.
func writeError(w http.ResponseWriter, err error) {
	var e *api.Error
	if !errors.As(err, &e) {
		e = &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	writeErrorStatus(w, e.Status(), e)
}

func writeErrorStatus(w http.ResponseWriter, code int, e *api.Error) {
	b, _ := json.Marshal(api.ErrorBody{Error: e})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// decodeBody strictly decodes one JSON object into v: unknown fields, trailing data and wrong
// types are 400s naming the field. An empty body is allowed only when emptyOK.
func decodeBody(r *http.Request, v any, emptyOK bool) *api.Error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.TooLarge("body", "request body exceeds %d bytes", mbe.Limit)
		}
		return api.Invalid("body", "read body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if emptyOK {
			return nil
		}
		return api.Invalid("body", "request body is required (JSON)")
	}
	return decodeJSON(body, v)
}

func decodeJSON(body []byte, v any) *api.Error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, body)
	}
	if dec.More() {
		return api.Invalid("body", "request body must hold exactly one JSON object")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return api.Invalid("body", "request body must hold exactly one JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a 400 that names the field, with its list index, where
// it can. Locating the field re-reads the body, which only happens on this error path.
func jsonError(err error, body []byte) *api.Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	var dur *api.DurationError
	msg := err.Error()
	switch {
	case errors.As(err, &syn):
		return api.Invalid("body", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		} else if p := locate(body, strings.Split(field, "."), func(v any) bool { return jsonKind(v) == typ.Value }); p != "" {
			field = p
		}
		return api.Invalid(field, "%s must be %s, not a JSON %s", field, typeName(typ.Type.String()), typ.Value)
	case errors.As(err, &b64):
		field := locateKey(body, "data", func(v any) bool {
			s, ok := v.(string)
			if !ok {
				return false
			}
			_, err := base64.StdEncoding.DecodeString(s)
			return err != nil
		})
		if field == "" {
			field = "data"
		}
		return api.Invalid(field, "%s must be standard base64: %v", field, err)
	case errors.As(err, &dur):
		field := locateKey(body, "", func(v any) bool { s, ok := v.(string); return ok && (s == dur.Value || strconvQuote(s) == dur.Value) })
		if field == "" {
			field = "body"
		}
		return api.Invalid(field, "%s: %s", field, dur.Message)
	case strings.HasPrefix(msg, "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`)
		field := locateKey(body, name, func(any) bool { return true })
		if field == "" {
			field = name
		}
		return api.Invalid(field, "unknown field %q", name)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return api.Invalid("body", "malformed JSON: unexpected end of input")
	}
	return api.Invalid("body", "invalid request: %s", strings.TrimPrefix(msg, "json: "))
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return ""
}

// locate finds the first value along the dotted path (lists expanded) satisfying ok, and
// returns its path with list indexes, e.g. messages[2].key.
func locate(body []byte, path []string, ok func(any) bool) string {
	var root any
	if json.Unmarshal(body, &root) != nil {
		return ""
	}
	var walk func(v any, rest []string, at string) string
	walk = func(v any, rest []string, at string) string {
		if l, isList := v.([]any); isList {
			for i, x := range l {
				if p := walk(x, rest, fmt.Sprintf("%s[%d]", at, i)); p != "" {
					return p
				}
			}
			return ""
		}
		if len(rest) == 0 {
			if ok(v) {
				return at
			}
			return ""
		}
		m, isMap := v.(map[string]any)
		if !isMap {
			return ""
		}
		x, has := m[rest[0]]
		if !has {
			return ""
		}
		next := rest[0]
		if at != "" {
			next = at + "." + rest[0]
		}
		return walk(x, rest[1:], next)
	}
	return walk(root, path, "")
}

// locateKey finds the first value under a key named key (any key when key is "") satisfying ok,
// anywhere in the body, and returns its path.
func locateKey(body []byte, key string, ok func(any) bool) string {
	var root any
	if json.Unmarshal(body, &root) != nil {
		return ""
	}
	var walk func(v any, at string) string
	walk = func(v any, at string) string {
		switch t := v.(type) {
		case []any:
			for i, x := range t {
				if p := walk(x, fmt.Sprintf("%s[%d]", at, i)); p != "" {
					return p
				}
			}
		case map[string]any:
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				p := k
				if at != "" {
					p = at + "." + k
				}
				if (key == "" || k == key) && ok(t[k]) {
					return p
				}
				if q := walk(t[k], p); q != "" {
					return q
				}
			}
		}
		return ""
	}
	return walk(root, "")
}

func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]uint8"):
		return "a base64 string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "an object"
	}
	return fmt.Sprintf("a %s", t)
}
