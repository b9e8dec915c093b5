package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

func init() {
	register("subs", "list, show, create or delete a broker's subscriptions", runSubs)
}

func runSubs(args []string, stdout, stderr io.Writer) error {
	return runVerbs("subs", []verb{
		{"list", "list the subscriptions", subsList},
		{"get", "show one subscription and its stats", subsGet},
		{"create", "create a subscription, or update it to the given settings (idempotent)", subsCreate},
		{"delete", "delete a subscription", subsDelete},
	}, args, stdout, stderr)
}

// Push formats and retry policies the API accepts.
var (
	pushFormats   = []string{"raw", "json", "cloudevents-binary", "cloudevents-structured"}
	retryPolicies = []string{"linear", "exponential"}
)

func subsList(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("subs list", "[flags]", "Lists the broker's subscriptions.", stderr)
	cf.add(fs)
	_, c, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	subs, err := c.ListSubscriptions(context.Background())
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, api.SubscriptionList{Subscriptions: subs})
	}
	if len(subs) == 0 {
		fmt.Fprintln(stdout, "No subscriptions.")
		return nil
	}
	tw := newTableWriter(stdout)
	tableRow(tw, "NAME", "TOPIC", "MODE", "ENDPOINT", "BACKLOG", "IN-FLIGHT", "DELIVERED", "DEAD-LETTERED", "AGE")
	for _, s := range subs {
		mode, endpoint := subMode(s.SubscriptionSpec)
		backlog, inFlight, delivered, dead := "-", "-", "-", "-"
		if st := s.Stats; st != nil {
			backlog, inFlight = fmt.Sprint(st.Backlog), fmt.Sprint(st.InFlight)
			delivered, dead = fmt.Sprint(st.Delivered), fmt.Sprint(st.DeadLettered)
		}
		tableRow(tw, s.Name, s.Topic, mode, endpoint, backlog, inFlight, delivered, dead, humanAge(s.CreateTime))
	}
	return tw.Flush()
}

// subMode says whether a subscription pushes or is pulled, and where it pushes to.
func subMode(s api.SubscriptionSpec) (mode, endpoint string) {
	if s.Push == nil {
		return "pull", "-"
	}
	return "push", orDash(s.Push.Endpoint)
}

func subsGet(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("subs get", "NAME [flags]", "Shows a subscription's settings and stats.", stderr)
	cf.add(fs)
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	s, err := c.GetSubscription(context.Background(), pos[0])
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, s)
	}
	printSubscription(stdout, s)
	return nil
}

// printSubscription prints one subscription as a list of fields.
func printSubscription(w io.Writer, s api.Subscription) {
	tw := newTableWriter(w)
	mode, endpoint := subMode(s.SubscriptionSpec)
	fmt.Fprintf(tw, "Name:\t%s\n", s.Name)
	fmt.Fprintf(tw, "Topic:\t%s\n", s.Topic)
	fmt.Fprintf(tw, "Mode:\t%s\n", mode)
	if p := s.Push; p != nil {
		fmt.Fprintf(tw, "Push endpoint:\t%s\n", endpoint)
		fmt.Fprintf(tw, "Push format:\t%s\n", orDash(p.Format))
		fmt.Fprintf(tw, "Push timeout:\t%s\n", durationOrDash(p.Timeout))
		fmt.Fprintf(tw, "Push max in flight:\t%s\n", limitOrDash(p.MaxInFlight))
		fmt.Fprintf(tw, "Push headers:\t%s\n", formatPairs(p.Headers))
		fmt.Fprintf(tw, "Signing secrets:\t%d\n", len(p.SigningSecrets)) // never print secrets
	}
	if r := s.Retry; r != nil {
		fmt.Fprintf(tw, "Retry policy:\t%s\n", orDash(r.Policy))
		fmt.Fprintf(tw, "Retry backoff:\t%s .. %s\n", durationOrDash(r.MinBackoff), durationOrDash(r.MaxBackoff))
		fmt.Fprintf(tw, "Max attempts:\t%s\n", limitOrDash(r.MaxAttempts))
		fmt.Fprintf(tw, "Retry max age:\t%s\n", durationOrDash(r.MaxAge))
	}
	fmt.Fprintf(tw, "Dead-letter topic:\t%s\n", orDash(s.DeadLetterTopic))
	fmt.Fprintf(tw, "Ack deadline:\t%s\n", durationOrDash(s.AckDeadline))
	fmt.Fprintf(tw, "Filter:\t%s\n", orDash(s.Filter))
	fmt.Fprintf(tw, "Ordered:\t%t\n", s.Ordered)
	fmt.Fprintf(tw, "Start at:\t%s\n", orDash(s.StartAt))
	fmt.Fprintf(tw, "Created:\t%s\n", timeOrDash(s.CreateTime))
	if st := s.Stats; st != nil {
		fmt.Fprintf(tw, "Backlog:\t%d\n", st.Backlog)
		fmt.Fprintf(tw, "In flight:\t%d\n", st.InFlight)
		fmt.Fprintf(tw, "Delivered:\t%d\n", st.Delivered)
		fmt.Fprintf(tw, "Acked:\t%d\n", st.Acked)
		fmt.Fprintf(tw, "Failed:\t%d\n", st.Failed)
		fmt.Fprintf(tw, "Dead-lettered:\t%d\n", st.DeadLettered)
		fmt.Fprintf(tw, "Expired:\t%d\n", st.Expired)
		fmt.Fprintf(tw, "Last error:\t%s\n", orDash(st.LastError))
	}
	tw.Flush()
}

func subsCreate(args []string, stdout, stderr io.Writer) error {
	var (
		cf                                            clientFlags
		ackDeadline, pushTimeout                      apiDurationFlag
		minBackoff, maxBackoff, retryMaxAge           apiDurationFlag
		signingSecrets                                multiFlag
		pushHeaders                                   = pairsFlag{}
		topic, endpoint, format, filter, dlq, startAt string
		retryPolicy                                   string
		maxAttempts, maxInFlight                      int
		ordered                                       bool
	)
	fs := newCmdFlagSet("subs create", "NAME --topic TOPIC [flags]",
		"Creates the subscription, or updates an existing one to these settings (a PUT: settings not\n"+
			"given take the broker's defaults). Without --push-endpoint it is a pull subscription.", stderr)
	cf.add(fs)
	fs.StringVar(&topic, "topic", "", "the `topic` to subscribe to (required)")
	fs.StringVar(&endpoint, "push-endpoint", "", "push each message to this `URL` (default: a pull subscription)")
	fs.StringVar(&format, "push-format", "", "push body `format`: "+strings.Join(pushFormats, "|")+" (default raw)")
	fs.Var(&pushTimeout, "push-timeout", "timeout of one push request (`duration`)")
	fs.IntVar(&maxInFlight, "push-max-in-flight", 0, "most pushes awaiting an answer at once (0: the broker's default)")
	fs.Var(pushHeaders, "push-header", "extra `name=value` header of each push (repeatable)")
	fs.Var(&signingSecrets, "signing-secret", "sign pushes with this `secret` (Standard Webhooks; repeatable, for rotation)")
	fs.Var(&ackDeadline, "ack-deadline", "how long a delivered message waits for its ack (`duration`)")
	fs.StringVar(&filter, "filter", "", "CEL `expression` over tag, key and attributes, e.g. \"tag == 'eu'\"")
	fs.StringVar(&dlq, "dead-letter-topic", "", "`topic` that gets messages after --max-attempts deliveries")
	fs.StringVar(&retryPolicy, "retry-policy", "", "backoff `policy`: "+strings.Join(retryPolicies, "|"))
	fs.Var(&minBackoff, "min-backoff", "first retry's backoff (`duration`)")
	fs.Var(&maxBackoff, "max-backoff", "longest retry backoff (`duration`)")
	fs.IntVar(&maxAttempts, "max-attempts", 0, "deliveries before a message is dead-lettered (0: the broker's default)")
	fs.Var(&retryMaxAge, "retry-max-age", "give up retrying a message this old (`duration`)")
	fs.BoolVar(&ordered, "ordered", false, "deliver messages of one ordering key one at a time, in order")
	fs.StringVar(&startAt, "start-at", "", "where a new subscription starts: earliest, latest or an RFC 3339 `time`")
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	given := givenFlags(fs)
	if topic == "" {
		return usageError("--topic is required")
	}
	if endpoint == "" {
		for _, f := range []string{"push-format", "push-timeout", "push-max-in-flight", "push-header", "signing-secret"} {
			if given[f] {
				return usageError("--%s needs --push-endpoint", f)
			}
		}
	}
	if format != "" && !slices.Contains(pushFormats, format) {
		return usageError("--push-format must be one of %s, not %q", strings.Join(pushFormats, "|"), format)
	}
	if retryPolicy != "" && !slices.Contains(retryPolicies, retryPolicy) {
		return usageError("--retry-policy must be one of %s, not %q", strings.Join(retryPolicies, "|"), retryPolicy)
	}
	if maxAttempts < 0 || maxInFlight < 0 {
		return usageError("--max-attempts and --push-max-in-flight must not be negative")
	}
	if startAt != "" && startAt != "earliest" && startAt != "latest" {
		if _, err := time.Parse(time.RFC3339, startAt); err != nil {
			return usageError("--start-at must be earliest, latest or an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", startAt)
		}
	}

	spec := api.SubscriptionSpec{
		Topic:           topic,
		DeadLetterTopic: dlq,
		AckDeadline:     ackDeadline.api(),
		Filter:          filter,
		Ordered:         ordered,
		StartAt:         startAt,
	}
	if endpoint != "" {
		spec.Push = &api.PushConfig{
			Endpoint:       endpoint,
			Format:         format,
			Timeout:        pushTimeout.api(),
			MaxInFlight:    maxInFlight,
			SigningSecrets: signingSecrets,
		}
		if len(pushHeaders) > 0 {
			spec.Push.Headers = pushHeaders
		}
	}
	if retryPolicy != "" || minBackoff.set || maxBackoff.set || maxAttempts > 0 || retryMaxAge.set {
		spec.Retry = &api.RetryPolicy{
			Policy:      retryPolicy,
			MinBackoff:  minBackoff.api(),
			MaxBackoff:  maxBackoff.api(),
			MaxAttempts: maxAttempts,
			MaxAge:      retryMaxAge.api(),
		}
	}
	s, created, err := c.PutSubscription(context.Background(), pos[0], spec)
	if err != nil {
		return err
	}
	if cf.json() {
		return printJSON(stdout, s)
	}
	what := "configured"
	if created {
		what = "created"
	}
	fmt.Fprintf(stdout, "Subscription %q %s.\n", pos[0], what)
	return nil
}

func subsDelete(args []string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs := newCmdFlagSet("subs delete", "NAME [flags]", "Deletes a subscription.", stderr)
	cf.add(fs)
	pos, c, err := cf.parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := c.DeleteSubscription(context.Background(), pos[0]); err != nil {
		return err
	}
	if !cf.json() { // the API answers 204 with no body: nothing to print as JSON
		fmt.Fprintf(stdout, "Subscription %q deleted.\n", pos[0])
	}
	return nil
}
