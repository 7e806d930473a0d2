package schemas_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// FuzzValidateCommand: any input either fails with field errors or yields a
// payload that survives the trip through Kafka (encode, then DecodeCommand)
// unchanged. Seeds are in testdata/fuzz/FuzzValidateCommand.
func FuzzValidateCommand(f *testing.F) {
	for _, typ := range schemas.CommandTypes {
		f.Add(typ, "agg-1", []byte(`{}`))
	}
	f.Add(schemas.AddProductToCart, "c", []byte(`{"product_id":"p","quantity":3,"unit_price_cents":0}`))
	f.Add(schemas.PublishArticle, "a", []byte(`{"author_id":"u","title":"t","body":"b","tags":["x","y"]}`))
	f.Add(schemas.UpdateArticle, "a", []byte(`{"tags":[]}`))
	f.Fuzz(func(t *testing.T, typ, aggregateID string, data []byte) {
		payload, err := schemas.ValidateCommand(schemas.CommandRequest{Type: typ, AggregateID: aggregateID, Data: data})
		if err != nil {
			var verr *schemas.ValidationError
			if !errors.As(err, &verr) || len(verr.Errors) == 0 {
				t.Fatalf("error %v is not a ValidationError with field errors", err)
			}
			return
		}
		encoded, err := json.Marshal(payload)
		if err != nil {
			t.Fatalf("encode accepted payload %#v: %v", payload, err)
		}
		again, err := schemas.DecodeCommand(schemas.Envelope{Type: typ, AggregateID: aggregateID, Data: encoded})
		if err != nil {
			t.Fatalf("accepted command %s %s fails after encoding as %s: %v", typ, data, encoded, err)
		}
		if !reflect.DeepEqual(normalize(payload), normalize(again)) {
			t.Fatalf("payload changed through encoding:\n%#v\n%#v", payload, again)
		}
	})
}

// normalize compares payloads by their JSON, where nil and empty slices of
// optional fields are the same command.
func normalize(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
