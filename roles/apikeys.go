package roles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/schemas"
)

// apiKeyStore opens Postgres, with its migrations applied, for the API
// key commands.
func apiKeyStore(ctx context.Context, cfg Config) (*postgres.Store, error) {
	cfg.setDefaults()
	if err := cfg.ValidateStores(true, false); err != nil {
		return nil, err
	}
	store, err := postgres.Open(ctx, cfg.Postgres)
	if err != nil {
		return nil, err
	}
	if err := untilReachable(ctx, cfg.Logger, "migrate postgres", store.Migrate); err != nil {
		store.Close()
		return nil, err
	}
	return store, nil
}

// APIKeyCreate makes an API key for tenant with scopes and returns the
// credential, which is shown this once and stored nowhere.
func APIKeyCreate(ctx context.Context, cfg Config, tenant string, scopes []string, name string) (string, error) {
	if !schemas.ValidTenant(tenant) {
		return "", fmt.Errorf("tenant %q: 1 to %d ASCII letters, digits, '.', '_' or '-'", tenant, schemas.MaxTenantBytes)
	}
	if len(scopes) == 0 {
		return "", errors.New("an API key needs at least one scope")
	}
	store, err := apiKeyStore(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer store.Close()
	credential, id, hash, err := auth.NewKey()
	if err != nil {
		return "", err
	}
	err = store.CreateAPIKey(ctx, auth.StoredKey{ID: id, Tenant: tenant, Name: name, Scopes: scopes, SecretHash: hash, CreatedAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	return credential, nil
}

// APIKeyList prints every key: id, tenant, name, scopes, when made and
// revoked; never a secret.
func APIKeyList(ctx context.Context, cfg Config, w io.Writer) error {
	store, err := apiKeyStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	keys, err := store.ListAPIKeys(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tNAME\tSCOPES\tCREATED\tREVOKED")
	for _, k := range keys {
		revoked := "-"
		if k.RevokedAt != nil {
			revoked = k.RevokedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Tenant, orDash(k.Name), strings.Join(k.Scopes, ","), k.CreatedAt.UTC().Format(time.RFC3339), revoked)
	}
	return tw.Flush()
}

// APIKeyRevoke revokes a key by id; every ingest stops accepting it within
// its key cache's time to live.
func APIKeyRevoke(ctx context.Context, cfg Config, id string) error {
	store, err := apiKeyStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	found, err := store.RevokeAPIKey(ctx, id)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no API key %s", id)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
