package heapfloor_test

import (
	"context"
	"errors"
	"fmt"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/heapfloor"
	"github.com/kappa-cqrs/kappa/kappatest"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, floor uint64
		want        int
	}{
		{live: 35 * mib, floor: 96 * mib, want: 170}, // target about 96 MiB
		{live: 48 * mib, floor: 96 * mib, want: 100}, // Go's default reaches the floor
		{live: 60 * mib, floor: 96 * mib, want: 100}, // and goes past it
		{live: 47 * mib, floor: 96 * mib, want: 100}, // 104%, rounded down, never below the default
		{live: 1 * mib, floor: 96 * mib, want: 1000}, // bounded just after the start
		{live: 0, floor: 96 * mib, want: 1000},
	} {
		if got := heapfloor.Percent(c.live, c.floor); got != c.want {
			t.Errorf("Percent(%d MiB, %d MiB) = %d, want %d", c.live/mib, c.floor/mib, got, c.want)
		}
	}
}

func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// Keep raises the collector's percent while the live heap is below half
// the floor, and gives Go's default back when it ends.
func TestKeepRaisesThePercentUntilItEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); heapfloor.Keep(ctx, 1<<40, time.Millisecond) }()
	kappatest.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if got := gogc(); got != 1000 {
			return fmt.Errorf("GOGC is %d, want 1000 for a live heap far below a 1 TiB floor", got)
		}
		return nil
	})
	cancel()
	<-done
	if got := gogc(); got != 100 {
		t.Errorf("GOGC is %d after Keep ended, want 100", got)
	}
}

// An operator's GOGC or GOMEMLIMIT wins: Keep returns at once.
func TestKeepLeavesAnOperatorsChoice(t *testing.T) {
	for _, env := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "100")
			done := make(chan struct{})
			go func() { defer close(done); heapfloor.Keep(t.Context(), 1<<40, time.Millisecond) }()
			kappatest.Eventually(t, 10*time.Second, time.Millisecond, func() error {
				select {
				case <-done:
					return nil
				default:
					return errors.New("Keep still runs with " + env + " set")
				}
			})
			if got := gogc(); got != 100 {
				t.Errorf("GOGC is %d, want the operator's 100", got)
			}
		})
	}
}
