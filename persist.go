package adaptivethrottle

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/config"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

// PersistConfig is the `persist` block: whether what was learned is kept
// in Caddy's storage across restarts, and how old a stored state may be to
// be taken back.
type PersistConfig struct {
	// Off keeps nothing: no state is read at start nor written.
	Off bool `json:"off,omitempty"`
	// A stored state older than this is not restored. Default 1h; at most
	// MaxPersistMaxAge.
	MaxAge config.Duration `json:"max_age,omitempty"`

	config.Zeros // the keys written as 0: refused
}

// DefaultPersistMaxAge is how old a stored state may be to be restored;
// MaxPersistMaxAge bounds it: a month-old load says nothing of today's.
const (
	DefaultPersistMaxAge = time.Hour
	MaxPersistMaxAge     = 30 * 24 * time.Hour
)

// Validate names the key of a bad value, and the bound of one too large.
func (c *PersistConfig) Validate() error {
	if c == nil {
		return nil
	}
	if c.MaxAge < 0 || c.Has("max_age") {
		return config.Errorf("persist", "max_age", "must be a positive duration, got %v", c.MaxAge.D())
	}
	return config.DurationAtMost("persist", "max_age", c.MaxAge, MaxPersistMaxAge)
}

// MarshalJSON writes the block with its written zeros.
func (c PersistConfig) MarshalJSON() ([]byte, error) {
	type plain PersistConfig
	return config.MarshalBlock(plain(c), c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (c *PersistConfig) UnmarshalJSON(b []byte) (err error) {
	type plain PersistConfig
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}

func (c *PersistConfig) maxAge() time.Duration {
	if c == nil || c.MaxAge == 0 {
		return DefaultPersistMaxAge
	}
	return c.MaxAge.D()
}

func (c *PersistConfig) off() bool { return c != nil && c.Off }

// How often the learned state is written, how long one storage call may
// hold up a Cleanup, and how often a failing storage is warned about.
const (
	persistEvery   = 10 * time.Second
	storageTimeout = 5 * time.Second
	warnEvery      = time.Minute
)

// store is what persisting needs of certmagic.Storage (ctx.Storage()).
type store interface {
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
}

// storageKey is where the instance name's state is kept.
func storageKey(name string) string { return "adaptive_throttle/" + url.PathEscape(name) + ".json" }

// storageOf is ctx's storage, or nil for a Context made outside a loaded
// config (as the unit tests make them): Caddy's Storage dereferences the
// config and would panic.
func storageOf(ctx caddy.Context) (s store) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	if st := ctx.Storage(); st != nil {
		return st
	}
	return nil
}

// persister writes one throttle's learned state to storage every
// persistEvery and once more when the throttle's last reference goes. It
// runs on its own goroutine: the request path never sees it.
type persister struct {
	t       *throttle.Throttle
	key     string
	timeout time.Duration // the most one storage call may hold up a Cleanup

	mu      sync.Mutex // the fields below: a reload sets them
	storage store      // nil: persist off
	logger  *zap.Logger
	warned  time.Time // last failure warning
	failed  int       // failures since it

	stop, done chan struct{}
}

func newPersister(t *throttle.Throttle, storage store, logger *zap.Logger, timeout time.Duration) *persister {
	p := &persister{t: t, key: storageKey(t.Name()), timeout: timeout, storage: storage, logger: logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// set takes a (re)loaded config's storage and logger; nil storage stops
// the writes.
func (p *persister) set(storage store, logger *zap.Logger) {
	p.mu.Lock()
	p.storage, p.logger = storage, logger
	p.mu.Unlock()
}

func (p *persister) run() {
	defer close(p.done)
	tk := time.NewTicker(persistEvery)
	defer tk.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tk.C:
			p.save()
		}
	}
}

// save writes the state now. A failure is warned about at most once a
// minute, with the number of failures since the last warning.
func (p *persister) save() {
	p.mu.Lock()
	storage := p.storage
	p.mu.Unlock()
	if storage == nil {
		return
	}
	data, err := p.t.Snapshot(time.Now())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		err = storage.Store(ctx, p.key, data)
		cancel()
	}
	if err == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed++
	if now := time.Now(); now.Sub(p.warned) >= warnEvery {
		p.logger.Warn("cannot write the learned state to storage", zap.String("name", p.t.Name()),
			zap.String("key", p.key), zap.Int("failures", p.failed), zap.Error(err))
		p.warned, p.failed = now, 0
	}
}

// close stops the timer and writes the state a last time, waiting at most
// p.timeout for a storage that hangs.
func (p *persister) close() {
	close(p.stop)
	wrote := make(chan struct{})
	go func() {
		<-p.done // a save in progress ends first
		p.save()
		close(wrote)
	}()
	select {
	case <-wrote:
	case <-time.After(p.timeout):
		p.mu.Lock()
		p.logger.Warn("storage did not take the learned state in time; going on without", zap.String("name", p.t.Name()),
			zap.String("key", p.key), zap.Duration("waited", p.timeout))
		p.mu.Unlock()
	}
}

// restore takes back t's stored state at start, if there is one and it is
// recent. Nothing it finds fails the start: a missing state is normal, and
// one that is unreadable, foreign or old is logged and ignored.
func restore(t *throttle.Throttle, storage store, maxAge time.Duration, logger *zap.Logger) {
	key := storageKey(t.Name())
	fields := []zap.Field{zap.String("name", t.Name()), zap.String("key", key)}
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	data, err := storage.Load(ctx, key)
	cancel()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		logger.Debug("nothing stored to restore", fields...)
		return
	case err != nil:
		logger.Warn("cannot read the stored state; starting without it", append(fields, zap.Error(err))...)
		return
	}
	info, err := t.Restore(data, time.Now(), maxAge)
	switch {
	case errors.Is(err, throttle.ErrTooOld):
		logger.Info("stored state not restored", append(fields, zap.Error(err))...)
		return
	case err != nil:
		logger.Warn("stored state ignored", append(fields, zap.Error(err))...)
		return
	}
	age := int(info.Age.Round(time.Second) / time.Second)
	if len(info.Parts) == 0 && len(info.Skipped) == 0 {
		logger.Debug("stored state holds nothing learned", append(fields, zap.Int("age_s", age))...)
		return
	}
	logger.Info(fmt.Sprintf("restored from storage, age %d s", age), append(fields, zap.Int("age_s", age), zap.Strings("parts", info.Parts))...)
	for _, part := range slices.Sorted(maps.Keys(info.Skipped)) {
		logger.Info("not restored from storage: "+info.Skipped[part], append(fields, zap.String("part", part))...)
	}
}
