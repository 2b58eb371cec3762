package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/ai-guardian/adaptivethrottle/priority"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// A plain net/http server protected by the engine; the README shows it.
func ExampleThrottle_Middleware() {
	upstream := http.NotFoundHandler() // your model server's proxy
	t, err := throttle.New(throttle.WithName("llm"), throttle.WithGPUSource("nvidia-smi"))
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()
	log.Fatal(http.ListenAndServe("127.0.0.1:8090", t.Middleware("X-Priority", upstream)))
}

// A caller that is no HTTP handler asks for a slot and gives it back with
// the outcome; the README shows it.
func ExampleThrottle_Allow() {
	t, err := throttle.New(throttle.WithName("batch"), throttle.WithGPUSource("off"))
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()

	d, err := t.Allow(context.Background(), priority.High)
	var refused *throttle.Refusal
	if errors.As(err, &refused) {
		fmt.Println("refused, retry in", refused.RetryAfter, "s")
		return
	}
	status := 200 // call the model here
	t.Finish(&d, throttle.Outcome{Status: status})
	fmt.Println("served")
	// Output: served
}

// TestReadmeGoBlocksAreExamples holds the README's Go blocks to the
// examples above, so the README shows code that compiles and runs: each
// block must be a run of consecutive lines of this file, one tab less
// indented (the examples' bodies).
func TestReadmeGoBlocksAreExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var body []string
	for _, l := range strings.Split(string(self), "\n") {
		body = append(body, strings.TrimPrefix(l, "\t"))
	}
	src := "\n" + strings.Join(body, "\n") + "\n"
	blocks := strings.Split(string(readme), "```go\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("the README has no Go block")
	}
	for _, b := range blocks {
		code, _, ok := strings.Cut(b, "```")
		if !ok {
			t.Fatalf("unterminated Go block: %.60q", b)
		}
		if !strings.Contains(src, "\n"+code) {
			t.Errorf("README Go block is not in example_test.go:\n%s", code)
		}
	}
}
