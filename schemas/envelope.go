package schemas

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SpecVersion is the CloudEvents specification version Kappa writes.
const SpecVersion = "1.0"

// Kafka header names. The ce_ headers follow the CloudEvents Kafka protocol
// binding in binary content mode; the kappa_ headers are Kappa's extensions.
const (
	HeaderID               = "ce_id"
	HeaderType             = "ce_type"
	HeaderSource           = "ce_source"
	HeaderTime             = "ce_time"
	HeaderSpecVersion      = "ce_specversion"
	HeaderContentType      = "content-type"
	HeaderSchemaVersion    = "ce_kappaschemaversion"
	HeaderAggregateID      = "ce_kappaaggregateid"
	HeaderAggregateVersion = "ce_kappaaggregateversion"
	HeaderCommandID        = "ce_kappacommandid"
	HeaderTenant           = "ce_kappatenant"
	HeaderIdempotencyKey   = "ce_kappaidempotencykey"
	HeaderExpectedVersion  = "ce_kappaexpectedversion"
)

// ContentTypeJSON is the only payload encoding Kappa writes.
const ContentTypeJSON = "application/json"

// ErrMalformedEnvelope reports headers that do not form a valid envelope.
var ErrMalformedEnvelope = errors.New("malformed envelope")

// Header is one Kafka record header. It mirrors the driver's type so that the
// contract does not depend on a Kafka client.
type Header struct {
	Key   string
	Value []byte
}

// Envelope is the metadata carried with every command and event record. The
// record key is AggregateID; the record value is Data.
type Envelope struct {
	ID               string
	Type             string
	Source           string
	Time             time.Time
	SchemaVersion    int
	AggregateID      string
	AggregateVersion int64
	CommandID        string
	Tenant           string
	IdempotencyKey   string
	// ExpectedVersion, on a command, is the version its aggregate must be
	// at for it to be decided (ExpectedVersionOK); nil: any.
	ExpectedVersion *int64
	Data            []byte
}

// Headers encodes the envelope's metadata as Kafka headers.
func (e Envelope) Headers() []Header {
	hs := make([]Header, 0, 12)
	e.EachHeader(func(k string, v []byte) { hs = append(hs, Header{Key: k, Value: v}) })
	return hs
}

// EachHeader hands each header to fn, in order. Every value is a slice of
// one buffer: an envelope is encoded for each command, event and outcome,
// so allocations here are paid on every record.
func (e Envelope) EachHeader(fn func(key string, value []byte)) {
	e.AppendHeaders(nil, fn)
}

// AppendHeaders is EachHeader with the values in buf, reused from its
// start, and returns the buffer for the next envelope. The values handed
// to fn stay valid until then.
func (e Envelope) AppendHeaders(buf []byte, fn func(key string, value []byte)) []byte {
	values := slices.Grow(buf[:0], len(e.ID)+len(e.Type)+len(e.Source)+len(e.AggregateID)+len(e.CommandID)+
		len(e.Tenant)+len(e.IdempotencyKey)+len(SpecVersion)+len(ContentTypeJSON)+len(time.RFC3339Nano)+2*20)
	since := func(k string, start int) { fn(k, values[start:len(values):len(values)]) }
	add := func(k, v string) {
		start := len(values)
		values = append(values, v...)
		since(k, start)
	}
	add(HeaderSpecVersion, SpecVersion)
	add(HeaderID, e.ID)
	add(HeaderType, e.Type)
	add(HeaderSource, e.Source)
	start := len(values)
	values = e.Time.UTC().AppendFormat(values, time.RFC3339Nano)
	since(HeaderTime, start)
	add(HeaderContentType, ContentTypeJSON)
	start = len(values)
	values = strconv.AppendInt(values, int64(e.SchemaVersion), 10)
	since(HeaderSchemaVersion, start)
	add(HeaderAggregateID, e.AggregateID)
	start = len(values)
	values = strconv.AppendInt(values, e.AggregateVersion, 10)
	since(HeaderAggregateVersion, start)
	if e.CommandID != "" {
		add(HeaderCommandID, e.CommandID)
	}
	if e.Tenant != "" {
		add(HeaderTenant, e.Tenant)
	}
	if e.IdempotencyKey != "" {
		add(HeaderIdempotencyKey, e.IdempotencyKey)
	}
	if e.ExpectedVersion != nil {
		start = len(values)
		values = strconv.AppendInt(values, *e.ExpectedVersion, 10)
		since(HeaderExpectedVersion, start)
	}
	return values
}

// requiredHeaders are the headers every envelope carries, in the order
// of the bits that mark them seen.
var requiredHeaders = []string{HeaderSpecVersion, HeaderID, HeaderType, HeaderSource, HeaderTime, HeaderSchemaVersion, HeaderAggregateID}

// ParseEnvelope decodes the headers written by Headers and attaches data. It
// reports every missing or invalid header at once.
func ParseEnvelope(headers []Header, data []byte) (Envelope, error) {
	e := Envelope{Data: data}
	var problems []string
	var seen uint8 // bit i: requiredHeaders[i] is present
	for _, h := range headers {
		switch h.Key {
		case HeaderSpecVersion:
			seen |= 1 << 0
			if string(h.Value) != SpecVersion {
				problems = append(problems, fmt.Sprintf("%s %q is not %s", h.Key, h.Value, SpecVersion))
			}
		case HeaderID:
			seen |= 1 << 1
			e.ID = string(h.Value)
		case HeaderType:
			seen |= 1 << 2
			e.Type = internType(h.Value)
		case HeaderSource:
			seen |= 1 << 3
			e.Source = string(h.Value)
		case HeaderTime:
			seen |= 1 << 4
			t, err := time.Parse(time.RFC3339Nano, string(h.Value))
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s %q is not RFC 3339", h.Key, h.Value))
			}
			e.Time = t
		case HeaderSchemaVersion:
			seen |= 1 << 5
			n, err := strconv.Atoi(string(h.Value))
			if err != nil || n < 1 {
				problems = append(problems, fmt.Sprintf("%s %q is not a positive integer", h.Key, h.Value))
			}
			e.SchemaVersion = n
		case HeaderAggregateID:
			seen |= 1 << 6
			e.AggregateID = string(h.Value)
		case HeaderAggregateVersion:
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || n < 0 {
				problems = append(problems, fmt.Sprintf("%s %q is not a non-negative integer", h.Key, h.Value))
			}
			e.AggregateVersion = n
		case HeaderCommandID:
			e.CommandID = string(h.Value)
		case HeaderTenant:
			e.Tenant = string(h.Value)
		case HeaderIdempotencyKey:
			e.IdempotencyKey = string(h.Value)
		case HeaderExpectedVersion:
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || n < ExpectExisting {
				problems = append(problems, fmt.Sprintf("%s %q is not a version, 0 or -1", h.Key, h.Value))
			}
			e.ExpectedVersion = &n
		}
	}
	for i, required := range requiredHeaders {
		if seen&(1<<i) == 0 {
			problems = append(problems, "missing header "+required)
		}
	}
	// CloudEvents requires a non-empty id, type and source.
	for _, f := range []struct {
		key   string
		value string
		bit   uint8
	}{{HeaderID, e.ID, 1 << 1}, {HeaderType, e.Type, 1 << 2}, {HeaderSource, e.Source, 1 << 3}} {
		if seen&f.bit != 0 && f.value == "" {
			problems = append(problems, "empty header "+f.key)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return Envelope{}, fmt.Errorf("%w: %s", ErrMalformedEnvelope, strings.Join(problems, "; "))
	}
	return e, nil
}

// knownTypes are the type names records carry; parsing returns these
// strings instead of allocating a copy per record.
var knownTypes = map[string]string{}

func init() {
	for _, t := range []string{OutcomeType, ArticlePublished, ArticleUpdated, CartProductAdded, CartProductRemoved, CartCheckedOut,
		PublishArticle, UpdateArticle, AddProductToCart, RemoveProductFromCart, CheckoutCart} {
		knownTypes[t] = t
	}
}

func internType(b []byte) string {
	if t, ok := knownTypes[string(b)]; ok { // no allocation: the compiler looks up without converting
		return t
	}
	return string(b)
}

// Position is where a record sits in a topic: its partition and offset. The
// commands, events and outcomes topics are co-partitioned, so a command's
// position names the partition its events and outcome land on.
type Position struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// String renders the position as the token clients pass back, "partition:offset".
func (p Position) String() string {
	return strconv.FormatInt(int64(p.Partition), 10) + ":" + strconv.FormatInt(p.Offset, 10)
}

// ParsePosition parses a token produced by Position.String.
func ParsePosition(s string) (Position, error) {
	part, off, ok := strings.Cut(s, ":")
	if !ok {
		return Position{}, fmt.Errorf("position %q is not partition:offset", s)
	}
	p, err := strconv.ParseInt(part, 10, 32)
	if err != nil || p < 0 {
		return Position{}, fmt.Errorf("position %q has an invalid partition", s)
	}
	o, err := strconv.ParseInt(off, 10, 64)
	if err != nil || o < 0 {
		return Position{}, fmt.Errorf("position %q has an invalid offset", s)
	}
	return Position{Partition: int32(p), Offset: o}, nil
}

// ExpectExisting is the expected version of a command that needs its
// aggregate to exist, at any version (HTTP's If-Match: *). An expected
// version of 0 needs it not to exist yet (If-None-Match: *); any other is
// the exact version it must be at.
const ExpectExisting int64 = -1

// ExpectedVersionOK reports whether an aggregate at version current may
// take a command that expects expected (nil: any version).
func ExpectedVersionOK(expected *int64, current int64) bool {
	switch {
	case expected == nil:
		return true
	case *expected == ExpectExisting:
		return current > 0
	}
	return current == *expected
}

// CodeVersionConflict is the rejection code of a command whose aggregate
// is not at the version the command expected.
const CodeVersionConflict = "version_conflict"

// DefaultTenant owns what is written without a tenant: the data of
// deployments from before tenants, and deployments that run without
// authentication.
const DefaultTenant = "default"

// MaxTenantBytes bounds a tenant id.
const MaxTenantBytes = 64

// ValidTenant reports whether t can name a tenant: 1 to 64 ASCII letters,
// digits, '.', '_' or '-', so that it is safe in keys, SQL and logs.
func ValidTenant(t string) bool {
	if t == "" || len(t) > MaxTenantBytes {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !tenantByte(t[i]) {
			return false
		}
	}
	return true
}

func tenantByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// TenantOf returns the tenant of an envelope: DefaultTenant for those
// written without one.
func TenantOf(e Envelope) string {
	if e.Tenant == "" {
		return DefaultTenant
	}
	return e.Tenant
}

// AggregateKey identifies an aggregate across tenants: the aggregate id
// alone in the default tenant (as every record was keyed before tenants),
// "<tenant>/<id>" in any other. Ids never hold '/', tenants never do, so
// the key splits back unambiguously. It is the Kafka record key, so one
// aggregate's records share a partition, and the key of Postgres rows.
func AggregateKey(tenant, id string) string {
	if tenant == "" || tenant == DefaultTenant {
		return id
	}
	return tenant + "/" + id
}

// KeyOf is the AggregateKey of an envelope.
func KeyOf(e Envelope) string { return AggregateKey(e.Tenant, e.AggregateID) }

// SplitAggregateKey returns the tenant and the id of a key.
func SplitAggregateKey(key string) (tenant, id string) {
	if t, rest, ok := strings.Cut(key, "/"); ok {
		return t, rest
	}
	return DefaultTenant, key
}
