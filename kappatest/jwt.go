package kappatest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/encoding/json"
)

// Issuer is an identity provider for tests: it signs tokens with an ES256
// key and publishes the public key in a JWKS.
type Issuer struct {
	key *ecdsa.PrivateKey
	kid string
}

// NewIssuer returns an issuer with a new key named kid.
func NewIssuer(t testing.TB, kid string) Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Issuer{key: key, kid: kid}
}

func (i Issuer) jwk() map[string]string {
	b := func(n *big.Int) string { return base64.RawURLEncoding.EncodeToString(n.FillBytes(make([]byte, 32))) }
	return map[string]string{"kty": "EC", "crv": "P-256", "x": b(i.key.X), "y": b(i.key.Y), "kid": i.kid, "alg": "ES256", "use": "sig"}
}

// JWKS returns the public keys of issuers as a JSON Web Key Set.
func JWKS(t testing.TB, issuers ...Issuer) []byte {
	t.Helper()
	var keys []map[string]string
	for _, i := range issuers {
		keys = append(keys, i.jwk())
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sign returns a token with claims, signed by the issuer's key.
func (i Issuer) Sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = i.kid
	s, err := tok.SignedString(i.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Claims are those of a good token of issuer https://idp.example for
// audience kappa, subject user-1 of tenant acme with every scope, valid
// for an hour; mods change them.
func Claims(mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"iss": "https://idp.example", "aud": "kappa", "sub": "user-1", "tenant": "acme",
		"scope": "read commands:write", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for _, m := range mods {
		m(c)
	}
	return c
}
