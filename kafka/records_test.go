package kafka_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

// A recycled record is made again from nothing of its last use: what the
// producer set on it is gone, and its headers are the new envelope's, even
// when the old one had more of them.
func TestRecycledRecordsCarryNothingOver(t *testing.T) {
	var rs kafka.Records
	first := benchEnvelope()
	first.Tenant, first.IdempotencyKey = "acme", "key-1"
	old := rs.Keyed("events", 2, []byte("acme/cart-1"), first)
	old.Offset, old.ProducerID = 41, 7
	rs.Recycle()

	second := benchEnvelope()
	second.ID, second.AggregateID, second.Data = "8d0d3b8e-6a44-5d0e-9b1f-3c1b8b0d9f11", "cart-2", []byte(`{"product_id":"p2"}`)
	r := rs.Keyed("events", 0, []byte("cart-2"), second)
	if r != old {
		t.Fatal("Recycle did not give the record back for the next use")
	}
	if r.Offset != 0 || r.ProducerID != 0 || r.Partition != 0 || string(r.Key) != "cart-2" || string(r.Value) != string(second.Data) {
		t.Errorf("recycled record: offset %d, producer %d, partition %d, key %q, value %q", r.Offset, r.ProducerID, r.Partition, r.Key, r.Value)
	}
	fresh := kafka.KeyedRecord("events", 0, []byte("cart-2"), second)
	if len(r.Headers) != len(fresh.Headers) {
		t.Fatalf("recycled record has %d headers, want %d", len(r.Headers), len(fresh.Headers))
	}
	for i, h := range fresh.Headers {
		if r.Headers[i].Key != h.Key || string(r.Headers[i].Value) != string(h.Value) {
			t.Errorf("header %d: %s=%q, want %s=%q", i, r.Headers[i].Key, r.Headers[i].Value, h.Key, h.Value)
		}
	}
	env, err := kafka.Envelope(r)
	if err != nil {
		t.Fatal(err)
	}
	if env.Tenant != "" || env.IdempotencyKey != "" || env.ID != second.ID {
		t.Errorf("decoded %+v, want the second envelope only", env)
	}
}

// Records the producer may still hold are never handed out again.
func TestForgottenRecordsAreNotReused(t *testing.T) {
	var rs kafka.Records
	held := rs.Keyed("events", 0, []byte("cart-1"), benchEnvelope())
	rs.Forget()
	rs.Recycle() // nothing made since Forget
	if r := rs.Keyed("events", 0, []byte("cart-1"), benchEnvelope()); r == held {
		t.Error("a forgotten record was handed out again")
	}
}

func BenchmarkRecycledRecord(b *testing.B) {
	var rs kafka.Records
	env := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		_ = rs.Keyed("events", 0, []byte("cart-12345"), env)
		rs.Recycle()
	}
}

// However large a transaction, at most MaxFreeRecords wait for the next.
func TestRecycledRecordsAreBounded(t *testing.T) {
	var rs kafka.Records
	made := map[*kgo.Record]bool{}
	for range kafka.MaxFreeRecords + 1000 {
		made[rs.Keyed("events", 0, []byte("cart-1"), benchEnvelope())] = true
	}
	rs.Recycle()
	reused := 0
	for range kafka.MaxFreeRecords + 1000 {
		if made[rs.Keyed("events", 0, []byte("cart-1"), benchEnvelope())] {
			reused++
		}
	}
	if reused != kafka.MaxFreeRecords {
		t.Fatalf("%d records were reused, want %d", reused, kafka.MaxFreeRecords)
	}
}
