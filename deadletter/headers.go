package deadletter

import (
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The dead-letter record format, written and read here only: an entry is
// the parked record (its key, value and headers) with the headers below
// added; a marker is a record with the aggregate's key, no value, and the
// projection, action and resolved position.

// Headers of dead-letter records, added to the original record's headers.
const (
	HeaderReason     = "kappa_dlq_reason"
	HeaderProjection = "kappa_dlq_projection"
	HeaderTopic      = "kappa_dlq_topic"
	HeaderPartition  = "kappa_dlq_partition"
	HeaderOffset     = "kappa_dlq_offset"
	HeaderAttempts   = "kappa_dlq_attempts"
	// HeaderBehind names the dead-letter position of the record this one
	// was parked behind; absent on the record that was itself poison.
	HeaderBehind = "kappa_dlq_behind"
	// HeaderAction marks a resolution: "redriven" or "discarded".
	HeaderAction = "kappa_dlq_action"
	// HeaderResolves is the dead-letter position a marker resolves.
	HeaderResolves = "kappa_dlq_resolves"
)

// Resolution actions.
const (
	ActionRedriven  = "redriven"
	ActionDiscarded = "discarded"
)

// Parking is a record to park, and why.
type Parking struct {
	Record *kgo.Record
	Reason error
	// Behind is the origin position of the record this one waits behind;
	// empty for a record parked for its own sake.
	Behind string
	// Attempts counts the tries to apply it; 0 if it never reached the sink.
	Attempts int
}

// Letter returns the dead-letter record that parks p for projection in
// topic, keyed as the original, so that it lands on the dead-letter
// partition of its aggregate.
func Letter(topic, projection string, p Parking) *kgo.Record {
	r := p.Record
	headers := append(append(make([]kgo.RecordHeader, 0, len(r.Headers)+7), r.Headers...),
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(p.Reason.Error())},
		kgo.RecordHeader{Key: HeaderProjection, Value: []byte(projection)},
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		kgo.RecordHeader{Key: HeaderOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		kgo.RecordHeader{Key: HeaderAttempts, Value: []byte(strconv.Itoa(p.Attempts))},
	)
	if p.Behind != "" {
		headers = append(headers, kgo.RecordHeader{Key: HeaderBehind, Value: []byte(p.Behind)})
	}
	return &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Headers: headers}
}

// marker returns the record that resolves entry e with action.
func marker(topic string, e Entry, action string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(e.AggregateID), Headers: []kgo.RecordHeader{
		{Key: HeaderProjection, Value: []byte(e.Projection)},
		{Key: HeaderAction, Value: []byte(action)},
		{Key: HeaderResolves, Value: []byte(e.Position.String())},
	}}
}

func entryOf(r *kgo.Record, h map[string]string) (Entry, error) {
	part, err := strconv.ParseInt(h[HeaderPartition], 10, 32)
	if err != nil {
		return Entry{}, fmt.Errorf("dead letter %s: bad %s", kafka.Position(r), HeaderPartition)
	}
	off, err := strconv.ParseInt(h[HeaderOffset], 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("dead letter %s: bad %s", kafka.Position(r), HeaderOffset)
	}
	e := Entry{
		Position: kafka.Position(r), Projection: h[HeaderProjection], AggregateID: string(r.Key),
		OriginTopic: h[HeaderTopic], Origin: schemas.Position{Partition: int32(part), Offset: off}, Reason: h[HeaderReason],
	}
	if behind, err := schemas.ParsePosition(h[HeaderBehind]); err == nil {
		e.Behind = &behind
	}
	orig := &kgo.Record{Topic: e.OriginTopic, Partition: e.Origin.Partition, Offset: e.Origin.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
	for _, hd := range r.Headers {
		if !isDLQHeader(hd.Key) {
			orig.Headers = append(orig.Headers, hd)
		}
	}
	e.Record = orig
	return e, nil
}

func isDLQHeader(key string) bool {
	switch key {
	case HeaderReason, HeaderProjection, HeaderTopic, HeaderPartition, HeaderOffset, HeaderAttempts, HeaderBehind, HeaderAction, HeaderResolves:
		return true
	}
	return false
}
