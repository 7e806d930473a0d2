package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// key makes an API key and returns the credential.
func newKey(t testing.TB, keys *kappatest.Keys, tenant string, scopes ...string) string {
	t.Helper()
	credential, _ := keys.Add(t, tenant, scopes...)
	return credential
}

// refusals records the reasons the API gives its observer.
type refusals struct {
	mu      sync.Mutex
	reasons []string
}

func (r *refusals) Refused(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *refusals) count(reason string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, got := range r.reasons {
		if got == reason {
			n++
		}
	}
	return n
}

// blockingReads is a read model whose position waits last until released.
type blockingReads struct {
	waiting chan struct{}
	release chan struct{}
}

func (b *blockingReads) Outcome(context.Context, string, string) (schemas.Outcome, bool, error) {
	return schemas.Outcome{}, false, nil
}

func (b *blockingReads) ReadModel(context.Context, string, string, string) (any, int64, bool, error) {
	return nil, 0, false, nil
}

func (b *blockingReads) WaitApplied(ctx context.Context, _ schemas.Position) (bool, error) {
	b.waiting <- struct{}{}
	select {
	case <-b.release:
		return true, nil
	case <-ctx.Done():
		return false, nil
	}
}

func (b *blockingReads) Ping(context.Context) error { return nil }

// securedServer serves the API with API keys over memory, and the given
// reads (nil: none).
func securedServer(t testing.TB, cfg api.Config, bus ingest.Bus, reads api.Reads) (*api.Server, *kappatest.Keys) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	intake, err := ingest.NewIntake(ingest.IntakeConfig{Bus: bus, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	keys := kappatest.NewKeys()
	s, err := api.New(cfg, intake, reads, auth.Chain{Keys: auth.NewKeys(keys, time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return s, keys
}

const addProduct = `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p1","quantity":1,"unit_price_cents":5}}`

// endpoints are every /v1 endpoint with a request that would succeed, and
// the scope it needs.
var endpoints = []struct {
	method, path, body, scope string
}{
	{http.MethodPost, "/v1/commands", addProduct, auth.ScopeCommandsWrite},
	{http.MethodPost, "/v1/commands:batch", "[" + addProduct + "]", auth.ScopeCommandsWrite},
	{http.MethodGet, "/v1/commands/0190a4b2-0000-7000-8000-000000000001", "", auth.ScopeRead},
	{http.MethodGet, "/v1/articles/a-1", "", auth.ScopeRead},
	{http.MethodGet, "/v1/carts/cart-1", "", auth.ScopeRead},
	{http.MethodGet, "/v1/orders/cart-1", "", auth.ScopeRead},
}

func TestEveryEndpointRefusesWhomItCannotTrust(t *testing.T) {
	bus := &fakeBus{}
	seen := &refusals{}
	srv, keys := securedServer(t, api.Config{Refusals: seen}, bus, nil)
	readOnly := newKey(t, keys, "acme", auth.ScopeRead)
	writeOnly := newKey(t, keys, "acme", auth.ScopeCommandsWrite)
	for _, e := range endpoints {
		other := readOnly
		if e.scope == auth.ScopeRead {
			other = writeOnly
		}
		for _, c := range []struct {
			name, authorization string
			status              int
			challenge           string
		}{
			{"no credential", "", http.StatusUnauthorized, `Bearer realm="kappa"`},
			{"another scheme", "Basic YTpi", http.StatusUnauthorized, `Bearer realm="kappa", error="invalid_request"`},
			{"an empty bearer", "Bearer ", http.StatusUnauthorized, `Bearer realm="kappa", error="invalid_request"`},
			{"two credentials", "Bearer a b", http.StatusUnauthorized, `Bearer realm="kappa", error="invalid_request"`},
			{"an unknown key", "Bearer kappa_0123456789abcdef_secret", http.StatusUnauthorized, `Bearer realm="kappa", error="invalid_token"`},
			{"a token where no JWT is taken", "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln", http.StatusUnauthorized, `Bearer realm="kappa", error="invalid_token"`},
			{"a key without the scope", "Bearer " + other, http.StatusForbidden, `Bearer realm="kappa", error="insufficient_scope", scope="` + e.scope + `"`},
		} {
			t.Run(e.method+" "+e.path+" "+c.name, func(t *testing.T) {
				var headers []string
				if c.authorization != "" {
					headers = []string{"Authorization", c.authorization}
				}
				rec := do(t, srv, e.method, e.path, "application/json", e.body, headers...)
				typ := api.TypeUnauthenticated
				if c.status == http.StatusForbidden {
					typ = api.TypeForbidden
				}
				problem(t, rec, c.status, typ, e.path)
				if got := rec.Header().Get("WWW-Authenticate"); got != c.challenge {
					t.Errorf("WWW-Authenticate = %q, want %q", got, c.challenge)
				}
				if strings.Contains(rec.Body.String(), strings.TrimPrefix(c.authorization, "Bearer ")) && c.authorization != "" && c.authorization != "Bearer " {
					t.Errorf("the answer shows the credential: %s", rec.Body)
				}
			})
		}
	}
	assertNothingPublished(t, bus)
	if seen.count("unauthenticated") == 0 || seen.count("forbidden") == 0 {
		t.Errorf("refusals seen: %v", seen.reasons)
	}
	// Health and readiness stay open.
	for _, path := range []string{"/healthz", "/readyz"} {
		if rec := do(t, srv, http.MethodGet, path, "", ""); rec.Code != http.StatusOK {
			t.Errorf("%s without a credential: %d", path, rec.Code)
		}
	}
}

// The tenant is the credential's; one named in the body changes nothing.
func TestTheTenantComesFromTheCredential(t *testing.T) {
	bus := &fakeBus{}
	srv, keys := securedServer(t, api.Config{}, bus, nil)
	key := newKey(t, keys, "acme", auth.ScopeCommandsWrite)
	body := `{"type":"cart.add_product","aggregate_id":"cart-1","tenant":"globex","data":{"product_id":"p1","quantity":1,"unit_price_cents":5}}`
	rec := do(t, srv, http.MethodPost, "/v1/commands", "application/json", body, "Authorization", "Bearer "+key)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	calls := bus.published()
	if len(calls) != 1 || calls[0].cmds[0].Tenant != "acme" {
		t.Fatalf("published %+v, want one command of tenant acme", calls)
	}
}

func TestCommandsOverTheRateLimitAre429(t *testing.T) {
	bus := &fakeBus{}
	seen := &refusals{}
	// Two commands at once, then one every 1000 s.
	srv, keys := securedServer(t, api.Config{Refusals: seen, MaxBatchCommands: 2, CommandRate: 0.001, CommandBurst: 2}, bus, nil)
	first, second := newKey(t, keys, "acme", auth.ScopeCommandsWrite), newKey(t, keys, "acme", auth.ScopeCommandsWrite)
	if rec := do(t, srv, http.MethodPost, "/v1/commands:batch", "application/json", "["+addProduct+","+addProduct+"]", "Authorization", "Bearer "+first); rec.Code != http.StatusAccepted {
		t.Fatalf("a batch within the burst: %d %s", rec.Code, rec.Body)
	}
	rec := do(t, srv, http.MethodPost, "/v1/commands", "application/json", addProduct, "Authorization", "Bearer "+first)
	problem(t, rec, http.StatusTooManyRequests, api.TypeRateLimited, "/v1/commands")
	if ra := rec.Header().Get("Retry-After"); ra != "1000" {
		t.Errorf("Retry-After = %q, want 1000 (one token at 0.001 a second)", ra)
	}
	if n := len(bus.published()); n != 1 {
		t.Fatalf("%d publish calls, want only the batch's", n)
	}
	// Each credential has its own bucket.
	if rec := do(t, srv, http.MethodPost, "/v1/commands", "application/json", addProduct, "Authorization", "Bearer "+second); rec.Code != http.StatusAccepted {
		t.Fatalf("another key: %d %s", rec.Code, rec.Body)
	}
	if seen.count("rate_limited") != 1 {
		t.Errorf("refusals seen: %v, want one rate_limited", seen.reasons)
	}
}

func TestReadsOverTheRateLimitAre429(t *testing.T) {
	reads := &blockingReads{waiting: make(chan struct{}, 1), release: make(chan struct{})}
	srv, keys := securedServer(t, api.Config{ReadRate: 0.001, ReadBurst: 1}, &fakeBus{}, reads)
	key := newKey(t, keys, "acme", auth.ScopeRead)
	if rec := do(t, srv, http.MethodGet, "/v1/carts/cart-1", "", "", "Authorization", "Bearer "+key); rec.Code != http.StatusNotFound {
		t.Fatalf("the first read: %d %s", rec.Code, rec.Body)
	}
	rec := do(t, srv, http.MethodGet, "/v1/commands/0190a4b2-0000-7000-8000-000000000001", "", "", "Authorization", "Bearer "+key)
	problem(t, rec, http.StatusTooManyRequests, api.TypeRateLimited, "/v1/commands/0190a4b2-0000-7000-8000-000000000001")
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

func TestPositionWaitsAreBoundedPerCredential(t *testing.T) {
	reads := &blockingReads{waiting: make(chan struct{}, 4), release: make(chan struct{})}
	seen := &refusals{}
	srv, keys := securedServer(t, api.Config{MaxPositionWaiters: 1, Refusals: seen}, &fakeBus{}, reads)
	holder, other := newKey(t, keys, "acme", auth.ScopeRead), newKey(t, keys, "acme", auth.ScopeRead)
	done := make(chan int)
	waitInBackground := func(credential, path string) {
		go func() {
			rec := httptest.NewRecorder()
			req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, path, nil)
			req.Header.Set("Authorization", "Bearer "+credential)
			srv.ServeHTTP(rec, req)
			done <- rec.Code
		}()
	}
	waitInBackground(holder, "/v1/carts/cart-1?position=3:100")
	<-reads.waiting
	rec := do(t, srv, http.MethodGet, "/v1/carts/cart-2?position=3:100", "", "", "Authorization", "Bearer "+holder)
	problem(t, rec, http.StatusTooManyRequests, api.TypeRateLimited, "/v1/carts/cart-2")
	if seen.count("too_many_waiters") != 1 {
		t.Errorf("refusals seen: %v", seen.reasons)
	}
	// Another credential still waits; then both are released.
	waitInBackground(other, "/v1/carts/cart-3?position=3:100")
	<-reads.waiting
	close(reads.release)
	for range 2 {
		if code := <-done; code != http.StatusNotFound {
			t.Errorf("a released wait answered %d, want 404 (the read model is empty)", code)
		}
	}
	// The first credential may wait again.
	if rec := do(t, srv, http.MethodGet, "/v1/carts/cart-1?position=3:100", "", "", "Authorization", "Bearer "+holder); rec.Code != http.StatusNotFound {
		t.Errorf("a wait after the others ended: %d %s", rec.Code, rec.Body)
	}
}

// FuzzAuthorizationHeader sends any Authorization header to every
// endpoint: the answer is an authentication refusal or, for the one good
// key, success; never a server error, never a publish without it.
func FuzzAuthorizationHeader(f *testing.F) {
	for _, seed := range []string{"", "Bearer", "Bearer ", "bearer kappa_", "Bearer kappa__", "Bearer kappa_x_y_z", "Basic Zm9vOmJhcg==",
		"Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer \x00", "Bearer a\tb", "BEARER " + strings.Repeat("A", 5000)} {
		f.Add(seed, uint8(0))
	}
	f.Fuzz(func(t *testing.T, header string, endpoint uint8) {
		bus := &fakeBus{}
		srv, keys := securedServer(t, api.Config{}, bus, nil)
		good := newKey(t, keys, "acme", auth.Scopes...)
		e := endpoints[int(endpoint)%len(endpoints)]
		req := httptest.NewRequestWithContext(t.Context(), e.method, e.path, strings.NewReader(e.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header["Authorization"] = []string{header}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if strings.TrimSpace(strings.TrimPrefix(header, "Bearer ")) == good {
			return
		}
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: status %d, want 401: %s", header, rec.Code, rec.Body)
		}
		if len(bus.published()) != 0 {
			t.Fatalf("Authorization %q published a command", header)
		}
	})
}
