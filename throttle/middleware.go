package throttle

import (
	"net/http"
	"net/textproto"

	"github.com/ai-guardian/adaptivethrottle/priority"
)

// DefaultPriorityHeader is the request header Middleware reads a priority
// claim from: high, medium or low.
const DefaultPriorityHeader = "X-Priority"

// Middleware protects next, a plain net/http handler: each request's claim
// is read from header (DefaultPriorityHeader when ""), the request is
// admitted or refused (WriteRefusal), and an admitted one is served and
// finished. Anyone can send the header: put Middleware behind whatever
// decides who may claim high.
func (t *Throttle) Middleware(header string, next http.Handler) http.Handler {
	if header == "" {
		header = DefaultPriorityHeader
	}
	return &middleware{t: t, header: textproto.CanonicalMIMEHeaderKey(header), next: &handlerNext{next}}
}

type middleware struct {
	t      *Throttle
	header string
	next   Next // built once: a conversion per request would allocate
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := Now()
	p := m.t.DefaultPriority()
	if v := r.Header[m.header]; len(v) > 0 {
		p = priority.Classify(v[0], p)
	}
	d := m.t.AdmitRequest(r, p, now)
	if !d.Admitted() {
		m.t.LogRefusal(r, d)
		WriteRefusal(w, d)
		return
	}
	_ = m.t.Serve(w, r, d, m.next) // a plain handler returns no error
}

// handlerNext adapts an http.Handler to Next.
type handlerNext struct{ h http.Handler }

func (n *handlerNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.h.ServeHTTP(w, r)
	return nil
}
