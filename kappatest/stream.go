package kappatest

import (
	"fmt"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Stream builds the records a projection would consume from an events
// topic: offsets count up per partition, versions per aggregate, and each
// command's outcome follows its events as the processors write it.
type Stream struct {
	Topic    string
	Records  []schemas.Record
	next     map[int32]int64
	versions map[string]int64
	commands map[int32]int64
	clock    time.Time
}

// NewStream starts an empty stream on topic.
func NewStream(topic string) *Stream {
	return &Stream{Topic: topic, next: map[int32]int64{}, versions: map[string]int64{}, commands: map[int32]int64{},
		clock: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
}

// Command appends the events of one accepted command on aggregateID, then
// its outcome, on partition. Offsets skip one after the outcome, as a
// transaction marker would.
func (s *Stream) Command(partition int32, aggregateID string, payloads ...any) {
	cmdOffset := s.commands[partition]
	s.commands[partition]++
	commandID := fmt.Sprintf("cmd-%d-%d", partition, cmdOffset)
	outcome := schemas.Outcome{CommandID: commandID, CommandType: "test", AggregateID: aggregateID,
		CommandPosition: schemas.Position{Partition: partition, Offset: cmdOffset}, Status: schemas.StatusAccepted}
	for _, p := range payloads {
		s.versions[aggregateID]++
		s.clock = s.clock.Add(time.Minute)
		data, err := json.Marshal(p)
		if err != nil {
			panic(err)
		}
		env := schemas.Envelope{
			ID: fmt.Sprintf("%s-event-%d", commandID, len(outcome.Events)), Type: schemas.TypeOf(p), Source: "test",
			Time: s.clock, SchemaVersion: schemas.SchemaVersionOf(p), AggregateID: aggregateID,
			AggregateVersion: s.versions[aggregateID], CommandID: commandID, Data: data,
		}
		pos := s.append(partition, env, p)
		outcome.Events = append(outcome.Events, schemas.EventRef{ID: env.ID, Type: env.Type, AggregateVersion: env.AggregateVersion, Position: pos})
	}
	s.append(partition, schemas.Envelope{ID: commandID + "-outcome", Type: schemas.OutcomeType, Source: "test", Time: s.clock,
		SchemaVersion: 1, AggregateID: aggregateID, AggregateVersion: s.versions[aggregateID], CommandID: commandID}, outcome)
	s.next[partition]++ // the transaction marker
}

func (s *Stream) append(partition int32, env schemas.Envelope, payload any) schemas.Position {
	pos := schemas.Position{Partition: partition, Offset: s.next[partition]}
	s.next[partition]++
	s.Records = append(s.Records, schemas.Record{Topic: s.Topic, Position: pos, Envelope: env, Payload: payload})
	return pos
}

// From returns the records at or after the given next offsets per
// partition, as a consumer resuming there would receive them.
func From(records []schemas.Record, next map[int32]int64) []schemas.Record {
	var out []schemas.Record
	for _, r := range records {
		if r.Position.Offset >= next[r.Position.Partition] {
			out = append(out, r)
		}
	}
	return out
}
