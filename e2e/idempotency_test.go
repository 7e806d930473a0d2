package e2e_test

import (
	"net/http"
	"testing"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/roles"
)

// idempotentRetries retries keyed commands the ways clients do: after the
// outcome is known, before it is projected (across a processor restart, so
// the processor must remember the key from the log), and with a different
// body. Each keyed command must count once in the model's stores.
func (s *system) idempotentRetries(t *testing.T, m *model) {
	t.Helper()
	post := func(cmd command, key string) (int, commandView, http.Header) {
		t.Helper()
		body, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		req, status, out := s.doWithHeaders(t, http.MethodPost, "/v1/commands", "application/json", body,
			map[string]string{"Idempotency-Key": key, "Prefer": "wait=20"})
		var v commandView
		if status < 300 || status == http.StatusConflict {
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatalf("decode %s: %v", out, err)
			}
		}
		return status, v, req
	}

	// 1. A retry after the outcome is projected is answered from it.
	cmd := m.add("cart-idem-1", "p1", 2, 500)
	status, first, _ := post(cmd, "key-one")
	if status != http.StatusOK || first.Status != "accepted" {
		t.Fatalf("first keyed command: %d %+v", status, first)
	}
	s.expected[first.CommandID] = "accepted"
	for range 3 {
		s.waitOutcomeProjected(t, first.CommandID)
		status, again, header := post(cmd, "key-one")
		if status != http.StatusOK || again.CommandID != first.CommandID || header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry after projection: %d %+v replayed=%q; want 200, command %s", status, again, header.Get("Idempotent-Replayed"), first.CommandID)
		}
	}

	// 2. A retry the read model cannot answer yet goes to the processors,
	// which must recognise it even after a restart.
	s.stop("postgres")
	cmd = m.add("cart-idem-2", "p2", 1, 700)
	status, first, _ = post(cmd, "key-two")
	if status != http.StatusOK || first.Status != "accepted" {
		t.Fatalf("second keyed command: %d %+v", status, first)
	}
	s.expected[first.CommandID] = "accepted"
	s.stop("process")
	s.start("process", roles.Process)
	status, again, header := post(cmd, "key-two")
	if status != http.StatusOK || again.CommandID != first.CommandID || again.Status != "accepted" || header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry through the processors: %d %+v; want 200 accepted as %s", status, again, first.CommandID)
	}
	s.start("postgres", roles.ProjectPostgres)

	// 3. The same key with a different body is refused and writes nothing.
	other := command{Type: "cart.add_product", AggregateID: "cart-idem-2", Data: map[string]any{"product_id": "p2", "quantity": 5, "unit_price_cents": 700}}
	if status, _, _ := post(other, "key-two"); status != http.StatusUnprocessableEntity {
		t.Fatalf("key reused with another body: status %d, want 422", status)
	}
}

func (s *system) doWithHeaders(t *testing.T, method, path, contentType string, body []byte, header map[string]string) (http.Header, int, []byte) {
	t.Helper()
	var got http.Header
	status, out := s.doCapture(t, method, path, contentType, body, header, &got)
	return got, status, out
}

func (s *system) waitOutcomeProjected(t *testing.T, id string) {
	t.Helper()
	s.eventually(t, func() bool {
		status, _ := s.do(t, http.MethodGet, "/v1/commands/"+id, "", nil, nil)
		return status == http.StatusOK
	})
}
