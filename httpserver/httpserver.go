// Package httpserver is the HTTP listener of Kappa's API: timeouts and a
// header limit on every connection, and optional HTTPS whose certificate
// is read again when its files change (a renewal needs no restart), with
// optional client certificates (mTLS).
package httpserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// TLSCertFile and TLSKeyFile, both or neither, turn on HTTPS with the
	// PEM certificate chain and key in them; they are read again when
	// they change. Default: plain HTTP.
	TLSCertFile string
	TLSKeyFile  string
	// ClientCAFile, with TLS, requires a client certificate signed by a
	// CA in this PEM file (mTLS). Default: no client certificates.
	ClientCAFile string
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default 60s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its response, waits (Prefer: wait) included. Default 60s.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the size of a request's headers. Default 64 KiB.
	MaxHeaderBytes int
	// Logger receives the server's errors. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// WithDefaults returns the configuration with every zero value replaced by
// its default, as New uses it.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("http: TLSCertFile and TLSKeyFile go together"))
	}
	if c.ClientCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, errors.New("http: ClientCAFile needs TLS (TLSCertFile and TLSKeyFile)"))
	}
	if c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 {
		errs = append(errs, errors.New("http: timeouts must not be negative"))
	}
	if c.MaxHeaderBytes < 0 {
		errs = append(errs, errors.New("http: MaxHeaderBytes must not be negative"))
	}
	return errors.Join(errs...)
}

// TLS reports whether the configuration serves HTTPS.
func (c Config) TLS() bool { return c.TLSCertFile != "" }

// Server serves one handler on one listener.
type Server struct {
	cfg  Config
	srv  *http.Server
	cert *certificate
}

// New returns a Server for handler; with TLS it reads the certificate
// and the client CAs now, so that a bad file is an error at start.
func New(cfg Config, handler http.Handler) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, srv: &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}}
	if !cfg.TLS() {
		return s, nil
	}
	s.cert = &certificate{certFile: cfg.TLSCertFile, keyFile: cfg.TLSKeyFile, log: cfg.Logger}
	if err := s.cert.load(); err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.cert.get}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA file %s holds no PEM certificate", cfg.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	s.srv.TLSConfig = tc
	return s, nil
}

// Serve serves on ln until ctx ends, then shuts down gracefully within
// shutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener, shutdownTimeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		done <- s.srv.Shutdown(shutdownCtx)
	}()
	var err error
	if s.cfg.TLS() {
		err = s.srv.ServeTLS(ln, "", "")
	} else {
		err = s.srv.Serve(ln)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-done
}

// certificate is a key pair read from files and read again when they
// change, looked at no more than once a second.
type certificate struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	stamp   string // modification times and sizes of the files
	checked time.Time
}

func (c *certificate) fileStamp() (string, error) {
	var stamp string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%s:%d:%d;", f, fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

func (c *certificate) load() error {
	stamp, err := c.fileStamp()
	if err != nil {
		return fmt.Errorf("read TLS certificate: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("read TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current, c.stamp, c.checked = &pair, stamp, time.Now()
	return nil
}

// get returns the certificate, reading the files again if they changed;
// a pair that does not load (half written) keeps the one in use.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	due := time.Since(c.checked) >= time.Second
	if due {
		c.checked = time.Now()
	}
	current, stamp := c.current, c.stamp
	c.mu.Unlock()
	if !due {
		return current, nil
	}
	now, err := c.fileStamp()
	if err != nil || now == stamp {
		return current, nil
	}
	if err := c.load(); err != nil {
		c.log.Warn("TLS certificate files changed but do not load; serving the previous certificate", "err", err)
		return current, nil
	}
	c.log.Info("TLS certificate reloaded", "cert_file", c.certFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current, nil
}
