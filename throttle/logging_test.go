package throttle

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestTraceID(t *testing.T) {
	cases := map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "", // all-zero id is invalid
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": "", // upper case is invalid
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "", // version ff is invalid
		"00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01":   "",
		"garbage": "",
		"":        "",
	}
	for tp, want := range cases {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tp != "" {
			r.Header.Set("Traceparent", tp)
		}
		if got := traceID(r); got != want {
			t.Errorf("traceID(%q) = %q, want %q", tp, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if n := testing.AllocsPerRun(100, func() { traceID(r) }); n != 0 {
		t.Fatalf("traceID allocates %v", n)
	}
}
