package api_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kappa-cqrs/kappa/api"
)

// FuzzPostCommands sends arbitrary bodies to both command endpoints. Every
// answer must be 2xx or 4xx; a 4xx must publish nothing, and a 2xx must
// publish only commands that validate. The seed corpus is in
// testdata/fuzz/FuzzPostCommands; `make fuzz` explores beyond it.
func FuzzPostCommands(f *testing.F) {
	f.Add([]byte(`{"type":"cart.add_product","aggregate_id":"c1","data":{"product_id":"p","quantity":1,"unit_price_cents":0}}`), uint8(0))
	f.Add([]byte(`[{"type":"cart.checkout","aggregate_id":"c1","data":{"customer_id":"u"}}]`), uint8(1))
	f.Add([]byte("{\"type\":\"article.publish\",\"aggregate_id\":\"a\",\"data\":{\"author_id\":\"u\",\"title\":\"t\",\"body\":\"b\",\"tags\":[]}}\n{}"), uint8(2))
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		bus := &fakeBus{}
		srv := newServer(t, api.Config{MaxBodyBytes: 4096, MaxBatchBodyBytes: 8192, MaxBatchCommands: 16}, bus)
		path, contentType := "/v1/commands", "application/json"
		switch mode % 3 {
		case 1:
			path = "/v1/commands:batch"
		case 2:
			path, contentType = "/v1/commands:batch", "application/x-ndjson"
		}
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		status := rec.Code
		switch {
		case status >= 500 || status < 200 || (status >= 300 && status < 400):
			t.Fatalf("status %d for body %q: %s", status, body, rec.Body)
		case status >= 400:
			if calls := bus.published(); len(calls) != 0 {
				t.Fatalf("status %d but %d publish calls for body %q", status, len(calls), body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("status %d with Content-Type %q", status, ct)
			}
		default:
			calls := bus.published()
			if len(calls) != 1 || len(calls[0].cmds) == 0 {
				t.Fatalf("status %d with %d publish calls", status, len(calls))
			}
		}
	})
}

func TestDuplicateMembersAreRefused(t *testing.T) {
	for _, body := range []string{
		`{"type":"cart.checkout","type":"article.publish","aggregate_id":"c","data":{"customer_id":"u"}}`,
		`{"type":"cart.checkout","aggregate_id":"c","data":{"customer_id":"u","customer_id":"v"}}`,
	} {
		bus := &fakeBus{}
		rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", "application/json", body)
		if rec.Code != http.StatusBadRequest || !bytes.Contains(rec.Body.Bytes(), []byte("appears twice")) {
			t.Errorf("body %s: status %d: %s", body, rec.Code, rec.Body)
		}
		if len(bus.published()) != 0 {
			t.Errorf("body %s: published", body)
		}
	}
}

func TestIdempotencyKeyProblems(t *testing.T) {
	const body = `{"type":"cart.checkout","aggregate_id":"c","data":{"customer_id":"u"},"idempotency_key":"k1"}`
	cases := []struct {
		name, body, header string
		status             int
	}{
		{"header and field differ", body, "k2", http.StatusUnprocessableEntity},
		{"header with a space", `{"type":"cart.checkout","aggregate_id":"c","data":{"customer_id":"u"}}`, "a b", http.StatusUnprocessableEntity},
		{"field too long", `{"type":"cart.checkout","aggregate_id":"c","data":{"customer_id":"u"},"idempotency_key":"` + string(bytes.Repeat([]byte("k"), 256)) + `"}`, "", http.StatusUnprocessableEntity},
		// Keys live in Postgres; an instance without it cannot honour them.
		{"no key store", body, "", http.StatusServiceUnavailable},
	}
	for _, c := range cases {
		bus := &fakeBus{}
		var headers []string
		if c.header != "" {
			headers = []string{"Idempotency-Key", c.header}
		}
		rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", "application/json", c.body, headers...)
		if rec.Code != c.status || len(bus.published()) != 0 {
			t.Errorf("%s: status %d with %d publishes: %s", c.name, rec.Code, len(bus.published()), rec.Body)
		}
	}
}
