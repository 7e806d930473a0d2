package loadtest

import (
	"bufio"
	"context"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// The ingest times its requests in a Prometheus histogram. Read before and
// after the load, it tells how much of the acknowledgement latency the
// harness sees was spent inside the ingest, and how much in queues and
// scheduling between the two.
const serverLatencyBucket = `kappa_http_request_seconds_bucket{method="post",le="`

// latencyBuckets are cumulative counts by upper bound in seconds.
type latencyBuckets map[float64]float64

func readServerLatency(ctx context.Context, client *http.Client, url string) latencyBuckets {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil
	}
	defer func() { _ = resp.Body.Close() }()
	buckets := latencyBuckets{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, serverLatencyBucket) {
			continue
		}
		le, count, ok := strings.Cut(line[len(serverLatencyBucket):], `"} `)
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err1 == nil && err2 == nil {
			buckets[bound] += n
		}
	}
	return buckets
}

// serverPercentiles returns the percentiles of the requests between two
// readings, each as the upper bound of the bucket it falls in (so "at
// most").
func serverPercentiles(before, after latencyBuckets) *Percentiles {
	bounds := slices.Sorted(maps.Keys(after))
	if len(bounds) < 2 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return nil
	}
	total := after[math.Inf(1)] - before[math.Inf(1)]
	if total <= 0 {
		return nil
	}
	// Beyond the last finite bound (16 s for the ingest's buckets) a value
	// is reported as that bound: JSON has no infinity.
	finite := bounds[:len(bounds)-1]
	at := func(q float64) float64 {
		for _, b := range finite {
			if after[b]-before[b] >= q*total {
				return b * 1000
			}
		}
		return finite[len(finite)-1] * 1000
	}
	return &Percentiles{Count: int64(total), P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: at(1)}
}
