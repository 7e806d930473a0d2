package roles

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kappa-cqrs/kappa/metrics"
)

// The ops address a role serves for operators, apart from the public API:
// /healthz, /readyz, /metrics and, if asked for, /debug/pprof.

func (c Config) registry() *prometheus.Registry {
	if c.Registry != nil {
		return c.Registry
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// readiness gathers the readiness checks of the roles that run in one
// process, which share one ops address (kappa dev).
type readiness struct {
	// expected names every role of the process: one that has not yet
	// handed in its check is not ready either.
	expected []string

	mu     sync.Mutex
	checks map[string]func(context.Context) error
}

func (r *readiness) add(name string, check func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = check
}

// ready runs every check and reports the roles that are not ready.
func (r *readiness) ready(ctx context.Context) error {
	r.mu.Lock()
	names := make([]string, 0, len(r.checks))
	for name := range r.checks {
		names = append(names, name)
	}
	r.mu.Unlock()
	sort.Strings(names)
	var errs []error
	for _, name := range r.expected {
		if !slices.Contains(names, name) {
			errs = append(errs, fmt.Errorf("%s: not started yet", name))
		}
	}
	for _, name := range names {
		r.mu.Lock()
		check := r.checks[name]
		r.mu.Unlock()
		if err := check(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// opsListenAddr binds an address without a host to loopback: ":9090"
// means 127.0.0.1:9090, and every interface must be asked for by name
// (0.0.0.0:9090).
func opsListenAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// serveOps serves the ops address until ctx ends; with no OpsAddr it
// returns at once. Roles that share a process (cfg.shared) hand their
// check to it instead.
func serveOps(ctx context.Context, cfg Config, name string, reg *prometheus.Registry, ready func(context.Context) error) error {
	if cfg.shared != nil {
		cfg.shared.add(name, ready)
		return nil
	}
	if cfg.OpsAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	if cfg.Pprof {
		// Profiles for `go tool pprof`: they show the code at work and
		// cost CPU while taken, so only where an operator asked.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(rctx); err != nil {
			http.Error(w, "not ready: "+strings.ReplaceAll(err.Error(), "\n", "; "), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	addr := opsListenAddr(cfg.OpsAddr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	cfg.Logger.Info("ops listening", "addr", addr, "pprof", cfg.Pprof)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve ops on %s: %w", addr, err)
	}
	return nil
}
