package schemas

// Record is one consumed record as projections see it: where it came from,
// its envelope, and its decoded payload. Payload is one of the event types
// of this package, an Outcome for OutcomeType records, or nil for a record
// that was parked in the dead-letter topic; a sink applies nothing for a nil
// payload but still counts its position as consumed.
type Record struct {
	Topic    string
	Position Position
	Envelope Envelope
	Payload  any
}
