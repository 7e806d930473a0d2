package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// fakeBus records what it is asked to publish and answers with positions
// on partition 3 from offset 100, or with what respond returns.
type fakeBus struct {
	respond  func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error)
	readyErr error

	mu    sync.Mutex
	calls []publishCall
}

type publishCall struct {
	cmds []ingest.Command
	wait time.Duration
}

func (b *fakeBus) Publish(_ context.Context, cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
	b.mu.Lock()
	b.calls = append(b.calls, publishCall{cmds: append([]ingest.Command(nil), cmds...), wait: wait})
	b.mu.Unlock()
	if b.respond != nil {
		return b.respond(cmds, wait)
	}
	return positions(cmds), nil
}

func (b *fakeBus) Ready(context.Context) error { return b.readyErr }

func (b *fakeBus) published() []publishCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]publishCall(nil), b.calls...)
}

// positions acknowledges commands at 3:100, 3:101, ...
func positions(cmds []ingest.Command) []ingest.Result {
	res := make([]ingest.Result, len(cmds))
	for i := range cmds {
		res[i].Position = schemas.Position{Partition: 3, Offset: int64(100 + i)}
	}
	return res
}

// newServer serves the API over a real intake on a fake bus, without a
// read model or a key store.
func newServer(t *testing.T, cfg api.Config, bus ingest.Bus) *api.Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	intake, err := ingest.NewIntake(ingest.IntakeConfig{Bus: bus, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	s, err := api.New(cfg, intake, nil, nil)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	return s
}

func do(t *testing.T, h http.Handler, method, path, contentType, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// problem decodes a problem+json response, asserting its status, content
// type, type and instance.
func problem(t *testing.T, rec *httptest.ResponseRecorder, status int, typ, instance string) api.Problem {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p api.Problem
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode problem %s: %v", rec.Body, err)
	}
	if p.Status != status {
		t.Errorf("problem status = %d, want %d", p.Status, status)
	}
	if p.Type != typ {
		t.Errorf("problem type = %q, want %q", p.Type, typ)
	}
	if p.Title == "" {
		t.Error("problem has no title")
	}
	if p.Instance != instance {
		t.Errorf("problem instance = %q, want %q", p.Instance, instance)
	}
	retryable := status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests
	if retryable != (rec.Header().Get("Retry-After") != "") {
		t.Errorf("status %d with Retry-After %q; want Retry-After exactly on 503 and 429", status, rec.Header().Get("Retry-After"))
	}
	return p
}

func decodeJSON[T any](t *testing.T, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v T
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
	return v
}

func assertNothingPublished(t *testing.T, bus *fakeBus) {
	t.Helper()
	if calls := bus.published(); len(calls) != 0 {
		t.Errorf("bus received %d Publish calls, want none: %+v", len(calls), calls)
	}
}

const (
	jsonCT   = "application/json"
	ndjsonCT = "application/x-ndjson"

	addP1    = `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p1","quantity":2,"unit_price_cents":150}}`
	checkout = `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1"}}`
	publishA = `{"type":"article.publish","aggregate_id":"article-1","data":{"author_id":"u1","title":"T","body":"B","tags":["go"]}}`
)

func ptr[T any](v T) *T { return &v }

// mustJSON is a payload as the intake encodes it.
func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	cmd, err := ingest.NewCommand("", "", "", "", v)
	if err != nil {
		t.Fatal(err)
	}
	return cmd.Data
}

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []api.Config{
		{MaxBodyBytes: 100},
		{MaxBatchBodyBytes: 255},
		{MaxBatchCommands: -1},
		{MaxWait: -time.Second},
		{LookupWait: -time.Second},
	} {
		intake, err := ingest.NewIntake(ingest.IntakeConfig{Bus: &fakeBus{}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.New(cfg, intake, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", cfg)
		}
	}
	if _, err := api.New(api.Config{}, nil, nil, nil); err == nil {
		t.Error("New accepted no intake")
	}
}

func TestPostCommandRequiresJSONContentType(t *testing.T) {
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/x-ndjson", "application/jsonx", "not a media type;;"} {
		t.Run(ct, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", ct, addP1)
			p := problem(t, rec, http.StatusUnsupportedMediaType, api.TypeUnsupportedMedia, "/v1/commands")
			if !strings.Contains(p.Detail, "application/json") {
				t.Errorf("detail %q does not name the wanted media type", p.Detail)
			}
			assertNothingPublished(t, bus)
		})
	}
}

func TestPostCommandAcceptsJSONWithParameters(t *testing.T) {
	bus := &fakeBus{}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", "Application/JSON; charset=utf-8", addP1)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body %s", rec.Code, rec.Body)
	}
}

func TestPostCommandBodyTooLarge(t *testing.T) {
	bus := &fakeBus{}
	srv := newServer(t, api.Config{MaxBodyBytes: 256}, bus)
	body := `{"type":"article.publish","aggregate_id":"a","data":{"author_id":"u","title":"T","body":"` + strings.Repeat("b", 300) + `"}}`
	p := problem(t, do(t, srv, http.MethodPost, "/v1/commands", jsonCT, body), http.StatusRequestEntityTooLarge, api.TypeTooLarge, "/v1/commands")
	if !strings.Contains(p.Detail, "256") {
		t.Errorf("detail %q does not state the limit", p.Detail)
	}
	assertNothingPublished(t, bus)

	// A body at the limit is read.
	atLimit := `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"` + strings.Repeat("c", 100) + `"}}`
	atLimit += strings.Repeat(" ", 256-len(atLimit))
	if rec := do(t, srv, http.MethodPost, "/v1/commands", jsonCT, atLimit); rec.Code != http.StatusAccepted {
		t.Errorf("body of exactly 256 bytes: status = %d, want 202; body %s", rec.Code, rec.Body)
	}
}

func TestPostCommandMalformedJSON(t *testing.T) {
	for name, body := range map[string]string{
		"empty":               "",
		"truncated":           `{"type":"cart.checkout"`,
		"not JSON":            "type=cart.checkout",
		"two values":          checkout + checkout,
		"trailing garbage":    checkout + " x",
		"single quotes":       `{'type':'cart.checkout'}`,
		"10000 brackets":      strings.Repeat("[", 10000),
		"deep valid nesting":  `{"type":"cart.checkout","aggregate_id":"c","data":` + strings.Repeat(`{"a":`, 20) + "1" + strings.Repeat("}", 20) + "}",
		"deep array in field": `{"type":"cart.checkout","aggregate_id":"c","data":{"customer_id":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "}}",
	} {
		t.Run(name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, body)
			p := problem(t, rec, http.StatusBadRequest, api.TypeMalformedJSON, "/v1/commands")
			if p.Detail == "" {
				t.Error("problem has no detail")
			}
			assertNothingPublished(t, bus)
		})
	}
}

func TestPostCommandInvalidFields(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		fields []string
	}{
		{"empty object", `{}`, []string{"/aggregate_id", "/type"}},
		{"unknown type", `{"type":"cart.explode","aggregate_id":"cart-1","data":{}}`, []string{"/type"}},
		{"bad aggregate id", `{"type":"cart.checkout","aggregate_id":"carts/1","data":{"customer_id":"c1"}}`, []string{"/aggregate_id"}},
		{"quantity zero and price missing", `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p1","quantity":0}}`,
			[]string{"/data/quantity", "/data/unit_price_cents"}},
		{"string quantity", `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p1","quantity":"2","unit_price_cents":1}}`,
			[]string{"/data/quantity"}},
		{"data missing", `{"type":"cart.checkout","aggregate_id":"cart-1"}`, []string{"/data"}},
		{"data null", `{"type":"cart.checkout","aggregate_id":"cart-1","data":null}`, []string{"/data"}},
		{"unknown top-level field", `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1"},"priority":"x"}`, []string{"/priority"}},
		{"unknown data field", `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1","coupon":"x"}}`, []string{"/data/coupon"}},
		{"number for type", `{"type":5,"aggregate_id":"cart-1","data":{}}`, []string{"/type"}},
		{"update with no fields", `{"type":"article.update","aggregate_id":"a1","data":{}}`, []string{"/data"}},
		{"duplicate tags", `{"type":"article.publish","aggregate_id":"a1","data":{"author_id":"u","title":"T","body":"B","tags":["x","x"]}}`, []string{"/data/tags/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, tt.body)
			p := problem(t, rec, http.StatusUnprocessableEntity, api.TypeInvalidCommand, "/v1/commands")
			var fields []string
			for _, fe := range p.Errors {
				fields = append(fields, fe.Field)
				if fe.Detail == "" {
					t.Errorf("field error %s has no detail", fe.Field)
				}
			}
			if !reflect.DeepEqual(fields, tt.fields) {
				t.Errorf("error fields = %q, want %q (errors %+v)", fields, tt.fields, p.Errors)
			}
			assertNothingPublished(t, bus)
		})
	}
}

// FieldError.Field is a JSON pointer; the pointer to the whole request body
// is "" (RFC 6901 section 5), while "/" points at a member named "".
func TestPostCommandWholeBodyPointer(t *testing.T) {
	bus := &fakeBus{}
	p := problem(t, do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, `[]`),
		http.StatusUnprocessableEntity, api.TypeInvalidCommand, "/v1/commands")
	if len(p.Errors) != 1 || p.Errors[0].Field != "" {
		t.Errorf("errors = %+v, want one error for field \"\"", p.Errors)
	}
}

func TestPostCommandAccepted(t *testing.T) {
	bus := &fakeBus{}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, addP1)
	view := decodeJSON[api.CommandView](t, rec, http.StatusAccepted)
	if _, err := uuid.Parse(view.CommandID); err != nil {
		t.Errorf("command_id %q is not a UUID: %v", view.CommandID, err)
	}
	want := api.CommandView{CommandID: view.CommandID, Status: "pending", Position: "3:100"}
	if !reflect.DeepEqual(view, want) {
		t.Errorf("response = %+v, want %+v", view, want)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/commands/"+view.CommandID {
		t.Errorf("Location = %q, want /v1/commands/%s", loc, view.CommandID)
	}
	if pa := rec.Header().Get("Preference-Applied"); pa != "" {
		t.Errorf("Preference-Applied = %q without a Prefer header", pa)
	}

	calls := bus.published()
	if len(calls) != 1 {
		t.Fatalf("bus received %d calls, want 1", len(calls))
	}
	wantCmds := []ingest.Command{{
		ID: view.CommandID, Type: schemas.AddProductToCart, AggregateID: "cart-1", Tenant: schemas.DefaultTenant,
		Data: mustJSON(t, schemas.AddProductV1{ProductID: "p1", Quantity: ptr[int64](2), UnitPriceCents: ptr[int64](150)}),
	}}
	if !reflect.DeepEqual(calls[0].cmds, wantCmds) {
		t.Errorf("published %+v, want %+v", calls[0].cmds, wantCmds)
	}
	if calls[0].wait != 0 {
		t.Errorf("awaitOutcome = %v without Prefer: wait, want 0", calls[0].wait)
	}

	// Each command gets its own id.
	rec2 := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, addP1)
	if id2 := decodeJSON[api.CommandView](t, rec2, http.StatusAccepted).CommandID; id2 == view.CommandID {
		t.Errorf("two commands got the same id %s", id2)
	}
}

func acceptedOutcome(cmd ingest.Command) *schemas.Outcome {
	return &schemas.Outcome{
		CommandID: cmd.ID, CommandType: cmd.Type, AggregateID: cmd.AggregateID,
		CommandPosition: schemas.Position{Partition: 3, Offset: 100}, Status: schemas.StatusAccepted,
		Events: []schemas.EventRef{{ID: "ev-1", Type: schemas.CartProductAdded, AggregateVersion: 4,
			Position: schemas.Position{Partition: 3, Offset: 250}}},
	}
}

func TestPostCommandWaitsForAcceptedOutcome(t *testing.T) {
	bus := &fakeBus{respond: func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
		res := positions(cmds)
		res[0].Outcome = acceptedOutcome(cmds[0])
		return res, nil
	}}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, addP1, "Prefer", "wait=5")
	view := decodeJSON[api.CommandView](t, rec, http.StatusOK)
	want := api.CommandView{CommandID: view.CommandID, Status: "accepted", Position: "3:100",
		Events: []api.EventView{{ID: "ev-1", Type: schemas.CartProductAdded, AggregateVersion: 4, Position: "3:250"}}}
	if !reflect.DeepEqual(view, want) {
		t.Errorf("response = %+v, want %+v", view, want)
	}
	if pa := rec.Header().Get("Preference-Applied"); pa != "wait=5" {
		t.Errorf("Preference-Applied = %q, want wait=5", pa)
	}
	calls := bus.published()
	if len(calls) != 1 || calls[0].wait != 5*time.Second {
		t.Fatalf("publish calls = %+v, want one with awaitOutcome 5s", calls)
	}
	if calls[0].cmds[0].ID != view.CommandID {
		t.Errorf("response command_id %s is not the published id %s", view.CommandID, calls[0].cmds[0].ID)
	}
}

func TestPreferWaitIsCapped(t *testing.T) {
	tests := []struct {
		prefer string
		want   time.Duration
	}{
		{"wait=5", 5 * time.Second},
		{"respond-async, wait=2", 2 * time.Second},
		{`wait="3"`, 3 * time.Second},
		{"WAIT=4", 4 * time.Second},
		{"wait=100", 10 * time.Second},
		{"wait=-1", 0},
		{"wait=soon", 0},
		{"handling=strict", 0},
	}
	for _, tt := range tests {
		t.Run(tt.prefer, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{MaxWait: 10 * time.Second}, bus), http.MethodPost, "/v1/commands", jsonCT, addP1, "Prefer", tt.prefer)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; body %s", rec.Code, rec.Body)
			}
			if calls := bus.published(); len(calls) != 1 || calls[0].wait != tt.want {
				t.Errorf("awaitOutcome = %+v, want %v", calls, tt.want)
			}
		})
	}
}

func TestPostCommandRejected(t *testing.T) {
	tests := []struct {
		code   string
		status int
		typ    string
		title  string
	}{
		{"cart_checked_out", http.StatusConflict, api.TypeRejected, "Command rejected"},
		{"remove_exceeds_quantity", http.StatusConflict, api.TypeRejected, "Command rejected"},
		{schemas.CodeUndecodableCommand, http.StatusUnprocessableEntity, api.TypeRejected, "Command rejected"},
		{schemas.CodeVersionConflict, http.StatusConflict, api.TypeVersionConflict, "Version conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			bus := &fakeBus{respond: func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
				res := positions(cmds)
				res[0].Outcome = &schemas.Outcome{CommandID: cmds[0].ID, Status: schemas.StatusRejected,
					CommandPosition: schemas.Position{Partition: 3, Offset: 100},
					Rejection:       &schemas.Rejection{Code: tt.code, Detail: "the detail of " + tt.code}}
				return res, nil
			}}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, checkout, "Prefer", "wait=5")
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			var got struct {
				api.Problem
				CommandID string `json:"command_id"`
				Position  string `json:"position"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode %s: %v", rec.Body, err)
			}
			calls := bus.published()
			if len(calls) != 1 {
				t.Fatalf("bus received %d calls, want 1", len(calls))
			}
			want := api.Problem{Type: tt.typ, Title: tt.title, Status: tt.status,
				Detail: "the detail of " + tt.code, Code: tt.code, Instance: "/v1/commands"}
			if !reflect.DeepEqual(got.Problem, want) {
				t.Errorf("problem = %+v, want %+v", got.Problem, want)
			}
			if got.CommandID != calls[0].cmds[0].ID || got.Position != "3:100" {
				t.Errorf("command_id, position = %q, %q; want %q, 3:100", got.CommandID, got.Position, calls[0].cmds[0].ID)
			}
			if loc := rec.Header().Get("Location"); loc != "/v1/commands/"+got.CommandID {
				t.Errorf("Location = %q, want /v1/commands/%s", loc, got.CommandID)
			}
		})
	}
}

func TestPostCommandKafkaUnavailable(t *testing.T) {
	bus := &fakeBus{respond: func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
		res := make([]ingest.Result, len(cmds))
		res[0].Err = errors.New("request timed out")
		return res, fmt.Errorf("%w: 1 of 1 commands not acknowledged: request timed out", ingest.ErrUnavailable)
	}}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, addP1)
	p := problem(t, rec, http.StatusServiceUnavailable, api.TypeUnavailable, "/v1/commands")
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if !strings.Contains(p.Detail, "retry") {
		t.Errorf("detail %q does not tell the client to retry", p.Detail)
	}
	if len(bus.published()) != 1 {
		t.Errorf("bus received %d calls, want 1", len(bus.published()))
	}
}

func TestPostBatchAccepted(t *testing.T) {
	tests := []struct {
		name, contentType, body string
	}{
		{"JSON array", jsonCT, "[" + addP1 + ",\n" + publishA + "," + checkout + "]"},
		{"NDJSON", ndjsonCT, addP1 + "\n" + publishA + "\n" + checkout + "\n"},
		{"NDJSON with CRLF, blank lines and no final newline", ndjsonCT + "; charset=utf-8", "\r\n" + addP1 + "\r\n\r\n" + publishA + "\r\n  \n" + checkout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", tt.contentType, tt.body)
			view := decodeJSON[api.BatchView](t, rec, http.StatusAccepted)
			calls := bus.published()
			if len(calls) != 1 {
				t.Fatalf("bus received %d calls, want 1", len(calls))
			}
			cmds := calls[0].cmds
			wantTypes := []string{schemas.AddProductToCart, schemas.PublishArticle, schemas.CheckoutCart}
			if len(cmds) != len(wantTypes) || len(view.Commands) != len(wantTypes) {
				t.Fatalf("published %d and answered %d commands, want %d", len(cmds), len(view.Commands), len(wantTypes))
			}
			ids := map[string]bool{}
			for i, c := range cmds {
				if c.Type != wantTypes[i] {
					t.Errorf("command %d type = %s, want %s (order must be kept)", i, c.Type, wantTypes[i])
				}
				want := api.CommandView{CommandID: c.ID, Status: "pending", Position: fmt.Sprintf("3:%d", 100+i)}
				if !reflect.DeepEqual(view.Commands[i], want) {
					t.Errorf("response command %d = %+v, want %+v", i, view.Commands[i], want)
				}
				ids[c.ID] = true
			}
			if len(ids) != len(cmds) {
				t.Errorf("command ids are not unique: %v", ids)
			}
			wantPayload := mustJSON(t, schemas.PublishArticleV1{AuthorID: "u1", Title: "T", Body: "B", Tags: []string{"go"}})
			if !bytes.Equal(cmds[1].Data, wantPayload) || cmds[1].AggregateID != "article-1" {
				t.Errorf("command 1 = %+v, want payload %s for article-1", cmds[1], wantPayload)
			}
		})
	}
}

func TestPostBatchWaitsForOutcomes(t *testing.T) {
	bus := &fakeBus{respond: func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
		res := positions(cmds)
		for i := range res {
			res[i].Outcome = acceptedOutcome(cmds[i])
		}
		return res, nil
	}}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", jsonCT, "["+addP1+","+addP1+"]", "Prefer", "wait=5")
	view := decodeJSON[api.BatchView](t, rec, http.StatusOK)
	if len(view.Commands) != 2 || view.Commands[0].Status != "accepted" || len(view.Commands[1].Events) != 1 {
		t.Errorf("response = %+v, want two accepted commands with events", view)
	}
	if calls := bus.published(); len(calls) != 1 || calls[0].wait != 5*time.Second {
		t.Errorf("publish calls = %+v, want one with awaitOutcome 5s", calls)
	}
}

func TestPostBatchPartlyUnacknowledged(t *testing.T) {
	bus := &fakeBus{respond: func(cmds []ingest.Command, wait time.Duration) ([]ingest.Result, error) {
		res := positions(cmds)
		res[1] = ingest.Result{Err: errors.New("timed out")}
		return res, fmt.Errorf("%w: 1 of 3 commands not acknowledged: timed out", ingest.ErrUnavailable)
	}}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", jsonCT, "["+addP1+","+checkout+","+publishA+"]")
	p := problem(t, rec, http.StatusServiceUnavailable, api.TypeUnavailable, "/v1/commands:batch")
	calls := bus.published()
	if len(calls) != 1 {
		t.Fatalf("bus received %d calls, want 1", len(calls))
	}
	if len(p.Items) != 1 || p.Items[0].Index != 1 || p.Items[0].CommandID != calls[0].cmds[1].ID || !strings.Contains(p.Items[0].Detail, "timed out") {
		t.Errorf("items = %+v, want only index 1 (%s) not acknowledged", p.Items, calls[0].cmds[1].ID)
	}
}

func TestPostBatchKafkaUnavailable(t *testing.T) {
	bus := &fakeBus{respond: func([]ingest.Command, time.Duration) ([]ingest.Result, error) {
		return nil, fmt.Errorf("encode: %w", ingest.ErrUnavailable)
	}}
	rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", ndjsonCT, addP1)
	problem(t, rec, http.StatusServiceUnavailable, api.TypeUnavailable, "/v1/commands:batch")
}

func TestPostBatchInvalidItem(t *testing.T) {
	bad := `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p1","quantity":-1,"unit_price_cents":1}}`
	tests := []struct {
		name, contentType, body string
	}{
		{"JSON array", jsonCT, "[" + addP1 + "," + bad + "," + checkout + "]"},
		{"NDJSON", ndjsonCT, addP1 + "\n" + bad + "\n" + checkout + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", tt.contentType, tt.body)
			p := problem(t, rec, http.StatusUnprocessableEntity, api.TypeInvalidCommand, "/v1/commands:batch")
			want := []api.ItemProblem{{Index: 1, Errors: []schemas.FieldError{{Field: "/data/quantity", Detail: "must be > 0"}}}}
			if !reflect.DeepEqual(p.Items, want) {
				t.Errorf("items = %+v, want %+v", p.Items, want)
			}
			if !strings.Contains(p.Detail, "1 of 3") {
				t.Errorf("detail %q does not count the invalid commands", p.Detail)
			}
			assertNothingPublished(t, bus)
		})
	}
}

func TestPostBatchReportsEveryInvalidItem(t *testing.T) {
	bus := &fakeBus{}
	body := "[" + addP1 + `,{"type":"nope","aggregate_id":"x","data":{}},` + checkout + `,{"type":"cart.checkout","aggregate_id":"a b","data":{"customer_id":"c"}}]`
	p := problem(t, do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", jsonCT, body),
		http.StatusUnprocessableEntity, api.TypeInvalidCommand, "/v1/commands:batch")
	var idx []int
	var fields []string
	for _, it := range p.Items {
		idx = append(idx, it.Index)
		for _, fe := range it.Errors {
			fields = append(fields, fe.Field)
		}
	}
	if !reflect.DeepEqual(idx, []int{1, 3}) || !reflect.DeepEqual(fields, []string{"/type", "/aggregate_id"}) {
		t.Errorf("items = %+v, want indexes [1 3] with fields /type and /aggregate_id", p.Items)
	}
	assertNothingPublished(t, bus)
}

func TestPostBatchSizeLimits(t *testing.T) {
	three := "[" + addP1 + "," + addP1 + "," + addP1 + "]"
	tests := []struct {
		name, contentType, body string
		status                  int
		typ                     string
	}{
		{"JSON array over the limit", jsonCT, three, http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"NDJSON over the limit", ndjsonCT, strings.Repeat(addP1+"\n", 3), http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"empty JSON array", jsonCT, "[]", http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"empty JSON array with spaces", jsonCT, " [ ] ", http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"empty NDJSON", ndjsonCT, "", http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"blank NDJSON", ndjsonCT, "\n \r\n\n", http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"JSON null", jsonCT, "null", http.StatusUnprocessableEntity, api.TypeInvalidCommand},
		{"object instead of array", jsonCT, addP1, http.StatusBadRequest, api.TypeMalformedJSON},
		{"malformed JSON array", jsonCT, "[" + addP1 + ",", http.StatusBadRequest, api.TypeMalformedJSON},
		{"NDJSON sent as JSON", jsonCT, addP1 + "\n" + addP1, http.StatusBadRequest, api.TypeMalformedJSON},
		{"malformed NDJSON line", ndjsonCT, addP1 + "\n{\"type\":\n", http.StatusBadRequest, api.TypeMalformedJSON},
		{"wrong content type", "text/csv", three, http.StatusUnsupportedMediaType, api.TypeUnsupportedMedia},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{MaxBatchCommands: 2}, bus), http.MethodPost, "/v1/commands:batch", tt.contentType, tt.body)
			problem(t, rec, tt.status, tt.typ, "/v1/commands:batch")
			assertNothingPublished(t, bus)
		})
	}

	bus := &fakeBus{}
	rec := do(t, newServer(t, api.Config{MaxBatchCommands: 2}, bus), http.MethodPost, "/v1/commands:batch", ndjsonCT, addP1+"\n"+addP1+"\n\n")
	if rec.Code != http.StatusAccepted {
		t.Errorf("batch of exactly MaxBatchCommands: status = %d, want 202; body %s", rec.Code, rec.Body)
	}
}

func TestPostBatchBodyTooLarge(t *testing.T) {
	for _, ct := range []string{jsonCT, ndjsonCT} {
		bus := &fakeBus{}
		rec := do(t, newServer(t, api.Config{MaxBatchBodyBytes: 256}, bus), http.MethodPost, "/v1/commands:batch", ct, strings.Repeat(addP1+"\n", 3))
		problem(t, rec, http.StatusRequestEntityTooLarge, api.TypeTooLarge, "/v1/commands:batch")
		assertNothingPublished(t, bus)
	}
}

func TestPostBatchDeepNesting(t *testing.T) {
	deepValid := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	tests := []struct {
		name, contentType, body string
	}{
		{"JSON open brackets", jsonCT, strings.Repeat("[", 10000)},
		{"JSON balanced brackets", jsonCT, deepValid},
		{"JSON deep item", jsonCT, "[" + addP1 + "," + deepValid + "]"},
		{"JSON deep data", jsonCT, `[{"type":"cart.checkout","aggregate_id":"c","data":` + strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000) + "}]"},
		{"NDJSON open brackets", ndjsonCT, strings.Repeat("[", 10000)},
		{"NDJSON balanced brackets", ndjsonCT, addP1 + "\n" + deepValid + "\n"},
		{"NDJSON open objects", ndjsonCT, strings.Repeat(`{"a":`, 10000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", tt.contentType, tt.body)
			if rec.Code < 400 || rec.Code > 499 {
				t.Fatalf("status = %d, want 4xx; body %.200s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			assertNothingPublished(t, bus)
		})
	}
}

// deepNDJSONChild marks the child process of TestPostBatchNDJSONDeepNestingDoesNotCrash.
const deepNDJSONChild = "KAPPA_API_TEST_DEEP_NDJSON_CHILD"

// A fatal stack overflow cannot be recovered, so the request runs in a
// child process, with the server's default limits.
func TestPostBatchNDJSONDeepNestingDoesNotCrash(t *testing.T) {
	if os.Getenv(deepNDJSONChild) == "1" {
		bus := &fakeBus{}
		rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands:batch", ndjsonCT, strings.Repeat("[", 8<<20))
		if rec.Code < 400 || rec.Code > 499 {
			t.Fatalf("status = %d, want 4xx", rec.Code)
		}
		assertNothingPublished(t, bus)
		return
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPostBatchNDJSONDeepNestingDoesNotCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), deepNDJSONChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(string(out), "\n\n")
		t.Fatalf("server process died or failed on an 8 MiB NDJSON line of '[': %v\n%.2000s", err, first)
	}
}

func TestLookupsWithoutReadModel(t *testing.T) {
	for _, path := range []string{
		"/v1/articles/article-1",
		"/v1/carts/cart-1",
		"/v1/orders/cart-1",
		"/v1/commands/0190a4b2-0000-7000-8000-000000000001",
		"/v1/carts/cart-1?position=3:100",
		"/v1/carts/cart-1?position=garbage",
	} {
		t.Run(path, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodGet, path, "", "")
			p := problem(t, rec, http.StatusServiceUnavailable, api.TypeUnavailable, strings.Split(path, "?")[0])
			if ra := rec.Header().Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After = %q, want 1", ra)
			}
			if p.Detail == "" {
				t.Error("problem has no detail")
			}
			assertNothingPublished(t, bus)
		})
	}
}

func TestHealthz(t *testing.T) {
	rec := do(t, newServer(t, api.Config{}, &fakeBus{readyErr: errors.New("down")}), http.MethodGet, "/healthz", "", "")
	if got := decodeJSON[map[string]string](t, rec, http.StatusOK); !reflect.DeepEqual(got, map[string]string{"status": "ok"}) {
		t.Errorf("healthz = %v, want status ok (liveness does not depend on Kafka)", got)
	}
}

func TestReadyz(t *testing.T) {
	rec := do(t, newServer(t, api.Config{}, &fakeBus{}), http.MethodGet, "/readyz", "", "")
	if got := decodeJSON[map[string]string](t, rec, http.StatusOK); !reflect.DeepEqual(got, map[string]string{"kafka": "ok"}) {
		t.Errorf("readyz = %v, want kafka ok", got)
	}
	rec = do(t, newServer(t, api.Config{}, &fakeBus{readyErr: errors.New("no brokers")}), http.MethodGet, "/readyz", "", "")
	if got := decodeJSON[map[string]string](t, rec, http.StatusServiceUnavailable); !reflect.DeepEqual(got, map[string]string{"kafka": "no brokers"}) {
		t.Errorf("readyz = %v, want kafka: no brokers", got)
	}
}
