package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/store"
)

func fileConfig(t *testing.T) Config {
	return Config{DataDir: t.TempDir(), Sync: store.SyncAlways, SegmentBytes: 64 << 10}
}

func TestRestartKeepsCatalogueAndAcks(t *testing.T) {
	cfg := fileConfig(t)
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustTopic(t, b, "t", api.TopicSpec{Partitions: 3, MessageTTL: api.Duration(time.Hour), Retention: &api.Retention{MaxAge: api.Duration(168 * time.Hour)}})
	mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest", Filter: "tag != 'skip'"})
	var msgs []api.PublishMessage
	for i := 0; i < 30; i++ {
		tag := ""
		if i%3 == 0 {
			tag = "skip"
		}
		msgs = append(msgs, api.PublishMessage{Text: text(fmt.Sprint(i)), Tag: tag, Key: fmt.Sprint(i % 7)})
	}
	if _, err := b.Publish("t", msgs); err != nil {
		t.Fatal(err)
	}
	got := pull(t, b, "s", 100, 0)
	if len(got) != 20 {
		t.Fatalf("pulled %d, want 20", len(got))
	}
	// Ack every other one; the rest stay leased when the broker stops.
	var acked, unacked []string
	for i, m := range got {
		if i%2 == 0 {
			acked = append(acked, string(m.Data))
			if res, _ := b.Ack("s", []string{m.ReceiptHandle}); res.Acked != 1 {
				t.Fatalf("ack %v", res)
			}
		} else {
			unacked = append(unacked, string(m.Data))
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = open(t, cfg)
	tp, err := b.GetTopic("t")
	if err != nil || tp.Partitions != 3 || tp.MessageTTL.D() != time.Hour || tp.Retention.MaxAge.D() != 168*time.Hour {
		t.Fatalf("topic after restart: %+v %v", tp, err)
	}
	sub, err := b.GetSubscription("s")
	if err != nil || sub.Filter != "tag != 'skip'" || sub.Stats.Backlog != int64(len(unacked)) {
		t.Fatalf("subscription after restart: %+v %+v %v", sub, sub.Stats, err)
	}
	again := texts(pull(t, b, "s", 100, 0))
	sort.Strings(again)
	sort.Strings(unacked)
	if fmt.Sprint(again) != fmt.Sprint(unacked) {
		t.Fatalf("redelivered after restart %v, want exactly the unacked %v", again, unacked)
	}
}

func TestRestartAfterJournalCompaction(t *testing.T) {
	cfg := fileConfig(t)
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustTopic(t, b, "t", api.TopicSpec{Partitions: 1})
	mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t", StartAt: "earliest"})
	publishTexts(t, b, "t", "a", "b", "c", "d")
	got := pull(t, b, "s", 4, 0)
	b.Ack("s", []string{got[0].ReceiptHandle, got[2].ReceiptHandle})
	s, _ := b.subscription("s")
	s.mu.Lock()
	if err := s.journal.compact(s.snapshotLocked()); err != nil {
		t.Fatal(err)
	}
	s.mu.Unlock()
	b.Ack("s", []string{got[3].ReceiptHandle})
	// Simulate a crash: no Close (which would compact again); drop the process state.
	s.journal.close()
	b2 := open(t, cfg)
	if got := texts(pull(t, b2, "s", 10, 0)); fmt.Sprint(got) != "[b]" {
		t.Fatalf("after compaction + wal replay: %v, want [b]", got)
	}
	b.Close()
}

func TestRestartDelayedMessages(t *testing.T) {
	cfg := fileConfig(t)
	b, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustTopic(t, b, "t", api.TopicSpec{Partitions: 2})
	mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t"})
	d := api.Duration(time.Second)
	long := api.Duration(7 * 24 * time.Hour)
	if _, err := b.Publish("t", []api.PublishMessage{{Text: text("soon"), Delay: &d}, {Text: text("next week"), Delay: &long}}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b = open(t, cfg)
	tp, _ := b.GetTopic("t")
	if tp.Stats.Delayed != 2 {
		t.Fatalf("delayed after restart = %d, want 2", tp.Stats.Delayed)
	}
	soon := pull(t, b, "s", 10, 5*time.Second)
	if got := texts(soon); fmt.Sprint(got) != "[soon]" {
		t.Fatalf("got %v", got)
	}
	b.Ack("s", handles(soon))
	// The move is journaled just after the message becomes visible; poll for the count.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		tp, _ = b.GetTopic("t")
		if tp.Stats.Delayed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delayed after delivery = %d, want 1", tp.Stats.Delayed)
		}
	}
	b.Close()
	// The moved one is not moved again after another restart.
	b = open(t, cfg)
	if got := texts(pull(t, b, "s", 10, 1500*time.Millisecond)); len(got) != 0 {
		t.Fatalf("delivered again after restart: %v", got)
	}
	tp, _ = b.GetTopic("t")
	if tp.Stats.Messages != 1 || tp.Stats.Delayed != 1 {
		t.Fatalf("after restart: %d messages, %d delayed; want 1 and 1", tp.Stats.Messages, tp.Stats.Delayed)
	}
}

func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	j, _, err := openJournal(dir, store.SyncAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 10; i++ {
		pos, err := j.write([]doneRange{{partition: 0, from: i, n: 1}})
		if err != nil || j.durable(pos) != nil {
			t.Fatal(err)
		}
	}
	j.close()
	wal := filepath.Join(dir, walName)
	info, _ := os.Stat(wal)
	for cut := int64(1); cut < 12; cut++ {
		t.Run(fmt.Sprint("cut", cut), func(t *testing.T) {
			d := t.TempDir()
			b, _ := os.ReadFile(wal)
			os.WriteFile(filepath.Join(d, walName), b[:info.Size()-cut], 0o644)
			j, snap, err := openJournal(d, store.SyncAlways, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer j.close()
			sp := snap.part(0)
			// Frames are 11 bytes; a cut into the last frame loses exactly that one ack.
			if sp.next != 9 || sp.floor != 9 {
				t.Fatalf("after cutting %d bytes: floor %d next %d, want 9 9", cut, sp.floor, sp.next)
			}
			// New frames follow the intact prefix.
			pos, _ := j.write([]doneRange{{partition: 0, from: 9, n: 1}})
			j.durable(pos)
			j.close()
			_, snap, _ = openJournal(d, store.SyncAlways, nil)
			if snap.part(0).next != 10 {
				t.Fatalf("append after recovery lost: next %d", snap.part(0).next)
			}
		})
	}
}

func TestSnapshotApplyDone(t *testing.T) {
	s := newSnapshot()
	s.applyDone(doneRange{partition: 0, from: 5, n: 2}) // 0-4 delivered and pending, 5-6 done
	sp := s.part(0)
	if sp.floor != 0 || sp.next != 7 || len(sp.pending) != 5 {
		t.Fatalf("floor %d next %d pending %v", sp.floor, sp.next, sp.pending)
	}
	s.applyDone(doneRange{partition: 0, from: 0, n: 5})
	if sp.floor != 7 || len(sp.pending) != 0 {
		t.Fatalf("floor %d pending %v", sp.floor, sp.pending)
	}
	dec, err := decodeSnapshot(s.encode())
	if err != nil || dec.part(0).floor != 7 || dec.part(0).next != 7 {
		t.Fatalf("round trip: %+v %v", dec.part(0), err)
	}
	bad := s.encode()
	bad[len(bad)-1] ^= 0xff
	if _, err := decodeSnapshot(bad); err == nil {
		t.Fatal("corrupt snapshot accepted")
	}
}

func FuzzDecodeJournal(f *testing.F) {
	f.Add(encodeRanges(nil, []doneRange{{1, 2, 3}}))
	s := newSnapshot()
	s.applyDone(doneRange{partition: 2, from: 10, n: 3})
	f.Add(s.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeRanges(b)
		decodeSnapshot(b)
		decodeReceipt(string(b))
	})
}

func TestDelayLogDropsMovedSegments(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode, cfg Config) {
		cfg.SegmentBytes = 4096 // a few delayed messages per segment
		b := open(t, cfg)
		mustTopic(t, b, "t", api.TopicSpec{})
		mustSub(t, b, "s", api.SubscriptionSpec{Topic: "t"})
		d := api.Duration(time.Millisecond)
		far := api.Duration(24 * time.Hour)
		body := string(make([]byte, 1000))
		for i := 0; i < 40; i++ {
			if _, err := b.Publish("t", []api.PublishMessage{{Text: &body, Delay: &d}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Publish("t", []api.PublishMessage{{Text: text("tomorrow"), Delay: &far}}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if tp, _ := b.GetTopic("t"); tp.Stats.Delayed == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("delayed messages were not moved")
			}
		}
		b.mu.RLock()
		dt := b.delays.topics["t"]
		b.mu.RUnlock()
		before := dt.log.Size()
		b.EnforceRetention()
		if start := dt.log.StartOffset(); start == 0 || start > 40 || dt.log.Size() >= before {
			t.Fatalf("delay log start %d size %d (was %d): moved segments not dropped", dt.log.StartOffset(), dt.log.Size(), before)
		}
		if tp, _ := b.GetTopic("t"); tp.Stats.Delayed != 1 {
			t.Fatalf("the waiting message was lost: delayed = %d", tp.Stats.Delayed)
		}
		if m.reopenable {
			b.Close()
			b2 := open(t, cfg)
			if tp, _ := b2.GetTopic("t"); tp.Stats.Delayed != 1 {
				t.Fatalf("after restart: delayed = %d, want 1", tp.Stats.Delayed)
			}
		}
	})
}
