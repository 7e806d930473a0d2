package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The command endpoints: one command, and a batch.

func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	if !s.requireContentType(w, r, contentTypeJSON) {
		return
	}
	body, ok := s.readBody(w, r, s.cfg.MaxBodyBytes)
	if !ok {
		return
	}
	cmd, fieldErrs, err := parseCommand(body, principalOf(r).Tenant)
	if err != nil {
		writeProblem(w, r, Problem{Type: TypeMalformedJSON, Title: "Malformed JSON", Status: http.StatusBadRequest, Detail: err.Error()})
		return
	}
	if fieldErrs != nil {
		writeProblem(w, r, Problem{Type: TypeInvalidCommand, Title: "Invalid command", Status: http.StatusUnprocessableEntity,
			Detail: "the command has invalid fields; nothing was written", Errors: fieldErrs})
		return
	}
	if key := r.Header.Get(headerIdempotencyKey); key != "" {
		if cmd.IdempotencyKey != "" && cmd.IdempotencyKey != key {
			writeProblem(w, r, Problem{Type: TypeInvalidCommand, Title: "Invalid command", Status: http.StatusUnprocessableEntity,
				Detail: "the idempotency_key field and the Idempotency-Key header differ; nothing was written",
				Errors: []schemas.FieldError{{Field: "/idempotency_key", Detail: "differs from the Idempotency-Key header"}}})
			return
		}
		if !schemas.ValidIdempotencyKey(key) {
			writeProblem(w, r, Problem{Type: TypeInvalidCommand, Title: "Invalid Idempotency-Key", Status: http.StatusUnprocessableEntity,
				Detail: fmt.Sprintf("the Idempotency-Key header must be 1 to %d printable ASCII characters without spaces", schemas.MaxIdempotencyKeyBytes)})
			return
		}
		cmd.IdempotencyKey = key
	}
	if !s.expectedVersionFromHeaders(w, r, &cmd) {
		return
	}
	if !s.admitCommands(w, r, 1) {
		return
	}
	wait, waitApplied := s.preferWait(r)
	sub, err := s.intake.Submit(r.Context(), cmd, wait)
	if err != nil {
		s.submitFailed(w, r, err, 1)
		return
	}
	if sub.Replayed {
		w.Header().Set(headerIdempotentReplayed, "true")
	}
	if waitApplied && sub.Outcome != nil && !sub.Recalled {
		w.Header().Set(headerPreferenceApplied, "wait="+strconv.Itoa(int(wait/time.Second)))
	}
	s.writeCommandView(w, r, viewOf(sub.Command.ID, sub.Position.String(), sub.Outcome))
}

// submitFailed answers a request the intake refused or could not write;
// n is the number of commands in it.
func (s *Server) submitFailed(w http.ResponseWriter, r *http.Request, err error, n int) {
	var reused *ingest.KeyReusedError
	switch {
	case errors.As(err, &reused):
		p := Problem{Type: TypeIdempotencyKeyReused, Title: "Idempotency key reused", Status: http.StatusUnprocessableEntity,
			Detail: "an idempotency key was already used for a different command; nothing was written"}
		keyErrors := []schemas.FieldError{{Field: "/idempotency_key", Detail: "was already used for a different command within the idempotency window"}}
		if n == 1 {
			p.Errors = keyErrors
		} else {
			for _, i := range reused.Indexes {
				p.Items = append(p.Items, ItemProblem{Index: i, Errors: keyErrors})
			}
		}
		writeProblem(w, r, p)
	case errors.Is(err, ingest.ErrKeysUnavailable):
		s.log.Error("idempotency keys", "err", err)
		writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Idempotency keys unavailable", Status: http.StatusServiceUnavailable,
			Detail: "the idempotency key could not be checked (keys are kept in Postgres); nothing was written, retry"})
	case errors.Is(err, ingest.ErrUnavailable):
		s.unavailable(w, r, err)
	default:
		s.internal(w, r, err)
	}
}

// writeCommandView answers with a command's state: 200 accepted, 409 or 422
// rejected, 202 not decided yet.
func (s *Server) writeCommandView(w http.ResponseWriter, r *http.Request, view CommandView) {
	w.Header().Set("Location", "/v1/commands/"+view.CommandID)
	switch view.Status {
	case schemas.StatusAccepted:
		writeJSON(w, http.StatusOK, view)
	case schemas.StatusRejected:
		status, typ, title := http.StatusConflict, TypeRejected, "Command rejected"
		switch view.Code {
		case schemas.CodeUndecodableCommand:
			status = http.StatusUnprocessableEntity
		case schemas.CodeVersionConflict:
			typ, title = TypeVersionConflict, "Version conflict"
		}
		writeJSONAs(w, status, contentTypeProblem, struct {
			Problem
			CommandID string `json:"command_id"`
			Position  string `json:"position"`
		}{
			Problem:   Problem{Type: typ, Title: title, Status: status, Detail: view.Detail, Code: view.Code, Instance: r.URL.Path},
			CommandID: view.CommandID,
			Position:  view.Position,
		})
	default:
		writeJSON(w, http.StatusAccepted, view)
	}
}

// BatchView is the response to a batch.
type BatchView struct {
	Commands []CommandView `json:"commands"`
}

func (s *Server) postBatch(w http.ResponseWriter, r *http.Request) {
	ndjson := mediaType(r) == contentTypeNDJSON
	if !ndjson && !s.requireContentType(w, r, contentTypeJSON) {
		return
	}
	body, ok := s.readBody(w, r, s.cfg.MaxBatchBodyBytes)
	if !ok {
		return
	}
	items, err := splitBatch(body, ndjson, s.cfg.MaxBatchCommands)
	if err != nil {
		status := http.StatusBadRequest
		typ, title := TypeMalformedJSON, "Malformed JSON"
		if errors.Is(err, errBatchTooLarge) || errors.Is(err, errBatchEmpty) {
			status, typ, title = http.StatusUnprocessableEntity, TypeInvalidCommand, "Invalid batch"
		}
		writeProblem(w, r, Problem{Type: typ, Title: title, Status: status, Detail: err.Error()})
		return
	}
	cmds := make([]ingest.Command, len(items))
	var problems []ItemProblem
	for i, item := range items {
		cmd, fieldErrs, err := parseCommand(item, principalOf(r).Tenant)
		switch {
		case err != nil:
			problems = append(problems, ItemProblem{Index: i, Detail: "malformed JSON: " + err.Error()})
		case fieldErrs != nil:
			problems = append(problems, ItemProblem{Index: i, Errors: fieldErrs})
		}
		cmds[i] = cmd
	}
	if len(problems) > 0 {
		writeProblem(w, r, Problem{Type: TypeInvalidCommand, Title: "Invalid batch", Status: http.StatusUnprocessableEntity,
			Detail: fmt.Sprintf("%d of %d commands are invalid; nothing was written", len(problems), len(cmds)), Items: problems})
		return
	}
	if !s.admitCommands(w, r, len(cmds)) {
		return
	}
	wait, _ := s.preferWait(r)
	subs, err := s.intake.SubmitBatch(r.Context(), cmds, wait)
	if err != nil && subs == nil {
		s.submitFailed(w, r, err, len(cmds))
		return
	}
	if err != nil {
		s.log.Warn("publish commands", "err", err)
		p := Problem{Type: TypeUnavailable, Title: "Kafka unavailable", Status: http.StatusServiceUnavailable,
			Detail: "some commands were not acknowledged by Kafka and must be treated as not written; the others are durable"}
		for i, sub := range subs {
			if sub.Err != nil {
				p.Items = append(p.Items, ItemProblem{Index: i, CommandID: sub.Command.ID, Detail: "not acknowledged: " + sub.Err.Error()})
			}
		}
		writeProblem(w, r, p)
		return
	}
	view := BatchView{Commands: make([]CommandView, len(subs))}
	allDecided := true
	for i, sub := range subs {
		view.Commands[i] = viewOf(sub.Command.ID, sub.Position.String(), sub.Outcome)
		allDecided = allDecided && sub.Outcome != nil
	}
	status := http.StatusAccepted
	if wait > 0 && allDecided {
		status = http.StatusOK
	}
	writeJSON(w, status, view)
}

// expectedVersionFromHeaders takes the version the command expects from
// HTTP's preconditions, as lookups give it in ETag: If-Match: "<version>",
// If-Match: * (the aggregate must exist) or If-None-Match: * (it must not
// exist yet). It answers 422 itself when they are malformed or disagree
// with the body.
func (s *Server) expectedVersionFromHeaders(w http.ResponseWriter, r *http.Request, cmd *ingest.Command) bool {
	ifMatch, ifNoneMatch := r.Header.Values("If-Match"), r.Header.Values("If-None-Match")
	if len(ifMatch) == 0 && len(ifNoneMatch) == 0 {
		return true
	}
	invalid := func(field, detail string) bool {
		writeProblem(w, r, Problem{Type: TypeInvalidCommand, Title: "Invalid precondition", Status: http.StatusUnprocessableEntity,
			Detail: detail + "; nothing was written", Errors: []schemas.FieldError{{Field: field, Detail: detail}}})
		return false
	}
	var expected int64
	switch {
	case len(ifMatch) > 0 && len(ifNoneMatch) > 0:
		return invalid("If-Match", "give If-Match or If-None-Match, not both")
	case len(ifNoneMatch) > 0:
		if len(ifNoneMatch) > 1 || strings.TrimSpace(ifNoneMatch[0]) != "*" {
			return invalid("If-None-Match", `only If-None-Match: * is understood (the aggregate must not exist yet)`)
		}
		expected = 0
	default:
		v, ok := parseVersionTag(ifMatch)
		if !ok {
			return invalid("If-Match", `must be one entity tag as lookups give in ETag, "<version>", or *`)
		}
		expected = v
	}
	if cmd.ExpectedVersion != nil && *cmd.ExpectedVersion != expected {
		return invalid("/expected_version", "differs from the If-Match or If-None-Match header")
	}
	cmd.ExpectedVersion = &expected
	return true
}

// parseVersionTag reads If-Match: one strong entity tag holding a version
// of at least 1, or * (schemas.ExpectExisting).
func parseVersionTag(values []string) (int64, bool) {
	if len(values) != 1 {
		return 0, false
	}
	tag := strings.TrimSpace(values[0])
	if tag == "*" {
		return schemas.ExpectExisting, true
	}
	unquoted, ok := strings.CutPrefix(tag, `"`)
	if !ok {
		return 0, false
	}
	if unquoted, ok = strings.CutSuffix(unquoted, `"`); !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(unquoted, 10, 64)
	return v, err == nil && v >= 1 && strconv.FormatInt(v, 10) == unquoted
}
