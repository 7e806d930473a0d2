package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/roles"
)

// securedSystem is a deployment that takes API keys and JWTs of a test
// issuer, with both projections running.
type securedSystem struct {
	*system
	conn kafka.Connection
	idp  kappatest.Issuer
}

func newSecuredSystem(t *testing.T) (*securedSystem, clickhouseQuery) {
	t.Helper()
	conn := kappatest.Kafka(t)
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	idp := kappatest.NewIssuer(t, "k1")
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, kappatest.JWKS(t, idp), 0o600); err != nil {
		t.Fatal(err)
	}
	sys := newSystem(t, conn, pg, ch, 2, 20*time.Millisecond, func(c *roles.Config) {
		c.Auth = roles.AuthConfig{Methods: []string{roles.AuthAPIKeys, roles.AuthJWT}, KeyCacheTTL: 200 * time.Millisecond,
			JWT: auth.JWTConfig{JWKSFile: jwksFile, Issuer: "https://idp.example", Audience: "kappa"}}
	})
	sys.start("postgres", roles.ProjectPostgres)
	sys.start("clickhouse", roles.ProjectClickHouse)
	store := openClickHouse(t, ch)
	query := func(t *testing.T, q string) map[string]uint64 {
		t.Helper()
		rows, err := store.Conn().Query(t.Context(), strings.ReplaceAll(q, "DB.", ch.Database+"."))
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer func() { _ = rows.Close() }()
		got := map[string]uint64{}
		for rows.Next() {
			var k string
			var n uint64
			if err := rows.Scan(&k, &n); err != nil {
				t.Fatal(err)
			}
			got[k] = n
		}
		return got
	}
	return &securedSystem{system: sys, conn: conn, idp: idp}, query
}

// clickhouseQuery runs a query of (key, count) rows; DB. names the database.
type clickhouseQuery func(t *testing.T, q string) map[string]uint64

func (s *securedSystem) key(t *testing.T, tenant string, scopes ...string) string {
	t.Helper()
	key, err := roles.APIKeyCreate(t.Context(), s.cfg, tenant, scopes, "")
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func bearer(credential string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + credential}
}

// send posts one command as credential, waiting for its outcome, and
// returns the view.
func (s *securedSystem) send(t *testing.T, credential, body string) commandView {
	t.Helper()
	h := bearer(credential)
	h["Prefer"] = "wait=20"
	status, out := s.do(t, http.MethodPost, "/v1/commands", "application/json", []byte(body), h)
	var v commandView
	if status != http.StatusOK || json.Unmarshal(out, &v) != nil || v.Status != "accepted" {
		t.Fatalf("command %s: %d %s", body, status, out)
	}
	return v
}

func addTo(cart, product string, qty int) string {
	return fmt.Sprintf(`{"type":"cart.add_product","aggregate_id":%q,"data":{"product_id":%q,"quantity":%d,"unit_price_cents":100}}`, cart, product, qty)
}

// TestTenantsStayApart: the same aggregate id in three tenants (two by API
// key, one by JWT) is three aggregates, in the processor, in Postgres and
// in ClickHouse; a tenant named in the body changes nothing; no tenant
// sees another's data through any endpoint.
func TestTenantsStayApart(t *testing.T) {
	sys, query := newSecuredSystem(t)
	acme, globex := sys.key(t, "acme", auth.Scopes...), sys.key(t, "globex", auth.Scopes...)
	initech := sys.idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["tenant"] = "initech" }))

	acmeAdd := sys.send(t, acme, addTo("shared", "p1", 2))
	sys.send(t, globex, addTo("shared", "p2", 5))
	sys.send(t, initech, addTo("shared", "p3", 1))
	// Each is the first event of its own aggregate: a checkout in acme
	// leaves the other two open.
	checkout := sys.send(t, acme, `{"type":"cart.checkout","aggregate_id":"shared","data":{"customer_id":"u1"}}`)
	if len(checkout.Events) != 1 || checkout.Events[0].AggregateVersion != 2 {
		t.Fatalf("acme's checkout: %+v, want version 2", checkout)
	}
	globexAdd := sys.send(t, globex, addTo("shared", "p2", 1)) // still open in globex
	// A tenant in the body is ignored: this cart is acme's.
	fromBody := sys.send(t, acme, `{"type":"cart.add_product","aggregate_id":"from-body","tenant":"globex","data":{"product_id":"p9","quantity":1,"unit_price_cents":1}}`)

	cart := func(credential, id, position string) (int, map[string]any) {
		path := "/v1/carts/" + id
		if position != "" {
			path += "?position=" + position
		}
		status, out := sys.do(t, http.MethodGet, path, "", nil, bearer(credential))
		var v map[string]any
		_ = json.Unmarshal(out, &v)
		return status, v
	}
	items := func(v map[string]any) string {
		var s []string
		list, _ := v["items"].([]any)
		for _, it := range list {
			m, _ := it.(map[string]any)
			s = append(s, fmt.Sprintf("%v x%v", m["product_id"], m["quantity"]))
		}
		return strings.Join(s, ",")
	}
	if status, v := cart(acme, "shared", checkout.Position); status != http.StatusOK || v["status"] != "checked_out" || items(v) != "p1 x2" || v["id"] != "shared" {
		t.Errorf("acme's cart: %d %v", status, v)
	}
	// Positions are per partition: globex's cart is read at its own
	// last command's, not at acme's checkout.
	if status, v := cart(globex, "shared", globexAdd.Position); status != http.StatusOK || v["status"] != "open" || items(v) != "p2 x6" {
		t.Errorf("globex's cart: %d %v", status, v)
	}
	if status, v := cart(initech, "shared", ""); status != http.StatusOK || items(v) != "p3 x1" {
		t.Errorf("initech's cart: %d %v", status, v)
	}
	if status, v := cart(acme, "from-body", fromBody.Position); status != http.StatusOK || items(v) != "p9 x1" {
		t.Errorf("acme's cart sent with a body naming globex: %d %v", status, v)
	}
	if status, _ := cart(globex, "from-body", fromBody.Position); status != http.StatusNotFound {
		t.Errorf("globex sees the cart acme sent with a body naming globex: %d", status)
	}
	// Another tenant's order and outcome answer 404, as missing ones do.
	for _, path := range []string{"/v1/orders/shared", "/v1/commands/" + acmeAdd.CommandID} {
		if status, out := sys.do(t, http.MethodGet, path, "", nil, bearer(acme)); status != http.StatusOK {
			t.Errorf("acme's own %s: %d %s", path, status, out)
		}
		for _, other := range []string{globex, initech} {
			status, out := sys.do(t, http.MethodGet, path, "", nil, bearer(other))
			var p struct{ Type string }
			if status != http.StatusNotFound || json.Unmarshal(out, &p) != nil || !strings.HasSuffix(p.Type, "not-found") {
				t.Errorf("another tenant's %s: %d %s, want the 404 of a missing one", path, status, out)
			}
		}
	}

	// Kafka: each tenant's aggregate under its own key, its events with
	// the tenant's header; the default tenant would keep the bare id.
	events, _ := kappatest.ReadTopic(t, sys.conn, sys.cfg.Topics().Events)
	tenantsByKey := map[string]string{}
	for _, r := range events {
		for _, h := range r.Headers {
			if h.Key == "ce_kappatenant" {
				tenantsByKey[string(r.Key)] = string(h.Value)
			}
		}
	}
	for key, tenant := range map[string]string{"acme/shared": "acme", "globex/shared": "globex", "initech/shared": "initech", "acme/from-body": "acme"} {
		if tenantsByKey[key] != tenant {
			t.Errorf("events keyed %s carry tenant %q, want %s (all: %v)", key, tenantsByKey[key], tenant, tenantsByKey)
		}
	}

	// ClickHouse: the tenant on every row.
	want := map[string]uint64{"acme shared": 2, "acme from-body": 1, "globex shared": 2, "initech shared": 1}
	kappatest.Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		got := query(t, "SELECT concat(tenant, ' ', aggregate_id), count() FROM DB.events GROUP BY tenant, aggregate_id")
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("events by tenant and aggregate: %v, want %v", got, want)
		}
		return nil
	})
	if got := query(t, "SELECT concat(tenant, ' ', order_id), count() FROM DB.orders GROUP BY tenant, order_id"); fmt.Sprint(got) != "map[acme shared:1]" {
		t.Errorf("orders: %v, want one, acme's", got)
	}
	lines := query(t, "SELECT concat(tenant, ' ', cart_id, ' ', product_id), toUInt64(sum(quantity_delta)) FROM DB.cart_lines GROUP BY tenant, cart_id, product_id")
	if fmt.Sprint(lines) != "map[acme from-body p9:1 acme shared p1:2 globex shared p2:6 initech shared p3:1]" {
		t.Errorf("cart lines by tenant: %v", lines)
	}
}

// TestRefusalsLeaveNoTrace: every endpoint, with every credential it must
// refuse, answers the documented status, and nothing of those requests
// reaches Kafka or either store.
func TestRefusalsLeaveNoTrace(t *testing.T) {
	sys, query := newSecuredSystem(t)
	acme := sys.key(t, "acme", auth.Scopes...)
	readOnly, writeOnly := sys.key(t, "acme", auth.ScopeRead), sys.key(t, "acme", auth.ScopeCommandsWrite)
	revoked := sys.key(t, "acme", auth.Scopes...)
	if err := roles.APIKeyRevoke(t.Context(), sys.cfg, strings.Split(revoked, "_")[1]); err != nil {
		t.Fatal(err)
	}
	stranger := kappatest.NewIssuer(t, "k1") // the same key id, another key
	expired := sys.idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }))
	wrongAudience := sys.idp.Sign(t, kappatest.Claims(func(c jwt.MapClaims) { c["aud"] = "another-api" }))
	wrongSignature := stranger.Sign(t, kappatest.Claims())
	// acme's data, which the refused reads must not reveal.
	known := sys.send(t, acme, addTo("refused-target", "p1", 1))

	n := 0
	for _, e := range []struct {
		method, scope string
		path          func(id string) string
		body          func(id string) string
	}{
		{http.MethodPost, auth.ScopeCommandsWrite, func(string) string { return "/v1/commands" }, func(id string) string { return addTo(id, "p1", 1) }},
		{http.MethodPost, auth.ScopeCommandsWrite, func(string) string { return "/v1/commands:batch" }, func(id string) string { return "[" + addTo(id, "p1", 1) + "]" }},
		{http.MethodGet, auth.ScopeRead, func(string) string { return "/v1/commands/" + known.CommandID }, nil},
		{http.MethodGet, auth.ScopeRead, func(string) string { return "/v1/carts/refused-target?position=" + known.Position }, nil},
		{http.MethodGet, auth.ScopeRead, func(string) string { return "/v1/articles/refused-target" }, nil},
		{http.MethodGet, auth.ScopeRead, func(string) string { return "/v1/orders/refused-target" }, nil},
	} {
		missingScope := readOnly
		if e.scope == auth.ScopeRead {
			missingScope = writeOnly
		}
		for _, c := range []struct {
			name          string
			authorization string
			status        int
		}{
			{"no credential", "", http.StatusUnauthorized},
			{"malformed", "Basic YWNtZTpzZWNyZXQ=", http.StatusUnauthorized},
			{"unknown key", "Bearer kappa_00000000000000000000000000000000_unknown", http.StatusUnauthorized},
			{"revoked key", "Bearer " + revoked, http.StatusUnauthorized},
			{"expired JWT", "Bearer " + expired, http.StatusUnauthorized},
			{"JWT with a wrong signature", "Bearer " + wrongSignature, http.StatusUnauthorized},
			{"JWT for another audience", "Bearer " + wrongAudience, http.StatusUnauthorized},
			{"missing scope", "Bearer " + missingScope, http.StatusForbidden},
		} {
			n++
			id := fmt.Sprintf("refused-%d", n)
			header := map[string]string{}
			if c.authorization != "" {
				header["Authorization"] = c.authorization
			}
			var body []byte
			if e.body != nil {
				body = []byte(e.body(id))
			}
			var got http.Header
			status, out := sys.doCapture(t, e.method, e.path(id), "application/json", body, header, &got)
			if status != c.status || !strings.HasPrefix(got.Get("WWW-Authenticate"), `Bearer realm="kappa"`) ||
				got.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s with %s: %d, WWW-Authenticate %q, %s; want %d", e.method, e.path(id), c.name, status, got.Get("WWW-Authenticate"), out, c.status)
			}
			if strings.Contains(string(out), `"p1"`) || strings.Contains(string(out), "unit_price") {
				t.Errorf("%s %s with %s reveals acme's data: %s", e.method, e.path(id), c.name, out)
			}
		}
	}
	// Another tenant reading acme's data finds nothing, as if it were not there.
	globex := sys.key(t, "globex", auth.Scopes...)
	for _, path := range []string{"/v1/commands/" + known.CommandID, "/v1/carts/refused-target?position=" + known.Position} {
		if status, out := sys.do(t, http.MethodGet, path, "", nil, bearer(globex)); status != http.StatusNotFound {
			t.Errorf("globex reads %s: %d %s, want 404", path, status, out)
		}
	}

	// A last command, waited for through both projections, then: no
	// refused command in the commands topic or in either store.
	last := sys.send(t, acme, addTo("after-refusals", "p1", 1))
	if status, _ := sys.do(t, http.MethodGet, "/v1/carts/after-refusals?position="+last.Position, "", nil, bearer(acme)); status != http.StatusOK {
		t.Fatalf("the last command's cart: %d", status)
	}
	kappatest.Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		if got := query(t, "SELECT aggregate_id, count() FROM DB.events WHERE aggregate_id = 'after-refusals' GROUP BY aggregate_id"); got["after-refusals"] != 1 {
			return fmt.Errorf("ClickHouse has not projected the last command: %v", got)
		}
		return nil
	})
	if got := query(t, "SELECT aggregate_id, count() FROM DB.events WHERE aggregate_id LIKE 'refused-%' AND aggregate_id != 'refused-target' GROUP BY aggregate_id"); len(got) != 0 {
		t.Errorf("refused commands reached ClickHouse: %v", got)
	}
	for i := 1; i <= n; i++ {
		for _, credential := range []string{acme, globex} {
			if status, _ := sys.do(t, http.MethodGet, fmt.Sprintf("/v1/carts/refused-%d", i), "", nil, bearer(credential)); status != http.StatusNotFound {
				t.Errorf("refused-%d is in Postgres: %d", i, status)
			}
		}
	}
	commands, _ := kappatest.ReadTopic(t, sys.conn, sys.cfg.Topics().Commands)
	for _, r := range commands {
		if strings.Contains(string(r.Key), "refused-") && !strings.HasSuffix(string(r.Key), "refused-target") {
			t.Errorf("a refused command reached Kafka: key %s", r.Key)
		}
	}
}
