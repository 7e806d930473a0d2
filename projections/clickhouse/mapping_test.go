package clickhouse

// Pure tests of the event-to-row mapping and the DDL templates; no server.
// They are internal tests because mapRecord and columns are unexported.

import (
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/schemas"
)

func strPtr(s string) *string { return &s }

var (
	mapTime = time.Date(2025, 5, 6, 7, 8, 9, 123_000_000, time.UTC)
	mapPos  = schemas.Position{Partition: 2, Offset: 41}
)

// mapEnvelope is the envelope of the record under test; Type is set per
// case and Data is irrelevant to the typed tables.
func mapEnvelope(typ, aggregateID string) schemas.Envelope {
	return schemas.Envelope{
		ID: "ev-1", Type: typ, Source: "kappa/processor", Time: mapTime, SchemaVersion: 1,
		AggregateID: aggregateID, AggregateVersion: 3, CommandID: "cmd-1", Tenant: "acme",
		Data: []byte(`{"k":"v"}`),
	}
}

// eventsRow is the row every event adds to the events table.
func eventsRow(e schemas.Envelope) row {
	return row{tableEvents, []any{"acme", e.ID, e.Type, uint16(1), e.AggregateID, uint64(3), "cmd-1", "kappa/processor",
		mapTime, `{"k":"v"}`, "kappa.events", int32(2), int64(41)}}
}

func TestMapRecord(t *testing.T) {
	added := mapEnvelope(schemas.CartProductAdded, "cart-1")
	removed := mapEnvelope(schemas.CartProductRemoved, "cart-1")
	checkedOut := mapEnvelope(schemas.CartCheckedOut, "cart-1")
	published := mapEnvelope(schemas.ArticlePublished, "article-1")
	updated := mapEnvelope(schemas.ArticleUpdated, "article-1")
	future := mapEnvelope("cart.abandoned", "cart-1")

	tests := []struct {
		name    string
		env     schemas.Envelope
		payload any
		want    []row
	}{
		{
			name: "product added", env: added,
			payload: schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 150},
			want: []row{
				{tableCartLines, []any{"acme", "ev-1", schemas.CartProductAdded, "cart-1", "p1", int64(2), int64(150), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(added),
			},
		},
		{
			name: "product removed is a negative delta without a price", env: removed,
			payload: schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 2},
			want: []row{
				{tableCartLines, []any{"acme", "ev-1", schemas.CartProductRemoved, "cart-1", "p1", int64(-2), int64(0), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(removed),
			},
		},
		{
			name: "checked out", env: checkedOut,
			payload: schemas.CartCheckedOutV1{CustomerID: "c1", OrderID: "order-1", TotalCents: 2*150 + 3*25, Lines: []schemas.OrderLine{
				{ProductID: "p2", Quantity: 2, UnitPriceCents: 150},
				{ProductID: "p1", Quantity: 3, UnitPriceCents: 25},
			}},
			want: []row{
				{tableOrderLines, []any{"acme", "ev-1", "order-1", "c1", "p2", int64(2), int64(150), int64(300), mapTime, int32(2), int64(41)}},
				{tableOrderLines, []any{"acme", "ev-1", "order-1", "c1", "p1", int64(3), int64(25), int64(75), mapTime, int32(2), int64(41)}},
				{tableOrders, []any{"acme", "ev-1", "order-1", "cart-1", "c1", int64(375), uint32(2), int64(5), mapTime, int32(2), int64(41)}},
				eventsRow(checkedOut),
			},
		},
		{
			name: "checked out with no lines", env: checkedOut,
			payload: schemas.CartCheckedOutV1{CustomerID: "c1", OrderID: "order-1"},
			want: []row{
				{tableOrders, []any{"acme", "ev-1", "order-1", "cart-1", "c1", int64(0), uint32(0), int64(0), mapTime, int32(2), int64(41)}},
				eventsRow(checkedOut),
			},
		},
		{
			name: "article published", env: published,
			payload: schemas.ArticlePublishedV1{AuthorID: "u1", Title: "Hello", Body: "long body", Tags: []string{"go", "kafka"}},
			want: []row{
				{tableArticles, []any{"acme", "ev-1", schemas.ArticlePublished, "article-1", "u1", strPtr("Hello"), []string{"go", "kafka"}, uint8(1), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(published),
			},
		},
		{
			name: "article published without tags stores an empty array", env: published,
			payload: schemas.ArticlePublishedV1{AuthorID: "u1", Title: "Hello", Body: "B"},
			want: []row{
				{tableArticles, []any{"acme", "ev-1", schemas.ArticlePublished, "article-1", "u1", strPtr("Hello"), []string{}, uint8(1), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(published),
			},
		},
		{
			name: "article title updated, tags unchanged", env: updated,
			payload: schemas.ArticleUpdatedV1{Title: strPtr("New")},
			want: []row{
				{tableArticles, []any{"acme", "ev-1", schemas.ArticleUpdated, "article-1", "", strPtr("New"), []string{}, uint8(0), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(updated),
			},
		},
		{
			name: "article tags updated, title unchanged", env: updated,
			payload: schemas.ArticleUpdatedV1{Body: strPtr("B2"), Tags: &[]string{"x"}},
			want: []row{
				{tableArticles, []any{"acme", "ev-1", schemas.ArticleUpdated, "article-1", "", (*string)(nil), []string{"x"}, uint8(1), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(updated),
			},
		},
		{
			name: "article tags cleared", env: updated,
			payload: schemas.ArticleUpdatedV1{Tags: &[]string{}},
			want: []row{
				{tableArticles, []any{"acme", "ev-1", schemas.ArticleUpdated, "article-1", "", (*string)(nil), []string{}, uint8(1), uint64(3), mapTime, int32(2), int64(41)}},
				eventsRow(updated),
			},
		},
		{
			name: "an envelope without a tenant is the default tenant's", env: func() schemas.Envelope { e := added; e.Tenant = ""; return e }(),
			payload: schemas.CartProductAddedV1{ProductID: "p1", Quantity: 2, UnitPriceCents: 150},
			want: []row{
				{tableCartLines, []any{schemas.DefaultTenant, "ev-1", schemas.CartProductAdded, "cart-1", "p1", int64(2), int64(150), uint64(3), mapTime, int32(2), int64(41)}},
				{tableEvents, append([]any{schemas.DefaultTenant}, eventsRow(added).values[1:]...)},
			},
		},
		{
			name: "event of a type without a typed table", env: future,
			payload: struct{ Reason string }{"timeout"},
			want:    []row{eventsRow(future)},
		},
		{
			name: "outcome", env: mapEnvelope(schemas.OutcomeType, "cart-1"),
			payload: schemas.Outcome{CommandID: "cmd-1", Status: schemas.StatusAccepted},
			want:    nil,
		},
		{
			name: "parked record", env: schemas.Envelope{},
			payload: schemas.Parked{Reason: "cannot be decoded"},
			want:    nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mapRecord(schemas.Record{Topic: "kappa.events", Position: mapPos, Envelope: tt.env, Payload: tt.payload})
			if len(got) != len(tt.want) {
				t.Fatalf("mapRecord gave %d rows %v, want %d rows %v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i].table != tt.want[i].table {
					t.Errorf("row %d table = %s, want %s", i, got[i].table, tt.want[i].table)
				}
				if !reflect.DeepEqual(got[i].values, tt.want[i].values) {
					t.Errorf("row %d (%s) values =\n  %#v\nwant\n  %#v", i, got[i].table, got[i].values, tt.want[i].values)
				}
			}
			if len(got) > 0 && got[len(got)-1].table != tableEvents {
				t.Errorf("last row is for %s, want the events table last", got[len(got)-1].table)
			}
			for i, r := range got[:max(len(got)-1, 0)] {
				if r.table == tableEvents {
					t.Errorf("row %d is an events row before the last row", i)
				}
			}
		})
	}
}

// The published title is copied out of the payload, so a later change to
// the payload value does not change a row waiting in a batch.
// TestRowsOfABatchKeepTheirOwnTitles: the articles row holds the title by
// pointer (the column is Nullable); rows of the records of one batch,
// mapped one after another, must each point at their own title.
func TestRowsOfABatchKeepTheirOwnTitles(t *testing.T) {
	var rows []row
	titles := []string{"first", "second", "third"}
	for _, title := range titles {
		p := schemas.ArticlePublishedV1{AuthorID: "u1", Title: title}
		rows = append(rows, mapRecord(schemas.Record{Envelope: mapEnvelope(schemas.ArticlePublished, "a-"+title), Payload: p})...)
	}
	var got []string
	for _, r := range rows {
		if r.table == tableArticles {
			got = append(got, *r.values[slices.Index(columns[tableArticles], "title")].(*string))
		}
	}
	if !reflect.DeepEqual(got, titles) {
		t.Fatalf("titles in the rows of one batch = %v, want %v", got, titles)
	}
}

func TestRenderMigrations(t *testing.T) {
	tests := []struct {
		name          string
		major         int
		want, wantNot []string
	}{
		{"ClickHouse 18", 18, []string{"DateTime('UTC')"}, []string{"DateTime64", "LowCardinality"}},
		{"ClickHouse 19", 19, []string{"DateTime('UTC')"}, []string{"DateTime64", "LowCardinality"}},
		{"ClickHouse 20", 20, []string{"DateTime64(3, 'UTC')", "LowCardinality(String)"}, nil},
		{"ClickHouse 25", 25, []string{"DateTime64(3, 'UTC')", "LowCardinality(String)"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			migrations, err := RenderMigrations(ParamsFor("kappa", tt.major))
			if err != nil {
				t.Fatalf("RenderMigrations: %v", err)
			}
			if len(migrations) == 0 {
				t.Fatal("no migrations")
			}
			var all []string
			for i, m := range migrations {
				if m.Version <= 0 || (i > 0 && m.Version <= migrations[i-1].Version) {
					t.Errorf("migration %s has version %d; versions must be positive and increasing", m.Name, m.Version)
				}
				if len(m.Statements) == 0 {
					t.Errorf("migration %s has no statements", m.Name)
				}
				for _, s := range m.Statements {
					if strings.Contains(s, "{{") || strings.Contains(s, "}}") {
						t.Errorf("%s: statement has an unrendered template action:\n%s", m.Name, s)
					}
					if strings.HasSuffix(strings.TrimSpace(s), ";") {
						t.Errorf("%s: statement ends with ';':\n%s", m.Name, s)
					}
					if strings.Contains(s, "<no value>") {
						t.Errorf("%s: statement renders a missing value:\n%s", m.Name, s)
					}
					if !strings.HasPrefix(s, "CREATE ") {
						t.Errorf("%s: statement does not start with CREATE (comment or separator left in?):\n%s", m.Name, s)
					}
					if !strings.Contains(s, "IF NOT EXISTS kappa.") {
						t.Errorf("%s: statement is not idempotent in database kappa:\n%s", m.Name, s)
					}
				}
				all = append(all, m.Statements...)
			}
			text := strings.Join(all, "\n")
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("rendered DDL does not contain %q", w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(text, w) {
					t.Errorf("rendered DDL contains %q, which this server version lacks", w)
				}
			}
		})
	}
}

func TestRenderMigrationsUsesTheDatabaseName(t *testing.T) {
	migrations, err := RenderMigrations(ParamsFor("analytics_test", 25))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migrations {
		for _, s := range m.Statements {
			if strings.Contains(s, "kappa.") {
				t.Errorf("statement names database kappa, not analytics_test:\n%s", s)
			}
		}
	}
	if got := createTables(t, migrations); len(got) == 0 {
		t.Error("no CREATE TABLE in database analytics_test")
	}
}

// createTableRE matches one CREATE TABLE statement and captures the table
// name (without database) and the column list.
var createTableRE = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS \w+\.(\w+) \((.*)\)\s*ENGINE`)

// createTables parses the CREATE TABLE statements of migrations into column
// name to column type, per table, as the migrations leave them: a table
// built as <table>_tenants replaces <table>. Backquotes around names are
// removed.
func createTables(t *testing.T, migrations []Migration) map[string]map[string]string {
	t.Helper()
	tables := map[string]map[string]string{}
	for _, m := range migrations {
		for _, s := range m.Statements {
			if !strings.HasPrefix(s, "CREATE TABLE") {
				continue
			}
			match := createTableRE.FindStringSubmatch(s)
			if match == nil {
				t.Fatalf("%s: cannot parse CREATE TABLE statement:\n%s", m.Name, s)
			}
			cols := map[string]string{}
			for _, line := range strings.Split(match[2], "\n") {
				line = strings.TrimSuffix(strings.TrimSpace(line), ",")
				if line == "" {
					continue
				}
				name, typ, ok := strings.Cut(line, " ")
				if !ok {
					t.Fatalf("%s: table %s: cannot parse column line %q", m.Name, match[1], line)
				}
				cols[strings.Trim(name, "`")] = strings.TrimSpace(typ)
			}
			tables[strings.TrimSuffix(match[1], "_tenants")] = cols
		}
	}
	return tables
}

// The insert columns of every table must exist in its CREATE TABLE, on old
// and new servers alike.
func TestInsertColumnsExistInDDL(t *testing.T) {
	for _, major := range []int{18, 25} {
		migrations, err := RenderMigrations(ParamsFor("kappa", major))
		if err != nil {
			t.Fatal(err)
		}
		tables := createTables(t, migrations)
		// Guard the parser itself: a column of each kind parses with its type.
		for col, typ := range map[string]string{"event_id": "String", "partition": "Int32", "offset": "Int64"} {
			if got := tables[tableEvents][col]; got != typ {
				t.Fatalf("major %d: parsed events.%s as %q, want %q", major, col, got, typ)
			}
		}
		if len(columns) != len(insertOrder) {
			t.Errorf("columns has %d tables, insertOrder %d", len(columns), len(insertOrder))
		}
		for _, table := range insertOrder {
			ddl, ok := tables[table]
			if !ok {
				t.Errorf("major %d: table %s has insert columns but no CREATE TABLE", major, table)
				continue
			}
			for _, c := range columns[table] {
				if _, ok := ddl[strings.Trim(c, "`")]; !ok {
					t.Errorf("major %d: column %s of %s is inserted but not in its CREATE TABLE (columns: %v)", major, c, table, slices.Sorted(maps.Keys(ddl)))
				}
			}
			if unique := slices.Compact(slices.Sorted(slices.Values(columns[table]))); len(unique) != len(columns[table]) {
				t.Errorf("table %s lists a column twice: %v", table, columns[table])
			}
		}
	}
}

// goTypeOf is the Go type the driver needs for a ClickHouse column type.
var goTypeOf = map[string]reflect.Type{
	"String":                 reflect.TypeFor[string](),
	"LowCardinality(String)": reflect.TypeFor[string](),
	"Nullable(String)":       reflect.TypeFor[*string](),
	"Array(String)":          reflect.TypeFor[[]string](),
	"UInt8":                  reflect.TypeFor[uint8](),
	"UInt16":                 reflect.TypeFor[uint16](),
	"UInt32":                 reflect.TypeFor[uint32](),
	"UInt64":                 reflect.TypeFor[uint64](),
	"Int32":                  reflect.TypeFor[int32](),
	"Int64":                  reflect.TypeFor[int64](),
	"DateTime('UTC')":        reflect.TypeFor[time.Time](),
	"DateTime64(3, 'UTC')":   reflect.TypeFor[time.Time](),
}

// Every row mapRecord produces has one value per insert column, of the Go
// type its column needs: this catches a value added to a row but not to
// columns, values swapped, or a DDL type changed without the mapping.
func TestMappedRowsMatchDDLTypes(t *testing.T) {
	records := []any{
		schemas.CartProductAddedV1{ProductID: "p1", Quantity: 1, UnitPriceCents: 5},
		schemas.CartProductRemovedV1{ProductID: "p1", Quantity: 1},
		schemas.CartCheckedOutV1{CustomerID: "c", OrderID: "o", TotalCents: 5, Lines: []schemas.OrderLine{{ProductID: "p1", Quantity: 1, UnitPriceCents: 5}}},
		schemas.ArticlePublishedV1{AuthorID: "u", Title: "T", Body: "B"},
		schemas.ArticleUpdatedV1{Title: strPtr("T")},
		schemas.ArticleUpdatedV1{Tags: &[]string{"a"}},
	}
	for _, major := range []int{18, 25} {
		migrations, err := RenderMigrations(ParamsFor("kappa", major))
		if err != nil {
			t.Fatal(err)
		}
		tables := createTables(t, migrations)
		seen := map[string]bool{}
		for _, p := range records {
			for _, r := range mapRecord(schemas.Record{Topic: "t", Position: mapPos, Envelope: mapEnvelope(schemas.TypeOf(p), "x"), Payload: p}) {
				seen[r.table] = true
				cols := columns[r.table]
				if len(r.values) != len(cols) {
					t.Errorf("%T: %s row has %d values for %d columns", p, r.table, len(r.values), len(cols))
					continue
				}
				for i, c := range cols {
					chType := tables[r.table][strings.Trim(c, "`")]
					want, ok := goTypeOf[chType]
					if !ok {
						t.Errorf("%s.%s has type %q, which this test does not know; add it to goTypeOf", r.table, c, chType)
						continue
					}
					if got := reflect.TypeOf(r.values[i]); got != want {
						t.Errorf("major %d, %T: %s.%s is %s but the row holds a %v", major, p, r.table, c, chType, got)
					}
				}
			}
		}
		for _, table := range insertOrder {
			if !seen[table] {
				t.Errorf("no test record maps to table %s", table)
			}
		}
	}
}

func TestParamsFor(t *testing.T) {
	tests := []struct {
		major int
		want  ddlParams
	}{
		{18, ddlParams{DB: "kappa", Modern: false, Symbol: "String", Time: "DateTime('UTC')"}},
		{19, ddlParams{DB: "kappa", Modern: false, Symbol: "String", Time: "DateTime('UTC')"}},
		{20, ddlParams{DB: "kappa", Modern: true, Symbol: "LowCardinality(String)", Time: "DateTime64(3, 'UTC')"}},
		{25, ddlParams{DB: "kappa", Modern: true, Symbol: "LowCardinality(String)", Time: "DateTime64(3, 'UTC')"}},
	}
	for _, tt := range tests {
		if got := ParamsFor("kappa", tt.major); got != tt.want {
			t.Errorf("ParamsFor(kappa, %d) = %+v, want %+v", tt.major, got, tt.want)
		}
	}
}
