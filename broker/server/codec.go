package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"

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
	bp, e := readBody(r)
	if e != nil {
		return e
	}
	defer putBody(bp) // decodeJSON keeps nothing of the body
	body := *bp
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
		return jsonError(err, body, reflect.TypeOf(v))
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
// it can. Locating the field re-reads the body, which only happens on this error path. target is
// the type decoded into.
func jsonError(err error, body []byte, target reflect.Type) *api.Error {
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
		// A duration that is no string at all (30, {…}) cannot be found by its value: find the
		// field by its type instead.
		if field, _ := locateBadValue(body, target); field != "" {
			return api.Invalid(field, "%s: %s", field, dur.Message)
		}
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
	// Another type's own UnmarshalJSON failed (a time such as deliverAt): name that field.
	if field, t := locateBadValue(body, target); field != "" {
		if t == timeType {
			return api.Invalid(field, "%s must be an RFC 3339 time such as \"2030-01-02T15:04:05Z\"", field)
		}
		return api.Invalid(field, "%s: %s", field, strings.TrimPrefix(msg, "json: "))
	}
	return api.Invalid("body", "invalid request: %s", strings.TrimPrefix(msg, "json: "))
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
)

// locateBadValue walks the body along the Go type it is decoded into and returns the path of the
// first value (object members in sorted order) that a type with its own UnmarshalJSON, such as
// api.Duration or time.Time, refuses; and that type.
func locateBadValue(body []byte, target reflect.Type) (string, reflect.Type) {
	var root any
	if target == nil || json.Unmarshal(body, &root) != nil {
		return "", nil
	}
	var walk func(v any, t reflect.Type, at string) (string, reflect.Type)
	walk = func(v any, t reflect.Type, at string) (string, reflect.Type) {
		pointer := false
		for t.Kind() == reflect.Pointer {
			t, pointer = t.Elem(), true
		}
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			if v == nil && pointer {
				return "", nil // null leaves a pointer nil
			}
			raw, _ := json.Marshal(v)
			if json.Unmarshal(raw, reflect.New(t).Interface()) != nil {
				return at, t
			}
			return "", nil
		}
		join := func(k string) string {
			if at == "" {
				return k
			}
			return at + "." + k
		}
		switch t.Kind() {
		case reflect.Struct:
			m, ok := v.(map[string]any)
			if !ok {
				return "", nil
			}
			for _, k := range sortedKeys(m) {
				if f, ok := jsonField(t, k); ok {
					if p, bad := walk(m[k], f.Type, join(k)); p != "" {
						return p, bad
					}
				}
			}
		case reflect.Slice, reflect.Array:
			l, ok := v.([]any)
			if !ok {
				return "", nil
			}
			for i, x := range l {
				if p, bad := walk(x, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); p != "" {
					return p, bad
				}
			}
		case reflect.Map:
			m, ok := v.(map[string]any)
			if !ok {
				return "", nil
			}
			for _, k := range sortedKeys(m) {
				if p, bad := walk(m[k], t.Elem(), join(k)); p != "" {
					return p, bad
				}
			}
		}
		return "", nil
	}
	return walk(root, target, "")
}

// jsonField finds the struct field (embedded structs included) that encoding/json decodes the
// member name into: an exact match of its JSON name first, else a case-insensitive one.
func jsonField(t reflect.Type, name string) (reflect.StructField, bool) {
	var fold *reflect.StructField
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous && f.Tag.Get("json") == "" && f.Type.Kind() == reflect.Struct {
			continue
		}
		n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if n == "-" {
			continue
		}
		if n == "" {
			n = f.Name
		}
		if n == name {
			return f, true
		}
		if fold == nil && strings.EqualFold(n, name) {
			fold = &f
		}
	}
	if fold != nil {
		return *fold, true
	}
	return reflect.StructField{}, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
		if len(rest) == 0 && ok(v) {
			return at
		}
		if l, isList := v.([]any); isList {
			for i, x := range l {
				if p := walk(x, rest, fmt.Sprintf("%s[%d]", at, i)); p != "" {
					return p
				}
			}
			return ""
		}
		if len(rest) == 0 {
			// encoding/json names a map, not its member: the culprit is one of its values.
			if m, isMap := v.(map[string]any); isMap {
				for _, k := range sortedKeys(m) {
					if ok(m[k]) {
						return at + "." + k
					}
				}
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
