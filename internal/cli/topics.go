package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/heraldmq/herald/broker/api"
)

func init() {
	register("topics", "list, show, create or delete a broker's topics", runTopics)
}

func runTopics(args []string, stdout, stderr io.Writer) error {
	return runVerbs("topics", []verb{
		{"list", "list the topics", topicsList},
		{"get", "show one topic and its stats", topicsGet},
		{"create", "create a topic, or update it to the given settings (idempotent)", topicsCreate},
		{"delete", "delete a topic", topicsDelete},
	}, args, stdout, stderr)
}

func topicsList(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("topics list", "[flags]", "Lists the broker's topics.", stderr)
	cf.add(fs)
	_, c, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	topics, err := c.ListTopics(context.Background())
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, api.TopicList{Topics: topics})
	}
	if len(topics) == 0 {
		fmt.Fprintln(stdout, "No topics.")
		return nil
	}
	tw := newTableWriter(stdout)
	tableRow(tw, "NAME", "PARTITIONS", "MESSAGES", "BYTES", "MAX-AGE", "MAX-BYTES", "TTL", "MAX-MSG-BYTES", "AGE")
	for _, t := range topics {
		messages, bytes := "-", "-"
		if t.Stats != nil {
			messages, bytes = fmt.Sprint(t.Stats.Messages), fmt.Sprint(t.Stats.Bytes)
		}
		maxAge, maxBytes := retention(t.Retention)
		tableRow(tw, t.Name, t.Partitions, messages, bytes, maxAge, maxBytes, durationOrDash(t.MessageTTL),
			limitOrDash(t.MaxMessageBytes), humanAge(t.CreateTime))
	}
	return tw.Flush()
}

// retention formats a topic's retention limits ("-": none).
func retention(r *api.Retention) (maxAge, maxBytes string) {
	if r == nil {
		return "-", "-"
	}
	return durationOrDash(r.MaxAge), limitOrDash(r.MaxBytes)
}

func topicsGet(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("topics get", "NAME [flags]", "Shows a topic's settings and stats.", stderr)
	cf.add(fs)
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	t, err := c.GetTopic(context.Background(), pos[0])
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, t)
	}
	printTopic(stdout, t)
	return nil
}

// printTopic prints one topic as a list of fields, then its partitions as a table.
func printTopic(w io.Writer, t api.Topic) {
	tw := newTableWriter(w)
	maxAge, maxBytes := retention(t.Retention)
	fmt.Fprintf(tw, "Name:\t%s\n", t.Name)
	fmt.Fprintf(tw, "Partitions:\t%d\n", t.Partitions)
	fmt.Fprintf(tw, "Retention max age:\t%s\n", maxAge)
	fmt.Fprintf(tw, "Retention max bytes:\t%s\n", maxBytes)
	fmt.Fprintf(tw, "Message TTL:\t%s\n", durationOrDash(t.MessageTTL))
	fmt.Fprintf(tw, "Max message bytes:\t%s\n", limitOrDash(t.MaxMessageBytes))
	fmt.Fprintf(tw, "Created:\t%s\n", timeOrDash(t.CreateTime))
	if s := t.Stats; s != nil {
		fmt.Fprintf(tw, "Messages:\t%d\n", s.Messages)
		fmt.Fprintf(tw, "Bytes:\t%d\n", s.Bytes)
		fmt.Fprintf(tw, "Delayed:\t%d\n", s.Delayed)
	}
	tw.Flush()
	if t.Stats != nil && len(t.Stats.Partitions) > 0 {
		fmt.Fprintln(w)
		tw = newTableWriter(w)
		tableRow(tw, "PARTITION", "START-OFFSET", "END-OFFSET", "BYTES")
		for _, p := range t.Stats.Partitions {
			tableRow(tw, p.Partition, p.StartOffset, p.EndOffset, p.Bytes)
		}
		tw.Flush()
	}
}

func topicsCreate(args []string, stdout, stderr io.Writer) error {
	var (
		cf                 clientFlags
		maxAge, messageTTL apiDurationFlag
	)
	fs := newCmdFlagSet("topics create", "NAME [flags]",
		"Creates the topic, or updates an existing one to these settings (a PUT: settings not given\n"+
			"take the broker's defaults). Partitions can grow, never shrink.", stderr)
	cf.add(fs)
	partitions := fs.Int("partitions", 1, "number of partitions (can grow later, never shrink)")
	fs.Var(&maxAge, "retention-max-age", "drop messages older than this `duration`, e.g. 168h (default: no limit)")
	maxBytes := fs.Int64("retention-max-bytes", 0, "drop the oldest messages beyond this many bytes per partition (0: no limit)")
	fs.Var(&messageTTL, "message-ttl", "do not deliver messages older than this `duration` (default: no TTL)")
	maxMessageBytes := fs.Int("max-message-bytes", 0, "largest message accepted, in bytes (0: the broker's default, 1 MiB)")
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	switch {
	case *partitions < 1:
		return usageError("--partitions must be at least 1")
	case *maxBytes < 0:
		return usageError("--retention-max-bytes must not be negative")
	case *maxMessageBytes < 0:
		return usageError("--max-message-bytes must not be negative")
	}
	spec := api.TopicSpec{Partitions: *partitions, MessageTTL: messageTTL.api(), MaxMessageBytes: *maxMessageBytes}
	if maxAge.set || *maxBytes > 0 {
		spec.Retention = &api.Retention{MaxAge: maxAge.api(), MaxBytes: *maxBytes}
	}
	t, created, err := c.PutTopic(context.Background(), pos[0], spec)
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, t)
	}
	what := "configured"
	if created {
		what = "created"
	}
	fmt.Fprintf(stdout, "Topic %q %s.\n", pos[0], what)
	return nil
}

func topicsDelete(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("topics delete", "NAME [flags]", "Deletes a topic and its messages.", stderr)
	cf.add(fs)
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := c.DeleteTopic(context.Background(), pos[0]); err != nil {
		return err
	}
	if !cf.json() { // the API answers 204 with no body: nothing to print as JSON
		fmt.Fprintf(stdout, "Topic %q deleted.\n", pos[0])
	}
	return nil
}
