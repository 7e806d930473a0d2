package kafka_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/secret"
)

// secureBroker starts an in-process broker that speaks only TLS and SASL,
// with one user per mechanism.
func secureBroker(t *testing.T, ca *kappatest.CA) *kfake.Cluster {
	t.Helper()
	certFile, keyFile, _ := ca.Issue(t, "127.0.0.1", "localhost")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(),
		kfake.Superuser(kafka.MechanismPlain, "plain-user", "plain-pass"),
		kfake.Superuser(kafka.MechanismScramSHA256, "scram256-user", "scram256-pass"),
		kfake.Superuser(kafka.MechanismScramSHA512, "scram512-user", "scram512-pass"),
		kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	return broker
}

// reach lists the topic t through conn, which needs a working handshake.
func reach(t *testing.T, conn kafka.Connection) error {
	t.Helper()
	return list(t, conn, "t")
}

// reachAny lists every topic through conn.
func reachAny(t *testing.T, conn kafka.Connection) error {
	t.Helper()
	return list(t, conn)
}

func list(t *testing.T, conn kafka.Connection, topics ...string) error {
	t.Helper()
	cl, err := conn.NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).ListTopics(ctx, topics...)
	return err
}

func TestEveryMechanismReachesASecuredBroker(t *testing.T) {
	ca := kappatest.NewCA(t)
	broker := secureBroker(t, ca)
	tlsCfg := &kafka.TLS{CAFile: ca.File}
	for _, m := range []struct{ mechanism, user, pass string }{
		{kafka.MechanismPlain, "plain-user", "plain-pass"},
		{kafka.MechanismScramSHA256, "scram256-user", "scram256-pass"},
		{kafka.MechanismScramSHA512, "scram512-user", "scram512-pass"},
	} {
		conn := kafka.Connection{Brokers: broker.ListenAddrs(), TLS: tlsCfg,
			SASL: &kafka.SASL{Mechanism: m.mechanism, Username: m.user, Password: secret.New(m.pass)}}
		if err := reach(t, conn); err != nil {
			t.Errorf("%s: %v", m.mechanism, err)
		}
		conn.SASL.Password = secret.New("wrong")
		if err := reach(t, conn); err == nil {
			t.Errorf("%s with a wrong password reached the broker", m.mechanism)
		} else if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), m.pass) {
			t.Errorf("%s: the error shows a password: %v", m.mechanism, err)
		}
	}
}

func TestTheBrokersCertificateIsChecked(t *testing.T) {
	broker := secureBroker(t, kappatest.NewCA(t))
	sasl := &kafka.SASL{Mechanism: kafka.MechanismPlain, Username: "plain-user", Password: secret.New("plain-pass")}
	stranger := kappatest.NewCA(t)
	if err := reach(t, kafka.Connection{Brokers: broker.ListenAddrs(), TLS: &kafka.TLS{CAFile: stranger.File}, SASL: sasl}); err == nil {
		t.Fatal("a broker whose certificate another CA signed was trusted")
	}
	if err := reach(t, kafka.Connection{Brokers: broker.ListenAddrs(), SASL: sasl}); err == nil {
		t.Fatal("a plain-text client reached a TLS-only broker")
	}
}

func TestSecurityConfigurationProblems(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	brokers := []string{"127.0.0.1:1"}
	for name, c := range map[string]kafka.Connection{
		"unknown mechanism":        {Brokers: brokers, SASL: &kafka.SASL{Mechanism: "GSSAPI", Username: "u", Password: secret.New("p")}},
		"SCRAM without password":   {Brokers: brokers, SASL: &kafka.SASL{Mechanism: kafka.MechanismScramSHA512, Username: "u"}},
		"OAUTHBEARER without file": {Brokers: brokers, SASL: &kafka.SASL{Mechanism: kafka.MechanismOAuthBearer}},
		"CA file not PEM":          {Brokers: brokers, TLS: &kafka.TLS{CAFile: notPEM}},
		"certificate without key":  {Brokers: brokers, TLS: &kafka.TLS{CertFile: notPEM}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
