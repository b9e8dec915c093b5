package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// metaVersion is the version of meta.json's layout; a newer file is refused, not misread.
const metaVersion = 1

// metaFile is the broker's catalogue: every topic and subscription with its spec. It is small
// and changes only on admin calls, so it is rewritten whole, atomically (temp file, fsync,
// rename, fsync of the folder), never appended.
type metaFile struct {
	Version       int            `json:"version"`
	Topics        []topicMeta    `json:"topics"`
	Subscriptions []subMeta      `json:"subscriptions"`
	Extra         map[string]any `json:"extra,omitempty"`
}

type topicMeta struct {
	Name       string        `json:"name"`
	Spec       api.TopicSpec `json:"spec"`
	CreateTime time.Time     `json:"createTime"`
	// Incarnation tells a re-created topic from the one deleted before it under the same name.
	Incarnation uint64 `json:"incarnation"`
}

type subMeta struct {
	Name       string               `json:"name"`
	Spec       api.SubscriptionSpec `json:"spec"`
	CreateTime time.Time            `json:"createTime"`
	// Epoch is part of every receipt handle, so handles of a deleted subscription never match
	// a new one of the same name.
	Epoch uint32 `json:"epoch"`
	// TopicIncarnation is the incarnation of the topic the cursors refer to.
	TopicIncarnation uint64 `json:"topicIncarnation"`
}

func loadMeta(dir string) (*metaFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if errors.Is(err, os.ErrNotExist) {
		return &metaFile{Version: metaVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var m metaFile
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("engine: meta.json: %w", err)
	}
	if m.Version > metaVersion {
		return nil, fmt.Errorf("engine: meta.json version %d is newer than this broker's %d", m.Version, metaVersion)
	}
	return &m, nil
}

func saveMeta(dir string, m *metaFile) error {
	m.Version = metaVersion
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "meta.json"), b)
}

// writeFileAtomic replaces path with data so that a crash leaves either the old or the new file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
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
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
