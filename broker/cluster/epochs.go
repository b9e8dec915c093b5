package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// epochEntry says that records from Start on (up to the next entry's Start) were written by
// the leader of Epoch.
type epochEntry struct {
	Epoch uint64 `json:"epoch"`
	Start int64  `json:"start"`
}

// epochCache is a replica's leader-epoch history of one log (Kafka's leader-epoch-checkpoint):
// how a follower finds where its log and the leader's diverge (docs/adr/0001). It is a small
// JSON file rewritten atomically at every change (leader changes and truncations only).
type epochCache struct {
	mu      sync.Mutex
	path    string // "" in memory
	entries []epochEntry
}

func openEpochCache(path string) (*epochCache, error) {
	c := &epochCache{path: path}
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c.entries); err != nil {
		return nil, fmt.Errorf("cluster: epoch cache %s: %w", path, err)
	}
	return c, nil
}

func (c *epochCache) saveLocked() error {
	if c.path == "" {
		return nil
	}
	b, err := json.Marshal(c.entries)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return err
	}
	tmp := c.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, c.path)
}

// assign records that records from start on belong to epoch (no-op unless epoch is newer).
func (c *epochCache) assign(epoch uint64, start int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.entries); n > 0 {
		last := c.entries[n-1]
		if epoch <= last.Epoch {
			return nil
		}
		if start < last.Start {
			start = last.Start
		}
		if start == last.Start {
			// The previous epoch wrote nothing here: the new one replaces it.
			c.entries = c.entries[:n-1]
		}
	}
	c.entries = append(c.entries, epochEntry{Epoch: epoch, Start: start})
	return c.saveLocked()
}

// truncateTo drops what the history says about offsets from end on.
func (c *epochCache) truncateTo(end int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.entries)
	for n > 0 && c.entries[n-1].Start >= end {
		n--
	}
	if n == len(c.entries) {
		return nil
	}
	c.entries = c.entries[:n]
	return c.saveLocked()
}

// lastEpoch is the epoch of the log's last record (0 when unknown).
func (c *epochCache) lastEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) == 0 {
		return 0
	}
	return c.entries[len(c.entries)-1].Epoch
}

// endFor answers "where does epoch end in this log?": the largest epoch <= epoch the log
// has, and the offset where the next one starts (logEnd for the last one). With no such epoch
// it returns 0 and the first entry's start (everything before it is older than any epoch).
func (c *epochCache) endFor(epoch uint64, logEnd int64) (uint64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.entries) - 1; i >= 0; i-- {
		if c.entries[i].Epoch <= epoch {
			if i == len(c.entries)-1 {
				return c.entries[i].Epoch, logEnd
			}
			return c.entries[i].Epoch, c.entries[i+1].Start
		}
	}
	if len(c.entries) == 0 {
		return 0, logEnd
	}
	return 0, c.entries[0].Start
}

// covering returns the entries that describe offsets [from, to).
func (c *epochCache) covering(from, to int64) []epochEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []epochEntry
	for i, e := range c.entries {
		next := int64(1<<62 - 1)
		if i+1 < len(c.entries) {
			next = c.entries[i+1].Start
		}
		if e.Start < to && next > from {
			out = append(out, e)
		}
	}
	return out
}
