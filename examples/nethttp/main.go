// Command nethttp protects a plain net/http server with adaptivethrottle's
// engine, no Caddy involved: the same levels, circuit and priorities as
// the Caddy module, through throttle.New and Throttle.Middleware.
//
//	go run ./examples/nethttp -listen 127.0.0.1:8090 -upstream http://127.0.0.1:8000
//	curl -s 127.0.0.1:8090/v1/chat/completions -H 'X-Priority: low' -d '{...}'
//	curl -s 127.0.0.1:8090/throttle/status
//
// Without -upstream it answers from a small stand-in that takes 20 ms a
// request. Requests claim their priority in X-Priority; refused ones get 429
// or 503 with Retry-After and a JSON body.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ai-guardian/adaptivethrottle/throttle"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "nethttp:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, logw io.Writer) error {
	fs := flag.NewFlagSet("nethttp", flag.ContinueOnError)
	fs.SetOutput(logw)
	listen := fs.String("listen", "127.0.0.1:8090", "address to serve on")
	upstream := fs.String("upstream", "", "OpenAI-compatible server to proxy to (default: a stand-in)")
	gpuSource := fs.String("gpu", "auto", "GPU source: auto, nvml, nvidia-smi, off")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var next http.Handler = standIn()
	if *upstream != "" {
		u, err := url.Parse(*upstream)
		if err != nil {
			return err
		}
		next = httputil.NewSingleHostReverseProxy(u)
	}
	logger, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	t, err := throttle.New(throttle.WithName("nethttp"), throttle.WithLogger(logger), throttle.WithGPUSource(*gpuSource))
	if err != nil {
		return err
	}
	defer t.Close()
	srv := &http.Server{Addr: *listen, Handler: newServer(t, next), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	fmt.Fprintf(logw, "protecting %s on http://%s (status: /throttle/status)\n", describe(*upstream), *listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newServer routes /throttle/status to the throttle's status and
// everything else through it to next.
func newServer(t *throttle.Throttle, next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /throttle/status", func(w http.ResponseWriter, r *http.Request) {
		body, err := json.Marshal(t.Status(time.Now()))
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(body, '\n'))
	})
	mux.Handle("/", t.Middleware(throttle.DefaultPriorityHeader, next))
	return mux
}

// standIn answers like a tiny model server: 20 ms, then a short completion.
func standIn() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(20 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hello"}}]}`+"\n")
	})
}

func describe(upstream string) string {
	if upstream == "" {
		return "a stand-in server"
	}
	return upstream
}
