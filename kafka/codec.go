package kafka

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Compression is the batch compression of every Kappa producer. LZ4, not
// franz-go's default snappy: at 5,000 commands/s on the local stack the
// broker, which decompresses every produced batch to validate it, and the
// Go consumers used about 11% less CPU in total (docs/PERFORMANCE.md).
func Compression() kgo.Opt {
	return kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression())
}

// The codec between the envelopes of schemas and franz-go records, so that
// the Kafka driver's types stay out of the event contract.

// Record builds the Kafka record of an envelope: key = the aggregate's key
// (schemas.KeyOf: its id, prefixed by its tenant outside the default one),
// value = payload, metadata in headers.
func Record(topic string, partition int32, env schemas.Envelope) *kgo.Record {
	return KeyedRecord(topic, partition, []byte(schemas.KeyOf(env)), env)
}

// KeyedRecord is Record with the key given: the bytes of schemas.KeyOf(env),
// which the caller may already hold (the processor, in its command's
// record) and which the record shares.
func KeyedRecord(topic string, partition int32, key []byte, env schemas.Envelope) *kgo.Record {
	// The record and room for its headers in one allocation: the
	// processor makes two records per command.
	r := &recordWithHeaders{}
	r.fill(topic, partition, key, env)
	return &r.Record
}

// recordWithHeaders holds a record, the headers of an envelope (at most
// 13: the required ones and every optional one) and their values.
type recordWithHeaders struct {
	kgo.Record
	room   [13]kgo.RecordHeader
	values []byte
}

func (r *recordWithHeaders) fill(topic string, partition int32, key []byte, env schemas.Envelope) {
	headers := r.room[:0]
	r.values = env.AppendHeaders(r.values, func(k string, v []byte) { headers = append(headers, kgo.RecordHeader{Key: k, Value: v}) })
	r.Record = kgo.Record{Topic: topic, Partition: partition, Key: key, Value: env.Data, Headers: headers}
}

// Records makes the records of one transaction at a time and reuses them
// for the next. The processor writes two records per command: allocating
// them was a quarter of its garbage at load (207 of 838 MB in 30 s), and
// the collector took 8% of its CPU (docs/PERFORMANCE.md). It is not safe
// for concurrent use.
type Records struct {
	used, free []*recordWithHeaders
}

// Keyed is KeyedRecord in memory that Recycle gave back, when there is.
func (rs *Records) Keyed(topic string, partition int32, key []byte, env schemas.Envelope) *kgo.Record {
	var r *recordWithHeaders
	if n := len(rs.free); n > 0 {
		r, rs.free = rs.free[n-1], rs.free[:n-1]
	} else {
		r = &recordWithHeaders{}
	}
	r.fill(topic, partition, key, env)
	rs.used = append(rs.used, r)
	return &r.Record
}

// MaxFreeRecords bounds the records kept for reuse, about 1 KiB each:
// a transaction at load makes about 1,200, and one catching up on a
// backlog up to 10,000, which need not stay in memory after it.
const MaxFreeRecords = 4096

// Recycle takes back every record made since the last Recycle or Forget,
// up to MaxFreeRecords held. Call it only once the producer is done with
// them: every one's promise has run (a Flush returned) and nothing else
// holds them.
func (rs *Records) Recycle() {
	keep := rs.used[:min(len(rs.used), MaxFreeRecords-len(rs.free))]
	for _, r := range keep {
		// Not to keep the payloads alive until the record's next use.
		r.Record = kgo.Record{}
	}
	rs.free = append(rs.free, keep...)
	rs.Forget()
}

// Forget lets the records made since the last Recycle go to the
// collector, for when the producer may still hold them.
func (rs *Records) Forget() {
	clear(rs.used)
	rs.used = rs.used[:0]
}

// Envelope parses a Kafka record's envelope and checks that its key is the
// aggregate's key.
func Envelope(r *kgo.Record) (schemas.Envelope, error) {
	var onStack [16]schemas.Header
	hs := onStack[:0]
	for _, h := range r.Headers {
		hs = append(hs, schemas.Header(h))
	}
	env, err := schemas.ParseEnvelope(hs, r.Value)
	if err != nil {
		return env, err
	}
	if key := schemas.KeyOf(env); string(r.Key) != key {
		return env, fmt.Errorf("%w: record key %q differs from the aggregate's key %q", schemas.ErrMalformedEnvelope, r.Key, key)
	}
	return env, nil
}

// Position returns where a record sits.
func Position(r *kgo.Record) schemas.Position {
	return schemas.Position{Partition: r.Partition, Offset: r.Offset}
}

// Decode turns a record of the events topic into the shared currency of
// projections: its envelope and decoded payload (an event, or an Outcome).
func Decode(r *kgo.Record) (schemas.Record, error) {
	env, err := Envelope(r)
	if err != nil {
		return schemas.Record{}, err
	}
	rec := schemas.Record{Topic: r.Topic, Position: Position(r), Envelope: env}
	if env.Type == schemas.OutcomeType {
		o, err := schemas.DecodeOutcome(r.Value)
		if err != nil {
			return schemas.Record{}, err
		}
		rec.Payload = o
		return rec, nil
	}
	rec.Payload, err = schemas.DecodeEvent(env)
	return rec, err
}
