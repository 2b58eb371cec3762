package adaptivethrottle

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/ai-guardian/adaptivethrottle/pool"
	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func init() {
	caddy.RegisterModule(new(Selection))
	caddy.RegisterModule(new(registry))
}

// Selection is reverse_proxy's selection policy `lb_policy
// adaptive_throttle [<name>]`: it sends each request to the upstream of
// the pool with the most room, as the adaptive_throttle handler of the
// same name learns each upstream (package pool), and ties the pick to the
// request the handler admitted, so that the upstream's first byte, status
// and in-flight count are recorded to it. See the README, "A pool of
// upstreams".
type Selection struct {
	// Name of the adaptive_throttle handler whose pool this is. Default
	// "default", the handler's default name.
	Name string `json:"name,omitempty"`
	// Source is where the Caddyfile wrote the policy (file:line), for the
	// error that no handler has its name.
	Source string `json:"source,omitempty"`

	t    atomic.Pointer[throttle.Throttle] // the handler's, once resolved; this policy then holds a reference in instances
	view atomic.Pointer[view]              // the upstreams last seen, with their members
	mu   sync.Mutex                        // serialises rebuilding view
}

// CaddyModule returns the Caddy module information.
func (*Selection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.adaptive_throttle",
		New: func() caddy.Module { return new(Selection) },
	}
}

// UnmarshalCaddyfile reads `lb_policy adaptive_throttle [<name>]`.
func (s *Selection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the policy's name
	s.Source = fmt.Sprintf("%s:%d", d.File(), d.Line())
	if d.NextArg() {
		s.Name = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return fmt.Errorf("lb_policy adaptive_throttle takes no block, at %s", s.Source)
	}
	return nil
}

// Provision finds the adaptive_throttle handler of the policy's name in
// the config being loaded. Caddy provisions handlers in the order of
// their routes and servers, so a handler may come after its policy: then
// the handler's Provision resolves it, and the config fails to start
// (registry.Start) when none does.
func (s *Selection) Provision(ctx caddy.Context) error {
	if s.Name == "" {
		s.Name = defaultName
	}
	reg, err := registryOf(ctx)
	if err != nil {
		return err
	}
	if reg == nil {
		return errors.New("lb_policy adaptive_throttle: provisioned outside a config load")
	}
	return reg.policy(s)
}

// resolve ties the policy to t, the throttle of the handler of its name,
// holding a reference to it in instances until Cleanup.
func (s *Selection) resolve(t *throttle.Throttle) error {
	if s.t.Load() != nil {
		return nil
	}
	_, _, err := instances.LoadOrNew(s.Name, func() (caddy.Destructor, error) {
		return nil, errors.New("no throttle") // the handler took its reference first
	})
	if err != nil {
		return fmt.Errorf("lb_policy adaptive_throttle %q: %w", s.Name, err)
	}
	s.t.Store(t)
	return nil
}

// Cleanup lets go of the pool's members and of the throttle.
func (s *Selection) Cleanup() error {
	t := s.t.Load()
	if t == nil {
		return nil
	}
	if v := s.view.Swap(nil); v != nil {
		t.Pool().Release(v.members)
	}
	_, err := instances.Delete(s.Name)
	return err
}

// view is a list of upstreams as the load balancer passed it, with the
// pool member of each. The load balancer passes the same list to each
// request while its upstreams do not change, so a pick compares
// pointers instead of looking members up by address.
type view struct {
	ups     []*reverseproxy.Upstream
	members []*pool.Member
}

func (v *view) of(ups reverseproxy.UpstreamPool) bool {
	if len(v.ups) != len(ups) {
		return false
	}
	for i, u := range ups {
		if v.ups[i] != u {
			return false
		}
	}
	return true
}

// Select picks the available upstream with the most room (pool.Pick) and
// binds it to the request the handler admitted, if any (a request that
// reaches the load balancer without the handler is picked for, and not
// counted). Called again for the same request (a retry), it moves the
// request to the new upstream. It allocates nothing once the upstreams
// were seen.
func (s *Selection) Select(ups reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	t := s.t.Load()
	if t == nil { // not resolved: a config that does not start
		return reverseproxy.LeastConnSelection{}.Select(ups, r, w)
	}
	v := s.view.Load()
	if v == nil || !v.of(ups) {
		v = s.rebuild(t, ups)
	}
	now := throttle.Now()
	b, bound := throttle.Find(w)
	i, tk := pool.Pick(ups, v.members, now, bound)
	if i < 0 {
		return nil
	}
	if bound {
		b.Bind(v.members[i], tk, now)
	}
	return ups[i]
}

// rebuild makes the view of ups, holding their members (made as needed),
// and lets go of the last view's.
func (s *Selection) rebuild(t *throttle.Throttle, ups reverseproxy.UpstreamPool) *view {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.view.Load(); v != nil && v.of(ups) {
		return v
	}
	keys := make([]string, len(ups))
	for i, u := range ups {
		keys[i] = u.String()
	}
	v := &view{ups: slices.Clone(ups), members: t.Pool().Hold(keys)}
	if old := s.view.Swap(v); old != nil {
		t.Pool().Release(old.members)
	}
	return v
}

// registry is the adaptive_throttle handlers and selection policies of
// one config load: Caddy makes one app instance per load (caddy.Context's
// App), on demand. It ties each policy to the handler of its name,
// whichever is provisioned first, and fails the config at Start when a
// policy's handler never came, or when a handler's upstream_gauge has no
// policy to read the upstreams of.
type registry struct {
	mu       sync.Mutex
	handlers map[string]*throttle.Throttle
	pending  []*Selection
	gauged   map[string]bool // handlers with an upstream_gauge block, by name
	policies map[string]bool // the names policies were given
}

// CaddyModule returns the Caddy module information.
func (*registry) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "adaptive_throttle", New: func() caddy.Module { return new(registry) }}
}

// registryOf returns the registry of ctx's config load; nil for a
// context made outside a config load (caddy.NewContext alone, as tests
// do), which has no apps.
func registryOf(ctx caddy.Context) (reg *registry, err error) {
	defer func() {
		if recover() != nil {
			reg, err = nil, nil
		}
	}()
	app, err := ctx.App("adaptive_throttle")
	if err != nil {
		return nil, err
	}
	return app.(*registry), nil
}

// handler notes a provisioned handler's throttle by name, and whether it
// reads its upstreams' gauges, and resolves the policies that wait for it.
func (r *registry) handler(name string, t *throttle.Throttle, gauged bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handlers == nil {
		r.handlers, r.gauged = map[string]*throttle.Throttle{}, map[string]bool{}
	}
	r.handlers[name] = t
	r.gauged[name] = r.gauged[name] || gauged
	var errs []error
	r.pending = slices.DeleteFunc(r.pending, func(s *Selection) bool {
		if s.Name != name {
			return false
		}
		errs = append(errs, s.resolve(t))
		return true
	})
	return errors.Join(errs...)
}

// policy resolves s now if its handler was provisioned, and otherwise
// keeps it for the handler to come.
func (r *registry) policy(s *Selection) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.policies == nil {
		r.policies = map[string]bool{}
	}
	r.policies[s.Name] = true
	if t := r.handlers[s.Name]; t != nil {
		return s.resolve(t)
	}
	r.pending = append(r.pending, s)
	return nil
}

// Start fails the config when a policy's handler never came, or a
// handler's upstream_gauge has no pool.
func (r *registry) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, s := range r.pending {
		at := ""
		if s.Source != "" {
			at = s.Source + ": "
		}
		errs = append(errs, fmt.Errorf("%slb_policy adaptive_throttle: no adaptive_throttle handler is named %q in this config (name it with `name %s` in its block, or name the policy after the handler)",
			at, s.Name, s.Name))
	}
	for _, name := range slices.Sorted(maps.Keys(r.gauged)) {
		if r.gauged[name] && !r.policies[name] {
			errs = append(errs, fmt.Errorf("adaptive_throttle %q: upstream_gauge reads the upstreams of a pool, and no reverse_proxy of this config has `lb_policy adaptive_throttle %s`",
				name, name))
		}
	}
	return errors.Join(errs...)
}

// Stop does nothing: the handlers and policies clean up after themselves.
func (r *registry) Stop() error { return nil }

// Interface guards
var (
	_ caddy.Provisioner     = (*Selection)(nil)
	_ caddy.CleanerUpper    = (*Selection)(nil)
	_ caddyfile.Unmarshaler = (*Selection)(nil)
	_ reverseproxy.Selector = (*Selection)(nil)
	_ caddy.App             = (*registry)(nil)
)
