package schemas_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

func ptr[T any](v T) *T { return &v }

const commandTypeList = "article.publish, article.update, cart.add_product, cart.remove_product, cart.checkout"

func TestValidateCommandAcceptsValidCommands(t *testing.T) {
	id128 := strings.Repeat("a", schemas.MaxIDBytes)
	tags32 := make([]string, schemas.MaxTags)
	for i := range tags32 {
		tags32[i] = "t" + strings.Repeat("x", i)
	}
	tags32JSON, err := json.Marshal(tags32)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  schemas.CommandRequest
		want any
	}{
		{
			name: "publish with tags",
			req: schemas.CommandRequest{Type: schemas.PublishArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"author_id":"u1","title":"Hello","body":"World","tags":["go","kafka"]}`)},
			want: schemas.PublishArticleV1{AuthorID: "u1", Title: "Hello", Body: "World", Tags: []string{"go", "kafka"}},
		},
		{
			name: "publish without tags",
			req: schemas.CommandRequest{Type: schemas.PublishArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"author_id":"u1","title":"Hello","body":"World"}`)},
			want: schemas.PublishArticleV1{AuthorID: "u1", Title: "Hello", Body: "World"},
		},
		{
			name: "publish with the maximum number of tags",
			req: schemas.CommandRequest{Type: schemas.PublishArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"author_id":"u1","title":"Hello","body":"World","tags":` + string(tags32JSON) + `}`)},
			want: schemas.PublishArticleV1{AuthorID: "u1", Title: "Hello", Body: "World", Tags: tags32},
		},
		{
			name: "publish with non-ASCII text and a 128-byte id",
			req: schemas.CommandRequest{Type: schemas.PublishArticle, AggregateID: id128,
				Data: json.RawMessage(`{"author_id":"usér","title":"Grüße","body":"日本語","tags":["ü"]}`)},
			want: schemas.PublishArticleV1{AuthorID: "usér", Title: "Grüße", Body: "日本語", Tags: []string{"ü"}},
		},
		{
			name: "update title only",
			req: schemas.CommandRequest{Type: schemas.UpdateArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"title":"New"}`)},
			want: schemas.UpdateArticleV1{Title: ptr("New")},
		},
		{
			name: "update clears tags",
			req: schemas.CommandRequest{Type: schemas.UpdateArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"tags":[]}`)},
			want: schemas.UpdateArticleV1{Tags: ptr([]string{})},
		},
		{
			name: "update every field",
			req: schemas.CommandRequest{Type: schemas.UpdateArticle, AggregateID: "article-1",
				Data: json.RawMessage(`{"title":"T","body":"B","tags":["x"]}`)},
			want: schemas.UpdateArticleV1{Title: ptr("T"), Body: ptr("B"), Tags: ptr([]string{"x"})},
		},
		{
			name: "add product",
			req: schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1",
				Data: json.RawMessage(`{"product_id":"p1","quantity":2,"unit_price_cents":150}`)},
			want: schemas.AddProductV1{ProductID: "p1", Quantity: ptr[int64](2), UnitPriceCents: ptr[int64](150)},
		},
		{
			name: "add free product at the maximum quantity",
			req: schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1",
				Data: json.RawMessage(`{"product_id":"p1","quantity":1000000,"unit_price_cents":0}`)},
			want: schemas.AddProductV1{ProductID: "p1", Quantity: ptr[int64](schemas.MaxQuantity), UnitPriceCents: ptr[int64](0)},
		},
		{
			name: "add product at the maximum price",
			req: schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1",
				Data: json.RawMessage(`{"product_id":"p1","quantity":1,"unit_price_cents":1000000000}`)},
			want: schemas.AddProductV1{ProductID: "p1", Quantity: ptr[int64](1), UnitPriceCents: ptr[int64](schemas.MaxUnitPriceCents)},
		},
		{
			name: "remove product",
			req: schemas.CommandRequest{Type: schemas.RemoveProductFromCart, AggregateID: "cart-1",
				Data: json.RawMessage(` {"product_id":"p1","quantity":1} `)},
			want: schemas.RemoveProductV1{ProductID: "p1", Quantity: ptr[int64](1)},
		},
		{
			name: "checkout",
			req: schemas.CommandRequest{Type: schemas.CheckoutCart, AggregateID: "cart-1",
				Data: json.RawMessage(`{"customer_id":"c1"}`)},
			want: schemas.CheckoutV1{CustomerID: "c1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schemas.ValidateCommand(tt.req)
			if err != nil {
				t.Fatalf("ValidateCommand: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("payload = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestValidateCommandRejectsInvalidCommands(t *testing.T) {
	add := func(data string) schemas.CommandRequest {
		return schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1", Data: json.RawMessage(data)}
	}
	publish := func(data string) schemas.CommandRequest {
		return schemas.CommandRequest{Type: schemas.PublishArticle, AggregateID: "article-1", Data: json.RawMessage(data)}
	}
	update := func(data string) schemas.CommandRequest {
		return schemas.CommandRequest{Type: schemas.UpdateArticle, AggregateID: "article-1", Data: json.RawMessage(data)}
	}
	remove := func(data string) schemas.CommandRequest {
		return schemas.CommandRequest{Type: schemas.RemoveProductFromCart, AggregateID: "cart-1", Data: json.RawMessage(data)}
	}
	checkout := func(id, data string) schemas.CommandRequest {
		return schemas.CommandRequest{Type: schemas.CheckoutCart, AggregateID: id, Data: json.RawMessage(data)}
	}
	validCheckout := `{"customer_id":"c1"}`
	fe := func(field, detail string) schemas.FieldError { return schemas.FieldError{Field: field, Detail: detail} }
	const badID = "must not contain spaces, control characters or '/'"
	distinctTags := make([]string, schemas.MaxTags+1)
	for i := range distinctTags {
		distinctTags[i] = fmt.Sprintf("tag%d", i)
	}
	tooManyTags := `["` + strings.Join(distinctTags, `","`) + `"]`

	tests := []struct {
		name string
		req  schemas.CommandRequest
		want []schemas.FieldError
		// prefix compares the detail of each want as a prefix, for
		// details that quote the JSON decoder.
		prefix bool
	}{
		// Type and aggregate id, checked for every command.
		{name: "empty type", req: schemas.CommandRequest{AggregateID: "x", Data: json.RawMessage(`{}`)},
			want: []schemas.FieldError{fe("/type", "is required; one of "+commandTypeList)}},
		{name: "unknown type", req: schemas.CommandRequest{Type: "article.delete", AggregateID: "x", Data: json.RawMessage(`{}`)},
			want: []schemas.FieldError{fe("/type", `unknown command type "article.delete"; one of `+commandTypeList)}},
		{name: "long unknown type is truncated", req: schemas.CommandRequest{Type: strings.Repeat("t", 100), AggregateID: "x"},
			want: []schemas.FieldError{fe("/type", `unknown command type "`+strings.Repeat("t", 64)+`…"; one of `+commandTypeList)}},
		{name: "empty type and id", req: schemas.CommandRequest{},
			want: []schemas.FieldError{fe("/aggregate_id", "is required"), fe("/type", "is required; one of "+commandTypeList)}},
		{name: "missing aggregate id", req: checkout("", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", "is required")}},
		{name: "aggregate id with a space", req: checkout("cart 1", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", badID)}},
		{name: "aggregate id with a slash", req: checkout("carts/1", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", badID)}},
		{name: "aggregate id with a tab", req: checkout("cart\t1", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", badID)}},
		{name: "aggregate id with a control character", req: checkout("cart\x001", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", badID)}},
		{name: "aggregate id with a non-breaking space", req: checkout("cart\u00a01", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", badID)}},
		{name: "aggregate id over 128 bytes", req: checkout(strings.Repeat("a", schemas.MaxIDBytes+1), validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", "must be at most 128 bytes")}},
		{name: "aggregate id of 43 three-byte runes is 129 bytes", req: checkout(strings.Repeat("€", 43), validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", "must be at most 128 bytes")}},
		{name: "aggregate id invalid UTF-8", req: checkout("cart\xff1", validCheckout),
			want: []schemas.FieldError{fe("/aggregate_id", "must be valid UTF-8")}},

		// Data as a whole.
		{name: "data missing", req: checkout("cart-1", ""),
			want: []schemas.FieldError{fe("/data", "is required and must be a JSON object")}},
		{name: "data null", req: checkout("cart-1", "null"),
			want: []schemas.FieldError{fe("/data", "is required and must be a JSON object")}},
		{name: "data blank", req: checkout("cart-1", " \n\t"),
			want: []schemas.FieldError{fe("/data", "is required and must be a JSON object")}},
		{name: "data missing and bad id report both", req: checkout("a b", ""),
			want: []schemas.FieldError{fe("/aggregate_id", badID), fe("/data", "is required and must be a JSON object")}},
		{name: "data is an array", req: add(`[1]`), prefix: true,
			want: []schemas.FieldError{fe("/data", "is not valid JSON for this command: ")}},
		{name: "data is a string", req: add(`"p1"`), prefix: true,
			want: []schemas.FieldError{fe("/data", "is not valid JSON for this command: ")}},
		{name: "trailing data after the JSON value", req: checkout("cart-1", `{"customer_id":"c1"} {"customer_id":"c2"}`),
			want: []schemas.FieldError{fe("/data", "is not valid JSON for this command: unexpected data after the JSON value")}},
		{name: "truncated data", req: checkout("cart-1", `{"customer_id":"c1"`), prefix: true,
			want: []schemas.FieldError{fe("/data", "is not valid JSON for this command: ")}},
		{name: "unknown field in data", req: add(`{"product_id":"p1","quantity":1,"unit_price_cents":1,"colour":"red"}`),
			want: []schemas.FieldError{fe("/data/colour", "is not a known field")}},
		{name: "field name in the wrong case", req: add(`{"product_id":"p1","Quantity":1,"unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/Quantity", "is not a known field")}},
		{name: "string for an integer", req: add(`{"product_id":"p1","quantity":"5","unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be an integer, not a string")}},
		{name: "string for an array", req: publish(`{"author_id":"u1","title":"T","body":"B","tags":"go"}`),
			want: []schemas.FieldError{fe("/data/tags", "must be an array, not a string")}},

		// article.publish
		{name: "publish with every field missing", req: publish(`{}`),
			want: []schemas.FieldError{
				fe("/data/author_id", "is required"),
				fe("/data/title", "is required and must not be blank"),
				fe("/data/body", "is required and must not be blank"),
			}},
		{name: "publish with blank title", req: publish(`{"author_id":"u1","title":"  \t","body":"B"}`),
			want: []schemas.FieldError{fe("/data/title", "is required and must not be blank")}},
		{name: "publish with author id containing a slash", req: publish(`{"author_id":"u/1","title":"T","body":"B"}`),
			want: []schemas.FieldError{fe("/data/author_id", badID)}},
		{name: "publish with title over 512 bytes", req: publish(`{"author_id":"u1","title":"` + strings.Repeat("t", schemas.MaxTitleBytes+1) + `","body":"B"}`),
			want: []schemas.FieldError{fe("/data/title", "must be at most 512 bytes")}},
		{name: "publish with body over 64 KiB", req: publish(`{"author_id":"u1","title":"T","body":"` + strings.Repeat("b", schemas.MaxBodyBytes+1) + `"}`),
			want: []schemas.FieldError{fe("/data/body", "must be at most 65536 bytes")}},
		{name: "publish with a NUL in the body", req: publish(`{"author_id":"u1","title":"T","body":"a\u0000b"}`),
			want: []schemas.FieldError{fe("/data/body", "must not contain NUL characters")}},
		{name: "publish with too many tags", req: publish(`{"author_id":"u1","title":"T","body":"B","tags":` + tooManyTags + `}`),
			want: []schemas.FieldError{fe("/data/tags", "must have at most 32 tags")}},
		{name: "publish with duplicate tags", req: publish(`{"author_id":"u1","title":"T","body":"B","tags":["go","kafka","go"]}`),
			want: []schemas.FieldError{fe("/data/tags/2", `repeats tag "go"`)}},
		{name: "publish with a blank tag", req: publish(`{"author_id":"u1","title":"T","body":"B","tags":["go"," "]}`),
			want: []schemas.FieldError{fe("/data/tags/1", "is required and must not be blank")}},
		{name: "publish with a tag over 64 bytes", req: publish(`{"author_id":"u1","title":"T","body":"B","tags":["` + strings.Repeat("g", schemas.MaxTagBytes+1) + `"]}`),
			want: []schemas.FieldError{fe("/data/tags/0", "must be at most 64 bytes")}},

		// article.update
		{name: "update with no fields", req: update(`{}`),
			want: []schemas.FieldError{fe("/data", "must change at least one of title, body, tags")}},
		{name: "update with only nulls", req: update(`{"title":null,"body":null,"tags":null}`),
			want: []schemas.FieldError{fe("/data", "must change at least one of title, body, tags")}},
		{name: "update with blank title", req: update(`{"title":""}`),
			want: []schemas.FieldError{fe("/data/title", "is required and must not be blank")}},
		{name: "update with blank body and duplicate tags", req: update(`{"body":" ","tags":["a","a"]}`),
			want: []schemas.FieldError{fe("/data/body", "is required and must not be blank"), fe("/data/tags/1", `repeats tag "a"`)}},
		{name: "update with unknown field", req: update(`{"title":"T","author_id":"u2"}`),
			want: []schemas.FieldError{fe("/data/author_id", "is not a known field")}},

		// cart.add_product
		{name: "add with quantity zero", req: add(`{"product_id":"p1","quantity":0,"unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be > 0")}},
		{name: "add with negative quantity", req: add(`{"product_id":"p1","quantity":-3,"unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be > 0")}},
		{name: "add with quantity too large", req: add(`{"product_id":"p1","quantity":1000001,"unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be <= 1000000")}},
		{name: "add with quantity missing", req: add(`{"product_id":"p1","unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/quantity", "is required")}},
		{name: "add with unit price missing", req: add(`{"product_id":"p1","quantity":1}`),
			want: []schemas.FieldError{fe("/data/unit_price_cents", "is required")}},
		{name: "add with negative unit price", req: add(`{"product_id":"p1","quantity":1,"unit_price_cents":-1}`),
			want: []schemas.FieldError{fe("/data/unit_price_cents", "must be >= 0")}},
		{name: "add with unit price too large", req: add(`{"product_id":"p1","quantity":1,"unit_price_cents":10000000001}`),
			want: []schemas.FieldError{fe("/data/unit_price_cents", "must be <= 1000000000")}},
		{name: "add with every field missing", req: add(`{}`),
			want: []schemas.FieldError{
				fe("/data/product_id", "is required"),
				fe("/data/quantity", "is required"),
				fe("/data/unit_price_cents", "is required"),
			}},
		{name: "add with product id containing a space and a bad id", req: schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart/1",
			Data: json.RawMessage(`{"product_id":"p 1","quantity":1,"unit_price_cents":1}`)},
			want: []schemas.FieldError{fe("/aggregate_id", badID), fe("/data/product_id", badID)}},

		// cart.remove_product
		{name: "remove with quantity zero", req: remove(`{"product_id":"p1","quantity":0}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be > 0")}},
		{name: "remove with quantity too large", req: remove(`{"product_id":"p1","quantity":1000001}`),
			want: []schemas.FieldError{fe("/data/quantity", "must be <= 1000000")}},
		{name: "remove with product and quantity missing", req: remove(`{}`),
			want: []schemas.FieldError{fe("/data/product_id", "is required"), fe("/data/quantity", "is required")}},
		{name: "remove with unit price", req: remove(`{"product_id":"p1","quantity":1,"unit_price_cents":1}`),
			want: []schemas.FieldError{fe("/data/unit_price_cents", "is not a known field")}},

		// cart.checkout
		{name: "checkout without customer", req: checkout("cart-1", `{}`),
			want: []schemas.FieldError{fe("/data/customer_id", "is required")}},
		{name: "checkout with blank customer", req: checkout("cart-1", `{"customer_id":" "}`),
			want: []schemas.FieldError{fe("/data/customer_id", badID)}},
		{name: "checkout with customer id over 128 bytes", req: checkout("cart-1", `{"customer_id":"`+strings.Repeat("c", 129)+`"}`),
			want: []schemas.FieldError{fe("/data/customer_id", "must be at most 128 bytes")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := schemas.ValidateCommand(tt.req)
			if payload != nil {
				t.Errorf("payload = %#v, want nil with an error", payload)
			}
			got := fieldErrors(t, err)
			if len(got) != len(tt.want) {
				t.Fatalf("errors = %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i].Field != tt.want[i].Field {
					t.Errorf("errors[%d].Field = %q, want %q (all: %q)", i, got[i].Field, tt.want[i].Field, got)
				}
				if tt.prefix && !strings.HasPrefix(got[i].Detail, tt.want[i].Detail) ||
					!tt.prefix && got[i].Detail != tt.want[i].Detail {
					t.Errorf("errors[%d].Detail = %q, want %q", i, got[i].Detail, tt.want[i].Detail)
				}
			}
		})
	}
}

// fieldErrors asserts err is a *ValidationError wrapping ErrInvalidCommand
// whose message lists every field, and returns its field errors.
func fieldErrors(t *testing.T, err error) []schemas.FieldError {
	t.Helper()
	if err == nil {
		t.Fatal("ValidateCommand returned no error")
	}
	if !errors.Is(err, schemas.ErrInvalidCommand) {
		t.Errorf("errors.Is(%v, ErrInvalidCommand) = false", err)
	}
	var verr *schemas.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error %T is not a *ValidationError: %v", err, err)
	}
	for _, fe := range verr.Errors {
		if want := fe.Field + ": " + fe.Detail; !strings.Contains(err.Error(), want) {
			t.Errorf("Error() = %q does not contain %q", err.Error(), want)
		}
	}
	return verr.Errors
}

func TestValidationErrorMessage(t *testing.T) {
	err := &schemas.ValidationError{Errors: []schemas.FieldError{
		{Field: "/data/quantity", Detail: "must be > 0"},
		{Field: "/aggregate_id", Detail: "is required"},
	}}
	if got, want := err.Error(), "invalid command: /data/quantity: must be > 0; /aggregate_id: is required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// The decoder reports values of the wrong JSON type. The detail must name
// the kind the client actually sent.
func TestValidateCommandNamesTheWrongJSONKind(t *testing.T) {
	tests := []struct {
		name, data, field, detail string
	}{
		{"boolean for an integer", `{"product_id":"p1","quantity":true,"unit_price_cents":1}`, "/data/quantity", "must be an integer, not a boolean"},
		{"array for an integer", `{"product_id":"p1","quantity":[1],"unit_price_cents":1}`, "/data/quantity", "must be an integer, not an array"},
		{"object for an integer", `{"product_id":"p1","quantity":{},"unit_price_cents":1}`, "/data/quantity", "must be an integer, not an object"},
		{"fraction for an integer", `{"product_id":"p1","quantity":1.5,"unit_price_cents":1}`, "/data/quantity", "must be an integer, not a number with a fraction or exponent, 1.5"},
		{"number for a string", `{"product_id":5,"quantity":1,"unit_price_cents":1}`, "/data/product_id", "must be a string, not the number 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := schemas.ValidateCommand(schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1", Data: json.RawMessage(tt.data)})
			got := fieldErrors(t, err)
			want := []schemas.FieldError{{Field: tt.field, Detail: tt.detail}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors = %q, want %q", got, want)
			}
		})
	}
	t.Run("integer overflow", func(t *testing.T) {
		_, err := schemas.ValidateCommand(schemas.CommandRequest{Type: schemas.AddProductToCart, AggregateID: "cart-1",
			Data: json.RawMessage(`{"product_id":"p1","quantity":99999999999999999999,"unit_price_cents":1}`)})
		got := fieldErrors(t, err)
		if len(got) != 1 || got[0].Field != "/data/quantity" || strings.Contains(got[0].Detail, "null") {
			t.Errorf("errors = %q, want one /data/quantity error that does not call the number null", got)
		}
	})
}

// FieldError.Field is documented as an RFC 6901 JSON pointer, where '/'
// and '~' inside a member name are escaped as "~1" and "~0".
func TestValidateCommandEscapesUnknownFieldPointers(t *testing.T) {
	for name, want := range map[string]string{"a/b": "/data/a~1b", "x~y": "/data/x~0y"} {
		data, err := json.Marshal(map[string]any{"customer_id": "c1", name: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = schemas.ValidateCommand(schemas.CommandRequest{Type: schemas.CheckoutCart, AggregateID: "cart-1", Data: data})
		got := fieldErrors(t, err)
		if len(got) != 1 || got[0].Field != want {
			t.Errorf("unknown field %q: errors = %q, want field %q", name, got, want)
		}
	}
}

func TestFieldErrorOf(t *testing.T) {
	var req schemas.CommandRequest
	_, err := json.Parse([]byte(`{"type":"x","aggregate_id":"a","extra":1}`), &req, json.DisallowUnknownFields)
	if err == nil {
		t.Fatal("Parse accepted an unknown field")
	}
	if got, want := schemas.FieldErrorOf("", err), (schemas.FieldError{Field: "/extra", Detail: "is not a known field"}); got != want {
		t.Errorf("FieldErrorOf(unknown field) = %+v, want %+v", got, want)
	}

	got := schemas.FieldErrorOf("/data", errors.New("json: something odd"))
	if want := (schemas.FieldError{Field: "/data", Detail: "is not valid JSON for this command: something odd"}); got != want {
		t.Errorf("FieldErrorOf(other) = %+v, want %+v", got, want)
	}
}

func TestDecodeCommandValidatesTheEnvelope(t *testing.T) {
	got, err := schemas.DecodeCommand(schemas.Envelope{Type: schemas.CheckoutCart, AggregateID: "cart-1", Data: []byte(`{"customer_id":"c1"}`)})
	if err != nil {
		t.Fatalf("DecodeCommand: %v", err)
	}
	if want := (schemas.CheckoutV1{CustomerID: "c1"}); got != want {
		t.Errorf("DecodeCommand = %#v, want %#v", got, want)
	}

	_, err = schemas.DecodeCommand(schemas.Envelope{Type: schemas.CheckoutCart, AggregateID: "cart 1", Data: []byte(`{}`)})
	want := []schemas.FieldError{
		{Field: "/aggregate_id", Detail: "must not contain spaces, control characters or '/'"},
		{Field: "/data/customer_id", Detail: "is required"},
	}
	if got := fieldErrors(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors = %q, want %q", got, want)
	}
}

// Ingest writes json.Marshal of the validated payload; the processor reads
// it back with DecodeCommand, which validates strictly again. Every payload
// must survive that trip unchanged.
func TestDecodeCommandReadsWhatIngestWrites(t *testing.T) {
	tests := []struct {
		typ     string
		payload any
	}{
		{schemas.PublishArticle, schemas.PublishArticleV1{AuthorID: "u1", Title: "T", Body: "B", Tags: []string{"go"}}},
		{schemas.PublishArticle, schemas.PublishArticleV1{AuthorID: "u1", Title: "<T&>", Body: "B"}},
		{schemas.UpdateArticle, schemas.UpdateArticleV1{Title: ptr("T2")}},
		{schemas.UpdateArticle, schemas.UpdateArticleV1{Tags: ptr([]string{})}},
		{schemas.AddProductToCart, schemas.AddProductV1{ProductID: "p1", Quantity: ptr[int64](3), UnitPriceCents: ptr[int64](0)}},
		{schemas.RemoveProductFromCart, schemas.RemoveProductV1{ProductID: "p1", Quantity: ptr[int64](1)}},
		{schemas.CheckoutCart, schemas.CheckoutV1{CustomerID: "c1"}},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.payload)
		if err != nil {
			t.Fatal(err)
		}
		got, err := schemas.DecodeCommand(schemas.Envelope{Type: tt.typ, AggregateID: "x-1", Data: data})
		if err != nil {
			t.Errorf("DecodeCommand(%s %s): %v", tt.typ, data, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.payload) {
			t.Errorf("DecodeCommand(%s %s) = %#v, want %#v", tt.typ, data, got, tt.payload)
		}
	}
}
