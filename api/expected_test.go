package api_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The version a command expects comes from the body's expected_version or
// from HTTP's preconditions, as lookups give it in ETag.
func TestExpectedVersionFromBodyAndPreconditions(t *testing.T) {
	const withVersion = `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1"},"expected_version":4}`
	for _, tt := range []struct {
		name    string
		body    string
		headers []string
		want    *int64 // nil: any version
		field   string // non-empty: refused, naming this field
	}{
		{name: "none", body: checkout},
		{name: "in the body", body: withVersion, want: ptr[int64](4)},
		{name: "in the body, must not exist", body: `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1"},"expected_version":0}`, want: ptr[int64](0)},
		{name: "If-Match", body: checkout, headers: []string{"If-Match", `"7"`}, want: ptr[int64](7)},
		{name: "If-Match: *", body: checkout, headers: []string{"If-Match", "*"}, want: ptr(schemas.ExpectExisting)},
		{name: "If-None-Match: *", body: checkout, headers: []string{"If-None-Match", "*"}, want: ptr[int64](0)},
		{name: "If-Match agreeing with the body", body: withVersion, headers: []string{"If-Match", `"4"`}, want: ptr[int64](4)},
		{name: "If-Match disagreeing with the body", body: withVersion, headers: []string{"If-Match", `"5"`}, field: "/expected_version"},
		{name: "a negative version in the body", body: `{"type":"cart.checkout","aggregate_id":"cart-1","data":{"customer_id":"c1"},"expected_version":-1}`, field: "/expected_version"},
		{name: "a weak tag", body: checkout, headers: []string{"If-Match", `W/"7"`}, field: "If-Match"},
		{name: "an unquoted tag", body: checkout, headers: []string{"If-Match", `7`}, field: "If-Match"},
		{name: "version 0 as a tag", body: checkout, headers: []string{"If-Match", `"0"`}, field: "If-Match"},
		{name: "a tag that is no version", body: checkout, headers: []string{"If-Match", `"abc"`}, field: "If-Match"},
		{name: "two tags", body: checkout, headers: []string{"If-Match", `"1", "2"`}, field: "If-Match"},
		{name: "If-None-Match with a tag", body: checkout, headers: []string{"If-None-Match", `"3"`}, field: "If-None-Match"},
		{name: "both preconditions", body: checkout, headers: []string{"If-Match", `"3"`, "If-None-Match", "*"}, field: "If-Match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bus := &fakeBus{}
			rec := do(t, newServer(t, api.Config{}, bus), http.MethodPost, "/v1/commands", jsonCT, tt.body, tt.headers...)
			if tt.field != "" {
				p := problem(t, rec, http.StatusUnprocessableEntity, api.TypeInvalidCommand, "/v1/commands")
				if len(p.Errors) != 1 || p.Errors[0].Field != tt.field {
					t.Errorf("errors = %+v, want one naming %s", p.Errors, tt.field)
				}
				assertNothingPublished(t, bus)
				return
			}
			if rec.Code != http.StatusAccepted {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			got := bus.published()[0].cmds[0].ExpectedVersion
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("expected version = %v, want %v", deref(got), deref(tt.want))
			}
		})
	}
}

func deref(v *int64) any {
	if v == nil {
		return "any"
	}
	return *v
}

// versionedReads answers every lookup with one read model at version 7.
type versionedReads struct{ *blockingReads }

func (versionedReads) ReadModel(context.Context, string, string, string) (any, int64, bool, error) {
	return map[string]string{"id": "x"}, 7, true, nil
}

func TestLookupsGiveTheVersionAsETag(t *testing.T) {
	srv, keys := securedServer(t, api.Config{}, &fakeBus{}, versionedReads{&blockingReads{}})
	key := newKey(t, keys, "acme", "read")
	rec := do(t, srv, http.MethodGet, "/v1/carts/x", "", "", "Authorization", "Bearer "+key)
	if rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"7"` {
		t.Errorf("lookup: %d, ETag %q; want 200 with \"7\"", rec.Code, rec.Header().Get("ETag"))
	}
}
