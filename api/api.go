// Package api is Kappa's HTTP interface: command intake (single and batch),
// command outcomes, and point lookups of the Postgres read models with
// read-your-writes. Errors are RFC 9457 problem+json.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Reads is what the API reads: command outcomes and read models, each of
// one tenant. In Kappa the Postgres projection's store serves them (roles
// adapts it).
type Reads interface {
	// Outcome returns a command's outcome; found is false until it is
	// decided and projected, and for a command of another tenant.
	Outcome(ctx context.Context, tenant, commandID string) (o schemas.Outcome, found bool, err error)
	// ReadModel returns the tenant's read model of kind ("articles",
	// "carts", "orders") with id, ready to be encoded as JSON, and the
	// aggregate's version (0 for a model without one); found is false if
	// there is none.
	ReadModel(ctx context.Context, tenant, kind, id string) (view any, version int64, found bool, err error)
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
	// Refusals counts refused requests by reason. Default none.
	Refusals Refusals

	// CommandRate is how many commands a second one credential may send
	// (a token bucket; a batch takes one token per command). Default
	// 10000; negative: no limit.
	CommandRate float64
	// CommandBurst is how many commands a credential may send at once
	// after a pause; at least MaxBatchCommands. Default twice CommandRate,
	// and at least MaxBatchCommands.
	CommandBurst int
	// ReadRate is how many reads a second one credential may make.
	// Default 1000; negative: no limit.
	ReadRate float64
	// ReadBurst is how many reads a credential may make at once after a
	// pause. Default twice ReadRate.
	ReadBurst int
	// MaxPositionWaiters is how many lookups with ?position= of one
	// credential may wait at the same time; more are answered 429.
	// Default 32.
	MaxPositionWaiters int
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
	if c.Refusals == nil {
		c.Refusals = noRefusals{}
	}
	if c.CommandRate == 0 {
		c.CommandRate = 10000
	}
	if c.CommandBurst == 0 && c.CommandRate > 0 {
		c.CommandBurst = max(c.MaxBatchCommands, int(math.Ceil(2*c.CommandRate)))
	}
	if c.ReadRate == 0 {
		c.ReadRate = 1000
	}
	if c.ReadBurst == 0 && c.ReadRate > 0 {
		c.ReadBurst = max(1, int(math.Ceil(2*c.ReadRate)))
	}
	if c.MaxPositionWaiters == 0 {
		c.MaxPositionWaiters = 32
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
	if c.CommandRate > 0 && c.CommandBurst < c.MaxBatchCommands {
		errs = append(errs, fmt.Errorf("api: the command burst (%d) must hold the largest batch (%d commands), or that batch could never be sent",
			c.CommandBurst, c.MaxBatchCommands))
	}
	if c.ReadRate > 0 && c.ReadBurst < 1 {
		errs = append(errs, errors.New("api: the read burst must be at least 1"))
	}
	if c.MaxPositionWaiters < 1 {
		errs = append(errs, errors.New("api: MaxPositionWaiters must be positive"))
	}
	return errors.Join(errs...)
}

// Refusals is an optional observer of the requests the API refuses before
// doing anything: metrics count them by reason.
type Refusals interface {
	Refused(reason string)
}

// Reasons of refusals.
const (
	refusedUnauthenticated = "unauthenticated"
	refusedScope           = "forbidden"
	refusedRate            = "rate_limited"
	refusedWaiters         = "too_many_waiters"
)

type noRefusals struct{}

func (noRefusals) Refused(string) {}

// Server serves the HTTP API.
type Server struct {
	cfg      Config
	intake   *ingest.Intake
	reads    Reads
	authn    auth.Authenticator
	refusals Refusals
	log      *slog.Logger
	mux      *http.ServeMux

	commandBuckets, readBuckets *buckets
	positionWaiters             *waiters
}

// New returns the API handler. reads may be nil: lookups then answer 503.
// authn nil serves every request as the default tenant with every scope
// (--auth none).
func New(cfg Config, intake *ingest.Intake, reads Reads, authn auth.Authenticator) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if intake == nil {
		return nil, errors.New("api: an intake is required")
	}
	s := &Server{cfg: cfg, intake: intake, reads: reads, authn: authn, refusals: cfg.Refusals, log: cfg.Logger, mux: http.NewServeMux(),
		commandBuckets: newBuckets(cfg.CommandRate, cfg.CommandBurst), readBuckets: newBuckets(cfg.ReadRate, cfg.ReadBurst),
		positionWaiters: &waiters{max: cfg.MaxPositionWaiters, byKey: map[string]int{}}}
	// Commands are counted once parsed, a batch by its commands.
	s.mux.HandleFunc("POST /v1/commands", s.authorized(auth.ScopeCommandsWrite, s.postCommand))
	s.mux.HandleFunc("POST /v1/commands:batch", s.authorized(auth.ScopeCommandsWrite, s.postBatch))
	s.mux.HandleFunc("GET /v1/commands/{id}", s.authorized(auth.ScopeRead, s.read(s.getOutcome)))
	for _, kind := range readModels {
		s.mux.HandleFunc("GET /v1/"+kind+"/{id}", s.authorized(auth.ScopeRead, s.read(s.lookup(kind))))
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

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}
