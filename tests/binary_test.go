package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// caddyBinary returns the Caddy binary to test: $CADDY_BIN (test.sh points
// it at the xcaddy build), else one built here from ./cmd/caddy, which
// links the same modules.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("CADDY_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/caddy").CombinedOutput()
	if err != nil {
		t.Fatalf("building caddy: %v\n%s", err, out)
	}
	return bin
}

func runCaddy(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The built binary: lists both modules, adapts the example, and refuses a
// bad Caddyfile naming the file and line.
func TestBinary(t *testing.T) {
	bin := caddyBinary(t)

	out, err := runCaddy(t, bin, "list-modules", "--skip-standard")
	if err != nil || !strings.Contains(out, "http.handlers.adaptive_throttle") || !strings.Contains(out, "admin.api.adaptive_throttle") {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}

	if out, err := runCaddy(t, bin, "validate", "--config", "../Caddyfile.example", "--adapter", "caddyfile"); err != nil {
		t.Fatalf("Caddyfile.example does not validate: %v\n%s", err, out)
	}

	bad := filepath.Join(t.TempDir(), "Caddyfile.bad")
	os.WriteFile(bad, []byte(":8080 {\n\tadaptive_throttle {\n\t\tgpu {\n\t\t\tthreshold lots\n\t\t}\n\t}\n\treverse_proxy 127.0.0.1:8000\n}\n"), 0o644)
	out, err = runCaddy(t, bin, "adapt", "--config", bad)
	if err == nil || !strings.Contains(out, bad+":4") || !strings.Contains(out, "threshold") {
		t.Fatalf("adapt of a bad Caddyfile: err %v, output does not name %s:4:\n%s", err, bad, out)
	}
}

// The binary serves: a request through it reaches the upstream and the
// admin API shows the three levels and the circuit.
func TestBinaryServes(t *testing.T) {
	bin := caddyBinary(t)
	_, addr := upstream(t, llmsim.Config{})
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(cfg, []byte(`{
	admin localhost:2998
	persist_config off
}
http://localhost:9081 {
	adaptive_throttle {
		gpu off
	}
	reverse_proxy `+addr+`
}
`), 0o644)
	cmd := exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	var st struct {
		Instances []map[string]json.RawMessage
	}
	eventually(t, 20*time.Second, "the binary's admin API", func() bool {
		resp, err := http.Get("http://localhost:2998/throttle/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
	})
	if len(st.Instances) != 1 {
		t.Fatalf("status: %+v\n%s", st, logs.String())
	}
	var levels map[string]map[string]any
	json.Unmarshal(st.Instances[0]["levels"], &levels)
	for _, l := range []string{"qps", "gpu", "latency"} {
		if _, ok := levels[l]["tripped"]; !ok {
			t.Fatalf("level %s missing from status: %s", l, st.Instances[0]["levels"])
		}
	}
	if !strings.Contains(string(st.Instances[0]["circuit"]), `"state":"closed"`) {
		t.Fatalf("circuit: %s", st.Instances[0]["circuit"])
	}
	resp, err := http.Post("http://localhost:9081/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body := drain(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, "chat.completion") {
		t.Fatalf("through the binary: %d %s", resp.StatusCode, body)
	}
}
