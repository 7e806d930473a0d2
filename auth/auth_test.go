package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/kappatest"
)

func reason(err error) string {
	var e *auth.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return fmt.Sprintf("not an auth.Error: %v", err)
}

func TestAPIKeys(t *testing.T) {
	store := kappatest.NewKeys()
	keys := auth.NewKeys(store, 50*time.Millisecond)
	good, id := store.Add(t, "acme", auth.ScopeRead)
	p, err := keys.Authenticate(t.Context(), good)
	if err != nil || p.Tenant != "acme" || !p.Has(auth.ScopeRead) || p.Has(auth.ScopeCommandsWrite) || p.Subject != "apikey:"+id {
		t.Fatalf("a good key: %+v, %v", p, err)
	}
	tampered := good[:len(good)-1] + "x"
	if strings.HasSuffix(good, "x") {
		tampered = good[:len(good)-1] + "y"
	}
	for name, c := range map[string]string{
		"another secret for the id": tampered,
		"an unknown id":             "kappa_aaaaaaaaaaaaaaaa_secret",
		"no secret":                 "kappa_" + id,
		"not a key at all":          "kappa_",
	} {
		if _, err := keys.Authenticate(t.Context(), c); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s: %v, want ErrUnauthenticated", name, err)
		} else if strings.Contains(err.Error(), good[len(good)-10:]) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
	// Revoked: refused once the cache entry is older than its TTL.
	store.Revoke(id)
	kappatest.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := keys.Authenticate(t.Context(), good); reason(err) != "revoked API key" {
			return fmt.Errorf("a revoked key: %w", err)
		}
		return nil
	})
}

func TestTheCacheSparesTheStore(t *testing.T) {
	store := kappatest.NewKeys()
	keys := auth.NewKeys(store, time.Hour)
	good, _ := store.Add(t, "acme", auth.ScopeRead)
	for range 100 {
		if _, err := keys.Authenticate(t.Context(), good); err != nil {
			t.Fatal(err)
		}
	}
	if store.Hits() != 1 {
		t.Fatalf("the store was asked %d times for one key, want once", store.Hits())
	}
}

func TestJWT(t *testing.T) {
	idp := kappatest.NewIssuer(t, "k1")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, kappatest.JWKS(t, idp), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := auth.NewJWT(t.Context(), auth.JWTConfig{JWKSFile: file, Issuer: "https://idp.example", Audience: "kappa"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := j.Authenticate(t.Context(), idp.Sign(t, kappatest.Claims()))
	if err != nil || p.Tenant != "acme" || !p.Has(auth.ScopeRead) || !p.Has(auth.ScopeCommandsWrite) || p.Subject != "jwt:user-1" {
		t.Fatalf("a good token: %+v, %v", p, err)
	}
	if _, err := j.Authenticate(t.Context(), idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-10 * time.Second).Unix() }))); err != nil {
		t.Errorf("a token 10s past its expiry, within the 30s leeway: %v", err)
	}
	stranger := kappatest.NewIssuer(t, "k1") // same key id, another key
	none := jwt.NewWithClaims(jwt.SigningMethodNone, kappatest.Claims())
	unsigned, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ token, reason string }{
		"expired":         {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() })), "expired token"},
		"wrong audience":  {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), "wrong audience"},
		"wrong issuer":    {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), "wrong issuer"},
		"wrong signature": {stranger.Sign(t, kappatest.Claims()), "bad signature"},
		"unsigned":        {unsigned, "bad signature"},
		"no expiry":       {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { delete(c, "exp") })), "invalid token"},
		"no tenant":       {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { delete(c, "tenant") })), `the token's "tenant" claim names no valid tenant`},
		"bad tenant":      {idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["tenant"] = "a/b" })), `the token's "tenant" claim names no valid tenant`},
		"malformed":       {"not.a.token", "malformed token"},
	} {
		_, err := j.Authenticate(t.Context(), tc.token)
		if !errors.Is(err, auth.ErrUnauthenticated) || reason(err) != tc.reason {
			t.Errorf("%s: %v, want %q", name, err, tc.reason)
		}
	}
}

// TestJWKSFromAURLFollowsRotation: a token signed with a key the provider
// added after start is accepted once the set is fetched again.
func TestJWKSFromAURLFollowsRotation(t *testing.T) {
	first, second := kappatest.NewIssuer(t, "k1"), kappatest.NewIssuer(t, "k2")
	var mu sync.Mutex
	published := kappatest.JWKS(t, first)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(published)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	j, err := auth.NewJWT(ctx, auth.JWTConfig{JWKSURL: srv.URL, Issuer: "https://idp.example", Audience: "kappa", RefreshInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Authenticate(t.Context(), first.Sign(t, kappatest.Claims())); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	published = kappatest.JWKS(t, first, second)
	mu.Unlock()
	kappatest.Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := j.Authenticate(t.Context(), second.Sign(t, kappatest.Claims()))
		return err
	})
}

func TestParseScopes(t *testing.T) {
	got, err := auth.ParseScopes("commands:write, read,read")
	if err != nil || !slices.Equal(got, []string{"commands:write", "read"}) {
		t.Fatalf("ParseScopes = %v, %v", got, err)
	}
	for _, bad := range []string{"", "admin", "read,write"} {
		if _, err := auth.ParseScopes(bad); err == nil {
			t.Errorf("ParseScopes(%q) accepted", bad)
		}
	}
}
