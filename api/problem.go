package api

import (
	"net/http"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Problem is an RFC 9457 problem details object. Errors lists field-level
// problems; Items lists per-item problems of a batch.
type Problem struct {
	Type     string               `json:"type"`
	Title    string               `json:"title"`
	Status   int                  `json:"status"`
	Detail   string               `json:"detail,omitempty"`
	Instance string               `json:"instance,omitempty"`
	Code     string               `json:"code,omitempty"`
	Errors   []schemas.FieldError `json:"errors,omitempty"`
	Items    []ItemProblem        `json:"items,omitempty"`
}

// ItemProblem names a batch item and what is wrong with it.
type ItemProblem struct {
	Index     int                  `json:"index"`
	CommandID string               `json:"command_id,omitempty"`
	Detail    string               `json:"detail,omitempty"`
	Errors    []schemas.FieldError `json:"errors,omitempty"`
}

// Problem types, documented in the README's HTTP API section.
const (
	problemBase              = "urn:kappa:problem:"
	TypeMalformedJSON        = problemBase + "malformed-json"
	TypeInvalidCommand       = problemBase + "invalid-command"
	TypeUnsupportedMedia     = problemBase + "unsupported-media-type"
	TypeTooLarge             = problemBase + "request-too-large"
	TypeUnavailable          = problemBase + "unavailable"
	TypeRejected             = problemBase + "command-rejected"
	TypeVersionConflict      = problemBase + "version-conflict"
	TypeNotFound             = problemBase + "not-found"
	TypeUnauthenticated      = problemBase + "unauthenticated"
	TypeForbidden            = problemBase + "forbidden"
	TypeRateLimited          = problemBase + "rate-limited"
	TypeNotCaughtUp          = problemBase + "not-caught-up"
	TypeBadRequest           = problemBase + "bad-request"
	TypeInternal             = problemBase + "internal"
	TypeIdempotencyKeyReused = problemBase + "idempotency-key-reused"
	headerIdempotencyKey     = "Idempotency-Key"
	headerIdempotentReplayed = "Idempotent-Replayed"
	contentTypeProblem       = "application/problem+json"
	contentTypeJSON          = "application/json"
	contentTypeNDJSON        = "application/x-ndjson"
	headerPreferenceApplied  = "Preference-Applied"
)

func writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Instance == "" {
		p.Instance = r.URL.Path
	}
	if p.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSONAs(w, p.Status, contentTypeProblem, p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONAs(w, status, contentTypeJSON, v)
}

func writeJSONAs(w http.ResponseWriter, status int, contentType string, v any) {
	// No HTML escaping: this is an API, and "<" should read as "<".
	body, err := json.Append(nil, v, 0)
	if err != nil {
		http.Error(w, `{"title":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n')) //nolint:gosec // G705: JSON with a JSON content type, never HTML
}
