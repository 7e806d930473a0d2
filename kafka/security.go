package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kappa-cqrs/kappa/secret"
	"github.com/kappa-cqrs/kappa/tlsconfig"
)

// TLS encrypts the connections to the brokers and checks their
// certificates.
type TLS = tlsconfig.Client

// SASL mechanisms Kappa speaks, with franz-go's own packages.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
)

// SASL authenticates Kappa's clients to the brokers.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
	Mechanism string
	// Username and Password, for PLAIN and SCRAM.
	Username string
	Password secret.Value
	// TokenFile holds the token for OAUTHBEARER; it is read on every
	// authentication, so that a token renewed in place is used.
	TokenFile string
}

func (s *SASL) validate() []error {
	var errs []error
	switch strings.ToUpper(s.Mechanism) {
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if s.Username == "" || s.Password.IsZero() {
			errs = append(errs, fmt.Errorf("kafka: SASL %s needs a username and a password", s.Mechanism))
		}
	case MechanismOAuthBearer:
		if s.TokenFile == "" {
			errs = append(errs, errors.New("kafka: SASL OAUTHBEARER needs a token file"))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka: SASL mechanism %q is none of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER", s.Mechanism))
	}
	return errs
}

func (s *SASL) mechanism() sasl.Mechanism {
	switch strings.ToUpper(s.Mechanism) {
	case MechanismPlain:
		return plain.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsMechanism()
	case MechanismScramSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha256Mechanism()
	case MechanismScramSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha512Mechanism()
	}
	file := s.TokenFile
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		token, err := secret.FromFile(file)
		if err != nil {
			return oauth.Auth{}, err
		}
		return oauth.Auth{Token: token.Reveal()}, nil
	})
}

// security returns the options that encrypt and authenticate a client.
func (c Connection) security() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.TLS != nil {
		tc, err := c.TLS.Config()
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL != nil {
		opts = append(opts, kgo.SASL(c.SASL.mechanism()))
	}
	return opts, nil
}
