package adaptivethrottle

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/levels/gpu"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// gpuOff is a running throttle with the GPU level off, closed at the end of
// the test.
func gpuOff(tb testing.TB, name string) *throttle.Throttle {
	tb.Helper()
	th, err := throttle.New(throttle.WithName(name), throttle.WithConfig(throttle.Config{GPU: gpu.Config{Source: "off"}}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = th.Close() })
	return th
}

// The status answer stays bounded however many instances a config has.
func TestStatusIsBounded(t *testing.T) {
	const n = maxInstancesShown + 44
	for i := range n {
		name := fmt.Sprintf("bounded-%03d", i)
		instances.LoadOrStore(name, pooled{gpuOff(t, name)})
		t.Cleanup(func() { instances.Delete(name) })
	}
	w := httptest.NewRecorder()
	if err := (adminAPI{}).handleStatus(w, httptest.NewRequest(http.MethodGet, "/throttle/status", nil)); err != nil {
		t.Fatal(err)
	}
	var resp statusResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Instances) != maxInstancesShown || !resp.Truncated {
		t.Fatalf("%d instances shown (truncated %v) of %d", len(resp.Instances), resp.Truncated, n)
	}
	if perInstance := w.Body.Len() / maxInstancesShown; perInstance > 4096 {
		t.Fatalf("%d bytes per instance", perInstance)
	}
	if resp.Instances[0].Instance != "bounded-000" {
		t.Fatalf("not sorted by name: %s first", resp.Instances[0].Instance)
	}
}

// Status reads as figures, not as float noise: durations and ratios are
// rounded to four decimals.
func TestStatusRoundsItsFigures(t *testing.T) {
	in := gpuOff(t, "rounded")
	now := time.Unix(1_800_000_000, 0)
	if err := in.SetOverride("shed", now, now.Add(10*time.Minute+123456789*time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	st := in.Status(now)
	if st.Override == nil || st.Override.ExpiresInS != 600.1235 {
		t.Fatalf("override expires in %+v, want 600.1235 s", st.Override)
	}
}
