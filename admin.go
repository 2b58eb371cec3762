package adaptivethrottle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves /throttle/* on Caddy's admin endpoint. It holds no
// instance: the admin server is rebuilt on every config load, so each
// request looks instances up in the pool.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.adaptive_throttle",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Provision registers the metrics collector in the admin context's
// registry, which the admin endpoint's /metrics serves. Caddy replaces the
// admin endpoint before it provisions the apps of a new config, and keeps
// the new one when that config is then rejected: registering here, and not
// only from the handlers, keeps the running throttles' series on /metrics
// after a rejected reload.
func (a *adminAPI) Provision(ctx caddy.Context) error {
	return registerMetrics(ctx.GetMetricsRegistry())
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/throttle/status", Handler: caddy.AdminHandlerFunc(a.handleStatus)},
		{Pattern: "/throttle/override", Handler: caddy.AdminHandlerFunc(a.handleOverride)},
		{Pattern: "/throttle/reset", Handler: caddy.AdminHandlerFunc(a.handleReset)},
	}
}

// maxInstancesShown bounds the status answer whatever the config holds.
const maxInstancesShown = 256

// maxAdminBody bounds what a POST may send.
const maxAdminBody = 64 << 10

// statusResponse is GET /throttle/status.
type statusResponse struct {
	Instances []throttle.Status `json:"instances"`
	// Truncated is set when more instances exist than are shown.
	Truncated bool `json:"truncated,omitempty"`
}

func (a adminAPI) handleStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return methodNotAllowed(w, "GET")
	}
	now := time.Now()
	var resp statusResponse
	if r.URL.Query().Has("instance") {
		return badRequest(renamed("instance"))
	}
	if name := r.URL.Query().Get("name"); name != "" {
		in, err := lookup(name)
		if err != nil {
			return err
		}
		resp.Instances = []throttle.Status{in.Status(now)}
	} else {
		all := allInstances()
		if len(all) > maxInstancesShown {
			all, resp.Truncated = all[:maxInstancesShown], true
		}
		resp.Instances = make([]throttle.Status, 0, len(all))
		for _, in := range all {
			resp.Instances = append(resp.Instances, in.Status(now))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(resp)
}

// overrideRequest is POST /throttle/override.
type overrideRequest struct {
	Name  string `json:"name"`
	State string `json:"state"`
	For   string `json:"for"`
}

func (a adminAPI) handleOverride(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, "POST")
	}
	var req overrideRequest
	if err := decodeStrict(w, r, &req); err != nil {
		return err
	}
	var until time.Time
	now := time.Now()
	switch req.State {
	case "drain", "shed", "pass":
		if req.For != "" {
			d, err := caddy.ParseDuration(req.For)
			if err != nil || d <= 0 {
				return badRequest(`"for" must be a positive duration such as "10m"`)
			}
			until = now.Add(d)
		}
	case "auto":
		if req.For != "" {
			return badRequest(`"for" does not apply to state "auto"`)
		}
	case "":
		return badRequest(`"state" is required: drain, shed, pass or auto`)
	default:
		return badRequest(`"state" must be drain, shed, pass or auto`)
	}
	in, err := lookup(req.Name)
	if err != nil {
		return err
	}
	if err := in.SetOverride(req.State, now, until); err != nil {
		return badRequest(err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(in.Status(now))
}

// resetRequest is POST /throttle/reset.
type resetRequest struct {
	Name string `json:"name"`
	What string `json:"what"`
}

func (a adminAPI) handleReset(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, "POST")
	}
	var req resetRequest
	if err := decodeStrict(w, r, &req); err != nil {
		return err
	}
	// Required: forgetting what was learned is never a default.
	if req.What == "" {
		return badRequest(`"what" is required: baselines, circuit or all`)
	}
	if req.What != "baselines" && req.What != "circuit" && req.What != "all" {
		return badRequest(`"what" must be baselines, circuit or all`)
	}
	in, err := lookup(req.Name)
	if err != nil {
		return err
	}
	now := time.Now()
	if err := in.Reset(req.What, now); err != nil {
		return badRequest(err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(in.Status(now))
}

// allInstances returns the live instances sorted by name.
func allInstances() []*throttle.Throttle {
	var all []*throttle.Throttle
	instances.Range(func(_, v any) bool {
		all = append(all, v.(pooled).Throttle)
		return true
	})
	slices.SortFunc(all, func(a, b *throttle.Throttle) int { return strings.Compare(a.Name(), b.Name()) })
	return all
}

// lookup finds an instance by name; an empty name is allowed when there is
// exactly one.
func lookup(name string) (*throttle.Throttle, error) {
	if name == "" {
		all := allInstances()
		if len(all) == 1 {
			return all[0], nil
		}
		return nil, badRequest(fmt.Sprintf(`"name" is required: %d instances are configured`, len(all)))
	}
	var found *throttle.Throttle
	instances.Range(func(k, v any) bool {
		if k == name {
			found = v.(pooled).Throttle
			return false
		}
		return true
	})
	if found == nil {
		return nil, caddy.APIError{HTTPStatus: http.StatusNotFound, Message: "unknown name"}
	}
	return found, nil
}

// decodeStrict reads a bounded JSON object with no unknown fields, every
// key spelt exactly as v's json tags (encoding/json alone would take
// "STATE" for "state"), and nothing after it but white space. Anything
// but an object (an array, null, a string) is refused as such.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return badRequest(fmt.Sprintf("body larger than %d bytes", maxAdminBody))
		}
		return badRequest("body could not be read")
	}
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) > 0 && trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return badRequest("body is not valid JSON")
		}
		return badRequest("body must be a JSON object")
	}
	if err := exactKeys(body, reflect.TypeOf(v).Elem()); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var unknown *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("empty body: a JSON object is required")
		case errors.As(err, &unknown):
			return badRequest(fmt.Sprintf("field %q has the wrong type", unknown.Field))
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			// The field name comes from the request: not echoed back.
			return badRequest("unknown field in body")
		}
		return badRequest("body is not valid JSON")
	}
	// More is false before a stray } or ], so look for the end itself.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body has data after the JSON object")
	}
	return nil
}

// renamedFields maps a field or query parameter's former name to its name
// now: the former is refused, naming the new.
var renamedFields = map[string]string{"instance": "name"}

func renamed(old string) string { return fmt.Sprintf("%q is now %q", old, renamedFields[old]) }

// exactKeys refuses a top-level key of body (valid JSON) that is not
// exactly one of t's json field names: encoding/json matches them without
// regard to case. A former name is refused naming the new.
func exactKeys(body []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // not an object: decodeStrict has refused it
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return badRequest("body is not valid JSON")
		}
		key, _ := tok.(string)
		if _, ok := renamedFields[key]; ok {
			return badRequest(renamed(key))
		}
		if name, ok := fieldNamed(t, key); !ok {
			if name == "" {
				return badRequest("unknown field in body")
			}
			// Only our own spelling is echoed, never the request's.
			return badRequest(fmt.Sprintf("field names are case-sensitive: write %q", name))
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return badRequest("body is not valid JSON")
		}
	}
	return nil
}

// fieldNamed reports whether key is exactly one of struct type t's json
// field names; when it is not, name is the one it matches regardless of
// case, if any.
func fieldNamed(t reflect.Type, key string) (name string, ok bool) {
	for f := range t.Fields() {
		n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if n == "" || n == "-" {
			continue
		}
		if n == key {
			return n, true
		}
		if strings.EqualFold(n, key) {
			name = n
		}
	}
	return name, false
}

func badRequest(msg string) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Message: msg}
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Message: "method not allowed; use " + allow}
}

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.Provisioner = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
