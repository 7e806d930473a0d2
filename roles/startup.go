package roles

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"
)

// untilReachable runs step until it succeeds. While it fails because a
// server cannot be reached (Kafka, Postgres or ClickHouse down or still
// starting), it waits with capped, jittered backoff and tries again, until
// ctx ends: a role started before its servers waits for them instead of
// exiting. Any other error (a server's refusal, a bad configuration) ends
// it at once.
func untilReachable(ctx context.Context, log *slog.Logger, what string, step func(context.Context) error) error {
	wait := 500 * time.Millisecond
	for {
		err := step(ctx)
		if err == nil || !unreachable(err) || ctx.Err() != nil {
			return err
		}
		d := wait/2 + time.Duration(rand.Int64N(int64(wait/2)))
		log.Warn("waiting for a server that cannot be reached", "step", what, "retry_in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// unreachable reports whether err says a server could not be reached or
// went away, as opposed to an answer it gave.
func unreachable(err error) bool {
	var (
		netErr net.Error
		pgErr  *pgconn.PgError
		kErr   *kerr.Error
		chErr  *ch.Exception
	)
	switch {
	case errors.As(err, &pgErr):
		// Class 08 is connection exceptions; 57P03 is a server that is
		// starting up or shutting down.
		return len(pgErr.Code) == 5 && (pgErr.Code[:2] == "08" || pgErr.Code == "57P03")
	case errors.As(err, &chErr):
		return false
	case errors.As(err, &kErr):
		return kErr.Retriable
	case errors.As(err, &netErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ch.ErrAcquireConnTimeout):
		return true
	}
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr)
}
