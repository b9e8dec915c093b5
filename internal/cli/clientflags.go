package cli

// Shared pieces of the subcommands that talk to a broker over its HTTP API (topics, subs,
// publish, pull): the --server/--output/--timeout flags, flag parsing that allows flags after
// positional arguments, flag value types, and output helpers.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/client"
)

// defaultServer is the broker URL when neither --server nor HERALD_SERVER says one.
const defaultServer = "http://127.0.0.1:8080"

// serverEnv names the environment variable with the default broker URL.
const serverEnv = "HERALD_SERVER"

// stdinReader is where publish reads messages when none are given as arguments; tests replace it.
var stdinReader io.Reader = os.Stdin

// clientFlags are the flags every API subcommand has.
type clientFlags struct {
	server  string
	output  string
	timeout time.Duration
}

func (f *clientFlags) add(fs *flag.FlagSet) {
	def := os.Getenv(serverEnv)
	if def == "" {
		def = defaultServer
	}
	fs.StringVar(&f.server, "server", def, "broker `URL`; $"+serverEnv+" sets the default")
	fs.StringVar(&f.output, "output", "text", "output `format`: text (a table) or json (the API response as is)")
	fs.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "timeout of each request (a pull's --wait comes on top)")
}

// check validates the flags; call it after parsing.
func (f *clientFlags) check() error {
	switch f.output {
	case "text", "json":
	default:
		return usageError("--output must be text or json, not %q", f.output)
	}
	if f.timeout < 0 {
		return usageError("--timeout must not be negative")
	}
	if strings.TrimSpace(f.server) == "" {
		return usageError("--server must not be empty")
	}
	return nil
}

func (f *clientFlags) json() bool { return f.output == "json" }

// client returns a client of the broker named by --server.
func (f *clientFlags) client() (*client.Client, error) {
	c, err := client.New(f.server, client.WithTimeout(f.timeout), client.WithUserAgent("herald-cli"))
	if err != nil {
		return nil, usageError("--server: %v", err)
	}
	return c, nil
}

// parse parses args with fs (which must hold these flags: see add), checks that the positional
// arguments are exactly argNames, and returns them with a client of the broker.
func (f *clientFlags) parse(fs *flag.FlagSet, args []string, argNames ...string) ([]string, *client.Client, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := checkArgs(pos, argNames...); err != nil {
		return nil, nil, err
	}
	if err := f.check(); err != nil {
		return nil, nil, err
	}
	c, err := f.client()
	if err != nil {
		return nil, nil, err
	}
	return pos, c, nil
}

// newCmdFlagSet returns a flag set for `herald <cmd>` that reports to stderr.
func newCmdFlagSet(cmd, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("herald "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "Usage: herald %s %s\n\n%s\n", cmd, synopsis, about)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(out, "\nFlags (before or after the arguments; -- ends them):")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseInterspersed parses args, letting flags and positional arguments mix (`create NAME --partitions
// 3`); an argument "--" ends the flags. It returns the positional arguments. A flag error is a
// usage error; -h gives flag.ErrHelp.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// checkArgs checks the count of positional arguments; names lists them for the message.
func checkArgs(pos []string, names ...string) error {
	switch {
	case len(pos) < len(names):
		return usageError("missing %s", strings.Join(names[len(pos):], " "))
	case len(pos) > len(names):
		return usageError("unexpected argument %q", pos[len(names)])
	}
	return nil
}

// verb is one subcommand of a command group such as `herald topics`.
type verb struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

// runVerbs runs the verb named by args[0].
func runVerbs(group string, verbs []verb, args []string, stdout, stderr io.Writer) error {
	names := make([]string, len(verbs))
	for i, v := range verbs {
		names[i] = v.name
	}
	if len(args) == 0 {
		return usageError("missing subcommand: %s", strings.Join(names, "|"))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stderr, "Usage: herald %s <%s> [arguments] [flags]\n\n", group, strings.Join(names, "|"))
		tw := newTableWriter(stderr)
		for _, v := range verbs {
			fmt.Fprintf(tw, "  %s\t%s\n", v.name, v.summary)
		}
		tw.Flush()
		fmt.Fprintf(stderr, "\nRun `herald %s <subcommand> -h` for its flags.\n", group)
		return flag.ErrHelp
	}
	for _, v := range verbs {
		if v.name == args[0] {
			return v.run(args[1:], stdout, stderr)
		}
	}
	return usageError("unknown subcommand %q: want %s", args[0], strings.Join(names, "|"))
}

// apiDurationFlag is an optional duration flag in API syntax ("30s", "168h"; not negative).
type apiDurationFlag struct {
	d   time.Duration
	set bool
}

func (f *apiDurationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return api.Duration(f.d).String()
}

func (f *apiDurationFlag) Set(s string) error {
	d, err := api.ParseDuration(s)
	if err != nil {
		return err
	}
	f.d, f.set = d, true
	return nil
}

func (f *apiDurationFlag) api() api.Duration { return api.Duration(f.d) }

// pairsFlag collects repeated key=value flags.
type pairsFlag map[string]string

func (m pairsFlag) String() string { return formatPairs(m) }

func (m pairsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

// multiFlag collects a repeated flag's values.
type multiFlag []string

func (l *multiFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *multiFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// givenFlags returns the names of the flags given on the command line.
func givenFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// newTableWriter returns a tabwriter for aligned columns; Flush it.
func newTableWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// tableRow writes one tab-separated table row.
func tableRow(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// limitOrDash formats a limit where 0 means none.
func limitOrDash[T ~int | ~int64](v T) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatInt(int64(v), 10)
}

// durationOrDash formats a duration where 0 means none.
func durationOrDash(d api.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

// humanAge formats how long ago t was, kubectl style: 45s, 12m, 5h, 3d.
func humanAge(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(time.Since(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// timeOrDash formats t in RFC 3339, or "-" for the zero time.
func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// formatPairs formats k=v pairs sorted by key, "-" if none.
func formatPairs(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// textCell keeps a table cell on one line: text with control characters (tabs, newlines) is
// quoted with Go escapes; empty text is "-".
func textCell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// dataCell formats message data for a table cell: as text if it is valid UTF-8 (quoted with Go
// escapes if it holds control characters, so one message stays on one line), else base64 with
// a "base64:" prefix.
func dataCell(b []byte) string {
	if !utf8.Valid(b) {
		return "base64:" + base64.StdEncoding.EncodeToString(b)
	}
	s := string(b)
	if s == "" || strings.IndexFunc(s, unicode.IsControl) >= 0 || strings.HasPrefix(s, "base64:") || strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	return s
}
