package store

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Defaults filled in by withDefaults.
const (
	defaultSyncInterval = 100 * time.Millisecond
	defaultSegmentBytes = 64 << 20
	defaultIndexBytes   = 4 << 10
	// maxSegmentBytes keeps every position inside a segment within the uint32 the index and the
	// batch length field use.
	maxSegmentBytes = math.MaxUint32
)

// withDefaults returns o with zero (or negative) fields replaced by the defaults.
func (o Options) withDefaults() Options {
	if o.SyncInterval <= 0 {
		o.SyncInterval = defaultSyncInterval
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = defaultSegmentBytes
	}
	if o.SegmentBytes > maxSegmentBytes {
		o.SegmentBytes = maxSegmentBytes
	}
	if o.IndexBytes <= 0 {
		o.IndexBytes = defaultIndexBytes
	}
	return o
}

// checkName rejects log names that are not clean relative slash-separated paths, so a name can
// never address a file outside the store's folder or alias another name ("a//b", "a/./b").
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	for el := range strings.SplitSeq(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w: %q", ErrBadName, name)
		}
	}
	return nil
}

// tooLarge is the ErrTooLarge error for a batch of n bytes.
func tooLarge(n int, limit int64) error {
	return fmt.Errorf("%w: %d-byte batch exceeds the %d-byte segment limit", ErrTooLarge, n, limit)
}
