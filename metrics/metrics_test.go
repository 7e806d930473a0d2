package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kappa-cqrs/kappa/metrics"
)

// ?name=N serves the family N alone; without it, every family.
func TestHandlerServesTheNamedFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"kappa_a", "kappa_b", "kappa_c"} {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: name})
		reg.MustRegister(g)
		g.Set(1)
	}
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	get := func(query string) string {
		resp, err := srv.Client().Get(srv.URL + "/metrics" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}
	families := func(page string) (names []string) {
		for _, line := range strings.Split(page, "\n") {
			if name, _, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") {
				names = append(names, name)
			}
		}
		return names
	}
	if got := strings.Join(families(get("")), ","); got != "kappa_a,kappa_b,kappa_c" {
		t.Errorf("whole page has %s, want kappa_a,kappa_b,kappa_c", got)
	}
	if got := strings.Join(families(get("?name=kappa_c&name=kappa_a")), ","); got != "kappa_a,kappa_c" {
		t.Errorf("?name=kappa_c&name=kappa_a has %s, want kappa_a,kappa_c", got)
	}
}
