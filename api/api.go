// Package api is Kappa's HTTP interface: command intake (single and batch),
// command outcomes, and point lookups of the Postgres read models with
// read-your-writes. Errors are RFC 9457 problem+json.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/schemas"
)

// CommandBus writes commands; *ingest.Publisher is the implementation.
type CommandBus interface {
	Publish(ctx context.Context, cmds []ingest.Command, awaitOutcome time.Duration) ([]ingest.Result, error)
	Ready(ctx context.Context) error
}

// Config configures the HTTP API. Zero values take the documented defaults.
type Config struct {
	// MaxBodyBytes caps the body of POST /v1/commands. Default 1 MiB.
	MaxBodyBytes int64
	// MaxBatchBodyBytes caps the body of POST /v1/commands:batch. Default 32 MiB.
	MaxBatchBodyBytes int64
	// MaxBatchCommands caps the commands of one batch. Default 10000.
	MaxBatchCommands int
	// MaxWait caps Prefer: wait=N and lookup waits. Default 30s.
	MaxWait time.Duration
	// LookupWait is how long a lookup with a position waits when the request
	// does not say. Default 5s.
	LookupWait time.Duration
	// EventsTopic is the topic whose Postgres projection lookups wait on.
	// Required when Reads is set.
	EventsTopic string
	// IdempotencyWindow is how long an idempotency key stays bound to its
	// first command. It must not exceed the processors' window. Default 24h.
	IdempotencyWindow time.Duration
	// Logger receives request errors. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxBatchBodyBytes == 0 {
		c.MaxBatchBodyBytes = 32 << 20
	}
	if c.MaxBatchCommands == 0 {
		c.MaxBatchCommands = 10000
	}
	if c.MaxWait == 0 {
		c.MaxWait = 30 * time.Second
	}
	if c.LookupWait == 0 {
		c.LookupWait = 5 * time.Second
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 256 || c.MaxBatchBodyBytes < 256 {
		errs = append(errs, errors.New("api: body limits must be at least 256 bytes"))
	}
	if c.MaxBatchCommands < 1 {
		errs = append(errs, errors.New("api: MaxBatchCommands must be positive"))
	}
	if c.MaxWait < 0 || c.LookupWait < 0 {
		errs = append(errs, errors.New("api: waits must not be negative"))
	}
	return errors.Join(errs...)
}

// Server serves the HTTP API.
type Server struct {
	cfg   Config
	bus   CommandBus
	reads *postgres.Store
	log   *slog.Logger
	mux   *http.ServeMux
}

// New returns the API handler. reads may be nil: lookups then answer 503.
func New(cfg Config, bus CommandBus, reads *postgres.Store) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reads != nil && cfg.EventsTopic == "" {
		return nil, errors.New("api: EventsTopic is required with a read model")
	}
	s := &Server{cfg: cfg, bus: bus, reads: reads, log: cfg.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/commands", s.postCommand)
	s.mux.HandleFunc("POST /v1/commands:batch", s.postBatch)
	s.mux.HandleFunc("GET /v1/commands/{id}", s.getOutcome)
	s.mux.HandleFunc("GET /v1/articles/{id}", lookup(s, (*postgres.Store).Article))
	s.mux.HandleFunc("GET /v1/carts/{id}", lookup(s, (*postgres.Store).Cart))
	s.mux.HandleFunc("GET /v1/orders/{id}", lookup(s, (*postgres.Store).Order))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// CommandView is the API's view of a command and, once decided, its outcome.
type CommandView struct {
	CommandID string      `json:"command_id"`
	Status    string      `json:"status"`
	Position  string      `json:"position,omitempty"`
	Events    []EventView `json:"events,omitempty"`
	Code      string      `json:"code,omitempty"`
	Detail    string      `json:"detail,omitempty"`
}

// EventView names one event a command produced.
type EventView struct {
	ID               string `json:"id"`
	Type             string `json:"type"`
	AggregateVersion int64  `json:"aggregate_version"`
	Position         string `json:"position"`
}

// Command statuses beyond the outcome statuses.
const statusPending = "pending"

func viewOf(id string, pos string, o *schemas.Outcome) CommandView {
	v := CommandView{CommandID: id, Status: statusPending, Position: pos}
	if o == nil {
		return v
	}
	v.Status = o.Status
	if v.Position == "" {
		v.Position = o.CommandPosition.String()
	}
	for _, e := range o.Events {
		v.Events = append(v.Events, EventView{ID: e.ID, Type: e.Type, AggregateVersion: e.AggregateVersion, Position: e.Position.String()})
	}
	if o.Rejection != nil {
		v.Code, v.Detail = o.Rejection.Code, o.Rejection.Detail
	}
	return v
}

func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	if !s.requireContentType(w, r, contentTypeJSON) {
		return
	}
	body, ok := s.readBody(w, r, s.cfg.MaxBodyBytes)
	if !ok {
		return
	}
	cmd, fieldErrs, err := parseCommand(body)
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
	cmds := []ingest.Command{cmd}
	replayed, ok := s.claimIdempotencyKeys(w, r, cmds)
	if !ok {
		return
	}
	cmd = cmds[0]
	if replayed[0] {
		w.Header().Set(headerIdempotentReplayed, "true")
		// Answer from the read model when the first attempt's outcome is
		// there; otherwise publish again under the same command id, which
		// the processors recognise and do not decide twice.
		if o, err := s.reads.Outcome(r.Context(), cmd.ID); err == nil {
			s.writeCommandView(w, r, viewOf(cmd.ID, "", &o))
			return
		}
	}
	wait, waitApplied := s.preferWait(r)
	results, err := s.bus.Publish(r.Context(), cmds, wait)
	if err != nil {
		s.unavailable(w, r, err)
		return
	}
	res := results[0]
	view := viewOf(cmd.ID, res.Position.String(), res.Outcome)
	if waitApplied && res.Outcome != nil {
		w.Header().Set(headerPreferenceApplied, "wait="+strconv.Itoa(int(wait/time.Second)))
	}
	s.writeCommandView(w, r, view)
}

// writeCommandView answers with a command's state: 200 accepted, 409 or 422
// rejected, 202 not decided yet.
func (s *Server) writeCommandView(w http.ResponseWriter, r *http.Request, view CommandView) {
	w.Header().Set("Location", "/v1/commands/"+view.CommandID)
	switch view.Status {
	case schemas.StatusAccepted:
		writeJSON(w, http.StatusOK, view)
	case schemas.StatusRejected:
		status := http.StatusConflict
		if view.Code == aggregate.CodeUndecodableCommand {
			status = http.StatusUnprocessableEntity
		}
		writeJSONAs(w, status, contentTypeProblem, struct {
			Problem
			CommandID string `json:"command_id"`
			Position  string `json:"position"`
		}{
			Problem:   Problem{Type: TypeRejected, Title: "Command rejected", Status: status, Detail: view.Detail, Code: view.Code, Instance: r.URL.Path},
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
		cmd, fieldErrs, err := parseCommand(item)
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
	if _, ok := s.claimIdempotencyKeys(w, r, cmds); !ok {
		return
	}
	wait, _ := s.preferWait(r)
	results, err := s.bus.Publish(r.Context(), cmds, wait)
	if err != nil {
		if results == nil {
			s.unavailable(w, r, err)
			return
		}
		p := Problem{Type: TypeUnavailable, Title: "Kafka unavailable", Status: http.StatusServiceUnavailable,
			Detail: "some commands were not acknowledged by Kafka and must be treated as not written; the others are durable"}
		for i, res := range results {
			if res.Err != nil {
				p.Items = append(p.Items, ItemProblem{Index: i, CommandID: cmds[i].ID, Detail: "not acknowledged: " + res.Err.Error()})
			}
		}
		writeProblem(w, r, p)
		return
	}
	view := BatchView{Commands: make([]CommandView, len(cmds))}
	allDecided := true
	for i, res := range results {
		view.Commands[i] = viewOf(cmds[i].ID, res.Position.String(), res.Outcome)
		allDecided = allDecided && res.Outcome != nil
	}
	status := http.StatusAccepted
	if wait > 0 && allDecided {
		status = http.StatusOK
	}
	writeJSON(w, status, view)
}

// claimIdempotencyKeys binds each keyed command's key to its command id, or
// replaces the id with the one the key is already bound to; replayed says
// which. It answers the request itself and returns false when a key was
// reused for a different request or cannot be claimed.
func (s *Server) claimIdempotencyKeys(w http.ResponseWriter, r *http.Request, cmds []ingest.Command) (replayed []bool, ok bool) {
	replayed = make([]bool, len(cmds))
	var problems []ItemProblem
	for i := range cmds {
		c := &cmds[i]
		if c.IdempotencyKey == "" {
			continue
		}
		if s.reads == nil {
			writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Idempotency keys unavailable", Status: http.StatusServiceUnavailable,
				Detail: "idempotency keys are kept in Postgres, which this instance has not configured"})
			return nil, false
		}
		claim, err := s.reads.ClaimIdempotencyKey(r.Context(), c.IdempotencyKey, requestHash(*c), c.ID, s.cfg.IdempotencyWindow)
		switch {
		case errors.Is(err, postgres.ErrIdempotencyKeyReused):
			problems = append(problems, ItemProblem{Index: i, Errors: []schemas.FieldError{{Field: "/idempotency_key",
				Detail: "was already used for a different command within the idempotency window"}}})
		case err != nil:
			s.log.Error("claim idempotency key", "err", err)
			writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Idempotency keys unavailable", Status: http.StatusServiceUnavailable,
				Detail: "the idempotency key could not be checked; nothing was written, retry"})
			return nil, false
		default:
			c.ID, replayed[i] = claim.CommandID, claim.Replayed
		}
	}
	if len(problems) > 0 {
		p := Problem{Type: TypeIdempotencyKeyReused, Title: "Idempotency key reused", Status: http.StatusUnprocessableEntity,
			Detail: "an idempotency key was already used for a different command; nothing was written"}
		if len(cmds) == 1 {
			p.Errors = problems[0].Errors
		} else {
			p.Items = problems
		}
		writeProblem(w, r, p)
		return nil, false
	}
	return replayed, true
}

// requestHash identifies what a command asks for, independent of its id:
// a retry must hash the same, a different command must not.
func requestHash(c ingest.Command) []byte {
	payload, _ := json.Marshal(c.Payload) // payloads are plain structs of the schemas package
	h := sha256.New()
	for _, part := range [][]byte{[]byte(c.Type), []byte(c.AggregateID), []byte(c.Tenant), payload} {
		h.Write(part)
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}

func (s *Server) getOutcome(w http.ResponseWriter, r *http.Request) {
	if !s.requireReads(w, r) {
		return
	}
	id := r.PathValue("id")
	o, err := s.reads.Outcome(r.Context(), id)
	if errors.Is(err, postgres.ErrNotFound) {
		writeProblem(w, r, Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound,
			Detail: "no outcome for command " + id + ": it is unknown, or not decided and projected yet"})
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(id, "", &o))
}

// lookup serves one read model by id, after waiting for ?position= if given.
func lookup[T any](s *Server, get func(*postgres.Store, context.Context, string) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.requireReads(w, r) {
			return
		}
		if !s.waitForPosition(w, r) {
			return
		}
		v, err := get(s.reads, r.Context(), r.PathValue("id"))
		if errors.Is(err, postgres.ErrNotFound) {
			writeProblem(w, r, Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound, Detail: err.Error()})
			return
		}
		if err != nil {
			s.internal(w, r, err)
			return
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
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err = s.reads.WaitApplied(ctx, s.cfg.EventsTopic, pos, 10*time.Millisecond)
	if errors.Is(err, postgres.ErrNotCaughtUp) {
		writeProblem(w, r, Problem{Type: TypeNotCaughtUp, Title: "Read model not caught up", Status: http.StatusServiceUnavailable,
			Detail: fmt.Sprintf("the Postgres projection has not applied position %s within %s; retry", pos, wait)})
		return false
	}
	if err != nil {
		s.internal(w, r, err)
		return false
	}
	return true
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	status := http.StatusOK
	if err := s.bus.Ready(ctx); err != nil {
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

// parseCommand decodes and validates one command. A non-nil error means the
// JSON itself is malformed; field errors mean it is well-formed but invalid.
func parseCommand(body []byte) (ingest.Command, []schemas.FieldError, error) {
	if err := checkDepth(body, maxJSONDepth); err != nil {
		return ingest.Command{}, nil, err
	}
	if !utf8.Valid(body) {
		// The decoder would silently replace invalid bytes with U+FFFD.
		return ingest.Command{}, nil, errors.New("body is not valid UTF-8")
	}
	if err := checkObjects(body); err != nil {
		return ingest.Command{}, nil, err
	}
	var req schemas.CommandRequest
	rest, err := json.Parse(body, &req, json.DisallowUnknownFields|json.DontMatchCaseInsensitiveStructFields)
	if err == nil && len(bytes.TrimSpace(rest)) > 0 {
		return ingest.Command{}, nil, errors.New("unexpected data after the JSON value")
	}
	if err != nil {
		// An empty pointer names the whole document (RFC 6901).
		fe := schemas.FieldErrorOf("", err)
		return ingest.Command{}, []schemas.FieldError{fe}, nil
	}
	payload, err := schemas.ValidateCommand(req)
	var verr *schemas.ValidationError
	if errors.As(err, &verr) {
		return ingest.Command{}, verr.Errors, nil
	}
	if err != nil {
		return ingest.Command{}, nil, err
	}
	return ingest.Command{ID: ingest.NewCommandID(), Type: req.Type, AggregateID: req.AggregateID, IdempotencyKey: req.IdempotencyKey, Payload: payload}, nil, nil
}

var (
	errBatchTooLarge = errors.New("batch has too many commands")
	errBatchEmpty    = errors.New("batch has no commands")
)

// splitBatch returns the raw items of a JSON array or NDJSON body.
func splitBatch(body []byte, ndjson bool, maxItems int) ([][]byte, error) {
	// Depth first: the validators below recurse once per level.
	if err := checkDepth(body, maxJSONDepth+1); err != nil {
		return nil, err
	}
	var items [][]byte
	if ndjson {
		for n, line := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if len(items) == maxItems {
				return nil, fmt.Errorf("%w: more than %d", errBatchTooLarge, maxItems)
			}
			if !json.Valid(line) {
				return nil, fmt.Errorf("line %d is not valid JSON", n+1)
			}
			items = append(items, line)
		}
	} else {
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, fmt.Errorf("body must be a JSON array of commands: %v", strings.TrimPrefix(err.Error(), "json: "))
		}
		if len(raw) > maxItems {
			return nil, fmt.Errorf("%w: %d, more than %d", errBatchTooLarge, len(raw), maxItems)
		}
		for _, r := range raw {
			items = append(items, r)
		}
	}
	if len(items) == 0 {
		return nil, errBatchEmpty
	}
	return items, nil
}

// maxJSONDepth bounds nesting so that hostile input cannot exhaust the
// decoder's stack; no command needs more than four levels.
const maxJSONDepth = 16

func checkDepth(b []byte, limit int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			if depth > limit {
				return fmt.Errorf("JSON nesting deeper than %d levels", limit)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// checkObjects validates JSON syntax iteratively and refuses objects that
// repeat a member name: decoders disagree on which duplicate wins, so a
// command must say each field once.
func checkObjects(b []byte) error {
	var keys []map[string]bool // one set per open object; nil for arrays
	tok := json.NewTokenizer(b)
	for tok.Next() {
		switch {
		case tok.Delim == '{':
			keys = append(keys, map[string]bool{})
		case tok.Delim == '[':
			keys = append(keys, nil)
		case tok.Delim == '}' || tok.Delim == ']':
			if len(keys) > 0 {
				keys = keys[:len(keys)-1]
			}
		case tok.IsKey && len(keys) > 0 && keys[len(keys)-1] != nil:
			name := string(tok.String())
			if keys[len(keys)-1][name] {
				return fmt.Errorf("member %q appears twice in one object", truncate(name, 64))
			}
			keys[len(keys)-1][name] = true
		}
	}
	if tok.Err != nil || !json.Valid(b) {
		return errors.New("body is not valid JSON")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeProblem(w, r, Problem{Type: TypeTooLarge, Title: "Request too large", Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the body exceeds the limit of %d bytes", limit)})
		return nil, false
	}
	if err != nil {
		writeProblem(w, r, Problem{Type: TypeBadRequest, Title: "Unreadable body", Status: http.StatusBadRequest, Detail: err.Error()})
		return nil, false
	}
	return body, true
}

func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

func (s *Server) requireContentType(w http.ResponseWriter, r *http.Request, want string) bool {
	if mediaType(r) == want {
		return true
	}
	writeProblem(w, r, Problem{Type: TypeUnsupportedMedia, Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType,
		Detail: fmt.Sprintf("Content-Type must be %s, not %q", want, r.Header.Get("Content-Type"))})
	return false
}

func (s *Server) requireReads(w http.ResponseWriter, r *http.Request) bool {
	if s.reads != nil {
		return true
	}
	writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Read model not configured", Status: http.StatusServiceUnavailable,
		Detail: "this instance has no Postgres read model; set KAPPA_POSTGRES_URL"})
	return false
}

// preferWait parses RFC 7240's "Prefer: wait=N", capped at MaxWait. The
// bool says whether the client asked.
func (s *Server) preferWait(r *http.Request) (time.Duration, bool) {
	for _, header := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(header, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(pref), "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`))
			if err != nil || n < 0 {
				continue
			}
			return min(time.Duration(n)*time.Second, s.cfg.MaxWait), true
		}
	}
	return 0, false
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("publish commands", "err", err)
	writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Kafka unavailable", Status: http.StatusServiceUnavailable,
		Detail: "Kafka did not acknowledge the command in time, so it is not durable; retry it"})
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request", "path", r.URL.Path, "err", err)
	writeProblem(w, r, Problem{Type: TypeInternal, Title: "Internal error", Status: http.StatusInternalServerError})
}
