package crash

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// On-disk batch layout (broker/store/doc.go, "Batch format (version 1)"): big-endian magic,
// version, length of the whole batch, CRC32C of bytes [13, length), base offset, record count.
const (
	batchMagic      = 0x48524C42 // "HRLB"
	batchVersion    = 1
	batchHeaderSize = 41
	segDigits       = 20 // zero-padded base offset in segment file names
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type batchInfo struct {
	pos, length int64
	base, count int64
}

func (b batchInfo) end() int64 { return b.base + b.count }

// segFile is one segment of a partition log as found on disk.
type segFile struct {
	path    string
	base    int64
	size    int64
	batches []batchInfo
}

// endBefore is the end offset of the batches of s that lie wholly before byte cut.
func (s segFile) endBefore(cut int64) int64 {
	end := s.base
	for _, b := range s.batches {
		if b.pos+b.length > cut {
			break
		}
		end = b.end()
	}
	return end
}

func (s segFile) end() int64 { return s.endBefore(s.size) }

func (s segFile) indexPath() string { return strings.TrimSuffix(s.path, ".log") + ".index" }

func partitionDir(dataDir, topic string, p int) string {
	return filepath.Join(dataDir, "logs", "topics", topic, strconv.Itoa(p))
}

// readSegments parses every segment file of a partition folder and fails the test unless each
// is a clean sequence of valid batches (magic, version, CRC32C) whose offsets follow on without
// gaps, within and across segments.
func readSegments(t *testing.T, dir string) []segFile {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []segFile
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || len(name) != segDigits {
			continue
		}
		base, err := strconv.ParseInt(name, 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, segFile{path: filepath.Join(dir, e.Name()), base: base})
	}
	sort.Slice(segs, func(i, k int) bool { return segs[i].base < segs[k].base })
	if len(segs) == 0 {
		t.Fatalf("%s: no segment files", dir)
	}
	for i := range segs {
		s := &segs[i]
		data, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		s.size = int64(len(data))
		if i > 0 && s.base != segs[i-1].end() {
			t.Fatalf("%s: segment starts at offset %d, the previous one ends at %d", s.path, s.base, segs[i-1].end())
		}
		next := s.base
		for p := int64(0); p < s.size; {
			if s.size-p < batchHeaderSize {
				t.Fatalf("%s: %d stray bytes at byte %d", s.path, s.size-p, p)
			}
			h := data[p:]
			length := int64(binary.BigEndian.Uint32(h[5:]))
			switch {
			case binary.BigEndian.Uint32(h) != batchMagic || h[4] != batchVersion:
				t.Fatalf("%s: bad batch magic/version at byte %d", s.path, p)
			case length < batchHeaderSize || length > s.size-p:
				t.Fatalf("%s: batch at byte %d claims %d bytes, %d left", s.path, p, length, s.size-p)
			case crc32.Checksum(h[13:length], castagnoli) != binary.BigEndian.Uint32(h[9:]):
				t.Fatalf("%s: CRC mismatch in batch at byte %d", s.path, p)
			}
			b := batchInfo{pos: p, length: length, base: int64(binary.BigEndian.Uint64(h[13:])), count: int64(binary.BigEndian.Uint32(h[21:]))}
			if b.base != next || b.count < 1 {
				t.Fatalf("%s: batch at byte %d has offsets [%d, %d), want from %d", s.path, p, b.base, b.end(), next)
			}
			s.batches = append(s.batches, b)
			next = b.end()
			p += length
		}
	}
	return segs
}

// ---- damage kinds

// damageResult says what partition 0 must look like after recovery.
type damageResult struct {
	end int64 // its end offset
	// copies: offsets recovered from a batch the damage appended, mapped to the offset whose
	// record they repeat.
	copies map[int64]int64
}

type damageFunc func(t *testing.T, rng *rand.Rand, segs []segFile) damageResult

func lastSeg(segs []segFile) segFile { return segs[len(segs)-1] }

func lastBatch(t *testing.T, s segFile) batchInfo {
	t.Helper()
	if len(s.batches) == 0 {
		t.Fatalf("%s has no batches", s.path)
	}
	return s.batches[len(s.batches)-1]
}

// truncateLast cuts the last segment to the size cut returns (a torn or lost write).
func truncateLast(cut func(t *testing.T, s segFile) int64) damageFunc {
	return func(t *testing.T, _ *rand.Rand, segs []segFile) damageResult {
		s := lastSeg(segs)
		c := cut(t, s)
		if c < 0 || c >= s.size {
			t.Fatalf("bad cut %d of %d bytes", c, s.size)
		}
		if err := os.Truncate(s.path, c); err != nil {
			t.Fatal(err)
		}
		t.Logf("truncated %s from %d to %d bytes", filepath.Base(s.path), s.size, c)
		return damageResult{end: s.endBefore(c)}
	}
}

// scrambleLast flips n bytes of the last segment from byte at on (every byte changes).
func scrambleLast(at func(t *testing.T, s segFile) (int64, int)) damageFunc {
	return func(t *testing.T, rng *rand.Rand, segs []segFile) damageResult {
		s := lastSeg(segs)
		p, n := at(t, s)
		if p < 0 || n <= 0 || p+int64(n) > s.size {
			t.Fatalf("bad scramble of %d bytes at %d in %d", n, p, s.size)
		}
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, p); err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] ^= byte(1 + rng.IntN(255))
		}
		if _, err := f.WriteAt(buf, p); err != nil {
			t.Fatal(err)
		}
		t.Logf("overwrote bytes [%d, %d) of %s (%d bytes) with garbage", p, p+int64(n), filepath.Base(s.path), s.size)
		return damageResult{end: s.endBefore(p)}
	}
}

// appendLast appends what tail returns to the last segment; tail also says which offsets a
// valid appended batch adds.
func appendLast(tail func(t *testing.T, rng *rand.Rand, s segFile, data []byte) ([]byte, damageResult)) damageFunc {
	return func(t *testing.T, rng *rand.Rand, segs []segFile) damageResult {
		s := lastSeg(segs)
		data, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		extra, res := tail(t, rng, s, data)
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(extra); err != nil {
			t.Fatal(err)
		}
		t.Logf("appended %d bytes to %s (%d bytes)", len(extra), filepath.Base(s.path), s.size)
		return res
	}
}

// nextBatch copies the last batch of s as the batch that would follow it: base offset set to
// the segment's end, CRC recomputed. It is what a write that landed just before a crash (and
// was never acknowledged) looks like.
func nextBatch(t *testing.T, s segFile, data []byte) ([]byte, damageResult) {
	lb := lastBatch(t, s)
	b := bytes.Clone(data[lb.pos : lb.pos+lb.length])
	binary.BigEndian.PutUint64(b[13:], uint64(lb.end()))
	binary.BigEndian.PutUint32(b[9:], crc32.Checksum(b[13:], castagnoli))
	res := damageResult{end: lb.end() + lb.count, copies: map[int64]int64{}}
	for i := int64(0); i < lb.count; i++ {
		res.copies[lb.end()+i] = lb.base + i
	}
	return b, res
}

type damageCase struct {
	name     string
	graceful bool // damage the data dir of a broker stopped with SIGTERM rather than SIGKILL
	damage   damageFunc
}

var damageCases = []damageCase{
	{"truncate-1-byte", false, truncateLast(func(t *testing.T, s segFile) int64 { return s.size - 1 })},
	{"truncate-7-bytes", true, truncateLast(func(t *testing.T, s segFile) int64 { return s.size - 7 })},
	{"truncate-inside-last-header", false, truncateLast(func(t *testing.T, s segFile) int64 { return lastBatch(t, s).pos + 20 })},
	{"truncate-half-last-batch", true, truncateLast(func(t *testing.T, s segFile) int64 {
		b := lastBatch(t, s)
		return b.pos + b.length/2
	})},
	{"truncate-at-batch-boundary", false, truncateLast(func(t *testing.T, s segFile) int64 { return lastBatch(t, s).pos })},
	{"truncate-3-batches-and-5-bytes", false, truncateLast(func(t *testing.T, s segFile) int64 {
		return s.batches[len(s.batches)-3].pos - 5
	})},
	{"truncate-to-empty", true, truncateLast(func(t *testing.T, s segFile) int64 { return 0 })},
	{"garbage-over-last-16-bytes", false, scrambleLast(func(t *testing.T, s segFile) (int64, int) { return s.size - 16, 16 })},
	{"garbage-over-last-header", true, scrambleLast(func(t *testing.T, s segFile) (int64, int) {
		return lastBatch(t, s).pos, batchHeaderSize
	})},
	{"garbage-over-last-crc", false, scrambleLast(func(t *testing.T, s segFile) (int64, int) { return lastBatch(t, s).pos + 9, 4 })},
	{"garbage-over-last-length", true, scrambleLast(func(t *testing.T, s segFile) (int64, int) { return lastBatch(t, s).pos + 5, 4 })},
	{"garbage-mid-segment", false, scrambleLast(func(t *testing.T, s segFile) (int64, int) {
		b := s.batches[len(s.batches)/2]
		return b.pos + b.length/2, 3
	})},
	{"zeros-appended", false, appendLast(func(t *testing.T, _ *rand.Rand, s segFile, _ []byte) ([]byte, damageResult) {
		return make([]byte, 4096), damageResult{end: s.end()}
	})},
	{"garbage-appended", true, appendLast(func(t *testing.T, rng *rand.Rand, s segFile, _ []byte) ([]byte, damageResult) {
		b := make([]byte, 100)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b, damageResult{end: s.end()}
	})},
	{"stale-batch-appended", false, appendLast(func(t *testing.T, _ *rand.Rand, s segFile, data []byte) ([]byte, damageResult) {
		lb := lastBatch(t, s) // valid CRC, but its offsets repeat the previous batch's
		return bytes.Clone(data[lb.pos : lb.pos+lb.length]), damageResult{end: s.end()}
	})},
	{"torn-next-batch-appended", false, appendLast(func(t *testing.T, _ *rand.Rand, s segFile, data []byte) ([]byte, damageResult) {
		b, _ := nextBatch(t, s, data)
		return b[:len(b)*2/3], damageResult{end: s.end()}
	})},
	{"whole-next-batch-appended", true, appendLast(func(t *testing.T, _ *rand.Rand, s segFile, data []byte) ([]byte, damageResult) {
		return nextBatch(t, s, data) // a complete, valid batch: recovery must keep it
	})},
	{"last-segment-file-lost", false, func(t *testing.T, _ *rand.Rand, segs []segFile) damageResult {
		s := lastSeg(segs)
		if err := os.Remove(s.path); err != nil {
			t.Fatal(err)
		}
		os.Remove(s.indexPath())
		t.Logf("removed %s", filepath.Base(s.path))
		return damageResult{end: s.base}
	}},
	{"closed-segment-index-garbage", true, func(t *testing.T, rng *rand.Rand, segs []segFile) damageResult {
		s := segs[0]
		b := make([]byte, 64)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if _, err := os.Stat(s.indexPath()); err != nil {
			t.Fatalf("closed segment has no index file: %v", err)
		}
		if err := os.WriteFile(s.indexPath(), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return damageResult{end: lastSeg(segs).end()}
	}},
}

// tornBase is a stopped broker's data dir with topic "torn" (2 partitions, 4 KiB segments), and
// what was published to it.
type tornBase struct {
	dir   string
	texts map[pos]string
	ids   map[pos]string
	ends  []int64
}

const tornTopic = "torn"

// buildTornBase publishes until partition 0 has at least 3 segments and its last one at least 6
// batches, then stops the broker (SIGTERM when graceful, else SIGKILL).
func buildTornBase(t *testing.T, dir string, graceful bool) *tornBase {
	name := "base-kill"
	if graceful {
		name = "base-term"
	}
	b := newBroker(t, name, dir, "--segment-bytes", "4096")
	b.start()
	b.putTopic(tornTopic, 2)
	tb := &tornBase{dir: dir, texts: map[pos]string{}, ids: map[pos]string{}}
	pdir := partitionDir(dir, tornTopic, 0)
	for i := 0; ; i++ {
		if i == 400 {
			t.Fatalf("%s: partition 0 never got 3 segments", name)
		}
		msgs := make([]pubMsg, 1+i%3)
		for k := range msgs {
			msgs[k] = pubMsg{Text: text(fmt.Sprintf("torn %s request %03d message %d %s", name, i, k, strings.Repeat(string(rune('a'+i%26)), 40+i%50)))}
		}
		for k, r := range b.publish(tornTopic, msgs) {
			tb.texts[pos{r.Partition, r.Offset}] = *msgs[k].Text
			tb.ids[pos{r.Partition, r.Offset}] = r.ID
		}
		if i%4 == 3 {
			if segs := readSegments(t, pdir); len(segs) >= 3 && len(lastSeg(segs).batches) >= 6 {
				break
			}
		}
	}
	tb.ends = b.ends(tornTopic)
	if graceful {
		b.stop()
	} else {
		b.kill()
	}
	segs := readSegments(t, pdir)
	t.Logf("%s: end offsets %v; partition 0 has %d segments, the last with %d batches", name, tb.ends, len(segs), len(lastSeg(segs).batches))
	return tb
}

// TestTornWrite damages the last segment of a stopped broker's partition in many ways (the
// table), restarts it, and checks that it starts, serves every message before the damage
// intact (and nothing of what was damaged), takes new publishes at the right offsets, and keeps
// all of it across another SIGKILL.
func TestTornWrite(t *testing.T) {
	t.Parallel()
	seed := testSeed(t)
	root := t.TempDir()
	bases := map[bool]*tornBase{
		false: buildTornBase(t, filepath.Join(root, "base-kill"), false),
		true:  buildTornBase(t, filepath.Join(root, "base-term"), true),
	}
	for i, tc := range damageCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := bases[tc.graceful]
			dir := filepath.Join(t.TempDir(), "data")
			copyDir(t, base.dir, dir)
			pdir := partitionDir(dir, tornTopic, 0)
			res := tc.damage(t, rand.New(rand.NewPCG(seed, uint64(i))), readSegments(t, pdir))

			want := map[pos]string{}
			wantIDs := map[pos]string{}
			for p, txt := range base.texts {
				if p.partition != 0 || p.offset < res.end {
					want[p], wantIDs[p] = txt, base.ids[p]
				}
			}
			for off, src := range res.copies {
				p := pos{0, off}
				want[p], wantIDs[p] = base.texts[pos{0, src}], base.ids[pos{0, src}]
			}

			b := newBroker(t, tc.name, dir, "--segment-bytes", "4096")
			b.start()
			ends := b.ends(tornTopic)
			if ends[0] != res.end || ends[1] != base.ends[1] {
				t.Fatalf("after the damage: end offsets %v, want [%d %d] (before the damage %v)", ends, res.end, base.ends[1], base.ends)
			}
			b.putPullSub("verify", tornTopic)
			checkExactly(t, "before new publishes", b.drain("verify", len(want)), want, wantIDs)

			// New publishes continue right after the last good batch.
			next := append([]int64(nil), ends...)
			fresh := map[pos]string{}
			freshIDs := map[pos]string{}
			for r := 0; r < 6; r++ {
				msgs := []pubMsg{{Text: text(fmt.Sprintf("after %s %d.0", tc.name, r))}, {Text: text(fmt.Sprintf("after %s %d.1", tc.name, r))}}
				for k, x := range b.publish(tornTopic, msgs) {
					if x.Offset != next[x.Partition] {
						t.Errorf("new publish got partition %d offset %d, want offset %d", x.Partition, x.Offset, next[x.Partition])
					}
					next[x.Partition] = x.Offset + 1
					fresh[pos{x.Partition, x.Offset}], freshIDs[pos{x.Partition, x.Offset}] = *msgs[k].Text, x.ID
				}
			}
			// And survive a crash: recovery must have cut the damaged tail off for good.
			b.kill()
			b.start()
			if got := b.ends(tornTopic); fmt.Sprint(got) != fmt.Sprint(next) {
				t.Errorf("after SIGKILL: end offsets %v, want %v", got, next)
			}
			checkExactly(t, "new publishes after SIGKILL", b.drain("verify", len(fresh)), fresh, freshIDs)
			b.stop()
			segs := readSegments(t, pdir) // fails on any leftover garbage
			if end := lastSeg(segs).end(); end != next[0] {
				t.Errorf("partition 0 on disk ends at offset %d, want %d", end, next[0])
			}
		})
	}
}

// checkExactly checks that got holds each wanted message once, intact, and nothing else.
func checkExactly(t *testing.T, what string, got []message, want, ids map[pos]string) {
	t.Helper()
	errs := newLimitedErrors(t, 10)
	defer errs.summary()
	seen := map[pos]bool{}
	for _, m := range got {
		p := pos{m.Partition, m.Offset}
		txt, ok := want[p]
		switch {
		case seen[p]:
			errs.errorf(what, "partition %d offset %d delivered twice", p.partition, p.offset)
		case !ok:
			errs.errorf(what, "unexpected message at partition %d offset %d: %q", p.partition, p.offset, m.Data)
		case string(m.Data) != txt:
			errs.errorf(what, "partition %d offset %d: data %q, published %q", p.partition, p.offset, m.Data, txt)
		case ids[p] != "" && m.ID != ids[p]:
			errs.errorf(what, "partition %d offset %d: id %q, published as %q", p.partition, p.offset, m.ID, ids[p])
		}
		seen[p] = true
	}
	for p := range want {
		if !seen[p] {
			errs.errorf(what, "partition %d offset %d (%q) is missing", p.partition, p.offset, want[p])
		}
	}
}

// copyDir copies the regular files of src into dst (created).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTornTailBehindSubscription: a subscription had read and acked the whole partition when its
// tail was lost (a torn write found by recovery, or a power loss under --fsync interval|never,
// where the log and the ack journal are fsynced independently). The broker must still deliver
// the messages published after the restart to that subscription, although they get offsets it
// had acked before (they are other messages).
func TestTornTailBehindSubscription(t *testing.T) {
	t.Parallel()
	const topic, sub = "behind", "reader"
	dir := filepath.Join(t.TempDir(), "data")
	b := newBroker(t, "behind", dir, "--segment-bytes", "4096")
	b.start()
	b.putTopic(topic, 1)
	b.putPullSub(sub, topic)
	for r := 0; r < 10; r++ {
		b.publish(topic, []pubMsg{{Text: text(fmt.Sprintf("before %d.0", r))}, {Text: text(fmt.Sprintf("before %d.1", r))}})
	}
	if got := b.drain(sub, 20); len(got) != 20 {
		t.Fatalf("read %d messages before the damage, want 20", len(got))
	}
	b.stop()

	wantEnd := tearLastBatches(t, partitionDir(dir, topic, 0), 3)
	b.start()
	if ends := b.ends(topic); ends[0] != wantEnd {
		t.Fatalf("after the damage: end offset %d, want %d", ends[0], wantEnd)
	}
	want := map[pos]string{}
	for r := 0; r < 3; r++ {
		msgs := []pubMsg{{Text: text(fmt.Sprintf("after %d.0", r))}, {Text: text(fmt.Sprintf("after %d.1", r))}}
		for k, x := range b.publish(topic, msgs) {
			want[pos{x.Partition, x.Offset}] = *msgs[k].Text
		}
	}
	if bl := b.sub(sub).Stats.Backlog; bl != int64(len(want)) {
		t.Errorf("subscription backlog %d after %d new publishes, want %d", bl, len(want), len(want))
	}
	checkExactly(t, "new publishes through the existing subscription", b.pull(sub, 100, "2s"), want, map[pos]string{})
}

// TestTornDelayLogBehindJournal: the same for the delay queue. Delayed messages were moved into
// the topic (the delay journal records their delay-log offsets as moved), then the delay log's
// tail was lost. A message delayed after the restart gets one of those offsets again; across a
// SIGKILL before it is due, it must still be delivered.
func TestTornDelayLogBehindJournal(t *testing.T) {
	t.Parallel()
	const topic, sub = "later-torn", "later-reader"
	dir := filepath.Join(t.TempDir(), "data")
	b := newBroker(t, "delay-behind", dir)
	b.start()
	b.putTopic(topic, 1)
	b.putPullSub(sub, topic)
	for r := 0; r < 5; r++ {
		b.publish(topic, []pubMsg{{Text: text(fmt.Sprintf("early %d", r)), Delay: "500ms"}})
	}
	b.drainN(sub, 5)
	for deadline := time.Now().Add(10 * time.Second); b.topic(topic).Stats.Delayed != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("delayed messages never moved")
		}
	}
	b.stop()

	tearLastBatches(t, filepath.Join(dir, "logs", "delay", topic), 2)
	b.start()
	late := "late, after the damage"
	b.publish(topic, []pubMsg{{Text: text(late), Delay: "2s"}})
	b.kill() // before it is due
	b.start()
	got := b.pull(sub, 10, "5s")
	if len(got) != 1 || string(got[0].Data) != late {
		var texts []string
		for _, m := range got {
			texts = append(texts, string(m.Data))
		}
		t.Errorf("after the restart: delivered %q, want [%q]", texts, late)
	}
}

// tearLastBatches truncates the last segment in dir in the middle of its n-th batch from the end
// (a torn write) and returns the end offset recovery must find.
func tearLastBatches(t *testing.T, dir string, n int) int64 {
	t.Helper()
	s := lastSeg(readSegments(t, dir))
	if len(s.batches) < n {
		t.Fatalf("%s has %d batches, want at least %d", s.path, len(s.batches), n)
	}
	cut := s.batches[len(s.batches)-n].pos + 10
	if err := os.Truncate(s.path, cut); err != nil {
		t.Fatal(err)
	}
	return s.endBefore(cut)
}
