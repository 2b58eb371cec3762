package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Poll is one look, once a second, at the upstream and the throttle.
type Poll struct {
	T        float64        `json:"t"` // seconds from the start of the run
	Upstream *UpstreamState `json:"upstream,omitempty"`
	Throttle *ThrottleState `json:"throttle,omitempty"`
}

// UpstreamState is the part of llmsim's /admin/state the lab plots.
type UpstreamState struct {
	Slots        int     `json:"slots"`
	Running      int     `json:"running"`
	Waiting      int     `json:"waiting"`
	MemoryUsed   int64   `json:"memory_used_bytes"`
	MemoryTotal  int64   `json:"memory_total_bytes"`
	KVCacheUsage float64 `json:"kv_cache_usage"`
	OOMs         int64   `json:"ooms"`
	Served       int64   `json:"served"`
	CapacityRPS  float64 `json:"capacity_rps"`
}

// MemoryRatio is GPU memory in use over total.
func (u UpstreamState) MemoryRatio() float64 {
	if u.MemoryTotal <= 0 {
		return 0
	}
	return float64(u.MemoryUsed) / float64(u.MemoryTotal)
}

// ThrottleState is the part of adaptive_throttle's /throttle/status (one
// instance) the lab needs. It mirrors that JSON rather than importing the
// module, so the generator stays free of Caddy.
type ThrottleState struct {
	Name     string         `json:"name"`
	Shedding bool           `json:"shedding"`
	Override *OverrideState `json:"override,omitempty"` // null unless an operator forced a state
	// Admission is the concurrency limit on requests in flight.
	Admission struct {
		Limit    int   `json:"limit"`
		InFlight int64 `json:"in_flight"`
	} `json:"admission"`
	Levels struct {
		QPS     QPSLevelState `json:"qps"`
		GPU     LevelState    `json:"gpu"`
		Latency LevelState    `json:"latency"`
	} `json:"levels"`
	Circuit struct {
		State string `json:"state"`
		Opens uint64 `json:"opens"`
	} `json:"circuit"`
	Priorities struct {
		High struct {
			Reserve int    `json:"reserve"`
			InUse   int    `json:"in_use"`
			Passed  uint64 `json:"passed"`
			Shed    uint64 `json:"shed"`
		} `json:"high"`
		Medium struct {
			Rate   float64 `json:"rate"`
			Passed uint64  `json:"passed"`
			Shed   uint64  `json:"shed"`
		} `json:"medium"`
		Low struct {
			Passed uint64 `json:"passed"`
			Shed   uint64 `json:"shed"`
		} `json:"low"`
	} `json:"priorities"`
}

// LevelState is one level of the throttle.
type LevelState struct {
	Value       float64 `json:"value"`
	Threshold   float64 `json:"threshold"`
	Tripped     bool    `json:"tripped"`
	Transitions uint64  `json:"transitions"`
}

// QPSLevelState is the qps level, with what it learned of the normal rate.
type QPSLevelState struct {
	LevelState
	Baseline float64 `json:"baseline"`  // 0 while warming up
	LearnedS int     `json:"learned_s"` // seconds of history in the baseline
	Learning bool    `json:"learning"`  // false while shedding: the baseline is frozen
}

// OverrideState is an operator's forced state (POST /throttle/override).
type OverrideState struct {
	State string `json:"state"`
}

// Tripped names the levels tripped, plus "circuit" when it is not closed.
func (t ThrottleState) Tripped() []string {
	var out []string
	if t.Levels.QPS.Tripped {
		out = append(out, "qps")
	}
	if t.Levels.GPU.Tripped {
		out = append(out, "gpu")
	}
	if t.Levels.Latency.Tripped {
		out = append(out, "latency")
	}
	if t.Circuit.State != "" && t.Circuit.State != "closed" {
		out = append(out, "circuit")
	}
	return out
}

// Transitions sums the levels' trip and recover transitions.
func (t ThrottleState) Transitions() uint64 {
	return t.Levels.QPS.Transitions + t.Levels.GPU.Transitions + t.Levels.Latency.Transitions
}

// maxPollBody bounds a status answer.
const maxPollBody = 1 << 20

// getJSON fetches url into v within timeout.
func getJSON(ctx context.Context, c *http.Client, url string, timeout time.Duration, v any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPollBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.Unmarshal(body, v)
}

// pollUpstream reads llmsim's /admin/state.
func pollUpstream(ctx context.Context, c *http.Client, base string) (*UpstreamState, error) {
	var u UpstreamState
	if err := getJSON(ctx, c, base+"/admin/state", 900*time.Millisecond, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// pollThrottle reads /throttle/status and picks the named instance, or the
// first when name is empty.
func pollThrottle(ctx context.Context, c *http.Client, url, name string) (*ThrottleState, error) {
	var resp struct {
		Instances []ThrottleState `json:"instances"`
	}
	if err := getJSON(ctx, c, url, 900*time.Millisecond, &resp); err != nil {
		return nil, err
	}
	for i := range resp.Instances {
		if name == "" || resp.Instances[i].Name == name {
			return &resp.Instances[i], nil
		}
	}
	return nil, fmt.Errorf("GET %s: no instance %q among %d", url, name, len(resp.Instances))
}
