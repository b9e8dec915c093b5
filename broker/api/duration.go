package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Duration is a time.Duration that travels in JSON as a Go/Kubernetes duration string such as
// "30s" or "168h". It is written in its shortest form ("168h", not "168h0m0s") so that what a
// client PUTs comes back unchanged from GET.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d without trailing zero units: 168h, 1m30s, 500ms, 0s.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a duration string. A bare number is rejected: units must be explicit.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &DurationError{Value: string(b), Message: "must be a duration string such as \"30s\""}
	}
	v, err := ParseDuration(s)
	if err != nil {
		return &DurationError{Value: s, Message: err.Error()}
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration string and rejects negative values.
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want a Go duration such as \"30s\" or \"168h\"", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", s)
	}
	return v, nil
}

// DurationError is returned when decoding a bad duration; Value is the offending JSON value, so
// the server can find which field held it.
type DurationError struct {
	Value   string
	Message string
}

func (e *DurationError) Error() string { return e.Message }
