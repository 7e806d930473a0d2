package schemas

// Record is one consumed record as projections see it: where it came from,
// its envelope, and its decoded payload. Payload is one of the event types
// of this package, an Outcome for OutcomeType records, or Parked for a
// record the projection parked in the dead-letter topic.
type Record struct {
	Topic    string
	Position Position
	Envelope Envelope
	Payload  any
}

// Parked is the payload of a record that a projection parked in the
// dead-letter topic: it could not be decoded or applied, or it waits behind
// an earlier record of its aggregate that was parked. A sink applies
// nothing for it but counts its position as consumed; its envelope may be
// empty.
type Parked struct {
	// Reason says why the record was parked.
	Reason string
}
