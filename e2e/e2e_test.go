// Package e2e_test drives the whole path: HTTP ingest, a Kafka broker, the
// command processors and both projections, and asserts exact contents of
// ClickHouse and Postgres. It runs once against the real broker of the local
// stack and once against the embedded broker of `kappa dev`.
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/roles"
)

func TestEndToEndRealKafka(t *testing.T) {
	runEndToEnd(t, kappatest.Kafka(t))
}

func TestEndToEndEmbeddedKafka(t *testing.T) {
	// The stores are still real; only the broker is the dev mode's.
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	runEndToEndWith(t, kafka.Connection{Brokers: broker.ListenAddrs()}, pg, ch)
}

func runEndToEnd(t *testing.T, conn kafka.Connection) {
	runEndToEndWith(t, conn, kappatest.Postgres(t), kappatest.ClickHouse(t))
}

// system runs each role in its own goroutine so that one can be restarted.
type system struct {
	t    *testing.T
	cfg  roles.Config
	base string

	mu      sync.Mutex
	running map[string]*role
	// expected maps every acknowledged command to the status it must get.
	expected map[string]string
}

type role struct {
	cancel context.CancelFunc
	done   chan error
}

func (s *system) start(name string, run func(context.Context, roles.Config) error) {
	ctx, cancel := context.WithCancel(s.t.Context())
	r := &role{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, s.cfg) }()
	s.mu.Lock()
	s.running[name] = r
	s.mu.Unlock()
}

func (s *system) stop(name string) {
	s.mu.Lock()
	r := s.running[name]
	delete(s.running, name)
	s.mu.Unlock()
	r.cancel()
	if err := <-r.done; err != nil {
		s.t.Errorf("%s stopped with error: %v", name, err)
	}
}

func (s *system) stopAll() {
	s.mu.Lock()
	names := make([]string, 0, len(s.running))
	for n := range s.running {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		s.stop(n)
	}
}

// newSystem migrates a fresh deployment (topics under a unique prefix, the
// given stores) and returns it with ingest and a processor running; callers
// start the projections they need. It waits until ingest listens. The API
// is open unless configure says otherwise.
func newSystem(t *testing.T, conn kafka.Connection, pg postgres.Config, ch clickhouse.Config, partitions int32, flush time.Duration,
	configure ...func(*roles.Config)) *system {
	t.Helper()
	logLevel := slog.LevelWarn
	if testing.Verbose() {
		logLevel = slog.LevelInfo
	}
	listening := make(chan net.Addr, 1)
	prefix := kappatest.Name(t, "sys")
	cfg := roles.Config{
		Kafka: conn, TopicPrefix: prefix, GroupPrefix: prefix, CreateTopics: kafka.TopicConfig{Partitions: partitions},
		Postgres: pg, ClickHouse: ch, HTTPAddr: "127.0.0.1:0", Auth: roles.AuthConfig{Methods: []string{roles.AuthNone}},
		ClickHouseProjector: projector.Config{FlushInterval: flush}, PostgresProjector: projector.Config{FlushInterval: flush},
		Processor: processor.Config{StateDir: t.TempDir()},
		// The tests read every outcome back as fast as they can; limits
		// have their own tests (package api).
		API:      api.Config{ReadRate: -1},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})),
		OnListen: func(a net.Addr) { listening <- a },
	}
	for _, c := range configure {
		c(&cfg)
	}
	if err := roles.Migrate(t.Context(), cfg, true, true); err != nil {
		t.Fatal(err)
	}
	sys := &system{t: t, cfg: cfg, running: map[string]*role{}, expected: map[string]string{}}
	t.Cleanup(sys.stopAll)
	sys.start("ingest", roles.Ingest)
	sys.start("process", roles.Process)
	select {
	case a := <-listening:
		sys.base = "http://" + a.String()
	case <-time.After(30 * time.Second):
		t.Fatal("ingest did not start listening")
	}
	return sys
}

func runEndToEndWith(t *testing.T, conn kafka.Connection, pg postgres.Config, ch clickhouse.Config) {
	sys := newSystem(t, conn, pg, ch, 3, 50*time.Millisecond)
	sys.start("postgres", roles.ProjectPostgres)
	sys.start("clickhouse", roles.ProjectClickHouse)

	m := newModel()
	// Phase 1: carts and articles, in batches.
	var batch []command
	for i := range 40 {
		cart := fmt.Sprintf("cart-%d", i)
		batch = append(batch,
			m.add(cart, "p1", int64(i%5+1), 100),
			m.add(cart, "p2", 2, 250),
		)
		if i%4 == 0 {
			batch = append(batch, m.remove(cart, "p2", 2)) // empties the p2 line
		}
	}
	for i := range 15 {
		batch = append(batch, m.publish(fmt.Sprintf("article-%d", i), fmt.Sprintf("author-%d", i%4)))
	}
	sys.postBatch(t, batch)

	// A projector restart mid-stream: once phase 1 is projected, both stop
	// while phase 2 is written, and resume from their own positions.
	waitForProjections(t, sys, m, pg, ch)
	sys.stop("clickhouse")
	sys.stop("postgres")
	batch = nil
	for i := range 40 {
		cart := fmt.Sprintf("cart-%d", i)
		if i%2 == 0 {
			batch = append(batch, m.checkout(cart, fmt.Sprintf("customer-%d", i%7)))
		}
		batch = append(batch, m.remove(cart, "p1", 100)) // always more than held: rejected
	}
	for i := range 15 {
		batch = append(batch, m.update(fmt.Sprintf("article-%d", i), fmt.Sprintf("title %d v2", i)))
	}
	batch = append(batch, m.update("article-missing", "nobody"), m.publish("article-0", "author-9"))
	sys.postBatch(t, batch)
	sys.start("postgres", roles.ProjectPostgres)
	sys.start("clickhouse", roles.ProjectClickHouse)

	// Phase 3: changes to checked-out carts are rejected; open ones still work.
	batch = nil
	for i := range 40 {
		batch = append(batch, m.add(fmt.Sprintf("cart-%d", i), "p3", 1, 999))
	}
	sys.postBatch(t, batch)
	// And a restart while phase 3 is being consumed.
	sys.stop("clickhouse")
	sys.start("clickhouse", roles.ProjectClickHouse)

	// Invalid input at the door leaves no trace.
	sys.expectRejectedAtDoor(t, m)

	// Read-your-writes: one command waited for, then looked up at its position.
	sys.readYourWrites(t, m)

	// Retries with idempotency keys change nothing more.
	sys.idempotentRetries(t, m)

	waitForProjections(t, sys, m, pg, ch)
	assertPostgres(t, sys, m)
	assertClickHouse(t, ch, m)
}

type command struct {
	Type        string         `json:"type"`
	AggregateID string         `json:"aggregate_id"`
	Data        map[string]any `json:"data"`
	wantStatus  string
}

// model is the test's own account of what the commands must do; it is
// written independently of producer/aggregate.
type model struct {
	carts    map[string]*modelCart
	articles map[string]*modelArticle
	events   map[string]int // per event type
	accepted int
	rejected int
}

type modelCart struct {
	lines      map[string][2]int64 // product -> quantity, unit price
	checkedOut bool
	customer   string
	version    int64
}

type modelArticle struct {
	author, title string
	version       int64
}

func newModel() *model {
	return &model{carts: map[string]*modelCart{}, articles: map[string]*modelArticle{}, events: map[string]int{}}
}

func (m *model) cart(id string) *modelCart {
	c, ok := m.carts[id]
	if !ok {
		c = &modelCart{lines: map[string][2]int64{}}
		m.carts[id] = c
	}
	return c
}

func (m *model) decide(ok bool, cmd command, eventType string) command {
	if ok {
		cmd.wantStatus = "accepted"
		m.accepted++
		m.events[eventType]++
	} else {
		cmd.wantStatus = "rejected"
		m.rejected++
	}
	return cmd
}

func (m *model) add(cart, product string, qty, price int64) command {
	c := m.cart(cart)
	ok := !c.checkedOut
	if ok {
		l := c.lines[product]
		c.lines[product] = [2]int64{l[0] + qty, price}
		c.version++
	}
	return m.decide(ok, command{Type: "cart.add_product", AggregateID: cart, Data: map[string]any{"product_id": product, "quantity": qty, "unit_price_cents": price}}, "cart.product_added")
}

func (m *model) remove(cart, product string, qty int64) command {
	c := m.cart(cart)
	l := c.lines[product]
	ok := !c.checkedOut && l[0] >= qty
	if ok {
		if l[0] == qty {
			delete(c.lines, product)
		} else {
			c.lines[product] = [2]int64{l[0] - qty, l[1]}
		}
		c.version++
	}
	return m.decide(ok, command{Type: "cart.remove_product", AggregateID: cart, Data: map[string]any{"product_id": product, "quantity": qty}}, "cart.product_removed")
}

func (m *model) checkout(cart, customer string) command {
	c := m.cart(cart)
	ok := !c.checkedOut && len(c.lines) > 0
	if ok {
		c.checkedOut, c.customer = true, customer
		c.version++
	}
	return m.decide(ok, command{Type: "cart.checkout", AggregateID: cart, Data: map[string]any{"customer_id": customer}}, "cart.checked_out")
}

func (m *model) publish(id, author string) command {
	_, exists := m.articles[id]
	if !exists {
		m.articles[id] = &modelArticle{author: author, title: "title of " + id, version: 1}
	}
	return m.decide(!exists, command{Type: "article.publish", AggregateID: id, Data: map[string]any{"author_id": author, "title": "title of " + id, "body": "body", "tags": []string{"t"}}}, "article.published")
}

func (m *model) update(id, title string) command {
	a, exists := m.articles[id]
	if exists {
		a.title = title
		a.version++
	}
	return m.decide(exists, command{Type: "article.update", AggregateID: id, Data: map[string]any{"title": title}}, "article.updated")
}

func (m *model) totalEvents() int {
	n := 0
	for _, c := range m.events {
		n += c
	}
	return n
}

func (m *model) totalCents(c *modelCart) int64 {
	var total int64
	for _, l := range c.lines {
		total += l[0] * l[1]
	}
	return total
}

type commandView struct {
	CommandID string `json:"command_id"`
	Status    string `json:"status"`
	Position  string `json:"position"`
	Code      string `json:"code"`
	Events    []struct {
		AggregateVersion int64 `json:"aggregate_version"`
	} `json:"events"`
}

func (s *system) do(t *testing.T, method, path, contentType string, body []byte, header map[string]string) (int, []byte) {
	t.Helper()
	return s.doCapture(t, method, path, contentType, body, header, nil)
}

// eventually polls ok until it holds, failing the test after a minute.
func (s *system) eventually(t *testing.T, ok func() bool) {
	t.Helper()
	kappatest.Eventually(t, time.Minute, 20*time.Millisecond, func() error {
		if !ok() {
			return errors.New("not yet")
		}
		return nil
	})
}

func (s *system) doCapture(t *testing.T, method, path, contentType string, body []byte, header map[string]string, respHeader *http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if respHeader != nil {
		*respHeader = resp.Header
	}
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// postBatch sends commands as NDJSON and checks each is durable (202).
func (s *system) postBatch(t *testing.T, cmds []command) {
	t.Helper()
	var body bytes.Buffer
	for _, c := range cmds {
		line, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		body.Write(append(line, '\n'))
	}
	status, out := s.do(t, http.MethodPost, "/v1/commands:batch", "application/x-ndjson", body.Bytes(), nil)
	if status != http.StatusAccepted {
		t.Fatalf("batch: status %d: %s", status, out)
	}
	var resp struct{ Commands []commandView }
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Commands) != len(cmds) {
		t.Fatalf("batch: %d results for %d commands", len(resp.Commands), len(cmds))
	}
	for i, c := range resp.Commands {
		if c.CommandID == "" || c.Position == "" {
			t.Fatalf("batch item %d has no id or position: %+v", i, c)
		}
		s.expected[c.CommandID] = cmds[i].wantStatus
	}
}

func (s *system) expectRejectedAtDoor(t *testing.T, m *model) {
	t.Helper()
	cases := []struct {
		name, contentType, body string
		status                  int
		field                   string
	}{
		{"malformed JSON", "application/json", `{"type": "cart.add_product",`, 400, ""},
		{"wrong content type", "text/plain", `{}`, 415, ""},
		{"unknown type", "application/json", `{"type":"cart.explode","aggregate_id":"cart-0","data":{}}`, 422, "/type"},
		{"missing field", "application/json", `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p9","quantity":1}}`, 422, "/data/unit_price_cents"},
		{"zero quantity", "application/json", `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p9","quantity":0,"unit_price_cents":5}}`, 422, "/data/quantity"},
		{"wrong type", "application/json", `{"type":"cart.add_product","aggregate_id":"cart-1","data":{"product_id":"p9","quantity":"two","unit_price_cents":5}}`, 422, "/data/quantity"},
		{"too large", "application/json", `{"type":"article.publish","aggregate_id":"big","data":{"author_id":"a","title":"t","body":"` + strings.Repeat("x", 2<<20) + `"}}`, 413, ""},
	}
	for _, c := range cases {
		status, out := s.do(t, http.MethodPost, "/v1/commands", c.contentType, []byte(c.body), nil)
		if status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, status, c.status, out)
			continue
		}
		var p struct {
			Type   string
			Errors []struct{ Field string }
		}
		if err := json.Unmarshal(out, &p); err != nil || !strings.HasPrefix(p.Type, "urn:kappa:problem:") {
			t.Errorf("%s: not a problem document: %s", c.name, out)
		}
		if c.field != "" && (len(p.Errors) == 0 || p.Errors[0].Field != c.field) {
			t.Errorf("%s: errors %+v do not name %s", c.name, p.Errors, c.field)
		}
	}
	// A batch with one bad item writes none of its good ones.
	good := command{Type: "cart.add_product", AggregateID: "cart-untouched", Data: map[string]any{"product_id": "p1", "quantity": 1, "unit_price_cents": 1}}
	bad := command{Type: "cart.add_product", AggregateID: "cart-untouched", Data: map[string]any{"product_id": "p1", "quantity": -1, "unit_price_cents": 1}}
	body, _ := json.Marshal([]command{good, bad})
	status, out := s.do(t, http.MethodPost, "/v1/commands:batch", "application/json", body, nil)
	if status != http.StatusUnprocessableEntity || !bytes.Contains(out, []byte(`"index":1`)) {
		t.Errorf("batch with a bad item: status %d: %s", status, out)
	}
}

func (s *system) readYourWrites(t *testing.T, m *model) {
	t.Helper()
	cmd := m.add("cart-ryw", "p7", 3, 70)
	body, _ := json.Marshal(cmd)
	status, out := s.do(t, http.MethodPost, "/v1/commands", "application/json", body, map[string]string{"Prefer": "wait=20"})
	if status != http.StatusOK {
		t.Fatalf("command with Prefer: wait: status %d: %s", status, out)
	}
	var v commandView
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if v.Status != "accepted" {
		t.Fatalf("command with Prefer: wait: %s", out)
	}
	s.expected[v.CommandID] = "accepted"
	status, out = s.do(t, http.MethodGet, "/v1/carts/cart-ryw?position="+v.Position, "", nil, map[string]string{"Prefer": "wait=20"})
	if status != http.StatusOK {
		t.Fatalf("lookup at position %s: status %d: %s", v.Position, status, out)
	}
	var cart postgres.Cart
	if err := json.Unmarshal(out, &cart); err != nil {
		t.Fatal(err)
	}
	if cart.TotalCents != 210 || len(cart.Items) != 1 || cart.Items[0].Quantity != 3 {
		t.Fatalf("lookup at position did not see the write: %s", out)
	}
}

func waitForProjections(t *testing.T, s *system, m *model, pg postgres.Config, ch clickhouse.Config) {
	t.Helper()
	reads, err := postgres.Open(t.Context(), pg)
	if err != nil {
		t.Fatal(err)
	}
	defer reads.Close()
	ids := make([]string, 0, len(s.expected))
	for id := range s.expected {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	found := 0 // outcomes stay once projected, so each is looked up until found
	kappatest.Eventually(t, 90*time.Second, 100*time.Millisecond, func() error {
		for ; found < len(ids); found++ {
			if _, err := reads.Outcome(t.Context(), ids[found]); err != nil {
				return fmt.Errorf("outcome of %s: %w", ids[found], err)
			}
		}
		return nil
	})
	store := openClickHouse(t, ch)
	kappatest.Eventually(t, 90*time.Second, 100*time.Millisecond, func() error {
		var n uint64
		if err := store.Conn().QueryRow(t.Context(), "SELECT count() FROM "+ch.Database+".events").Scan(&n); err != nil {
			return err
		}
		if int(n) < m.totalEvents() {
			return fmt.Errorf("kappa.events has %d rows, want %d", n, m.totalEvents())
		}
		return nil
	})
}

func assertPostgres(t *testing.T, s *system, m *model) {
	t.Helper()
	for id, want := range s.expected {
		status, out := s.do(t, http.MethodGet, "/v1/commands/"+id, "", nil, nil)
		var v commandView
		if status != http.StatusOK || json.Unmarshal(out, &v) != nil || v.Status != want {
			t.Errorf("outcome of %s: status %d, body %s, want %s", id, status, out, want)
		}
	}
	for id, c := range m.carts {
		status, out := s.do(t, http.MethodGet, "/v1/carts/"+id, "", nil, nil)
		if status != http.StatusOK {
			t.Errorf("cart %s: status %d: %s", id, status, out)
			continue
		}
		var got postgres.Cart
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		wantStatus := "open"
		if c.checkedOut {
			wantStatus = "checked_out"
		}
		items := map[string][2]int64{}
		for _, it := range got.Items {
			items[it.ProductID] = [2]int64{it.Quantity, it.UnitPriceCents}
		}
		if got.Status != wantStatus || got.Version != c.version || got.TotalCents != m.totalCents(c) || fmt.Sprint(items) != fmt.Sprint(c.lines) {
			t.Errorf("cart %s: got %s\nwant status %s version %d total %d lines %v", id, out, wantStatus, c.version, m.totalCents(c), c.lines)
		}
		status, out = s.do(t, http.MethodGet, "/v1/orders/"+id, "", nil, nil)
		switch {
		case c.checkedOut && status == http.StatusOK:
			var o postgres.Order
			if err := json.Unmarshal(out, &o); err != nil {
				t.Fatal(err)
			}
			if o.TotalCents != m.totalCents(c) || o.CustomerID != c.customer {
				t.Errorf("order %s: %s", id, out)
			}
		case !c.checkedOut && status == http.StatusNotFound:
		default:
			t.Errorf("order %s: status %d for checked out %v: %s", id, status, c.checkedOut, out)
		}
	}
	if status, out := s.do(t, http.MethodGet, "/v1/carts/cart-untouched", "", nil, nil); status != http.StatusNotFound {
		t.Errorf("cart of a rejected batch exists: %d %s", status, out)
	}
	for id, a := range m.articles {
		status, out := s.do(t, http.MethodGet, "/v1/articles/"+id, "", nil, nil)
		var got postgres.Article
		if status != http.StatusOK || json.Unmarshal(out, &got) != nil || got.Title != a.title || got.AuthorID != a.author || got.Version != a.version {
			t.Errorf("article %s: status %d %s, want %+v", id, status, out, *a)
		}
	}
}

func assertClickHouse(t *testing.T, ch clickhouse.Config, m *model) {
	t.Helper()
	store := openClickHouse(t, ch)
	db := ch.Database
	query := func(q string) uint64 {
		var n uint64
		if err := store.Conn().QueryRow(t.Context(), q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if total, distinct := query("SELECT count() FROM "+db+".events"), query("SELECT uniqExact(event_id) FROM "+db+".events"); int(total) != m.totalEvents() || total != distinct {
		t.Errorf("kappa.events: %d rows, %d distinct ids; want %d", total, distinct, m.totalEvents())
	}
	for typ, want := range m.events {
		if got := query(fmt.Sprintf("SELECT count() FROM %s.events WHERE event_type = '%s'", db, typ)); int(got) != want {
			t.Errorf("events of type %s: %d, want %d", typ, got, want)
		}
	}
	if got, want := query("SELECT count() FROM "+db+".orders"), m.events["cart.checked_out"]; int(got) != want {
		t.Errorf("orders: %d, want %d", got, want)
	}
	var revenue, wantRevenue int64
	for _, c := range m.carts {
		if c.checkedOut {
			wantRevenue += m.totalCents(c)
		}
	}
	if err := store.Conn().QueryRow(t.Context(), "SELECT toInt64(sum(revenue_cents)) FROM "+db+".revenue_per_product_hour").Scan(&revenue); err != nil {
		t.Fatal(err)
	}
	if revenue != wantRevenue {
		t.Errorf("revenue_per_product_hour: %d cents, want %d", revenue, wantRevenue)
	}
	var published uint64
	if err := store.Conn().QueryRow(t.Context(), "SELECT toUInt64(sum(published)) FROM "+db+".articles_per_author_day").Scan(&published); err != nil {
		t.Fatal(err)
	}
	if int(published) != m.events["article.published"] {
		t.Errorf("articles_per_author_day: %d, want %d", published, m.events["article.published"])
	}
}

// openClickHouse opens a store on the test's database, closed with the test.
func openClickHouse(t *testing.T, cfg clickhouse.Config) *clickhouse.Store {
	t.Helper()
	s, err := clickhouse.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
