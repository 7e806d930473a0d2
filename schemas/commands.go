package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"
)

// Command types accepted by POST /v1/commands.
const (
	PublishArticle        = "article.publish"
	UpdateArticle         = "article.update"
	AddProductToCart      = "cart.add_product"
	RemoveProductFromCart = "cart.remove_product"
	CheckoutCart          = "cart.checkout"
)

// Limits on command fields. They keep one command well below Kafka's default
// maximum record size and keep read models bounded.
const (
	MaxIDBytes        = 128
	MaxTitleBytes     = 512
	MaxBodyBytes      = 64 << 10
	MaxTags           = 32
	MaxTagBytes       = 64
	MaxQuantity       = 1_000_000
	MaxUnitPriceCents = 1_000_000_000
)

// ErrInvalidCommand is wrapped by every *ValidationError.
var ErrInvalidCommand = errors.New("invalid command")

// FieldError names one invalid field of a command. Field is a JSON pointer
// (RFC 6901) relative to the request item, such as "/data/quantity".
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// ValidationError lists every problem found in one command.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.Field + ": " + fe.Detail
	}
	return "invalid command: " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is(err, ErrInvalidCommand) match.
func (e *ValidationError) Unwrap() error { return ErrInvalidCommand }

func (e *ValidationError) add(field, format string, args ...any) {
	e.Errors = append(e.Errors, FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

func (e *ValidationError) orNil() error {
	if e == nil || len(e.Errors) == 0 {
		return nil
	}
	return e
}

// CommandRequest is one command as a client sends it.
type CommandRequest struct {
	Type        string          `json:"type"`
	AggregateID string          `json:"aggregate_id"`
	Data        json.RawMessage `json:"data"`
	// IdempotencyKey, if set, makes retries of this command safe; over
	// HTTP it may also come in the Idempotency-Key header.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Tenant is accepted and ignored: a command's tenant comes from the
	// caller's credential, never from what it sends.
	Tenant json.RawMessage `json:"tenant,omitempty"`
	// ExpectedVersion, if set, is the version the aggregate must be at for
	// the command to be decided: 0 for an aggregate that must not exist
	// yet. Over HTTP it may also come as If-Match: "<version>".
	ExpectedVersion *int64 `json:"expected_version,omitempty"`
}

// MaxIdempotencyKeyBytes bounds idempotency keys.
const MaxIdempotencyKeyBytes = 255

// ValidIdempotencyKey reports whether k is 1 to MaxIdempotencyKeyBytes
// printable ASCII characters without spaces.
func ValidIdempotencyKey(k string) bool {
	return k != "" && len(k) <= MaxIdempotencyKeyBytes && strings.IndexFunc(k, func(r rune) bool { return r < 0x21 || r > 0x7e }) < 0
}

// PublishArticleV1 is the data of article.publish.
type PublishArticleV1 struct {
	AuthorID string   `json:"author_id"`
	Title    string   `json:"title"`
	Body     string   `json:"body"`
	Tags     []string `json:"tags"`
}

// UpdateArticleV1 is the data of article.update; any non-empty subset of
// fields may be given.
type UpdateArticleV1 struct {
	Title *string   `json:"title"`
	Body  *string   `json:"body"`
	Tags  *[]string `json:"tags"`
}

// AddProductV1 is the data of cart.add_product.
type AddProductV1 struct {
	ProductID      string `json:"product_id"`
	Quantity       *int64 `json:"quantity"`
	UnitPriceCents *int64 `json:"unit_price_cents"`
}

// RemoveProductV1 is the data of cart.remove_product.
type RemoveProductV1 struct {
	ProductID string `json:"product_id"`
	Quantity  *int64 `json:"quantity"`
}

// CheckoutV1 is the data of cart.checkout.
type CheckoutV1 struct {
	CustomerID string `json:"customer_id"`
}

// CommandTypes lists the accepted command types, for error messages.
var CommandTypes = []string{PublishArticle, UpdateArticle, AddProductToCart, RemoveProductFromCart, CheckoutCart}

// ValidateCommand checks a command request and decodes its data into the
// command's Go type. A returned error is a *ValidationError listing every
// problem, with fields named as JSON pointers.
func ValidateCommand(req CommandRequest) (any, error) {
	v := &ValidationError{}
	checkID(v, "/aggregate_id", req.AggregateID)
	if k := req.IdempotencyKey; k != "" && !ValidIdempotencyKey(k) {
		v.add("/idempotency_key", "must be 1 to %d printable ASCII characters without spaces", MaxIdempotencyKeyBytes)
	}
	if e := req.ExpectedVersion; e != nil && *e < 0 {
		v.add("/expected_version", "must be 0 (the aggregate must not exist yet) or a version the aggregate has")
	}
	var payload any
	switch req.Type {
	case "":
		v.add("/type", "is required; one of %s", strings.Join(CommandTypes, ", "))
	case PublishArticle:
		payload = decodeData[PublishArticleV1](v, req.Data, validatePublish)
	case UpdateArticle:
		payload = decodeData[UpdateArticleV1](v, req.Data, validateUpdate)
	case AddProductToCart:
		payload = decodeData[AddProductV1](v, req.Data, validateAdd)
	case RemoveProductFromCart:
		payload = decodeData[RemoveProductV1](v, req.Data, validateRemove)
	case CheckoutCart:
		payload = decodeData[CheckoutV1](v, req.Data, func(v *ValidationError, c CheckoutV1) {
			checkID(v, "/data/customer_id", c.CustomerID)
		})
	default:
		v.add("/type", "unknown command type %q; one of %s", truncate(req.Type, 64), strings.Join(CommandTypes, ", "))
	}
	if err := v.orNil(); err != nil {
		return nil, err
	}
	return payload, nil
}

// DecodeCommand decodes a command envelope written by ingest, validating it
// again: the commands topic may hold records from other writers.
func DecodeCommand(e Envelope) (any, error) {
	return ValidateCommand(CommandRequest{Type: e.Type, AggregateID: e.AggregateID, Data: e.Data})
}

func decodeData[T any](v *ValidationError, data json.RawMessage, validate func(*ValidationError, T)) any {
	var c T
	if len(bytes.TrimSpace(data)) == 0 || string(bytes.TrimSpace(data)) == "null" {
		v.add("/data", "is required and must be a JSON object")
		return nil
	}
	if err := decodeStrict(data, &c); err != nil {
		v.Errors = append(v.Errors, FieldErrorOf("/data", err))
		return nil
	}
	validate(v, c)
	return c
}

// decodeStrict decodes one JSON value, refusing unknown fields and trailing
// data so that a misspelt field is an error rather than silently ignored.
func decodeStrict(data []byte, into any) error {
	rest, err := json.Parse(data, into, json.DisallowUnknownFields|json.DontMatchCaseInsensitiveStructFields)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// FieldErrorOf turns a JSON decoding error into a field error under the
// JSON pointer prefix, naming the field when the decoder knows it.
func FieldErrorOf(prefix string, err error) FieldError {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		var tokens []string
		for _, name := range strings.Split(typeErr.Field, ".") {
			tokens = append(tokens, pointerToken(name))
		}
		return FieldError{
			Field:  prefix + "/" + strings.Join(tokens, "/"),
			Detail: fmt.Sprintf("must be %s, not %s", jsonKind(typeErr.Type.Kind().String()), jsonValueKind(typeErr.Value)),
		}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if unquoted, err := strconv.Unquote(name); err == nil {
			name = unquoted
		}
		return FieldError{Field: prefix + "/" + pointerToken(truncate(name, MaxIDBytes)), Detail: "is not a known field"}
	}
	return FieldError{Field: prefix, Detail: "is not valid JSON for this command: " + strings.TrimPrefix(msg, "json: ")}
}

// pointerToken escapes a member name for a JSON pointer (RFC 6901).
func pointerToken(name string) string {
	return strings.ReplaceAll(strings.ReplaceAll(name, "~", "~0"), "/", "~1")
}

// jsonValueKind names the kind of the JSON text a decoder refused; the
// text itself may be long or hostile, so it is not echoed.
func jsonValueKind(text string) string {
	if strings.HasPrefix(text, "number ") && strings.HasSuffix(text, " overflows") {
		return "a number out of range"
	}
	// The decoder quotes the start of the refused value.
	if unquoted, err := strconv.Unquote(text); err == nil {
		text = unquoted
	}
	t := strings.TrimSpace(text)
	if t == "" {
		return "this value"
	}
	switch t[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	number := t[:len(t)-len(strings.TrimLeft(t, "0123456789+-.eE"))]
	if strings.ContainsAny(number, ".eE") {
		return "a number with a fraction or exponent, " + truncate(number, 24)
	}
	return "the number " + truncate(number, 24)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "int64", "int", "int32":
		return "an integer"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return goKind
}

func validatePublish(v *ValidationError, c PublishArticleV1) {
	checkID(v, "/data/author_id", c.AuthorID)
	checkText(v, "/data/title", c.Title, MaxTitleBytes, true)
	checkText(v, "/data/body", c.Body, MaxBodyBytes, true)
	checkTags(v, "/data/tags", c.Tags)
}

func validateUpdate(v *ValidationError, c UpdateArticleV1) {
	if c.Title == nil && c.Body == nil && c.Tags == nil {
		v.add("/data", "must change at least one of title, body, tags")
	}
	if c.Title != nil {
		checkText(v, "/data/title", *c.Title, MaxTitleBytes, true)
	}
	if c.Body != nil {
		checkText(v, "/data/body", *c.Body, MaxBodyBytes, true)
	}
	if c.Tags != nil {
		checkTags(v, "/data/tags", *c.Tags)
	}
}

func validateAdd(v *ValidationError, c AddProductV1) {
	checkID(v, "/data/product_id", c.ProductID)
	checkQuantity(v, "/data/quantity", c.Quantity)
	switch {
	case c.UnitPriceCents == nil:
		v.add("/data/unit_price_cents", "is required")
	case *c.UnitPriceCents < 0:
		v.add("/data/unit_price_cents", "must be >= 0")
	case *c.UnitPriceCents > MaxUnitPriceCents:
		v.add("/data/unit_price_cents", "must be <= %d", int64(MaxUnitPriceCents))
	}
}

func validateRemove(v *ValidationError, c RemoveProductV1) {
	checkID(v, "/data/product_id", c.ProductID)
	checkQuantity(v, "/data/quantity", c.Quantity)
}

func checkQuantity(v *ValidationError, field string, q *int64) {
	switch {
	case q == nil:
		v.add(field, "is required")
	case *q <= 0:
		v.add(field, "must be > 0")
	case *q > MaxQuantity:
		v.add(field, "must be <= %d", MaxQuantity)
	}
}

func checkID(v *ValidationError, field, id string) {
	switch {
	case id == "":
		v.add(field, "is required")
	case len(id) > MaxIDBytes:
		v.add(field, "must be at most %d bytes", MaxIDBytes)
	case !utf8.ValidString(id):
		v.add(field, "must be valid UTF-8")
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' }) >= 0:
		v.add(field, "must not contain spaces, control characters or '/'")
	}
}

func checkText(v *ValidationError, field, s string, maxBytes int, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		v.add(field, "is required and must not be blank")
	case len(s) > maxBytes:
		v.add(field, "must be at most %d bytes", maxBytes)
	case !utf8.ValidString(s):
		v.add(field, "must be valid UTF-8")
	case strings.ContainsRune(s, 0):
		v.add(field, "must not contain NUL characters")
	}
}

func checkTags(v *ValidationError, field string, tags []string) {
	if len(tags) > MaxTags {
		v.add(field, "must have at most %d tags", MaxTags)
		return
	}
	seen := make(map[string]bool, len(tags))
	for i, t := range tags {
		f := fmt.Sprintf("%s/%d", field, i)
		checkText(v, f, t, MaxTagBytes, true)
		if seen[t] {
			v.add(f, "repeats tag %q", truncate(t, MaxTagBytes))
		}
		seen[t] = true
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
