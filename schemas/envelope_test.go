package schemas_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/schemas"
)

func TestEnvelopeHeadersRoundTrip(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("UTC+2", 2*60*60)
	}
	tests := []struct {
		name string
		env  schemas.Envelope
	}{
		{
			name: "every field",
			env: schemas.Envelope{
				ID: "0190a4b2-0000-7000-8000-000000000001", Type: schemas.CartProductAdded, Source: "kappa/processor",
				Time: time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC), SchemaVersion: 1,
				AggregateID: "cart-1", AggregateVersion: 42, CommandID: "cmd-1", Tenant: "acme",
				Data: []byte(`{"product_id":"p1","quantity":1,"unit_price_cents":5}`),
			},
		},
		{
			name: "a command expecting a version",
			env: schemas.Envelope{
				ID: "c1", Type: schemas.CheckoutCart, Source: "kappa/ingest", Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
				SchemaVersion: 1, AggregateID: "cart-1", Tenant: "acme", ExpectedVersion: func() *int64 { v := int64(12); return &v }(),
				Data: []byte(`{}`),
			},
		},
		{
			name: "a command expecting an existing aggregate",
			env: schemas.Envelope{
				ID: "c2", Type: schemas.CheckoutCart, Source: "kappa/ingest", Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
				SchemaVersion: 1, AggregateID: "cart-1", ExpectedVersion: func() *int64 { v := schemas.ExpectExisting; return &v }(),
				Data: []byte(`{}`),
			},
		},
		{
			name: "no command id or tenant",
			env: schemas.Envelope{
				ID: "e2", Type: schemas.CartCheckedOut, Source: "s", Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
				SchemaVersion: 7, AggregateID: "cart-2", Data: []byte(`{}`),
			},
		},
		{
			name: "non-UTC time and the largest aggregate version",
			env: schemas.Envelope{
				ID: "e3", Type: schemas.ArticlePublished, Source: "s", Time: time.Date(2025, 6, 1, 12, 0, 0, 1000, paris),
				SchemaVersion: 1, AggregateID: "article-é", AggregateVersion: math.MaxInt64, Data: nil,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schemas.ParseEnvelope(tt.env.Headers(), tt.env.Data)
			if err != nil {
				t.Fatalf("ParseEnvelope(Headers()): %v", err)
			}
			if !got.Time.Equal(tt.env.Time) {
				t.Errorf("Time = %v, want %v", got.Time, tt.env.Time)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("Time location = %v, want UTC", got.Time.Location())
			}
			want := tt.env
			want.Time = tt.env.Time.UTC()
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip = %+v, want %+v", got, want)
			}
		})
	}
}

func TestEnvelopeHeaders(t *testing.T) {
	env := schemas.Envelope{ID: "e1", Type: "t", Source: "s", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		SchemaVersion: 2, AggregateID: "a", AggregateVersion: 3}
	got := map[string]string{}
	for _, h := range env.Headers() {
		if _, dup := got[h.Key]; dup {
			t.Errorf("header %s written twice", h.Key)
		}
		got[h.Key] = string(h.Value)
	}
	want := map[string]string{
		schemas.HeaderSpecVersion:      "1.0",
		schemas.HeaderID:               "e1",
		schemas.HeaderType:             "t",
		schemas.HeaderSource:           "s",
		schemas.HeaderTime:             "2025-01-02T03:04:05Z",
		schemas.HeaderContentType:      "application/json",
		schemas.HeaderSchemaVersion:    "2",
		schemas.HeaderAggregateID:      "a",
		schemas.HeaderAggregateVersion: "3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("headers = %v, want %v (no command id or tenant when empty)", got, want)
	}

	env.CommandID, env.Tenant = "c", "t1"
	got = map[string]string{}
	for _, h := range env.Headers() {
		got[h.Key] = string(h.Value)
	}
	if got[schemas.HeaderCommandID] != "c" || got[schemas.HeaderTenant] != "t1" {
		t.Errorf("command id and tenant headers = %q, %q; want c, t1", got[schemas.HeaderCommandID], got[schemas.HeaderTenant])
	}
}

func TestParseEnvelopeIgnoresUnknownHeaders(t *testing.T) {
	env := schemas.Envelope{ID: "e1", Type: "t", Source: "s", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), SchemaVersion: 1, AggregateID: "a"}
	hs := append(env.Headers(), schemas.Header{Key: "traceparent", Value: []byte("00-abc-def-01")})
	got, err := schemas.ParseEnvelope(hs, nil)
	if err != nil {
		t.Fatalf("ParseEnvelope: %v", err)
	}
	if !reflect.DeepEqual(got, env) {
		t.Errorf("ParseEnvelope = %+v, want %+v", got, env)
	}
}

func TestParseEnvelopeReportsEveryProblem(t *testing.T) {
	valid := schemas.Envelope{ID: "e1", Type: "t", Source: "s", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		SchemaVersion: 1, AggregateID: "a", AggregateVersion: 1}.Headers()
	// with replaces or, for an empty value, drops the named headers.
	with := func(changes map[string]string) []schemas.Header {
		var hs []schemas.Header
		for _, h := range valid {
			v, ok := changes[h.Key]
			switch {
			case !ok:
				hs = append(hs, h)
			case v != "":
				hs = append(hs, schemas.Header{Key: h.Key, Value: []byte(v)})
			}
		}
		return hs
	}
	tests := []struct {
		name    string
		headers []schemas.Header
		want    []string
	}{
		{
			name:    "no headers",
			headers: nil,
			want: []string{
				"missing header ce_specversion", "missing header ce_id", "missing header ce_type", "missing header ce_source",
				"missing header ce_time", "missing header ce_kappaschemaversion", "missing header ce_kappaaggregateid",
			},
		},
		{
			name:    "missing id and aggregate id",
			headers: with(map[string]string{schemas.HeaderID: "", schemas.HeaderAggregateID: ""}),
			want:    []string{"missing header ce_id", "missing header ce_kappaaggregateid"},
		},
		{
			name:    "wrong spec version",
			headers: with(map[string]string{schemas.HeaderSpecVersion: "0.3"}),
			want:    []string{`ce_specversion "0.3" is not 1.0`},
		},
		{
			name: "every value bad at once",
			headers: with(map[string]string{
				schemas.HeaderSpecVersion:      "2.0",
				schemas.HeaderTime:             "yesterday",
				schemas.HeaderSchemaVersion:    "0",
				schemas.HeaderAggregateVersion: "-1",
			}),
			want: []string{
				`ce_specversion "2.0" is not 1.0`,
				`ce_time "yesterday" is not RFC 3339`,
				`ce_kappaschemaversion "0" is not a positive integer`,
				`ce_kappaaggregateversion "-1" is not a non-negative integer`,
			},
		},
		{
			name:    "non-numeric versions",
			headers: with(map[string]string{schemas.HeaderSchemaVersion: "one", schemas.HeaderAggregateVersion: "1.5"}),
			want: []string{
				`ce_kappaschemaversion "one" is not a positive integer`,
				`ce_kappaaggregateversion "1.5" is not a non-negative integer`,
			},
		},
		{
			name:    "time without a zone",
			headers: with(map[string]string{schemas.HeaderTime: "2025-01-02T03:04:05"}),
			want:    []string{`ce_time "2025-01-02T03:04:05" is not RFC 3339`},
		},
		{
			name:    "bad value and missing header together",
			headers: with(map[string]string{schemas.HeaderType: "", schemas.HeaderSchemaVersion: "x"}),
			want:    []string{`ce_kappaschemaversion "x" is not a positive integer`, "missing header ce_type"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schemas.ParseEnvelope(tt.headers, []byte("{}"))
			if !errors.Is(err, schemas.ErrMalformedEnvelope) {
				t.Fatalf("ParseEnvelope error = %v, want one wrapping ErrMalformedEnvelope", err)
			}
			if !reflect.DeepEqual(got, schemas.Envelope{}) {
				t.Errorf("ParseEnvelope returned %+v with an error, want the zero Envelope", got)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not report %q", msg, w)
				}
			}
			if n := strings.Count(msg, ";") + 1; n != len(tt.want) {
				t.Errorf("error %q reports %d problems, want %d", msg, n, len(tt.want))
			}
		})
	}
}

func TestPositionRoundTrip(t *testing.T) {
	for _, p := range []schemas.Position{
		{},
		{Partition: 5, Offset: 123},
		{Partition: math.MaxInt32, Offset: math.MaxInt64},
	} {
		s := p.String()
		got, err := schemas.ParsePosition(s)
		if err != nil {
			t.Errorf("ParsePosition(%q): %v", s, err)
			continue
		}
		if got != p {
			t.Errorf("ParsePosition(%q) = %+v, want %+v", s, got, p)
		}
	}
	if got := (schemas.Position{Partition: 3, Offset: 42}).String(); got != "3:42" {
		t.Errorf("String() = %q, want 3:42", got)
	}
}

func TestParsePositionRejectsBadTokens(t *testing.T) {
	for _, token := range []string{
		"",
		"3",
		":",
		"3:",
		":42",
		"a:1",
		"1:a",
		"-1:0",
		"0:-1",
		"1:2:3",
		"2147483648:0",
		"0:9223372036854775808",
		" 1:2",
		"1:2 ",
		"1.0:2",
		"0x1:2",
	} {
		if got, err := schemas.ParsePosition(token); err == nil {
			t.Errorf("ParsePosition(%q) = %+v, want an error", token, got)
		} else if !strings.Contains(err.Error(), "position") {
			t.Errorf("ParsePosition(%q) error %q does not mention the position", token, err)
		}
	}
}

func TestParseEnvelopeRefusesEmptyRequiredAttributes(t *testing.T) {
	env := schemas.Envelope{ID: "e1", Type: "t", Source: "s", Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), SchemaVersion: 1, AggregateID: "a"}
	for _, key := range []string{schemas.HeaderID, schemas.HeaderType, schemas.HeaderSource} {
		var hs []schemas.Header
		for _, h := range env.Headers() {
			if h.Key == key {
				h.Value = nil
			}
			hs = append(hs, h)
		}
		_, err := schemas.ParseEnvelope(hs, nil)
		if !errors.Is(err, schemas.ErrMalformedEnvelope) || !strings.Contains(err.Error(), "empty header "+key) {
			t.Errorf("empty %s: error %v, want it reported", key, err)
		}
	}
}

func TestExpectedVersionOK(t *testing.T) {
	v := func(n int64) *int64 { return &n }
	for _, tt := range []struct {
		expected *int64
		current  int64
		ok       bool
	}{
		{nil, 0, true}, {nil, 9, true},
		{v(0), 0, true}, {v(0), 1, false},
		{v(schemas.ExpectExisting), 0, false}, {v(schemas.ExpectExisting), 3, true},
		{v(3), 3, true}, {v(3), 2, false}, {v(3), 4, false},
	} {
		if got := schemas.ExpectedVersionOK(tt.expected, tt.current); got != tt.ok {
			t.Errorf("ExpectedVersionOK(%v, %d) = %v, want %v", tt.expected, tt.current, got, tt.ok)
		}
	}
}
