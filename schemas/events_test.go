package schemas_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

func TestDecodeEventDecodesEveryTypeAndVersion(t *testing.T) {
	tests := []struct {
		typ  string
		data string
		want any
	}{
		{schemas.ArticlePublished, `{"author_id":"u1","title":"T","body":"B","tags":["go"]}`,
			schemas.ArticlePublishedV1{AuthorID: "u1", Title: "T", Body: "B", Tags: []string{"go"}}},
		{schemas.ArticleUpdated, `{"title":"T2"}`,
			schemas.ArticleUpdatedV1{Title: ptr("T2")}},
		{schemas.ArticleUpdated, `{"tags":[]}`,
			schemas.ArticleUpdatedV1{Tags: ptr([]string{})}},
		{schemas.CartProductAdded, `{"product_id":"p1","quantity":2,"unit_price_cents":150}`,
			schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 150}},
		{schemas.CartProductRemoved, `{"product_id":"p1","quantity":1}`,
			schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 1}},
		{schemas.CartCheckedOut, `{"customer_id":"c1","order_id":"cart-1","total_cents":450,"lines":[{"product_id":"p1","quantity":3,"unit_price_cents":150}]}`,
			schemas.CartCheckedOutV1{CustomerID: "c1", OrderID: "cart-1", TotalCents: 450,
				Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 3, UnitPriceCents: 150}}}},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			got, err := schemas.DecodeEvent(schemas.Envelope{Type: tt.typ, SchemaVersion: 1, Data: []byte(tt.data)})
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeEvent = %#v, want %#v", got, tt.want)
			}
			if typ := schemas.TypeOf(got); typ != tt.typ {
				t.Errorf("TypeOf = %q, want %q", typ, tt.typ)
			}
			if v := schemas.SchemaVersionOf(got); v != 1 {
				t.Errorf("SchemaVersionOf = %d, want 1", v)
			}
		})
	}
}

// What a processor writes, a consumer reads back: Marshal, then DecodeEvent
// under TypeOf and SchemaVersionOf.
func TestEventPayloadsRoundTrip(t *testing.T) {
	for _, payload := range []any{
		schemas.ArticlePublishedV1{AuthorID: "u1", Title: "T", Body: "B", Tags: []string{}},
		schemas.ArticleUpdatedV1{Body: ptr("B2"), Tags: ptr([]string{"a", "b"})},
		schemas.CartProductAddedV1{ProductID: "p", Quantity: 1, UnitPriceCents: 0},
		schemas.CartProductRemovedV1{ProductID: "p", Quantity: 1},
		schemas.CartCheckedOutV1{CustomerID: "c", OrderID: "o", TotalCents: 10, Lines: []schemas.OrderLine{{ProductID: "p", Quantity: 2, UnitPriceCents: 5}}},
	} {
		data, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		got, err := schemas.DecodeEvent(schemas.Envelope{Type: schemas.TypeOf(payload), SchemaVersion: schemas.SchemaVersionOf(payload), Data: data})
		if err != nil {
			t.Errorf("DecodeEvent(%T): %v", payload, err)
			continue
		}
		if !reflect.DeepEqual(got, payload) {
			t.Errorf("round trip of %T = %#v, want %#v", payload, got, payload)
		}
	}
}

func TestDecodeEventErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     schemas.Envelope
		want    error
		notWant error
	}{
		{"unknown type", schemas.Envelope{Type: "article.deleted", SchemaVersion: 1, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"empty type", schemas.Envelope{SchemaVersion: 1, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"known type, future version", schemas.Envelope{Type: schemas.CartProductAdded, SchemaVersion: 2, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"known type, version zero", schemas.Envelope{Type: schemas.ArticlePublished, SchemaVersion: 0, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"command type is not an event type", schemas.Envelope{Type: schemas.CheckoutCart, SchemaVersion: 1, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"outcome is not an event", schemas.Envelope{Type: schemas.OutcomeType, SchemaVersion: 1, Data: []byte(`{}`)},
			schemas.ErrUnknownEventType, schemas.ErrUndecodable},
		{"malformed JSON", schemas.Envelope{Type: schemas.CartProductAdded, SchemaVersion: 1, Data: []byte(`{"product_id":`)},
			schemas.ErrUndecodable, schemas.ErrUnknownEventType},
		{"empty data", schemas.Envelope{Type: schemas.CartCheckedOut, SchemaVersion: 1},
			schemas.ErrUndecodable, schemas.ErrUnknownEventType},
		{"wrong JSON type", schemas.Envelope{Type: schemas.CartProductRemoved, SchemaVersion: 1, Data: []byte(`{"product_id":"p","quantity":"1"}`)},
			schemas.ErrUndecodable, schemas.ErrUnknownEventType},
		{"array for an object", schemas.Envelope{Type: schemas.ArticleUpdated, SchemaVersion: 1, Data: []byte(`[]`)},
			schemas.ErrUndecodable, schemas.ErrUnknownEventType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schemas.DecodeEvent(tt.env)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeEvent error = %v, want one wrapping %v", err, tt.want)
			}
			if errors.Is(err, tt.notWant) {
				t.Errorf("DecodeEvent error %v also wraps %v", err, tt.notWant)
			}
			if got != nil {
				t.Errorf("DecodeEvent payload = %#v with an error, want nil", got)
			}
		})
	}
}

func TestTypeOfAndSchemaVersionOfPanicOnNonEvents(t *testing.T) {
	for name, f := range map[string]func(any){
		"TypeOf":          func(p any) { schemas.TypeOf(p) },
		"SchemaVersionOf": func(p any) { schemas.SchemaVersionOf(p) },
	} {
		for _, p := range []any{schemas.CheckoutV1{}, schemas.Outcome{}, nil} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s(%T) did not panic", name, p)
					}
				}()
				f(p)
			}()
		}
	}
}

func TestDecodeOutcome(t *testing.T) {
	want := schemas.Outcome{
		CommandID: "cmd-1", CommandType: schemas.AddProductToCart, AggregateID: "cart-1",
		CommandPosition: schemas.Position{Partition: 2, Offset: 7},
		Status:          schemas.StatusAccepted,
		Events: []schemas.EventRef{{ID: "e1", Type: schemas.CartProductAdded, AggregateVersion: 3,
			Position: schemas.Position{Partition: 2, Offset: 99}}},
	}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := schemas.DecodeOutcome(data)
	if err != nil {
		t.Fatalf("DecodeOutcome: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeOutcome = %+v, want %+v", got, want)
	}

	rejected := schemas.Outcome{CommandID: "cmd-2", Status: schemas.StatusRejected,
		Rejection: &schemas.Rejection{Code: "cart_empty", Detail: "cannot check out an empty cart"}}
	data, err = json.Marshal(rejected)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := schemas.DecodeOutcome(data); err != nil || !reflect.DeepEqual(got, rejected) {
		t.Errorf("DecodeOutcome(rejected) = %+v, %v; want %+v", got, err, rejected)
	}

	if _, err := schemas.DecodeOutcome([]byte(`{"command_id":`)); !errors.Is(err, schemas.ErrUndecodable) {
		t.Errorf("DecodeOutcome(garbage) error = %v, want one wrapping ErrUndecodable", err)
	}
}
