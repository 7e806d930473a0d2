package projector

import "time"

// Observer receives what a Projector does; metrics plug in here so that
// this package imports no metrics library.
type Observer interface {
	// BatchApplied reports a batch the sink accepted: its size, the time
	// to apply it including retries, and the newest event time in it.
	BatchApplied(records int, took time.Duration, newest time.Time)
	// BatchFailed reports an attempt the sink refused; it will be retried.
	BatchFailed(err error)
	// DeadLettered reports records parked in the dead-letter topic.
	DeadLettered(n int)
}

// ParkObserver is an optional extension of Observer: it receives the counts
// of the dead-letter book after every batch.
type ParkObserver interface {
	Parked(open, parked, redriven, discarded int)
}

// ProgressObserver is an optional extension of Observer: after each batch
// it receives, per partition, the offset of the last command whose outcome
// (and so all of whose events) the sink has applied. A load test compares
// it with the positions ingest acknowledged to measure freshness.
type ProgressObserver interface {
	CommandsThrough(partition int32, commandOffset int64)
}

// A groupwatch.Observer among the Observer's methods receives whether the
// member does its share.

type noObserver struct{}

func (noObserver) BatchApplied(int, time.Duration, time.Time) {}
func (noObserver) BatchFailed(error)                          {}
func (noObserver) DeadLettered(int)                           {}
