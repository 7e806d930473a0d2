package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kappa-cqrs/kappa/kafka"
)

func TestUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("create topic: unable to dial: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"closed mid-answer", fmt.Errorf("migrate: %w", io.ErrUnexpectedEOF), true},
		{"postgres starting up", &pgconn.PgError{Code: "57P03"}, true},
		{"postgres connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"postgres refuses the DDL", &pgconn.PgError{Code: "42501"}, false},
		{"kafka coordinator loading", fmt.Errorf("create topic: %w", kerr.CoordinatorLoadInProgress), true},
		{"kafka not authorized", fmt.Errorf("create topic: %w", kerr.TopicAuthorizationFailed), false},
		{"clickhouse refuses", &ch.Exception{Code: 516, Message: "authentication failed"}, false},
		{"partition counts differ", kafka.ErrPartitionMismatch, false},
		{"anything else", errors.New("bad migration file"), false},
		{"a timeout of one attempt", fmt.Errorf("list topics: %w", context.DeadlineExceeded), true},
	} {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("%s: unreachable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestUntilReachableWaitsThenGivesUpOnRefusals: unreachable servers are
// waited for; an answer that refuses ends the wait at once.
func TestUntilReachableWaitsThenGivesUpOnRefusals(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	attempts := 0
	err := untilReachable(t.Context(), discard(), "step", func(context.Context) error {
		attempts++
		if attempts < 3 {
			return refused
		}
		return nil
	})
	if err != nil || attempts != 3 {
		t.Fatalf("untilReachable = %v after %d attempts, want success on the third", err, attempts)
	}
	attempts = 0
	denied := &pgconn.PgError{Code: "28P01"}
	if err := untilReachable(t.Context(), discard(), "step", func(context.Context) error { attempts++; return denied }); !errors.Is(err, denied) || attempts != 1 {
		t.Fatalf("untilReachable = %v after %d attempts, want the refusal after one", err, attempts)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
