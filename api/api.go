// Package api is Kappa's HTTP interface: command intake (single and batch),
// command outcomes, and point lookups of the Postgres read models with
// read-your-writes. Errors are RFC 9457 problem+json.
package api

import (
	"bytes"
	"context"
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

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Reads is what the API reads: command outcomes and read models. In Kappa
// the Postgres projection's store serves them (roles adapts it).
type Reads interface {
	// Outcome returns a command's outcome; found is false until it is
	// decided and projected.
	Outcome(ctx context.Context, commandID string) (o schemas.Outcome, found bool, err error)
	// ReadModel returns the read model of kind ("articles", "carts",
	// "orders") with id, ready to be encoded as JSON; found is false if
	// there is none.
	ReadModel(ctx context.Context, kind, id string) (view any, found bool, err error)
	// WaitApplied waits until the read models include the command at pos
	// and all of its events, or ctx ends; caughtUp says which.
	WaitApplied(ctx context.Context, pos schemas.Position) (caughtUp bool, err error)
	// Ping checks that the store answers, for /readyz.
	Ping(ctx context.Context) error
}

// Read-model kinds, the path segments of the lookups.
var readModels = []string{"articles", "carts", "orders"}

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
	cfg    Config
	intake *ingest.Intake
	reads  Reads
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns the API handler. reads may be nil: lookups then answer 503.
func New(cfg Config, intake *ingest.Intake, reads Reads) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if intake == nil {
		return nil, errors.New("api: an intake is required")
	}
	s := &Server{cfg: cfg, intake: intake, reads: reads, log: cfg.Logger, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/commands", s.postCommand)
	s.mux.HandleFunc("POST /v1/commands:batch", s.postBatch)
	s.mux.HandleFunc("GET /v1/commands/{id}", s.getOutcome)
	for _, kind := range readModels {
		s.mux.HandleFunc("GET /v1/"+kind+"/{id}", s.lookup(kind))
	}
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
		status := http.StatusConflict
		if view.Code == schemas.CodeUndecodableCommand {
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

func (s *Server) getOutcome(w http.ResponseWriter, r *http.Request) {
	if !s.requireReads(w, r) {
		return
	}
	id := r.PathValue("id")
	o, found, err := s.reads.Outcome(r.Context(), id)
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
		v, found, err := s.reads.ReadModel(r.Context(), kind, id)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if !found {
			writeProblem(w, r, Problem{Type: TypeNotFound, Title: "Not found", Status: http.StatusNotFound,
				Detail: fmt.Sprintf("%s %s: not found", strings.TrimSuffix(kind, "s"), id)})
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
	cmd, err := ingest.NewCommand(req.Type, req.AggregateID, "", req.IdempotencyKey, payload)
	return cmd, nil, err
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

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
