package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kappa-cqrs/kappa/schemas"
)

// The read endpoints: outcomes, read models with read-your-writes, and
// readiness.

func (s *Server) getOutcome(w http.ResponseWriter, r *http.Request) {
	if !s.requireReads(w, r) {
		return
	}
	id := r.PathValue("id")
	o, found, err := s.reads.Outcome(r.Context(), principalOf(r).Tenant, id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !found {
		writeProblem(w, r, Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound,
			Detail: "no outcome for command " + id + ": it is unknown, or not decided and projected yet"})
		return
	}
	writeJSON(w, http.StatusOK, viewOf(id, "", &o))
}

// lookup serves one kind of read model by id, after waiting for ?position=
// if given.
func (s *Server) lookup(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.requireReads(w, r) {
			return
		}
		if !s.waitForPosition(w, r) {
			return
		}
		id := r.PathValue("id")
		v, version, found, err := s.reads.ReadModel(r.Context(), principalOf(r).Tenant, kind, id)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if !found {
			writeProblem(w, r, Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound,
				Detail: fmt.Sprintf("%s %s: not found", strings.TrimSuffix(kind, "s"), id)})
			return
		}
		if version > 0 {
			// The tag a command gives back in If-Match to be decided only
			// against this version.
			w.Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) waitForPosition(w http.ResponseWriter, r *http.Request) bool {
	token := r.URL.Query().Get("position")
	if token == "" {
		return true
	}
	pos, err := schemas.ParsePosition(token)
	if err != nil {
		writeProblem(w, r, Problem{Type: TypeBadRequest, Title: "Invalid position", Status: http.StatusBadRequest, Detail: err.Error(),
			Errors: []schemas.FieldError{{Field: "position", Detail: "must be the position token of a command response, partition:offset"}}})
		return false
	}
	wait, applied := s.preferWait(r)
	if !applied {
		wait = s.cfg.LookupWait
	}
	credential := credentialOf(r)
	if !s.positionWaiters.enter(credential) {
		s.tooMany(w, r, refusedWaiters, time.Second,
			fmt.Sprintf("this credential has %d lookups waiting for a position already", s.cfg.MaxPositionWaiters))
		return false
	}
	defer s.positionWaiters.leave(credential)
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	caughtUp, err := s.reads.WaitApplied(ctx, pos)
	if err != nil {
		s.internal(w, r, err)
		return false
	}
	if !caughtUp {
		writeProblem(w, r, Problem{Type: TypeNotCaughtUp, Title: "Read model not caught up", Status: http.StatusServiceUnavailable,
			Detail: fmt.Sprintf("the Postgres projection has not applied position %s within %s; retry", pos, wait)})
		return false
	}
	return true
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	if err := s.intake.Ready(ctx); err != nil {
		checks["kafka"], status = err.Error(), http.StatusServiceUnavailable
	} else {
		checks["kafka"] = "ok"
	}
	if s.reads != nil {
		if err := s.reads.Ping(ctx); err != nil {
			checks["postgres"], status = err.Error(), http.StatusServiceUnavailable
		} else {
			checks["postgres"] = "ok"
		}
	}
	writeJSON(w, status, checks)
}
