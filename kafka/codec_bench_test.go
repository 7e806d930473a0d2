package kafka_test

import (
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

func benchEnvelope() schemas.Envelope {
	return schemas.Envelope{ID: "0b1894c3-0065-50f9-9be1-12367ec23a3d", Type: schemas.CartProductAdded, Source: "kappa/processor",
		Time: time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC), SchemaVersion: 1, AggregateID: "cart-12345", AggregateVersion: 17,
		CommandID: "5e57a32c-0065-50f9-9be1-12367ec23a3d", Data: []byte(`{"product_id":"p17","quantity":2,"unit_price_cents":525}`)}
}

// The hot paths of every role: encoding an envelope into a record (ingest,
// processors) and decoding a record (processors, projections).
func BenchmarkRecord(b *testing.B) {
	env := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		_ = kafka.Record("events", 0, env)
	}
}

func BenchmarkDecode(b *testing.B) {
	r := kafka.Record("events", 0, benchEnvelope())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := kafka.Decode(r); err != nil {
			b.Fatal(err)
		}
	}
}
