package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Who a request acts as. Every /v1 endpoint needs a bearer credential
// that the Authenticator accepts and the scope the endpoint names; without
// an Authenticator (--auth none) every request acts as the default
// tenant with every scope.

type principalKey struct{}

func principalOf(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(auth.Principal)
	return p
}

// everyone is who requests act as without authentication.
var everyone = auth.Principal{Tenant: schemas.DefaultTenant, Scopes: auth.Scopes, Subject: "anonymous"}

// authorized wraps an endpoint that needs scope.
func (s *Server) authorized(scope string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		if !p.Has(scope) {
			s.refusals.Refused(refusedScope)
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="kappa", error="insufficient_scope", scope=%q`, scope))
			writeProblem(w, r, Problem{Type: TypeForbidden, Title: "Forbidden", Status: http.StatusForbidden,
				Detail: fmt.Sprintf("the credential lacks the scope %s", scope)})
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

// authenticate finds who the request acts as, or answers 401 itself.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	if s.authn == nil {
		return everyone, true
	}
	header := r.Header.Get("Authorization")
	scheme, credential, _ := strings.Cut(header, " ")
	credential = strings.TrimSpace(credential)
	switch {
	case header == "":
		s.unauthenticated(w, r, "", "this endpoint needs Authorization: Bearer <API key or token>")
		return auth.Principal{}, false
	case !strings.EqualFold(scheme, "Bearer") || credential == "" || strings.ContainsAny(credential, " \t"):
		s.unauthenticated(w, r, "invalid_request", "the Authorization header must be Bearer <API key or token>")
		return auth.Principal{}, false
	}
	p, err := s.authn.Authenticate(r.Context(), credential)
	var reason *auth.Error
	switch {
	case errors.As(err, &reason):
		s.unauthenticated(w, r, "invalid_token", "the credential is not accepted: "+reason.Reason)
		return auth.Principal{}, false
	case err != nil:
		s.log.Error("authenticate", "err", err)
		writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Credentials cannot be checked", Status: http.StatusServiceUnavailable,
			Detail: "the credential could not be checked; retry"})
		return auth.Principal{}, false
	}
	return p, true
}

func (s *Server) unauthenticated(w http.ResponseWriter, r *http.Request, code, detail string) {
	s.refusals.Refused(refusedUnauthenticated)
	challenge := `Bearer realm="kappa"`
	if code != "" {
		challenge += fmt.Sprintf(`, error=%q`, code)
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeProblem(w, r, Problem{Type: TypeUnauthenticated, Title: "Unauthenticated", Status: http.StatusUnauthorized, Detail: detail})
}
