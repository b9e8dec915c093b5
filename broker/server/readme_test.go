package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The README's API examples are tested: TestREADME starts the herald binary, the way the README
// says, and runs every example of README.md, in order, with bash against it.
//
// An example is a fenced ```sh block whose first line is "# expect: <status> …". The block runs
// as is (in one bash session, so shell variables carry over from block to block), with
// 127.0.0.1:8080 replaced by the broker's address; it passes when no command in it fails (an ERR
// trap, with pipefail) and the HTTP status of its last curl request is <status>. Every ```sh
// block that mentions curl must be an example. The ```yaml block after the HTML comment
// <!-- readme-test: broker-config --> is the configuration file the broker starts with.

const (
	readmeExpect    = "# expect: "
	readmeConfigTag = "<!-- readme-test: broker-config -->"
	readmeAddr      = "127.0.0.1:8080"
)

type readmeExample struct {
	line   int // of the opening fence, 1-based
	status int
	script string
}

// parseReadme returns the examples and the broker configuration of the README.
func parseReadme(t *testing.T, text string) ([]readmeExample, string) {
	t.Helper()
	var examples []readmeExample
	var config string
	lines := strings.Split(text, "\n")
	prev := "" // last non-empty line outside a block
	for i := 0; i < len(lines); i++ {
		open, isFence := strings.CutPrefix(strings.TrimSpace(lines[i]), "```")
		if !isFence {
			if strings.TrimSpace(lines[i]) != "" {
				prev = strings.TrimSpace(lines[i])
			}
			continue
		}
		start := i
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		if i == len(lines) {
			t.Fatalf("README.md:%d: code block never closed", start+1)
		}
		block := strings.Join(body, "\n")
		switch lang := strings.TrimSpace(open); {
		case lang == "yaml" && prev == readmeConfigTag:
			config = block
		case lang == "sh" || lang == "bash" || lang == "shell":
			if len(body) > 0 && strings.HasPrefix(body[0], readmeExpect) {
				f := strings.Fields(strings.TrimPrefix(body[0], readmeExpect))
				status, err := strconv.Atoi(f[0])
				if err != nil || status < 100 || status > 599 {
					t.Fatalf("README.md:%d: %q: want %s<HTTP status>", start+2, body[0], readmeExpect)
				}
				examples = append(examples, readmeExample{line: start + 1, status: status, script: block})
			} else if strings.Contains(block, "curl ") {
				t.Errorf("README.md:%d: a curl example without a %q line, so it is not tested", start+1, readmeExpect)
			}
		}
		prev = ""
	}
	return examples, config
}

func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the README examples (they build and run the herald binary)")
	}
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: cannot run the README's curl examples (install %s to test them)", tool, tool)
		}
	}
	root := moduleRoot(t)
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples, config := parseReadme(t, string(text))
	if len(examples) < 20 {
		t.Fatalf("found only %d examples in README.md; the marker is %q", len(examples), readmeExpect)
	}
	if config == "" {
		t.Fatalf("README.md has no yaml block after %s", readmeConfigTag)
	}

	addr := startREADMEBroker(t, heraldBinary(t, root), config)

	// One script: a preamble, then each example between markers that report its outcome.
	var sb strings.Builder
	sb.WriteString(`set -o pipefail
__hdrs=$(mktemp)
trap 'rm -f "$__hdrs"' EXIT
# Every curl also dumps the response headers, for the status of the last request of a block.
curl() { command curl -D "$__hdrs" "$@"; }
__status() { tr -d '\r' < "$__hdrs" | grep -a '^HTTP/' | tail -n 1 | cut -d' ' -f2; }
trap '__failed=1' ERR
`)
	for i, ex := range examples {
		fmt.Fprintf(&sb, ": > \"$__hdrs\"\n__failed=0\nprintf '\\n@@begin %d\\n'\n%s\nprintf '\\n@@end %d %%s %%s\\n' \"$__failed\" \"$(__status)\"\n",
			i, strings.ReplaceAll(ex.script, readmeAddr, addr), i)
	}
	script := filepath.Join(t.TempDir(), "readme.sh")
	if err := os.WriteFile(script, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running the README examples: %v\n%s", err, out)
	}

	// Match each example with its outcome.
	outputs := map[int]*strings.Builder{}
	results := map[int][2]string{}
	current := -1
	for _, line := range strings.Split(string(out), "\n") {
		var i int
		var failed, status string
		switch {
		case strings.HasPrefix(line, "@@begin "):
			fmt.Sscanf(line, "@@begin %d", &i)
			current, outputs[i] = i, &strings.Builder{}
		case strings.HasPrefix(line, "@@end "):
			fmt.Sscanf(line, "@@end %d %s %s", &i, &failed, &status)
			results[i] = [2]string{failed, status}
			current = -1
		case current >= 0:
			outputs[current].WriteString(line + "\n")
		}
	}
	for i, ex := range examples {
		res, ran := results[i]
		output := ""
		if b := outputs[i]; b != nil {
			output = b.String()
		}
		switch {
		case !ran:
			t.Errorf("README.md:%d: the example did not finish\n%s", ex.line, ex.script)
		case res[0] != "0":
			t.Errorf("README.md:%d: a command failed\n%s\noutput:\n%s", ex.line, ex.script, output)
		case res[1] != strconv.Itoa(ex.status):
			t.Errorf("README.md:%d: HTTP status %q, the README says %d\n%s\noutput:\n%s", ex.line, res[1], ex.status, ex.script, output)
		}
	}
	if t.Failed() {
		t.Logf("whole output:\n%s", out)
	}
}

// moduleRoot is the folder of go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// heraldBinary is $HERALD_BIN, or the herald binary built from this module.
func heraldBinary(t *testing.T, root string) string {
	t.Helper()
	if bin := os.Getenv("HERALD_BIN"); bin != "" {
		return bin
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH (go test puts it there): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "herald")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startREADMEBroker runs the quick start's command (a fresh data dir, a random port, and the
// README's configuration file) and returns the broker's address once it is ready. At the end of
// the test it stops the broker with SIGTERM and checks that it shut down cleanly.
func startREADMEBroker(t *testing.T, bin, config string) string {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfgFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "broker", "--config", cfgFile, "--data-dir", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--fsync", "always", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs bytes.Buffer
	addrc := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs.Write(append(sc.Bytes(), '\n'))
			mu.Unlock()
			var rec struct{ Msg, Listen string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "broker ready" && rec.Listen != "" {
				select {
				case addrc <- rec.Listen:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { <-done; exited <- cmd.Wait() }()
	brokerLogs := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
		cmd.Process.Kill()
		<-exited
	})

	var addr string
	select {
	case addr = <-addrc:
	case err := <-exited:
		stopped = true
		t.Fatalf("herald broker exited before it was ready: %v\n%s", err, brokerLogs())
	case <-time.After(time.Minute):
		t.Fatalf("herald broker not ready after a minute\n%s", brokerLogs())
	}
	eventually(t, 30*time.Second, "/readyz", func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	t.Cleanup(func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("herald broker did not shut down cleanly on SIGTERM: %v\n%s", err, brokerLogs())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("herald broker still running 30s after SIGTERM\n%s", brokerLogs())
		}
	})
	return addr
}
