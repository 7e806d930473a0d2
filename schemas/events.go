package schemas

import (
	"errors"
	"fmt"

	"github.com/segmentio/encoding/json"
)

// Event types. Each has one Go type per schema version; a new version is a
// new type plus a case in DecodeEvent, and the old one stays decodable
// because the log keeps every event forever.
const (
	ArticlePublished   = "article.published"
	ArticleUpdated     = "article.updated"
	CartProductAdded   = "cart.product_added"
	CartProductRemoved = "cart.product_removed"
	CartCheckedOut     = "cart.checked_out"
)

// OutcomeType marks the record a command processor writes after a command's
// events, on the same partition of the events topic and in the same
// transaction. It is not a domain event: projections use it to record
// command outcomes and how far the command stream has been applied, which is
// what read-your-writes waits on.
const OutcomeType = "kappa.command.outcome"

var (
	// ErrUnknownEventType reports an event type or schema version this build
	// cannot decode.
	ErrUnknownEventType = errors.New("unknown event type or version")
	// ErrUndecodable reports a payload that does not decode into its type.
	ErrUndecodable = errors.New("undecodable payload")
)

// ArticlePublishedV1 is the payload of article.published, schema version 1.
type ArticlePublishedV1 struct {
	AuthorID string   `json:"author_id"`
	Title    string   `json:"title"`
	Body     string   `json:"body"`
	Tags     []string `json:"tags"`
}

// ArticleUpdatedV1 is the payload of article.updated, schema version 1. Nil
// fields were not changed.
type ArticleUpdatedV1 struct {
	Title *string   `json:"title,omitempty"`
	Body  *string   `json:"body,omitempty"`
	Tags  *[]string `json:"tags,omitempty"`
}

// CartProductAddedV1 is the payload of cart.product_added, schema version 1.
type CartProductAddedV1 struct {
	ProductID      string `json:"product_id"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// CartProductRemovedV1 is the payload of cart.product_removed, schema version 1.
type CartProductRemovedV1 struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// OrderLine is one product of a placed order.
type OrderLine struct {
	ProductID      string `json:"product_id"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// CartCheckedOutV1 is the payload of cart.checked_out, schema version 1: the
// cart became an order. A cart is checked out at most once, so the order
// takes the cart's id.
type CartCheckedOutV1 struct {
	CustomerID string      `json:"customer_id"`
	OrderID    string      `json:"order_id"`
	TotalCents int64       `json:"total_cents"`
	Lines      []OrderLine `json:"lines"`
}

// SchemaVersionOf returns the schema version written for a payload type.
func SchemaVersionOf(payload any) int {
	switch payload.(type) {
	case ArticlePublishedV1, ArticleUpdatedV1, CartProductAddedV1, CartProductRemovedV1, CartCheckedOutV1:
		return 1
	}
	panic(fmt.Sprintf("schemas: no schema version for %T", payload))
}

// TypeOf returns the event type of a payload.
func TypeOf(payload any) string {
	switch payload.(type) {
	case ArticlePublishedV1:
		return ArticlePublished
	case ArticleUpdatedV1:
		return ArticleUpdated
	case CartProductAddedV1:
		return CartProductAdded
	case CartProductRemovedV1:
		return CartProductRemoved
	case CartCheckedOutV1:
		return CartCheckedOut
	}
	panic(fmt.Sprintf("schemas: no event type for %T", payload))
}

// DecodeEvent decodes an event envelope's payload into its versioned Go type.
// Errors wrap ErrUnknownEventType or ErrUndecodable.
func DecodeEvent(e Envelope) (any, error) {
	switch {
	case e.Type == ArticlePublished && e.SchemaVersion == 1:
		return decodeAs[ArticlePublishedV1](e)
	case e.Type == ArticleUpdated && e.SchemaVersion == 1:
		return decodeAs[ArticleUpdatedV1](e)
	case e.Type == CartProductAdded && e.SchemaVersion == 1:
		return decodeAs[CartProductAddedV1](e)
	case e.Type == CartProductRemoved && e.SchemaVersion == 1:
		return decodeAs[CartProductRemovedV1](e)
	case e.Type == CartCheckedOut && e.SchemaVersion == 1:
		return decodeAs[CartCheckedOutV1](e)
	}
	return nil, fmt.Errorf("%w: %s version %d", ErrUnknownEventType, e.Type, e.SchemaVersion)
}

func decodeAs[T any](e Envelope) (any, error) {
	var v T
	if err := json.Unmarshal(e.Data, &v); err != nil {
		return nil, fmt.Errorf("%w: %s version %d: %w", ErrUndecodable, e.Type, e.SchemaVersion, err)
	}
	return v, nil
}

// Outcome is what a command processor decided about one command.
type Outcome struct {
	CommandID       string     `json:"command_id"`
	CommandType     string     `json:"command_type"`
	AggregateID     string     `json:"aggregate_id"`
	CommandPosition Position   `json:"command_position"`
	Status          string     `json:"status"`
	Rejection       *Rejection `json:"rejection,omitempty"`
	Events          []EventRef `json:"events,omitempty"`
	// IdempotencyKey is the key the command carried, if any.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// DuplicateOf is set on the outcome of a retried command: the position
	// of the command that was decided, whose outcome this repeats.
	DuplicateOf *Position `json:"duplicate_of,omitempty"`
}

// Outcome statuses.
const (
	StatusAccepted = "accepted"
	StatusRejected = "rejected"
)

// CodeUndecodableCommand is the rejection code of a command the processor
// could not decode: the HTTP API answers it 422 rather than 409.
const CodeUndecodableCommand = "undecodable_command"

// Rejection says why a command was refused by its aggregate.
type Rejection struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// EventRef names one event a command produced.
type EventRef struct {
	ID               string   `json:"id"`
	Type             string   `json:"type"`
	AggregateVersion int64    `json:"aggregate_version"`
	Position         Position `json:"position"`
}

// DecodeOutcome decodes the value of an outcome record.
func DecodeOutcome(data []byte) (Outcome, error) {
	var o Outcome
	if err := json.Unmarshal(data, &o); err != nil {
		return Outcome{}, fmt.Errorf("%w: outcome: %w", ErrUndecodable, err)
	}
	return o, nil
}
