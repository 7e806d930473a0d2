package api

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request plumbing shared by the endpoints: bodies, media types,
// preferences, and the problems every endpoint may answer.

func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeProblem(w, r, Problem{Type: TypeTooLarge, Title: "Request too large", Status: http.StatusRequestEntityTooLarge,
			Detail: fmt.Sprintf("the body exceeds the limit of %d bytes", limit)})
		return nil, false
	}
	if err != nil {
		writeProblem(w, r, Problem{Type: TypeBadRequest, Title: "Unreadable body", Status: http.StatusBadRequest, Detail: err.Error()})
		return nil, false
	}
	return body, true
}

func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

func (s *Server) requireContentType(w http.ResponseWriter, r *http.Request, want string) bool {
	if mediaType(r) == want {
		return true
	}
	writeProblem(w, r, Problem{Type: TypeUnsupportedMedia, Title: "Unsupported media type", Status: http.StatusUnsupportedMediaType,
		Detail: fmt.Sprintf("Content-Type must be %s, not %q", want, r.Header.Get("Content-Type"))})
	return false
}

func (s *Server) requireReads(w http.ResponseWriter, r *http.Request) bool {
	if s.reads != nil {
		return true
	}
	writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Read model not configured", Status: http.StatusServiceUnavailable,
		Detail: "this instance has no Postgres read model; set KAPPA_POSTGRES_URL"})
	return false
}

// preferWait parses RFC 7240's "Prefer: wait=N", capped at MaxWait. The
// bool says whether the client asked.
func (s *Server) preferWait(r *http.Request) (time.Duration, bool) {
	for _, header := range r.Header.Values("Prefer") {
		for _, pref := range strings.Split(header, ",") {
			name, value, _ := strings.Cut(strings.TrimSpace(pref), "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`))
			if err != nil || n < 0 {
				continue
			}
			return min(time.Duration(n)*time.Second, s.cfg.MaxWait), true
		}
	}
	return 0, false
}

func (s *Server) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("publish commands", "err", err)
	writeProblem(w, r, Problem{Type: TypeUnavailable, Title: "Kafka unavailable", Status: http.StatusServiceUnavailable,
		Detail: "Kafka did not acknowledge the command in time, so it is not durable; retry it"})
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("request", "path", r.URL.Path, "err", err)
	writeProblem(w, r, Problem{Type: TypeInternal, Title: "Internal error", Status: http.StatusInternalServerError})
}
