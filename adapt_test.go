package adaptivethrottle

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the adapt golden files")

// Each testdata/adapt/*.caddyfile adapts to the JSON beside it: the
// directive's order (before reverse_proxy, whatever the file says), its
// matcher, every subdirective and the derived instance names.
func TestAdaptGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfile")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": f})
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) > 0 {
				t.Fatalf("warnings: %v", warnings)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, append(pretty.Bytes(), '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestAdaptGolden -update)", err)
			}
			if got := append(pretty.Bytes(), '\n'); !bytes.Equal(got, want) {
				t.Fatalf("%s adapts to\n%s\nwant\n%s", f, got, want)
			}
		})
	}
}

func TestAdaptErrorNamesFileAndLine(t *testing.T) {
	in := []byte(":8080 {\n\tadaptive_throttle {\n\t\tlatency {\n\t\t\tfactor one\n\t\t}\n\t}\n}\n")
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile.bad"})
	if err == nil || !strings.Contains(err.Error(), "Caddyfile.bad:4") || !strings.Contains(err.Error(), "factor must be a finite number") {
		t.Fatalf("error %v does not name Caddyfile.bad:4 and the problem", err)
	}
}

// adaptErr adapts a Caddyfile that must fail, and returns the error.
func adaptErr(t *testing.T, caddyfile string) string {
	t.Helper()
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile.bad"})
	if err == nil {
		t.Fatalf("adapted:\n%s", caddyfile)
	}
	return err.Error()
}

// A matcher that is not defined fails adapt at the directive's line, not
// with a bare "unrecognized matcher name".
func TestAdaptUndefinedMatcherNamesFileAndLine(t *testing.T) {
	for _, in := range []string{
		":8080 {\n\tadaptive_throttle @nosuch\n\treverse_proxy 127.0.0.1:8000\n}\n",
		":8080 {\n\tadaptive_throttle @nosuch {\n\t\tname llm\n\t}\n}\n",
	} {
		if err := adaptErr(t, in); !strings.Contains(err, "@nosuch") || !strings.HasSuffix(err, ", at Caddyfile.bad:2") {
			t.Errorf("error %q does not name @nosuch at Caddyfile.bad:2", err)
		}
	}
}

// A defined matcher still applies to the route.
func TestAdaptNamedMatcher(t *testing.T) {
	in := []byte(":8080 {\n\t@llm path /v1/*\n\tadaptive_throttle @llm\n\treverse_proxy 127.0.0.1:8000\n}\n")
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"match":[{"path":["/v1/*"]}],"handle":[{"handler":"adaptive_throttle"`) {
		t.Fatalf("the matcher is not on the throttle's route: %s", out)
	}
}

// A bad trusted matcher names its location once, not twice.
func TestAdaptTrustedErrorNamesLocationOnce(t *testing.T) {
	for _, c := range []struct{ matcher, want string }{
		{"remote_ipp 10.0.0.0/8", "module not registered: http.matchers.remote_ipp"},
		{"header", "malformed header matcher"},
	} {
		err := adaptErr(t, ":8080 {\n\tadaptive_throttle {\n\t\tpriority {\n\t\t\ttrusted "+c.matcher+"\n\t\t}\n\t}\n}\n")
		if !strings.Contains(err, "trusted: ") || !strings.Contains(err, c.want) || !strings.HasSuffix(err, ", at Caddyfile.bad:4") || strings.Count(err, ", at ") != 1 {
			t.Errorf("trusted %s: error %q should say %q and end with one \", at Caddyfile.bad:4\"", c.matcher, err, c.want)
		}
	}
}

// throttleNames maps each adaptive_throttle in adapted JSON to its name,
// keyed by its retry_after (which the test sets apart for each).
func throttleNames(t *testing.T, out []byte) map[string]string {
	t.Helper()
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "adaptive_throttle" {
				names[fmt.Sprint(v["retry_after"])], _ = v["name"].(string)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(cfg)
	return names
}

// The n-th unnamed handler in the Caddyfile is default-n (the first plain
// default) however many named ones come before or between them, so adding
// a named handler renames none of the unnamed ones.
func TestAdaptUnnamedHandlersNumberedStably(t *testing.T) {
	in := []byte(`:8080 {
	adaptive_throttle /a/* {
		name llm-main
		retry_after 1s
	}
	adaptive_throttle /b/* {
		name llm-big
		retry_after 2s
	}
	adaptive_throttle /c/* {
		retry_after 3s
	}
	adaptive_throttle /d/* {
		retry_after 4s
	}
	reverse_proxy 127.0.0.1:8000
}
:8081 {
	adaptive_throttle {
		retry_after 5s
	}
	adaptive_throttle /f/* {
		name llm-small
		retry_after 6s
	}
	reverse_proxy 127.0.0.1:8001
}
`)
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	got := throttleNames(t, out)
	want := map[string]string{}
	for i, name := range []string{"llm-main", "llm-big", "default", "default-2", "default-3", "llm-small"} {
		want[fmt.Sprint(float64(i+1)*1e9)] = name // retry_after in nanoseconds
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("names by retry_after (ns): %v, want %v", got, want)
	}
}

// Handlers that share a name share one learned state: with other settings
// they would overwrite each other on every reload, so adapt refuses them,
// naming both places; the same settings twice are fine.
func TestAdaptSameNameOtherSettings(t *testing.T) {
	site := func(second string) string {
		return ":8080 {\n\tadaptive_throttle {\n\t\tname llm\n\t\tqps {\n\t\t\tsigma 3\n\t\t}\n\t}\n\trespond a\n}\n:8081 {\n" +
			second + "\trespond b\n}\n"
	}
	got := adaptErr(t, site("\tadaptive_throttle {\n\t\tname llm\n\t}\n"))
	if want := `adaptive_throttle "llm" is configured at Caddyfile.bad:2 with other settings: handlers that share a name share one learned state and must agree; give this one its own name, at Caddyfile.bad:11`; !strings.HasSuffix(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	same := site("\tadaptive_throttle {\n\t\tname llm\n\t\tqps {\n\t\t\tsigma 3\n\t\t}\n\t}\n")
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(same), map[string]any{"filename": "Caddyfile"}); err != nil {
		t.Fatalf("the same settings under one name: %v", err)
	}
}
