package adaptivethrottle

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// memStore is a storage in memory; err fails every call, hang holds Store
// until released.
type memStore struct {
	mu   sync.Mutex
	data map[string][]byte
	err  error
	hang chan struct{}
}

func (m *memStore) Store(_ context.Context, key string, value []byte) error {
	if m.hang != nil {
		<-m.hang
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if m.data == nil {
		m.data = map[string][]byte{}
	}
	m.data[key] = value
	return nil
}

func (m *memStore) Load(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	v, ok := m.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

// The state written when the last reference goes is what a new throttle
// of the name takes back, and the log says so with its age; what is not
// there, or not a snapshot of this throttle, starts it fresh with a line
// in the log, never an error.
func TestPersisterWritesAndRestores(t *testing.T) {
	// Ten seconds learned at 8 req/s, as a throttle of the name kept them.
	doc := `{"version":2,"name":"persisted","saved_at":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano) +
		`","qps":{"window_s":300,"rates":[8,8,8,8,8,8,8,8,8,8]}}`
	st := &memStore{data: map[string][]byte{"adaptive_throttle/persisted.json": []byte(doc)}}
	logger, logs := observed()
	a := gpuOff(t, "persisted")
	restore(a, st, time.Hour, logger)
	if n := logs.FilterMessageSnippet("restored from storage, age 60 s").Len(); n != 1 {
		t.Fatalf("%d restore lines; log %v", n, logs.All())
	}
	delete(st.data, "adaptive_throttle/persisted.json")
	p := newPersister(a, st, logger, storageTimeout)
	p.close()
	if _, ok := st.data["adaptive_throttle/persisted.json"]; !ok {
		t.Fatalf("nothing written at close: %v", st.data)
	}

	b := gpuOff(t, "persisted")
	restore(b, st, time.Hour, logger)
	if s := b.Status(time.Now()); s.Restored == nil || s.Levels.QPS.LearnedS != 10 || s.Restored.Parts[0] != "qps" {
		t.Fatalf("not restored: %+v; log %v", s.Restored, logs.All())
	}
	if n := logs.FilterMessageSnippet("restored from storage, age 0 s").Len(); n != 1 {
		t.Fatalf("%d restore lines; log %v", n, logs.All())
	}

	for _, c := range []struct {
		name, data, level, msg string
	}{
		{"missing", "", "debug", "nothing stored to restore"},
		{"corrupt", `{"version":`, "warn", "stored state ignored"},
		{"foreign", `{"version":2,"name":"someone-else","saved_at":"2026-01-01T00:00:00Z"}`, "warn", "stored state ignored"},
		{"old", `{"version":7}`, "warn", "stored state ignored"},
		{"too old", `{"version":2,"name":"fresh","saved_at":"2001-01-01T00:00:00Z"}`, "info", "stored state not restored"},
	} {
		st := &memStore{data: map[string][]byte{}}
		if c.data != "" {
			st.data[storageKey("fresh")] = []byte(c.data)
		}
		logger, logs := observed()
		th := gpuOff(t, "fresh")
		restore(th, st, time.Hour, logger)
		if th.Status(time.Now()).Restored != nil {
			t.Errorf("%s: restored", c.name)
		}
		if e := logs.All(); len(e) != 1 || e[0].Level.String() != c.level || e[0].Message != c.msg {
			t.Errorf("%s: log %v, want one %s line %q", c.name, e, c.level, c.msg)
		}
	}
	// A storage that cannot be read is a warning too.
	logger, logs = observed()
	restore(gpuOff(t, "fresh"), &memStore{err: errors.New("disk on fire")}, time.Hour, logger)
	if e := logs.All(); len(e) != 1 || !strings.Contains(e[0].Message, "cannot read") {
		t.Errorf("unreadable storage: log %v", e)
	}
}

// A storage that fails is warned about once a minute, with the count of
// failures; one that hangs holds a Cleanup up for storageTimeout at most.
func TestPersisterStorageFailures(t *testing.T) {
	logger, logs := observed()
	th := gpuOff(t, "failing")
	p := newPersister(th, &memStore{err: errors.New("read-only file system")}, logger, storageTimeout)
	for range 3 {
		p.save()
	}
	if e := logs.FilterMessage("cannot write the learned state to storage").All(); len(e) != 1 {
		t.Fatalf("%d warnings for 3 failures in a row, want 1", len(e))
	}
	p.mu.Lock()
	failed := p.failed
	p.warned = time.Now().Add(-warnEvery)
	p.mu.Unlock()
	p.save()
	e := logs.FilterMessage("cannot write the learned state to storage").All()
	if failed != 2 || len(e) != 2 || e[1].ContextMap()["failures"] != int64(3) {
		t.Fatalf("after a minute: %d warnings (%v), %d failures held back, want 2 and 2", len(e), e, failed)
	}
	p.close()

	hang := make(chan struct{})
	defer close(hang)
	p = newPersister(gpuOff(t, "hanging"), &memStore{hang: hang}, logger, 100*time.Millisecond)
	start := time.Now()
	p.close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("close waited %v on a hanging storage", d)
	}
	if logs.FilterMessageSnippet("did not take the learned state in time").Len() != 1 {
		t.Fatalf("no warning for a hanging storage: %v", logs.All())
	}
}

// Caddyfile.example's global options say where the throttle's learned
// state is kept (the storage key persist writes, by default), not that
// nothing is persisted beside persist_config off.
func TestExampleSaysWhereStateIsKept(t *testing.T) {
	raw, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	example := string(raw)
	global, _, _ := strings.Cut(example, "\n}\n")
	if !strings.Contains(global, "persist_config off") {
		t.Fatal("Caddyfile.example's global options lost persist_config off; adjust this test")
	}
	if strings.Contains(strings.ToLower(global), "nothing needs persisting") {
		t.Error("Caddyfile.example says nothing needs persisting, but each instance persists what it learned by default")
	}
	if key := strings.Replace(storageKey("NAME"), "NAME", "<name>", 1); !strings.Contains(global, key) {
		t.Errorf("Caddyfile.example's global options do not say where learned state is kept (%s)", key)
	}
}
