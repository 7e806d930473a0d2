package projector

import (
	"context"
	"errors"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Sink is where a projection writes. Implementations live in projections/.
type Sink interface {
	// Resume returns, for each partition of topic, the next offset to
	// consume according to the sink's own state. A partition missing from
	// the result starts at the beginning of the topic.
	Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error)
	// Apply writes a batch, in order per partition, together with the
	// positions it covers, so that a later Resume reflects exactly what was
	// written. Redelivered records must not be applied twice. A record
	// with a schemas.Parked payload changes nothing but its position.
	Apply(ctx context.Context, batch []schemas.Record) error
}

// TopicBinder is an optional interface of a Sink: the sink keeps, with its
// data, the id of the topic it was built from. BindTopic stores topicID for
// topic if the sink has none yet and returns the id it holds, so that the
// projector never resumes a sink's positions on another topic of the same
// name (one deleted and created again).
type TopicBinder interface {
	BindTopic(ctx context.Context, topic, topicID string) (bound string, err error)
}

// Fencer is an optional interface of a Sink that cannot check a write's
// position against its contents in the same step as the write (ClickHouse):
// it keeps out the writes of members that lost their partitions without
// knowing it (stopped past the session timeout, then resumed).
type Fencer interface {
	// Fence makes member the sink's writer and shuts out every writer
	// not in live, the group's members now: when it returns, no write of
	// theirs is in flight or can land. It is called on every assignment,
	// before Resume.
	Fence(ctx context.Context, member string, live []string) error
	// Fenced reports whether an Apply error means that this writer was
	// shut out; its batches are then dropped and the member joins again.
	Fenced(err error) bool
}

// PermanentClassifier is an optional interface of a Sink: Permanent says
// whether an Apply error is caused by the records themselves (a constraint
// violation, a value the store refuses), so that retrying cannot help.
type PermanentClassifier interface {
	Permanent(err error) bool
}

// ErrTopicRecreated stops a projection whose store was built from an
// earlier topic of the same name: its positions mean nothing in this one.
var ErrTopicRecreated = errors.New("the store was built from another topic of the same name")

// ErrPositionsAheadOfTopic stops a projection whose store says it has
// applied offsets the topic does not have: the topic was recreated or
// truncated after the store was built, and resuming would skip the new
// topic's records up to those offsets.
var ErrPositionsAheadOfTopic = errors.New("the store's positions are ahead of the topic")

// ErrParkedBehind is the reason given to records parked only to keep their
// aggregate's order behind an earlier parked record.
var ErrParkedBehind = errors.New("parked behind an earlier record of the same aggregate")
