package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/kappa-cqrs/kappa/schemas"
)

// JWTConfig configures a JWT authenticator. Zero values take the
// documented defaults.
type JWTConfig struct {
	// JWKSURL is where the identity provider publishes its keys; they are
	// fetched again every RefreshInterval and when a token names an
	// unknown key. One of JWKSURL and JWKSFile is required.
	JWKSURL string
	// JWKSFile holds the keys as a JSON Web Key Set; it is read again when
	// it changes.
	JWKSFile string
	// Issuer must be the token's iss. Required.
	Issuer string
	// Audience must be among the token's aud. Required.
	Audience string
	// TenantClaim names the claim that carries the tenant. Default "tenant".
	TenantClaim string
	// Leeway forgives clocks that disagree, for exp, nbf and iat. Default 30s.
	Leeway time.Duration
	// RefreshInterval is how often the JWKS URL is fetched. Default 5m.
	RefreshInterval time.Duration
	// Logger receives refresh failures. Default slog.Default().
	Logger *slog.Logger
}

func (c *JWTConfig) setDefaults() {
	if c.TenantClaim == "" {
		c.TenantClaim = "tenant"
	}
	if c.Leeway == 0 {
		c.Leeway = 30 * time.Second
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// WithDefaults returns the configuration with every zero value replaced by
// its default.
func (c JWTConfig) WithDefaults() JWTConfig {
	c.setDefaults()
	return c
}

// Validate reports every configuration problem at once.
func (c *JWTConfig) Validate() error {
	var errs []error
	if (c.JWKSURL == "") == (c.JWKSFile == "") {
		errs = append(errs, errors.New("jwt: exactly one of JWKSURL and JWKSFile is required"))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("jwt: Issuer is required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("jwt: Audience is required"))
	}
	if c.Leeway < 0 || c.RefreshInterval < 0 {
		errs = append(errs, errors.New("jwt: durations must not be negative"))
	}
	return errors.Join(errs...)
}

// JWT authenticates JSON Web Tokens signed by keys of a JWKS.
type JWT struct {
	cfg    JWTConfig
	parser *jwt.Parser
	keys   keySource
}

// keySource finds the key a token was signed with.
type keySource interface {
	Keyfunc(token *jwt.Token) (any, error)
}

// NewJWT fetches or reads the keys once, so that a wrong URL or file is an
// error at start; a URL keeps being refreshed until ctx ends.
func NewJWT(ctx context.Context, cfg JWTConfig) (*JWT, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	j := &JWT{cfg: cfg, parser: jwt.NewParser(
		jwt.WithIssuer(cfg.Issuer), jwt.WithAudience(cfg.Audience), jwt.WithLeeway(cfg.Leeway),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		// Asymmetric algorithms only: a shared secret would let anyone who
		// verifies also sign.
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}),
	)}
	if cfg.JWKSFile != "" {
		f := &fileKeys{path: cfg.JWKSFile, log: cfg.Logger}
		if err := f.load(); err != nil {
			return nil, err
		}
		j.keys = f
		return j, nil
	}
	noErr := false
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		RefreshInterval:           cfg.RefreshInterval,
		NoErrorReturnFirstHTTPReq: &noErr,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				cfg.Logger.Warn("refresh the JWKS; keeping the keys in hand", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: fetch the JWKS from %s: %w", cfg.JWKSURL, err)
	}
	j.keys = k
	return j, nil
}

// Authenticate implements Authenticator.
func (j *JWT) Authenticate(_ context.Context, credential string) (Principal, error) {
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(credential, claims, j.keys.Keyfunc); err != nil {
		return Principal{}, unauthenticated(jwtReason(err))
	}
	tenant, _ := claims[j.cfg.TenantClaim].(string)
	if !schemas.ValidTenant(tenant) {
		return Principal{}, unauthenticated(fmt.Sprintf("the token's %q claim names no valid tenant", j.cfg.TenantClaim))
	}
	scope, _ := claims["scope"].(string)
	subject, _ := claims.GetSubject()
	return Principal{Tenant: tenant, Scopes: strings.Fields(scope), Subject: "jwt:" + subject}, nil
}

// jwtReason says what was wrong with a token in words safe to show.
func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired token"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature"
	}
	return "invalid token"
}

// fileKeys is a JWKS read from a file, read again when the file changes
// (checked at most once a second).
type fileKeys struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	keys    keyfunc.Keyfunc
	stamp   string
	checked time.Time
}

func (f *fileKeys) stampNow() (string, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d:%d", fi.ModTime().UnixNano(), fi.Size()), nil
}

func (f *fileKeys) load() error {
	stamp, err := f.stampNow()
	if err != nil {
		return fmt.Errorf("jwt: read the JWKS file: %w", err)
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("jwt: read the JWKS file: %w", err)
	}
	k, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return fmt.Errorf("jwt: the JWKS file %s: %w", f.path, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys, f.stamp, f.checked = k, stamp, time.Now()
	return nil
}

func (f *fileKeys) Keyfunc(token *jwt.Token) (any, error) {
	f.mu.Lock()
	due := time.Since(f.checked) >= time.Second
	if due {
		f.checked = time.Now()
	}
	keys, stamp := f.keys, f.stamp
	f.mu.Unlock()
	if due {
		if now, err := f.stampNow(); err == nil && now != stamp {
			if err := f.load(); err != nil {
				f.log.Warn("the JWKS file changed but does not load; keeping the keys in hand", "err", err)
			} else {
				f.mu.Lock()
				keys = f.keys
				f.mu.Unlock()
			}
		}
	}
	return keys.Keyfunc(token)
}
