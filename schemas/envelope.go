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
	Data             []byte
}

// Headers encodes the envelope's metadata as Kafka headers.
func (e Envelope) Headers() []Header {
	hs := make([]Header, 0, 12)
	add := func(k, v string) { hs = append(hs, Header{Key: k, Value: []byte(v)}) }
	add(HeaderSpecVersion, SpecVersion)
	add(HeaderID, e.ID)
	add(HeaderType, e.Type)
	add(HeaderSource, e.Source)
	add(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	add(HeaderContentType, ContentTypeJSON)
	add(HeaderSchemaVersion, strconv.Itoa(e.SchemaVersion))
	add(HeaderAggregateID, e.AggregateID)
	add(HeaderAggregateVersion, strconv.FormatInt(e.AggregateVersion, 10))
	if e.CommandID != "" {
		add(HeaderCommandID, e.CommandID)
	}
	if e.Tenant != "" {
		add(HeaderTenant, e.Tenant)
	}
	if e.IdempotencyKey != "" {
		add(HeaderIdempotencyKey, e.IdempotencyKey)
	}
	return hs
}

// ParseEnvelope decodes the headers written by Headers and attaches data. It
// reports every missing or invalid header at once.
func ParseEnvelope(headers []Header, data []byte) (Envelope, error) {
	e := Envelope{Data: data}
	var problems []string
	seen := make(map[string]bool, len(headers))
	for _, h := range headers {
		v := string(h.Value)
		seen[h.Key] = true
		switch h.Key {
		case HeaderSpecVersion:
			if v != SpecVersion {
				problems = append(problems, fmt.Sprintf("%s %q is not %s", h.Key, v, SpecVersion))
			}
		case HeaderID:
			e.ID = v
		case HeaderType:
			e.Type = v
		case HeaderSource:
			e.Source = v
		case HeaderTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s %q is not RFC 3339", h.Key, v))
			}
			e.Time = t
		case HeaderSchemaVersion:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				problems = append(problems, fmt.Sprintf("%s %q is not a positive integer", h.Key, v))
			}
			e.SchemaVersion = n
		case HeaderAggregateID:
			e.AggregateID = v
		case HeaderAggregateVersion:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				problems = append(problems, fmt.Sprintf("%s %q is not a non-negative integer", h.Key, v))
			}
			e.AggregateVersion = n
		case HeaderCommandID:
			e.CommandID = v
		case HeaderTenant:
			e.Tenant = v
		case HeaderIdempotencyKey:
			e.IdempotencyKey = v
		}
	}
	for _, required := range []string{HeaderSpecVersion, HeaderID, HeaderType, HeaderSource, HeaderTime, HeaderSchemaVersion, HeaderAggregateID} {
		if !seen[required] {
			problems = append(problems, "missing header "+required)
		}
	}
	// CloudEvents requires a non-empty id, type and source.
	for key, v := range map[string]string{HeaderID: e.ID, HeaderType: e.Type, HeaderSource: e.Source} {
		if seen[key] && v == "" {
			problems = append(problems, "empty header "+key)
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return Envelope{}, fmt.Errorf("%w: %s", ErrMalformedEnvelope, strings.Join(problems, "; "))
	}
	return e, nil
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
