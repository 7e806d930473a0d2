// Package secret holds values that must not be seen: passwords, tokens,
// keys. A Value prints, logs and encodes as "[redacted]", so that a
// configuration that reaches a log line, an error or a result file does
// not carry it along; Reveal hands it to the one place that needs it.
package secret

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Value is a secret string.
type Value struct{ v string }

// New wraps a secret.
func New(v string) Value { return Value{v: v} }

// FromFile reads a secret from a file, without a trailing newline, as
// orchestrators mount them (Kubernetes secrets, Docker secrets).
func FromFile(path string) (Value, error) {
	b, err := os.ReadFile(path) //nolint:gosec // G304: the file an operator named for this secret
	if err != nil {
		return Value{}, fmt.Errorf("read secret file %s: %w", path, err)
	}
	return Value{v: strings.TrimRight(string(b), "\r\n")}, nil
}

const redacted = "[redacted]"

// Reveal returns the secret itself.
func (s Value) Reveal() string { return s.v }

// IsZero reports whether no secret is set.
func (s Value) IsZero() bool { return s.v == "" }

// String hides the secret from fmt's %s and %v.
func (s Value) String() string {
	if s.v == "" {
		return ""
	}
	return redacted
}

// GoString hides the secret from fmt's %#v.
func (s Value) GoString() string { return s.String() }

// LogValue hides the secret from slog.
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the secret from encoders (JSON and the like).
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
