package httpserver_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/httpserver"
	"github.com/kappa-cqrs/kappa/kappatest"
)

func serve(t *testing.T, cfg httpserver.Config) string {
	t.Helper()
	s, err := httpserver.New(cfg, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(t.Context(), ln, time.Second) }()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String()
}

// servedSerial connects anew and returns the serial of the certificate
// the server presents.
func servedSerial(t *testing.T, addr string, tc *tls.Config) (int64, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

func TestTheCertificateIsReadAgainWhenItsFilesChange(t *testing.T) {
	ca := kappatest.NewCA(t)
	certFile, keyFile, first := ca.Issue(t, "127.0.0.1")
	addr := serve(t, httpserver.Config{TLSCertFile: certFile, TLSKeyFile: keyFile})
	tc := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if got, err := servedSerial(t, addr, tc); err != nil || got != first {
		t.Fatalf("served serial %d, %v; want %d", got, err, first)
	}
	// A renewal: new files written over the old ones.
	newCert, newKey, second := ca.Issue(t, "127.0.0.1")
	for from, to := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kappatest.Eventually(t, 10*time.Second, 100*time.Millisecond, func() error {
		got, err := servedSerial(t, addr, tc)
		if err != nil {
			return err
		}
		if got != second {
			return fmt.Errorf("served serial %d, want the renewed %d", got, second)
		}
		return nil
	})
}

func TestClientCertificatesAreRequiredWithAClientCA(t *testing.T) {
	ca := kappatest.NewCA(t)
	certFile, keyFile, _ := ca.Issue(t, "127.0.0.1")
	addr := serve(t, httpserver.Config{TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCAFile: ca.File})
	get := func(certs []tls.Certificate) error {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}}}
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	if err := get(nil); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	other := kappatest.NewCA(t)
	strangerCert, strangerKey, _ := other.Issue(t)
	stranger, err := tls.LoadX509KeyPair(strangerCert, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := get([]tls.Certificate{stranger}); err == nil {
		t.Fatal("a client with a certificate of another CA was served")
	}
	clientCert, clientKey, _ := ca.Issue(t)
	client, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := get([]tls.Certificate{client}); err != nil {
		t.Fatalf("a client with a certificate of the CA: %v", err)
	}
}

func TestHeadersOverTheLimitAreRefused(t *testing.T) {
	addr := serve(t, httpserver.Config{MaxHeaderBytes: 4 << 10})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

func TestBadConfigurationsAreRefusedAtStart(t *testing.T) {
	ca := kappatest.NewCA(t)
	certFile, keyFile, _ := ca.Issue(t, "127.0.0.1")
	for name, cfg := range map[string]httpserver.Config{
		"cert without key":      {TLSCertFile: certFile},
		"client CA without TLS": {ClientCAFile: ca.File},
		"missing cert file":     {TLSCertFile: certFile + ".missing", TLSKeyFile: keyFile},
		"key of another cert":   {TLSCertFile: certFile, TLSKeyFile: ca.File},
		"negative timeout":      {ReadTimeout: -time.Second},
	} {
		if _, err := httpserver.New(cfg, http.NotFoundHandler()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
