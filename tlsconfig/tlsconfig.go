// Package tlsconfig turns the TLS settings of Kappa's clients (to Kafka,
// ClickHouse) from files into crypto/tls configurations, one way for all.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Client is how a client checks a server's certificate and, optionally,
// presents its own.
type Client struct {
	// CAFile holds the PEM certificates of the CAs that signed the
	// servers' certificates. Default: the system's roots.
	CAFile string
	// CertFile and KeyFile, both or neither, are a client certificate for
	// servers that require one.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate.
	// Default: the host of the address dialed.
	ServerName string
}

// Config reads the files into a client configuration (TLS 1.2 or newer).
func (c Client) Config() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("a TLS client certificate needs both a certificate file and a key file")
	}
	if c.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}
