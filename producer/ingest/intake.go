package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Errors of the intake. Nothing of a request that fails with one of them
// is written, except where ErrUnavailable's results say otherwise.
var (
	// ErrKeyReused reports an idempotency key already bound, within the
	// window, to a different request. *KeyReusedError says which commands.
	ErrKeyReused = errors.New("idempotency key was used for a different request")
	// ErrKeysUnavailable reports that idempotency keys could not be
	// checked (no key store, or it failed); retrying may help.
	ErrKeysUnavailable = errors.New("idempotency keys unavailable")
)

// KeyReusedError lists the commands of a request whose idempotency keys
// are bound to other requests.
type KeyReusedError struct {
	// Indexes are the positions of those commands in the request.
	Indexes []int
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("%v: commands %v", ErrKeyReused, e.Indexes)
}

// Unwrap makes errors.Is(err, ErrKeyReused) hold.
func (e *KeyReusedError) Unwrap() error { return ErrKeyReused }

// Bus writes commands and waits for their outcomes; *Publisher is the
// implementation.
type Bus interface {
	Publish(ctx context.Context, cmds []Command, awaitOutcome time.Duration) ([]Result, error)
	Ready(ctx context.Context) error
}

// Keys binds idempotency keys; Kappa keeps them in Postgres, the one store
// every ingest instance shares that can refuse a second binding atomically.
type Keys interface {
	// ClaimIdempotencyKey binds key to commandID and requestHash unless it
	// is bound already within window, and returns what it is bound to.
	ClaimIdempotencyKey(ctx context.Context, key string, requestHash []byte, commandID string, window time.Duration) (boundCommandID string, boundHash []byte, err error)
}

// Outcomes answers retries whose first attempt is decided already.
type Outcomes interface {
	// Outcome returns the outcome of a command of tenant; found is false
	// while it is not decided (or not projected yet).
	Outcome(ctx context.Context, tenant, commandID string) (o schemas.Outcome, found bool, err error)
}

// IntakeConfig configures an Intake. Zero values take the documented
// defaults.
type IntakeConfig struct {
	// Bus publishes the commands. Required.
	Bus Bus
	// Keys binds idempotency keys. Default none: a keyed command is then
	// refused with ErrKeysUnavailable.
	Keys Keys
	// Outcomes answers retries from their first attempt. Default none: a
	// retry is published again under its first command id, and the
	// processors answer it with the first outcome.
	Outcomes Outcomes
	// IdempotencyWindow is how long an idempotency key stays bound to its
	// first command; it must not exceed the processors'. Default 24h.
	IdempotencyWindow time.Duration
	// Logger receives errors of the key store. Default slog.Default().
	Logger *slog.Logger
}

func (c *IntakeConfig) setDefaults() {
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *IntakeConfig) Validate() error {
	var errs []error
	if c.Bus == nil {
		errs = append(errs, errors.New("intake: Bus is required"))
	}
	if c.IdempotencyWindow < 0 {
		errs = append(errs, errors.New("intake: IdempotencyWindow must not be negative"))
	}
	return errors.Join(errs...)
}

// Intake takes commands in: it claims their idempotency keys, answers a
// retry from its first attempt, and publishes the rest. It knows nothing
// of HTTP; what goes wrong comes back as the errors above and the Bus's
// ErrUnavailable.
type Intake struct {
	cfg IntakeConfig
	log *slog.Logger
}

// NewIntake returns an Intake, or the configuration's problems.
func NewIntake(cfg IntakeConfig) (*Intake, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Intake{cfg: cfg, log: cfg.Logger}, nil
}

// NewCommand returns a command with a fresh id and its payload encoded,
// once, for both the record and the idempotency key's request hash.
func NewCommand(typ, aggregateID, tenant, idempotencyKey string, payload any) (Command, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return Command{}, fmt.Errorf("encode command %s: %w", typ, err)
	}
	return Command{ID: NewCommandID(), Type: typ, AggregateID: aggregateID, Tenant: tenant, IdempotencyKey: idempotencyKey, Data: data}, nil
}

// Submitted is what became of one command.
type Submitted struct {
	// Command is the command as written: a retry carries the id of its
	// first attempt.
	Command Command
	// Replayed is true for a retry of a command with the same idempotency
	// key and request.
	Replayed bool
	// Recalled is true when the outcome is the first attempt's, read back
	// instead of published and waited for.
	Recalled bool
	Result
}

// Submit takes one command in. A retry whose first attempt is decided is
// answered with that outcome and not written again; with wait > 0 it
// waits that long for the decision.
func (in *Intake) Submit(ctx context.Context, cmd Command, wait time.Duration) (Submitted, error) {
	cmds := []Command{cmd}
	replayed, err := in.claim(ctx, cmds)
	if err != nil {
		return Submitted{}, err
	}
	s := Submitted{Command: cmds[0], Replayed: replayed[0]}
	if s.Replayed && in.cfg.Outcomes != nil {
		o, found, err := in.cfg.Outcomes.Outcome(ctx, s.Command.Tenant, s.Command.ID)
		if err == nil && found {
			s.Outcome, s.Position, s.Recalled = &o, o.CommandPosition, true
			return s, nil
		}
		// Otherwise it is published again under the first id, which the
		// processors recognise and do not decide twice.
	}
	results, err := in.cfg.Bus.Publish(ctx, cmds, wait)
	if len(results) == 1 {
		s.Result = results[0]
	}
	return s, err
}

// SubmitBatch takes commands in, all or none as far as claiming goes:
// if any key is reused, nothing is written. Retries are published again
// under their first ids. If Kafka fails part-way, the error wraps
// ErrUnavailable and each Submitted's Err says whether it was written.
func (in *Intake) SubmitBatch(ctx context.Context, cmds []Command, wait time.Duration) ([]Submitted, error) {
	cmds = append([]Command(nil), cmds...)
	replayed, err := in.claim(ctx, cmds)
	if err != nil {
		return nil, err
	}
	results, err := in.cfg.Bus.Publish(ctx, cmds, wait)
	if results == nil {
		return nil, err
	}
	out := make([]Submitted, len(cmds))
	for i := range cmds {
		out[i] = Submitted{Command: cmds[i], Replayed: replayed[i], Result: results[i]}
	}
	return out, err
}

// Ready reports whether Kafka answers.
func (in *Intake) Ready(ctx context.Context) error { return in.cfg.Bus.Ready(ctx) }

// claim binds each keyed command's key to its id, or replaces the id with
// the one the key is bound to for the same request; replayed says which.
func (in *Intake) claim(ctx context.Context, cmds []Command) (replayed []bool, err error) {
	replayed = make([]bool, len(cmds))
	var reused []int
	for i := range cmds {
		c := &cmds[i]
		if c.IdempotencyKey == "" {
			continue
		}
		if in.cfg.Keys == nil {
			return nil, fmt.Errorf("%w: no key store is configured", ErrKeysUnavailable)
		}
		hash := requestHash(*c)
		// Keys are the tenant's: two tenants may use the same one.
		key := schemas.AggregateKey(c.Tenant, c.IdempotencyKey)
		bound, boundHash, err := in.cfg.Keys.ClaimIdempotencyKey(ctx, key, hash, c.ID, in.cfg.IdempotencyWindow)
		switch {
		case err != nil:
			in.log.Error("claim idempotency key", "err", err)
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		case bound == c.ID:
		case bytes.Equal(boundHash, hash):
			c.ID, replayed[i] = bound, true
		default:
			reused = append(reused, i)
		}
	}
	if len(reused) > 0 {
		return nil, &KeyReusedError{Indexes: reused}
	}
	return replayed, nil
}

// requestHash identifies what a command asks for, independent of its id:
// a retry must hash the same, a different command must not.
func requestHash(c Command) []byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(c.Type), []byte(c.AggregateID), []byte(c.Tenant), c.Data} {
		h.Write(part)
		h.Write([]byte{0})
	}
	// Commands without an expected version hash as they did before there
	// was one, so that keys bound then still match their retries.
	if c.ExpectedVersion != nil {
		h.Write(strconv.AppendInt([]byte("expected_version="), *c.ExpectedVersion, 10))
	}
	return h.Sum(nil)
}

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c IntakeConfig) WithDefaults() IntakeConfig {
	c.setDefaults()
	return c
}
