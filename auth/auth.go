// Package auth tells who a request acts as: a bearer credential, an API
// key Kappa issued or a JWT from an identity provider, becomes a Principal
// with a tenant and scopes. It knows no HTTP; the API maps its errors to
// 401 and 403.
package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
)

// Scopes of Kappa's API.
const (
	// ScopeCommandsWrite allows sending commands.
	ScopeCommandsWrite = "commands:write"
	// ScopeRead allows reading outcomes and read models.
	ScopeRead = "read"
)

// Scopes lists every scope, for validation and help.
var Scopes = []string{ScopeCommandsWrite, ScopeRead}

// Principal is who a request acts as.
type Principal struct {
	// Tenant owns everything the request writes and is all it may read.
	Tenant string
	// Scopes say what it may do.
	Scopes []string
	// Subject names the credential (an API key's id, a JWT's subject) in
	// logs and in per-credential limits.
	Subject string
}

// Has reports whether the principal holds scope.
func (p Principal) Has(scope string) bool { return slices.Contains(p.Scopes, scope) }

// ErrUnauthenticated reports a credential that proves nothing: missing,
// malformed, unknown, revoked, expired, or signed by someone else.
// *Error says which, for the WWW-Authenticate header and the logs; the
// answer to the caller is the same for all.
var ErrUnauthenticated = errors.New("unauthenticated")

// Error is an ErrUnauthenticated with its reason.
type Error struct {
	// Reason is short and safe to show: it never holds the credential.
	Reason string
}

func (e *Error) Error() string { return "unauthenticated: " + e.Reason }

// Unwrap makes errors.Is(err, ErrUnauthenticated) hold.
func (e *Error) Unwrap() error { return ErrUnauthenticated }

func unauthenticated(reason string) error { return &Error{Reason: reason} }

// Authenticator turns a bearer credential into a Principal.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (Principal, error)
}

// Chain authenticates API keys (by their prefix) with Keys and anything
// else with JWT; either may be nil.
type Chain struct {
	Keys *Keys
	JWT  *JWT
}

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, credential string) (Principal, error) {
	if strings.HasPrefix(credential, keyPrefix) {
		if c.Keys == nil {
			return Principal{}, unauthenticated("API keys are not accepted here")
		}
		return c.Keys.Authenticate(ctx, credential)
	}
	if c.JWT == nil {
		return Principal{}, unauthenticated("the credential is not an API key")
	}
	return c.JWT.Authenticate(ctx, credential)
}

// ParseScopes splits a comma- or space-separated list and checks each.
func ParseScopes(list string) ([]string, error) {
	fields := strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' })
	var scopes []string
	for _, f := range fields {
		if !slices.Contains(Scopes, f) {
			return nil, errors.New("unknown scope " + f + "; scopes are " + strings.Join(Scopes, ", "))
		}
		if !slices.Contains(scopes, f) {
			scopes = append(scopes, f)
		}
	}
	if len(scopes) == 0 {
		return nil, errors.New("no scope given; scopes are " + strings.Join(Scopes, ", "))
	}
	return scopes, nil
}
