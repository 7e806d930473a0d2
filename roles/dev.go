package roles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/schemas"
)

// All runs every role in one process until ctx ends or one fails. They
// share one registry and one ops address, whose /readyz asks every role.
func All(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := errors.Join(cfg.Validate(), cfg.ValidateStores(true, true)); err != nil {
		return err
	}
	if cfg.Registry == nil {
		cfg.Registry = cfg.registry()
	}
	if err := Migrate(ctx, cfg, true, true); err != nil {
		return err
	}
	shared := &readiness{checks: map[string]func(context.Context) error{},
		expected: []string{"ingest", "processor", "projection " + clickhouseName, "projection " + postgresName}}
	g, gctx := errgroup.WithContext(ctx)
	opsCfg := cfg // serves the address itself; the roles below hand it their checks
	g.Go(func() error { return serveOps(gctx, opsCfg, "all", cfg.Registry, shared.ready) })
	cfg.shared = shared
	for name, run := range map[string]func(context.Context, Config) error{
		"ingest": Ingest, "process": Process, "project postgres": ProjectPostgres, "project clickhouse": ProjectClickHouse,
	} {
		g.Go(func() error {
			if err := run(gctx, cfg); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Dev runs every role in one process against an in-process Kafka broker
// (franz-go's kfake) that persists its log under dataDir, listening on
// brokerAddr so that other tools can reach it. Unless told how callers
// authenticate, it takes API keys and makes one for the default tenant
// with every scope, kept in keyFile and printed.
func Dev(ctx context.Context, cfg Config, dataDir string, brokerPort int, keyFile string) error {
	cfg.setDefaults()
	if len(cfg.Auth.Methods) == 0 {
		cfg.Auth.Methods = []string{AuthAPIKeys}
		key, err := devKey(ctx, cfg, keyFile)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "kappa dev: the API takes the key in %s for the default tenant:\n  Authorization: Bearer %s\n", keyFile, key)
	}
	// Every produced batch is written to the log before it is acknowledged,
	// so a crash of this process loses nothing acknowledged; like Kafka's
	// default (log.flush.interval.messages unset), the broker leaves fsync
	// to the OS instead of syncing each batch, which cost dev mode most of
	// its acknowledgement latency.
	broker, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(brokerPort),
		kfake.DataDir(dataDir),
	)
	if err != nil {
		return fmt.Errorf("start embedded kafka in %s: %w", dataDir, err)
	}
	defer broker.Close()
	cfg.Kafka.Brokers = broker.ListenAddrs()
	cfg.Logger.Info("embedded kafka started", "addrs", cfg.Kafka.Brokers, "data_dir", dataDir)
	return All(ctx, cfg)
}

// devKey returns the development key in keyFile if Postgres still knows
// it, else makes one and writes it there.
func devKey(ctx context.Context, cfg Config, keyFile string) (string, error) {
	if b, err := os.ReadFile(keyFile); err == nil { //nolint:gosec // G304: kappa dev's own file under --data-dir
		key := strings.TrimSpace(string(b))
		store, err := apiKeyStore(ctx, cfg)
		if err != nil {
			return "", err
		}
		_, authErr := auth.NewKeys(store, 0).Authenticate(ctx, key)
		store.Close()
		if authErr == nil {
			return key, nil
		}
	}
	key, err := APIKeyCreate(ctx, cfg, schemas.DefaultTenant, auth.Scopes, "kappa dev")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o750); err != nil {
		return "", err
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write the development key: %w", err)
	}
	return key, nil
}
