package tests

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ai-guardian/adaptivethrottle/internal/llmsim"
)

// An error route for another status (handle_errors 404 only) does not take
// the refusal: the shed client still gets the JSON body and Retry-After,
// not Caddy's bare 429 for an unhandled error. The 404 route still works.
func TestHandleErrorsForAnotherStatusKeepsTheRefusal(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	handle /v1/* {
		adaptive_throttle {
			name errors404
			gpu off
		}
		reverse_proxy `+addr+`
	}
	handle {
		error 404
	}
	handle_errors 404 {
		respond "no such page" 404
	}
}`)
	if code, body := adminDo(t, "POST", "/throttle/override", `{"name":"errors404","state":"shed"}`); code != 200 {
		t.Fatalf("override: %d %s", code, body)
	}
	resp := chat(t, tc, "low", false)
	if resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength == 0 {
		t.Errorf("refusal headers %v (Content-Length %d)", resp.Header, resp.ContentLength)
	}
	assertShed(t, resp, http.StatusTooManyRequests, "override", "low", 5)

	resp, err := tc.Client.Get(siteURL + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	if body := drain(t, resp); resp.StatusCode != 404 || body != "no such page" {
		t.Fatalf("the 404 error route: %d %q", resp.StatusCode, body)
	}
}

// An error route for the refusal's status answers it instead.
func TestHandleErrorsForTheStatusAnswers(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name errors429
		gpu off
	}
	reverse_proxy `+addr+`
	handle_errors 404 {
		respond "no such page" 404
	}
	handle_errors 429 {
		respond "fallback"
	}
}`)
	if code, body := adminDo(t, "POST", "/throttle/override", `{"name":"errors429","state":"shed"}`); code != 200 {
		t.Fatalf("override: %d %s", code, body)
	}
	resp := chat(t, tc, "low", false)
	if body := drain(t, resp); body != "fallback" || strings.Contains(body, "overloaded") {
		t.Fatalf("the 429 error route did not answer: %d %q", resp.StatusCode, body)
	}
	if st := status(t, "errors429"); st.Priorities.Low.Shed != 1 {
		t.Fatalf("the fallback answer is still a shed for the module: %+v", st.Priorities.Low)
	}
}

// Caddy's error routes belong to the server, not the site: another site's
// handle_errors 429 on the same address does not take this site's refusal
// (its route matches the other host), so the shed client still gets the
// JSON body, not Caddy's bare 429.
func TestHandleErrorsOfAnotherSiteKeepsTheRefusal(t *testing.T) {
	_, addr := upstream(t, llmsim.Config{})
	tc := start(t, `http://localhost:9080 {
	adaptive_throttle {
		name errorsothersite
		gpu off
	}
	reverse_proxy `+addr+`
}
http://127.0.0.1:9080 {
	error 429
	handle_errors 429 {
		respond "the other site's answer" 429
	}
}`)
	if code, body := adminDo(t, "POST", "/throttle/override", `{"name":"errorsothersite","state":"shed"}`); code != 200 {
		t.Fatalf("override: %d %s", code, body)
	}
	assertShed(t, chat(t, tc, "low", false), http.StatusTooManyRequests, "override", "low", 5)

	resp, err := tc.Client.Get("http://127.0.0.1:9080/")
	if err != nil {
		t.Fatal(err)
	}
	if body := drain(t, resp); resp.StatusCode != 429 || body != "the other site's answer" {
		t.Fatalf("the other site's error route: %d %q", resp.StatusCode, body)
	}
}
