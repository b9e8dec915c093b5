package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
)

func init() {
	register("publish", "publish messages to a topic (arguments, or lines of standard input)", runPublish)
}

func runPublish(args []string, stdout, stderr io.Writer) error {
	var (
		cf                    clientFlags
		delay                 apiDurationFlag
		attrs                 = pairsFlag{}
		key, tag, orderingKey string
		deliverAt             string
		batch                 int
	)
	fs := newCmdFlagSet("publish", "TOPIC [flags] [MESSAGE...]",
		"Publishes each MESSAGE argument as one text message. Without any, reads standard input:\n"+
			"each line is one message (empty lines are skipped), sent in batches of --batch.\n"+
			"Prints the id, partition and offset of each message.", stderr)
	cf.add(fs)
	fs.StringVar(&key, "key", "", "message `key`: messages with one key land in one partition")
	fs.StringVar(&tag, "tag", "", "message `tag`, for subscription filters")
	fs.StringVar(&orderingKey, "ordering-key", "", "ordering `key` for ordered subscriptions")
	fs.Var(attrs, "attr", "`name=value` attribute (repeatable)")
	fs.Var(&delay, "delay", "deliver after this `duration`")
	fs.StringVar(&deliverAt, "deliver-at", "", "deliver at this RFC 3339 `time`")
	fs.IntVar(&batch, "batch", 100, "messages per publish request")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageError("missing TOPIC")
	}
	if err := cf.check(); err != nil {
		return err
	}
	topic, texts := pos[0], pos[1:]
	if batch < 1 {
		return usageError("--batch must be at least 1")
	}
	template := api.PublishMessage{Key: key, Tag: tag, OrderingKey: orderingKey}
	if len(attrs) > 0 {
		template.Attributes = attrs
	}
	if delay.set {
		d := delay.api()
		template.Delay = &d
	}
	if deliverAt != "" {
		if delay.set {
			return usageError("give --delay or --deliver-at, not both")
		}
		t, err := time.Parse(time.RFC3339, deliverAt)
		if err != nil {
			return usageError("--deliver-at must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", deliverAt)
		}
		template.DeliverAt = &t
	}
	c, err := cf.client()
	if err != nil {
		return err
	}

	p := &publishBatcher{c: c, topic: topic, json: cf.json(), delayed: template.Delay != nil || template.DeliverAt != nil, out: stdout}
	msgs := make([]api.PublishMessage, 0, min(batch, 1024))
	add := func(data []byte) error {
		msgs = append(msgs, textOrData(template, data))
		if len(msgs) < batch {
			return nil
		}
		err := p.send(msgs)
		msgs = msgs[:0]
		return err
	}
	if len(texts) > 0 {
		for _, s := range texts {
			if err := add([]byte(s)); err != nil {
				return err
			}
		}
	} else {
		r := bufio.NewReader(stdinReader)
		for {
			line, err := r.ReadBytes('\n')
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
			if len(line) > 0 {
				if err := add(line); err != nil {
					return err
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read standard input: %w", err)
			}
		}
	}
	if len(msgs) > 0 {
		if err := p.send(msgs); err != nil {
			return err
		}
	}
	if p.sent == 0 {
		return usageError("no messages: give them as arguments or as lines on standard input")
	}
	return nil
}

// textOrData is one message of the template's settings with data: as text if it is valid UTF-8
// (JSON would mangle other bytes), else as base64 data.
func textOrData(template api.PublishMessage, data []byte) api.PublishMessage {
	m := template
	if utf8.Valid(data) {
		s := string(data)
		m.Text = &s
	} else {
		m.Data = bytes.Clone(data)
	}
	return m
}

// publishBatcher sends batches and prints their results as they come: in text mode one table
// whose columns stay aligned from batch to batch, in JSON mode each response as it is.
type publishBatcher struct {
	c       *client.Client
	topic   string
	json    bool
	delayed bool // show the DELIVER-AT column
	out     io.Writer
	table   streamTable
	sent    int
}

func (p *publishBatcher) send(msgs []api.PublishMessage) error {
	results, err := p.c.Publish(context.Background(), p.topic, msgs)
	if err != nil {
		if p.sent > 0 {
			return fmt.Errorf("after %d messages published: %w", p.sent, err)
		}
		return err
	}
	first := p.sent == 0
	p.sent += len(msgs)
	if p.json {
		return printJSON(p.out, api.PublishResponse{Results: results})
	}
	var rows [][]string
	if first {
		rows = append(rows, []string{"ID", "PARTITION", "OFFSET"})
		if p.delayed {
			rows[0] = append(rows[0], "DELIVER-AT")
		}
	}
	for _, r := range results {
		offset := fmt.Sprint(r.Offset)
		if r.Offset < 0 {
			offset = "-" // delayed: it gets its offset when due
		}
		cells := []string{r.ID, fmt.Sprint(r.Partition), offset}
		if p.delayed {
			at := "-"
			if r.DeliverAt != nil {
				at = r.DeliverAt.Format(time.RFC3339)
			}
			cells = append(cells, at)
		}
		rows = append(rows, cells)
	}
	p.table.w = p.out
	return p.table.write(rows)
}

// streamTable prints a table in pieces, like text/tabwriter with padding 2, keeping the column
// widths of what it printed before so that later pieces line up under the header (tabwriter
// would size each flushed piece on its own).
type streamTable struct {
	w      io.Writer
	widths []int
}

func (t *streamTable) write(rows [][]string) error {
	for _, r := range rows {
		for i, c := range r {
			n := utf8.RuneCountInString(c)
			if i == len(t.widths) {
				t.widths = append(t.widths, n)
			} else if n > t.widths[i] {
				t.widths[i] = n
			}
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(t.w, b.String())
	return err
}
