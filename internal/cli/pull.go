package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/heraldmq/herald/broker/api"
)

func init() {
	register("pull", "pull (or peek at) messages of a subscription", runPull)
}

func runPull(args []string, stdout, stderr io.Writer) error {
	var (
		cf               clientFlags
		wait, visibility apiDurationFlag
		maxMessages      int
		ack, peek        bool
	)
	fs := newCmdFlagSet("pull", "SUBSCRIPTION [flags]",
		"Leases messages of a pull subscription and prints them with their receipt handles (data as\n"+
			"text if it is valid UTF-8, quoted if it holds control characters, else \"base64:…\").\n"+
			"Unacked messages are redelivered once their lease ends; --ack acks them after printing.", stderr)
	cf.add(fs)
	fs.IntVar(&maxMessages, "max", 1, "most messages to return (1-1000)")
	fs.Var(&wait, "wait", "long poll: wait up to this `duration` (at most 30s) for a first message")
	fs.Var(&visibility, "visibility", "lease `duration` (default: the subscription's ack deadline)")
	fs.BoolVar(&ack, "ack", false, "ack the messages after printing them")
	fs.BoolVar(&peek, "peek", false, "look at messages without leasing them")
	pos, c, err := cf.parse(fs, args, "SUBSCRIPTION")
	if err != nil {
		return err
	}
	sub := pos[0]
	if maxMessages < 1 || maxMessages > 1000 {
		return usageError("--max must be between 1 and 1000")
	}
	if peek && (ack || wait.set || visibility.set) {
		return usageError("--peek takes no --ack, --wait or --visibility: it leases nothing")
	}

	ctx := context.Background()
	var msgs []api.Message
	if peek {
		msgs, err = c.Peek(ctx, sub, maxMessages)
	} else {
		msgs, err = c.Pull(ctx, sub, api.PullRequest{Max: maxMessages, Wait: wait.api(), Visibility: visibility.api()})
	}
	if err != nil {
		return err
	}

	if cf.json() {
		if err := printJSON(stdout, api.PullResponse{Messages: msgs}); err != nil {
			return err
		}
	} else if err := printMessages(stdout, msgs, !peek); err != nil {
		return err
	}

	if !ack || len(msgs) == 0 {
		return nil
	}
	handles := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if m.ReceiptHandle != "" {
			handles = append(handles, m.ReceiptHandle)
		}
	}
	res, err := c.Ack(ctx, sub, handles)
	if err != nil {
		return fmt.Errorf("ack: %w (the messages will be redelivered)", err)
	}
	if !cf.json() {
		fmt.Fprintf(stdout, "Acked %d of %d messages.\n", res.Acked, len(msgs))
	}
	if len(res.Invalid) > 0 {
		return fmt.Errorf("ack: %d receipt handles were expired or unknown (those messages will be redelivered): %v",
			len(res.Invalid), res.Invalid)
	}
	return nil
}

// printMessages prints messages as a table; withHandles adds the receipt handles.
func printMessages(w io.Writer, msgs []api.Message, withHandles bool) error {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "No messages.")
		return nil
	}
	tw := newTableWriter(w)
	header := []any{"ID", "PARTITION", "OFFSET", "ATTEMPT", "KEY", "TAG", "ATTRIBUTES", "PUBLISHED"}
	if withHandles {
		header = append(header, "RECEIPT-HANDLE")
	}
	tableRow(tw, append(header, "DATA")...)
	for _, m := range msgs {
		cells := []any{m.ID, m.Partition, m.Offset, m.DeliveryAttempt, textCell(m.Key), textCell(m.Tag),
			textCell(formatPairs(m.Attributes)), timeOrDash(m.PublishTime)}
		if withHandles {
			cells = append(cells, orDash(m.ReceiptHandle))
		}
		tableRow(tw, append(cells, dataCell(m.Data))...)
	}
	return tw.Flush()
}
