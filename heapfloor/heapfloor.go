// Package heapfloor lets a process whose live heap is small collect its
// garbage less often. Go's collector runs each time the heap doubles its
// live part (GOGC=100): a processor that keeps about 30 MiB live and
// allocates 20-30 MB/s at load collects about once a second, and the
// collector takes 8% of its CPU (docs/PERFORMANCE.md). With a floor, the heap may grow to the floor before a
// collection while the live part is small, as if GOGC were raised, and
// collections follow Go's default again once the live heap reaches half
// the floor, so a large live heap costs no more memory than before.
package heapfloor

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// maxPercent bounds the GOGC the floor sets, for a live heap of almost
// nothing just after the start.
const maxPercent = 1000

// Keep sets the collector's percent from the live heap every interval
// until ctx ends, so that the heap's target is at least floor bytes, and
// gives Go's default back when it returns. It leaves the collector alone
// when floor is not positive, or when GOGC or GOMEMLIMIT is set: then the
// operator has chosen.
func Keep(ctx context.Context, floor int64, every time.Duration) {
	if floor <= 0 || os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := 100
	defer debug.SetGCPercent(100)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		metrics.Read(sample)
		if want := Percent(sample[0].Value.Uint64(), uint64(floor)); want != set {
			debug.SetGCPercent(want)
			set = want
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Percent is the GOGC that puts the heap's target, about live × (1 +
// percent/100), at floor, and never below Go's default of 100. It is
// rounded down to a multiple of 10 so that small changes of the live heap
// do not reset the collector.
func Percent(live, floor uint64) int {
	if live == 0 {
		return maxPercent
	}
	if 2*live >= floor {
		return 100
	}
	p := int(floor*100/live) - 100
	p -= p % 10
	return min(max(p, 100), maxPercent)
}
