package kafka_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/secret"
)

// TestEveryMechanismOnTheSecuredStack runs against the local stack's
// SASL_SSL listener (`deploy/stack.sh env-secure`, as `make test-secure`
// sets it): every mechanism Kappa speaks gets in over TLS, a client
// without TLS or without SASL does not.
func TestEveryMechanismOnTheSecuredStack(t *testing.T) {
	conn := kappatest.Kafka(t)
	if conn.TLS == nil || conn.SASL == nil {
		t.Skip("the stack's secured Kafka listener is not configured; run `make test-secure`")
	}
	user, password := conn.SASL.Username, conn.SASL.Password
	// Kafka's unsecured OAUTHBEARER validator takes an unsigned JWT.
	now := time.Now().Unix()
	enc := base64.RawURLEncoding.EncodeToString
	token := enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(fmt.Sprintf(`{"sub":%q,"iat":%d,"exp":%d}`, user, now, now+3600))) + "."
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sasl := range []*kafka.SASL{
		{Mechanism: kafka.MechanismPlain, Username: user, Password: password},
		{Mechanism: kafka.MechanismScramSHA256, Username: user, Password: password},
		{Mechanism: kafka.MechanismScramSHA512, Username: user, Password: password},
		{Mechanism: kafka.MechanismOAuthBearer, TokenFile: tokenFile},
	} {
		c := conn
		c.SASL = sasl
		if err := reachAny(t, c); err != nil {
			t.Errorf("%s over TLS: %v", sasl.Mechanism, err)
		}
	}
	wrong := conn
	wrong.SASL = &kafka.SASL{Mechanism: kafka.MechanismScramSHA512, Username: user, Password: secret.New("wrong")}
	if err := reachAny(t, wrong); err == nil {
		t.Error("a wrong password got in")
	}
	noTLS := conn
	noTLS.TLS = nil
	if err := reachAny(t, noTLS); err == nil {
		t.Error("a client without TLS got in")
	}
	noSASL := conn
	noSASL.SASL = nil
	if err := reachAny(t, noSASL); err == nil {
		t.Error("a client without SASL got in")
	}
}
