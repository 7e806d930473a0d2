package api

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Parsing request bodies: strictly, with limits that hostile input cannot
// get past.

// parseCommand decodes and validates one command. A non-nil error means the
// JSON itself is malformed; field errors mean it is well-formed but invalid.
func parseCommand(body []byte, tenant string) (ingest.Command, []schemas.FieldError, error) {
	if err := checkDepth(body, maxJSONDepth); err != nil {
		return ingest.Command{}, nil, err
	}
	if !utf8.Valid(body) {
		// The decoder would silently replace invalid bytes with U+FFFD.
		return ingest.Command{}, nil, errors.New("body is not valid UTF-8")
	}
	if err := checkObjects(body); err != nil {
		return ingest.Command{}, nil, err
	}
	var req schemas.CommandRequest
	rest, err := json.Parse(body, &req, json.DisallowUnknownFields|json.DontMatchCaseInsensitiveStructFields)
	if err == nil && len(bytes.TrimSpace(rest)) > 0 {
		return ingest.Command{}, nil, errors.New("unexpected data after the JSON value")
	}
	if err != nil {
		// An empty pointer names the whole document (RFC 6901).
		fe := schemas.FieldErrorOf("", err)
		return ingest.Command{}, []schemas.FieldError{fe}, nil
	}
	payload, err := schemas.ValidateCommand(req)
	var verr *schemas.ValidationError
	if errors.As(err, &verr) {
		return ingest.Command{}, verr.Errors, nil
	}
	if err != nil {
		return ingest.Command{}, nil, err
	}
	cmd, err := ingest.NewCommand(req.Type, req.AggregateID, tenant, req.IdempotencyKey, payload)
	cmd.ExpectedVersion = req.ExpectedVersion
	return cmd, nil, err
}

var (
	errBatchTooLarge = errors.New("batch has too many commands")
	errBatchEmpty    = errors.New("batch has no commands")
)

// splitBatch returns the raw items of a JSON array or NDJSON body.
func splitBatch(body []byte, ndjson bool, maxItems int) ([][]byte, error) {
	// Depth first: the validators below recurse once per level.
	if err := checkDepth(body, maxJSONDepth+1); err != nil {
		return nil, err
	}
	var items [][]byte
	if ndjson {
		for n, line := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			if len(items) == maxItems {
				return nil, fmt.Errorf("%w: more than %d", errBatchTooLarge, maxItems)
			}
			if !json.Valid(line) {
				return nil, fmt.Errorf("line %d is not valid JSON", n+1)
			}
			items = append(items, line)
		}
	} else {
		var raw []json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, fmt.Errorf("body must be a JSON array of commands: %v", strings.TrimPrefix(err.Error(), "json: "))
		}
		if len(raw) > maxItems {
			return nil, fmt.Errorf("%w: %d, more than %d", errBatchTooLarge, len(raw), maxItems)
		}
		for _, r := range raw {
			items = append(items, r)
		}
	}
	if len(items) == 0 {
		return nil, errBatchEmpty
	}
	return items, nil
}

// maxJSONDepth bounds nesting so that hostile input cannot exhaust the
// decoder's stack; no command needs more than four levels.
const maxJSONDepth = 16

func checkDepth(b []byte, limit int) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '[' || c == '{':
			depth++
			if depth > limit {
				return fmt.Errorf("JSON nesting deeper than %d levels", limit)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// checkObjects validates JSON syntax iteratively and refuses objects that
// repeat a member name: decoders disagree on which duplicate wins, so a
// command must say each field once.
func checkObjects(b []byte) error {
	var keys []map[string]bool // one set per open object; nil for arrays
	tok := json.NewTokenizer(b)
	for tok.Next() {
		switch {
		case tok.Delim == '{':
			keys = append(keys, map[string]bool{})
		case tok.Delim == '[':
			keys = append(keys, nil)
		case tok.Delim == '}' || tok.Delim == ']':
			if len(keys) > 0 {
				keys = keys[:len(keys)-1]
			}
		case tok.IsKey && len(keys) > 0 && keys[len(keys)-1] != nil:
			name := string(tok.String())
			if keys[len(keys)-1][name] {
				return fmt.Errorf("member %q appears twice in one object", truncate(name, 64))
			}
			keys[len(keys)-1][name] = true
		}
	}
	if tok.Err != nil || !json.Valid(b) {
		return errors.New("body is not valid JSON")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
