package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// curlCall is one curl line of the README: what it sends, and the output
// the README shows after it (empty when none).
type curlCall struct {
	line, method, url, body, contentType, output string
}

// shellWords splits a command line on blanks, honouring single quotes (all
// the README's curl lines use).
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	in, inWord := false, false
	for _, c := range line {
		switch {
		case c == '\'':
			in, inWord = !in, true
		case (c == ' ' || c == '\t') && !in:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if in {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// readmeCurls returns the curl calls of the README's fenced sh block that
// contains marker.
func readmeCurls(t *testing.T, marker string) []curlCall {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(raw), "```")
	for i := 1; i < len(blocks); i += 2 {
		block, ok := strings.CutPrefix(blocks[i], "sh\n")
		if !ok || !strings.Contains(block, marker) {
			continue
		}
		var calls []curlCall
		for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
			if !strings.HasPrefix(line, "curl ") {
				if len(calls) == 0 {
					t.Fatalf("README block %q: output %q before any command", marker, line)
				}
				calls[len(calls)-1].output += line
				continue
			}
			c := curlCall{line: line, method: "GET"}
			w := shellWords(t, line)[1:]
			for j := 0; j < len(w); j++ {
				switch w[j] {
				case "-X":
					j++
					c.method = w[j]
				case "-H":
					j++
					k, v, _ := strings.Cut(w[j], ":")
					if !strings.EqualFold(k, "Content-Type") {
						t.Fatalf("%q: header %q not understood here", line, w[j])
					}
					c.contentType = strings.TrimSpace(v)
				case "-d":
					j++
					c.body = w[j]
				default:
					if strings.HasPrefix(w[j], "-") || c.url != "" {
						t.Fatalf("%q: %q not understood here", line, w[j])
					}
					c.url = w[j]
				}
			}
			if c.body != "" && c.method == "GET" {
				c.method = "POST" // as curl does
			}
			calls = append(calls, c)
		}
		return calls
	}
	t.Fatalf("README has no sh block with %q", marker)
	return nil
}

// The README's /config/ example works as written against the shipped
// Caddyfile.example, run by the built binary: the same paths, the same
// bodies, the output it shows. Only the ports differ (the admin endpoint
// and site move off 2019 and 8080, which ./run.sh may hold).
func TestReadmeConfigAPIExample(t *testing.T) {
	calls := readmeCurls(t, "/config/apps/http/servers/")
	if len(calls) < 2 {
		t.Fatalf("README's /config/ example: %d curl lines", len(calls))
	}
	const admin = "localhost:2997"
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(example)
	for _, r := range []struct{ from, to string }{{"admin localhost:2019", "admin " + admin}, {"\n:8080 {", "\n:9082 {"}} {
		if !strings.Contains(cfg, r.from) {
			t.Fatalf("Caddyfile.example has no %q", r.from)
		}
		cfg = strings.Replace(cfg, r.from, r.to, 1)
	}
	path := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(path, []byte(cfg), 0o644)

	_, addr := upstream(t, llmsim.Config{})
	cmd := exec.Command(caddyBinary(t), "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir(), "UPSTREAM="+addr,
		"PATH=/nonexistent") // gpu source auto: no nvidia-smi, so off
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("caddy log:\n%s", logs.String())
		}
	})
	eventually(t, 20*time.Second, "the binary's admin API", func() bool {
		resp, err := http.Get("http://" + admin + "/throttle/status?name=llm-main")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	for _, c := range calls {
		u, ok := strings.CutPrefix(c.url, "localhost:2019/")
		if !ok {
			t.Fatalf("%q: not the admin endpoint localhost:2019", c.line)
		}
		req, _ := http.NewRequest(c.method, "http://"+admin+"/"+u, strings.NewReader(c.body))
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.line, resp.StatusCode, b)
		}
		if c.output != "" {
			var got, want any
			if json.Unmarshal(b, &got) != nil || json.Unmarshal([]byte(c.output), &want) != nil || !jsonEqual(got, want) {
				t.Fatalf("%s: answered %s, the README shows %s", c.line, bytes.TrimSpace(b), c.output)
			}
		}
	}
	// The changed config is live and the throttle the same instance.
	resp, err := http.Get("http://" + admin + "/throttle/status?name=llm-main")
	if err != nil {
		t.Fatal(err)
	}
	if body := drain(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status after the changes: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post("http://localhost:9082/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if body := drain(t, resp); resp.StatusCode != 200 {
		t.Fatalf("a request after the changes: %d %s", resp.StatusCode, body)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// ./run.sh keeps Caddy's storage (what the module learns) in the
// checkout's own folder, so that a demo never restores another checkout's
// state, and the README says where and how to start clean.
func TestRunShKeepsItsOwnStorage(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var exports []string
	for _, line := range strings.Split(string(script), "\n") {
		if strings.HasPrefix(line, "export XDG_") {
			exports = append(exports, line)
		}
	}
	if len(exports) == 0 {
		t.Fatal("run.sh sets no XDG_DATA_HOME: Caddy's storage is the user's ~/.local/share/caddy, shared by every checkout")
	}
	// The environment run.sh gives Caddy, as bash sets it from the checkout.
	cmd := exec.Command("bash", "-c", strings.Join(exports, "\n")+"\nprintf '%s\\n' \"$XDG_DATA_HOME\"")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run.sh's exports: %v", err)
	}
	t.Setenv("XDG_DATA_HOME", strings.TrimSpace(string(out)))
	if got, want := caddy.AppDataDir(), filepath.Join(root, ".tmp", "data", "caddy"); got != want {
		t.Fatalf("run.sh's Caddy stores in %s, want the checkout's %s", got, want)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"`.tmp/data/caddy/adaptive_throttle/`", "`rm -rf .tmp/data`"} {
		if !bytes.Contains(readme, []byte(want)) {
			t.Errorf("README does not say %s: where run.sh keeps its state and how to start clean", want)
		}
	}
	if !bytes.Contains(script, []byte(".tmp/data/caddy/adaptive_throttle/ (rm -rf .tmp/data to start clean)")) {
		t.Error("run.sh does not tell where its state is and how to start clean")
	}
}
