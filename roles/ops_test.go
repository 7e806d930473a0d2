package roles

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestOpsAddressWithoutHostBindsToLoopback(t *testing.T) {
	for in, want := range map[string]string{
		":9090":          "127.0.0.1:9090",
		"0.0.0.0:9090":   "0.0.0.0:9090",
		"10.1.2.3:9090":  "10.1.2.3:9090",
		"[::]:9090":      "[::]:9090",
		"localhost:9090": "localhost:9090",
	} {
		if got := opsListenAddr(in); got != want {
			t.Errorf("opsListenAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSharedReadinessNamesEveryRoleThatIsNotReady(t *testing.T) {
	r := &readiness{checks: map[string]func(context.Context) error{}}
	r.add("ingest", func(context.Context) error { return nil })
	r.add("processor", func(context.Context) error { return errors.New("outside its group") })
	r.add("projection postgres", func(context.Context) error { return errors.New("stalled") })
	err := r.ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "processor: outside its group") || !strings.Contains(err.Error(), "projection postgres: stalled") || strings.Contains(err.Error(), "ingest") {
		t.Fatalf("ready = %v, want the processor and the Postgres projection named", err)
	}
}

func TestSharedReadinessWaitsForEveryRole(t *testing.T) {
	r := &readiness{checks: map[string]func(context.Context) error{}, expected: []string{"ingest", "processor"}}
	r.add("ingest", func(context.Context) error { return nil })
	if err := r.ready(t.Context()); err == nil || !strings.Contains(err.Error(), "processor: not started yet") {
		t.Fatalf("ready = %v with the processor not started, want it named", err)
	}
	r.add("processor", func(context.Context) error { return nil })
	if err := r.ready(t.Context()); err != nil {
		t.Fatalf("ready = %v with every role ready", err)
	}
}
