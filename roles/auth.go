package roles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/projections/postgres"
)

// Ways callers authenticate to the API.
const (
	AuthAPIKeys = "api-keys"
	AuthJWT     = "jwt"
	AuthNone    = "none"
)

// AuthConfig says how ingest authenticates its callers.
type AuthConfig struct {
	// Methods are api-keys, jwt or both; none, alone, serves every request
	// as the default tenant with every scope. Required: ingest refuses to
	// start without it, so that no API is open by accident.
	Methods []string
	// JWT checks tokens, with the jwt method.
	JWT auth.JWTConfig
	// KeyCacheTTL is how long an API key's state is remembered: a revoked
	// key stops working within it on every ingest instance. Default 2s.
	KeyCacheTTL time.Duration
}

func (a AuthConfig) validate() error {
	var errs []error
	if len(a.Methods) == 0 {
		errs = append(errs, errors.New("auth: say how callers authenticate: --auth api-keys, jwt, api-keys,jwt, or none (an open API)"))
	}
	for _, m := range a.Methods {
		if !slices.Contains([]string{AuthAPIKeys, AuthJWT, AuthNone}, m) {
			errs = append(errs, fmt.Errorf("auth: unknown method %q; methods are %s, %s and %s", m, AuthAPIKeys, AuthJWT, AuthNone))
		}
	}
	if slices.Contains(a.Methods, AuthNone) && len(a.Methods) > 1 {
		errs = append(errs, errors.New("auth: none goes alone"))
	}
	if slices.Contains(a.Methods, AuthJWT) {
		j := a.JWT.WithDefaults()
		errs = append(errs, j.Validate())
	}
	if a.KeyCacheTTL < 0 {
		errs = append(errs, errors.New("auth: KeyCacheTTL must not be negative"))
	}
	return errors.Join(errs...)
}

// authenticator builds what the methods name; nil for none.
func (c Config) authenticator(ctx context.Context, keys *postgres.Store) (auth.Authenticator, error) {
	if err := c.Auth.validate(); err != nil {
		return nil, err
	}
	var chain auth.Chain
	for _, m := range c.Auth.Methods {
		switch m {
		case AuthNone:
			c.Logger.Warn("the API is open: every request acts as the default tenant with every scope (--auth none)")
			return nil, nil
		case AuthAPIKeys:
			chain.Keys = auth.NewKeys(keys, c.Auth.KeyCacheTTL)
		case AuthJWT:
			j := c.Auth.JWT
			j.Logger = c.Logger
			var err error
			if chain.JWT, err = auth.NewJWT(ctx, j); err != nil {
				return nil, err
			}
		}
	}
	c.Logger.Info("the API authenticates callers", "methods", strings.Join(c.Auth.Methods, ","))
	return chain, nil
}
