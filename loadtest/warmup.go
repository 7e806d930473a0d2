package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// warmUp sends one command, on an aggregate outside the run's, and waits
// until every projection has applied its outcome, so that a deployment
// still starting (groups joining, coordinators loading, state rebuilt) is
// not measured as latency under load. It cannot warm a broker's JVM: the
// first seconds of heavy load after a broker starts are slow (seconds of
// freshness at 10,000 commands/s here), so recorded runs use a broker that
// has served load before.
func warmUp(ctx context.Context, client *http.Client, cfg Config, runID string) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.CatchUpTimeout)
	defer cancel()
	body := fmt.Appendf(nil, `{"type":"article.publish","aggregate_id":"warmup-%s","data":{"author_id":"loadtest","title":"warm-up","body":"warm-up","tags":[]}}`, runID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Target+"/v1/commands", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if !cfg.APIKey.IsZero() {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey.Reveal())
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("warm-up command: %w", err)
	}
	answer, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("warm-up command: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("warm-up command answered %d: %.200s", resp.StatusCode, answer)
	}
	var v commandView
	if err := json.Unmarshal(answer, &v); err != nil {
		return 0, fmt.Errorf("warm-up command: unreadable answer %.200s", answer)
	}
	pos, err := schemas.ParsePosition(v.Position)
	if err != nil {
		return 0, fmt.Errorf("warm-up command: %w", err)
	}
	tick := time.NewTicker(cfg.ScrapeInterval)
	defer tick.Stop()
	for {
		through := map[string]map[int32]int64{}
		for _, url := range cfg.MetricsURLs {
			readMetrics(ctx, client, url, through)
		}
		applied := 0
		for _, p := range projections {
			if o, ok := through[p][pos.Partition]; ok && o >= pos.Offset {
				applied++
			}
		}
		if applied == len(projections) {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("the projections did not apply a first command within %s (applied by %d of %d)", cfg.CatchUpTimeout, applied, len(projections))
		case <-tick.C:
		}
	}
}
