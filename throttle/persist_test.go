package throttle

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/levels/latency"
	"github.com/ai-guardian/adaptivethrottle/levels/qps"
)

// learned returns a throttle that has run 40 s at 10 req/s with 100 ms
// first bytes: a QPS baseline, a latency history and floor, a limit.
func learned(t *testing.T, c Config) (*Throttle, time.Time) {
	th := testThrottle(t, c)
	now := time.Unix(100000, 0)
	th.step(now, true)
	for range 40 {
		arrive(th, 10)
		for i := range 10 {
			th.latency.Record(100*time.Millisecond, uint32(i))
			th.firstBytes.add(uint32(i), int64(100*time.Millisecond))
		}
		now = now.Add(time.Second)
		th.step(now, true)
	}
	return th, now
}

// The document a restart keeps, taken back by a throttle of the same name:
// every part restored, status says so with the age, and a surge trips the
// QPS level within two seconds where a fresh throttle, warming up, lets it
// through.
func TestSnapshotRestoreRoundTrip(t *testing.T) {
	cfg := Config{Latency: latency.Config{Window: config.Duration(2 * time.Second)}}
	old, now := learned(t, cfg)
	data, err := old.Snapshot(now)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil || doc["version"] != float64(SnapshotVersion) || doc["name"] != "test" {
		t.Fatalf("document %s: %v", data, err)
	}
	for _, part := range []string{"qps", "latency", "concurrency", "saved_at"} {
		if doc[part] == nil {
			t.Fatalf("document %s has no %s", data, part)
		}
	}

	later := now.Add(5 * time.Minute)
	th, fresh := testThrottle(t, cfg), testThrottle(t, cfg)
	if st := th.Status(later); st.Restored != nil {
		t.Fatalf("restored before any Restore: %+v", st.Restored)
	}
	info, err := th.Restore(data, later, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if info.Age != 5*time.Minute || !reflect.DeepEqual(info.Parts, []string{"qps", "latency", "concurrency"}) || info.Skipped != nil {
		t.Fatalf("restore info %+v", info)
	}
	st, was := th.Status(later), old.Status(now)
	if st.Restored == nil || st.Restored.AgeS != 300 || len(st.Restored.Parts) != 3 {
		t.Fatalf("status restored %+v", st.Restored)
	}
	if st.Levels.QPS.Baseline != was.Levels.QPS.Baseline || st.Levels.QPS.LearnedS != was.Levels.QPS.LearnedS ||
		st.Levels.Latency.HistoryMeanS != was.Levels.Latency.HistoryMeanS ||
		st.Admission.Limit != was.Admission.Limit || st.Admission.LongS != was.Admission.LongS || th.gate.Limit() != was.Admission.Limit {
		t.Fatalf("restored status\n %+v\n %+v\nwant what was learned\n %+v\n %+v", st.Levels, st.Admission, was.Levels, was.Admission)
	}

	th.step(later, true)
	fresh.step(later, true)
	for range 2 {
		arrive(th, 50)
		arrive(fresh, 50)
		later = later.Add(time.Second)
		th.step(later, true)
		fresh.step(later, true)
	}
	if !th.shedding(later) || th.Status(later).Levels.QPS.Tripped != true {
		t.Fatalf("restored throttle not shedding on 50 req/s against a baseline of %v", was.Levels.QPS.Baseline)
	}
	if fresh.shedding(later) {
		t.Fatal("a fresh throttle shed during its warm-up: the test shows nothing")
	}
}

// A part whose settings changed is skipped, saying why; the others are
// restored.
func TestRestoreSkipsChangedParts(t *testing.T) {
	old, now := learned(t, Config{Latency: latency.Config{Window: config.Duration(2 * time.Second)}})
	data, _ := old.Snapshot(now)
	th := testThrottle(t, Config{QPS: qps.Config{Window: config.Duration(time.Minute)}, Latency: latency.Config{Window: config.Duration(2 * time.Second), Percentile: 95}})
	info, err := th.Restore(data, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(info.Parts, []string{"concurrency"}) ||
		info.Skipped["qps"] != "qps window 300 s in storage, 60 s configured" ||
		info.Skipped["latency"] != "latency percentile 99 in storage, 95 configured" {
		t.Fatalf("restore info %+v", info)
	}
	if st := th.Status(now); st.Levels.QPS.LearnedS != 0 || st.Restored.Skipped["qps"] == "" {
		t.Fatalf("status after a skipped qps part: %+v, restored %+v", st.Levels.QPS, st.Restored)
	}
}

// Data that is no snapshot of this throttle changes nothing and is an
// error the caller logs.
func TestRestoreRefusesForeignData(t *testing.T) {
	old, now := learned(t, Config{})
	data, _ := old.Snapshot(now)
	edit := func(f func(map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(data, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, c := range []struct {
		name string
		data []byte
		at   time.Time
		want string
	}{
		{"bad JSON", []byte(`{"version":1,`), now, "no JSON snapshot"},
		{"not an object", []byte(`[1,2]`), now, "no JSON snapshot"},
		{"a wrong type", edit(func(m map[string]any) { m["qps"] = "lots" }), now, "no JSON snapshot"},
		{"another version", edit(func(m map[string]any) { m["version"] = 1 }), now, "version 1, want 2"},
		{"no version", edit(func(m map[string]any) { delete(m, "version") }), now, "version 0, want 2"},
		{"another name", edit(func(m map[string]any) { m["name"] = "other" }), now, `name "other", not "test"`},
		{"no time", edit(func(m map[string]any) { delete(m, "saved_at") }), now, "no saved_at"},
		{"too old", data, now.Add(2 * time.Hour), "too old: saved 2h0m0s ago, max_age 1h0m0s"},
		{"from the future", data, now.Add(-time.Hour), "in the future"},
		{"a bad part", edit(func(m map[string]any) { m["concurrency"] = map[string]any{"limit": -3, "ttfb_long_s": 1} }), now, ""},
	} {
		th := testThrottle(t, Config{})
		info, err := th.Restore(c.data, c.at, time.Hour)
		if c.want == "" { // a part that fails its own checks is skipped, the rest restored
			if err != nil || info.Skipped["concurrency"] == "" || len(info.Parts) != 2 {
				t.Errorf("%s: %+v, %v", c.name, info, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
		if st := th.Status(now); st.Restored != nil || st.Levels.QPS.LearnedS != 0 {
			t.Errorf("%s: refused data changed the throttle: %+v", c.name, st.Levels.QPS)
		}
	}
	th := testThrottle(t, Config{})
	if _, err := th.Restore(data, now.Add(2*time.Hour), time.Hour); !errors.Is(err, ErrTooOld) {
		t.Fatalf("too old: %v, want ErrTooOld", err)
	}
}
