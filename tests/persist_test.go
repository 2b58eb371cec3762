package tests

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// A restart keeps what was learned: a throttle that learned a QPS baseline,
// a latency floor and a concurrency limit writes them to Caddy's storage
// when Caddy unloads it; started again, it shows them restored in status
// and trips at once on a surge far above the restored baseline, where a
// fresh instance, still warming up, lets the same surge through.
func TestRestartKeepsWhatWasLearned(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{Slots: 64})
	dir := t.TempDir()
	global := "storage file_system " + dir
	handler := func(name string) string {
		return `adaptive_throttle {
			name ` + name + `
			qps {
				warmup 5
			}
			gpu off
		}
		reverse_proxy ` + addr
	}
	learning := `http://localhost:9080 {
	route {
		` + handler("restart") + `
	}
}`
	tc := startWith(t, global, learning)
	stop := lightTraffic(t, tc.Client, 10)
	eventually(t, 20*time.Second, "a learned baseline, floor and limit", func() bool {
		st := status(t, "restart")
		return st.Levels.QPS.LearnedS >= 6 && st.Levels.QPS.Threshold > 0 && st.Levels.Latency.FloorS > 0 && st.Admission.LongS > 0
	})
	stop()
	before := status(t, "restart")
	if before.Restored != nil {
		t.Fatalf("restored before any restart: %+v", before.Restored)
	}

	// Caddy unloads the handler: its last Cleanup writes the state.
	startWith(t, global, `http://localhost:9080 {
	respond "down for maintenance" 503
}`)
	file := filepath.Join(dir, "adaptive_throttle", "restart.json")
	var doc struct {
		Version int
		Name    string
		QPS     struct{ Rates []float64 }
	}
	eventually(t, 5*time.Second, "the state written to "+file, func() bool {
		b, err := os.ReadFile(file)
		return err == nil && json.Unmarshal(b, &doc) == nil
	})
	if doc.Version != 2 || doc.Name != "restart" || len(doc.QPS.Rates) < before.Levels.QPS.LearnedS {
		t.Fatalf("stored document %+v, want version 2 of name restart with %d s of rates", doc, before.Levels.QPS.LearnedS)
	}

	// Started again, next to a fresh instance that never learned anything.
	tc = startWith(t, global, `http://localhost:9080 {
	@fresh header X-Instance fresh
	handle @fresh {
		`+handler("restart-fresh")+`
	}
	handle {
		`+handler("restart")+`
	}
}`)
	st := status(t, "restart")
	r := st.Restored
	if r == nil || !slices.Equal(r.Parts, []string{"qps", "latency", "concurrency"}) || r.AgeS > 60 {
		t.Fatalf("restored %+v, want qps, latency and concurrency, seconds old", r)
	}
	if q := st.Levels.QPS; q.LearnedS < before.Levels.QPS.LearnedS || q.Baseline != before.Levels.QPS.Baseline {
		t.Fatalf("qps after the restart %+v, want the baseline learned before %+v", q, before.Levels.QPS)
	}
	if st.Admission.LongS != before.Admission.LongS || st.Admission.Driver != "restored" {
		t.Fatalf("admission after the restart %+v, want ttfb_long_s %v restored", st.Admission.LimitStatus, before.Admission.LongS)
	}
	if f := status(t, "restart-fresh"); f.Restored != nil || f.Levels.QPS.Threshold != 0 {
		t.Fatalf("the fresh instance has something learned: %+v %+v", f.Restored, f.Levels.QPS)
	}
	t.Logf("restored %v, %.0f s old: baseline %.1f req/s, threshold %.1f, limit %d",
		r.Parts, r.AgeS, st.Levels.QPS.Baseline, st.Levels.QPS.Threshold, st.Admission.Limit)

	// The same surge, 80 requests at once, at each instance.
	surge := func(instance string) time.Time {
		began := time.Now()
		var wg sync.WaitGroup
		for range 80 {
			wg.Go(func() {
				req, _ := http.NewRequest("POST", siteURL+"/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
				req.Header.Set("X-Priority", "low")
				if instance != "" {
					req.Header.Set("X-Instance", instance)
				}
				if resp, err := tc.Client.Do(req); err == nil {
					drain(t, resp)
				}
			})
		}
		wg.Wait()
		return began
	}
	began := surge("")
	eventually(t, 2*time.Second, "the restored instance tripped by the surge", func() bool { return status(t, "restart").Levels.QPS.Tripped })
	t.Logf("restored instance tripped %v after the surge began: %s", time.Since(began).Round(10*time.Millisecond), status(t, "restart").Levels.QPS.LastReason)
	if !status(t, "restart").Shedding {
		t.Fatal("tripped but not shedding")
	}

	surge("fresh")
	time.Sleep(1500 * time.Millisecond)
	if f := status(t, "restart-fresh").Levels.QPS; f.Tripped || f.Threshold != 0 {
		t.Fatalf("the fresh instance judged the surge: %+v (the test shows nothing)", f)
	}
}
