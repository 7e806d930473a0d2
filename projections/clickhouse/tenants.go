package clickhouse

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/kappa-cqrs/kappa/schemas"
)

// Tenants in ClickHouse: migration 0003 puts the tenant first in every
// table's sort key. ClickHouse cannot change the leading columns of a sort
// key, so each table is created anew beside the old one, the old rows are
// copied into it, and RENAME swaps the two (0003_tenants.sql says the
// same). Rows written before tenants existed belong to the default tenant:
// the typed tables had no tenant column, and the events table's was empty.
//
// Each step looks at what the database holds, so a migration interrupted
// anywhere is finished by the next start: a table already led by its
// tenant is done; a new table half filled is dropped and filled again; an
// old table already renamed away is the source of the copy.
//
// Writers' gates (fence.go) are Buffer tables with the old columns, so the
// migration drops them all, which fences every writer still running: it
// rejoins its group and makes new gates.

// tenantsVersion is the migration applied by TenantSteps.
const tenantsVersion = 3

// Suffixes of a table's new version while it is built and of its old one
// between the swap and the drop.
const (
	newTableSuffix = "_tenants"
	oldTableSuffix = "_before_tenants"
)

// TableState is what a database holds of one table.
type TableState struct {
	Columns     []string
	TenantFirst bool // the sort key starts with the tenant
}

var (
	createTableName = regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS \w+\.(\w+) \(`)
	createViewName  = regexp.MustCompile(`^CREATE MATERIALIZED VIEW IF NOT EXISTS \w+\.(\w+) `)
	columnsOfCreate = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS \w+\.\w+ \((.*)\)\s*ENGINE`)
)

// TenantSteps returns the statements that take a database holding have
// (tables by name, leftovers of an interrupted run included) to the
// tables and views of migration m.
func TenantSteps(db string, major int, m Migration, have map[string]TableState) ([]string, error) {
	var steps, views []string
	for _, stmt := range m.Statements {
		// A view would feed the old table while the tables swap.
		if v := createViewName.FindStringSubmatch(stmt); v != nil {
			steps = append(steps, DropTable(db, v[1], major))
			views = append(views, stmt)
		}
	}
	for _, stmt := range m.Statements {
		if createViewName.MatchString(stmt) {
			continue
		}
		t := createTableName.FindStringSubmatch(stmt)
		if t == nil || !strings.HasSuffix(t[1], newTableSuffix) {
			return nil, fmt.Errorf("migration %s: expected CREATE TABLE of a %s table or a view:\n%s", m.Name, newTableSuffix, stmt)
		}
		swap, err := swapIn(db, major, strings.TrimSuffix(t[1], newTableSuffix), stmt, have)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", m.Name, err)
		}
		steps = append(steps, swap...)
	}
	steps = append(steps, views...)
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if strings.HasPrefix(name, writerPrefix) {
			steps = append(steps, DropTable(db, name, major))
		}
	}
	return steps, nil
}

// swapIn returns the statements that replace table by the one create makes
// (under table+newTableSuffix), with its rows.
func swapIn(db string, major int, table, create string, have map[string]TableState) ([]string, error) {
	building, old := table+newTableSuffix, table+oldTableSuffix
	if have[table].TenantFirst {
		return []string{DropTable(db, old, major)}, nil
	}
	steps := []string{DropTable(db, building, major), create}
	source := ""
	if _, ok := have[table]; ok {
		source = table
	} else if _, ok := have[old]; ok {
		source = old
	}
	if source != "" {
		copyRows, err := copyStatement(db, building, create, source, have[source].Columns)
		if err != nil {
			return nil, err
		}
		steps = append(steps, copyRows)
	}
	switch source {
	case table:
		steps = append(steps, fmt.Sprintf("RENAME TABLE %s.%s TO %s.%s, %s.%s TO %s.%s", db, table, db, old, db, building, db, table))
	default:
		steps = append(steps, fmt.Sprintf("RENAME TABLE %s.%s TO %s.%s", db, building, db, table))
	}
	if source != "" {
		steps = append(steps, DropTable(db, old, major))
	}
	return steps, nil
}

// copyStatement copies the rows of source into target, made by create; a
// row without a tenant is the default tenant's.
func copyStatement(db, target, create, source string, sourceColumns []string) (string, error) {
	m := columnsOfCreate.FindStringSubmatch(create)
	if m == nil {
		return "", fmt.Errorf("cannot read the columns of %s", target)
	}
	var names, values []string
	for _, line := range strings.Split(m[1], "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name = strings.Trim(name, "`"); name == "" {
			continue
		}
		names = append(names, "`"+name+"`")
		switch {
		case name == "tenant" && slices.Contains(sourceColumns, name):
			values = append(values, fmt.Sprintf("if(tenant = '', '%s', tenant)", schemas.DefaultTenant))
		case name == "tenant":
			values = append(values, "'"+schemas.DefaultTenant+"'")
		case slices.Contains(sourceColumns, name):
			values = append(values, "`"+name+"`")
		default:
			return "", fmt.Errorf("%s.%s has column %s, which %s lacks and has no value for", db, target, name, source)
		}
	}
	return fmt.Sprintf("INSERT INTO %s.%s (%s) SELECT %s FROM %s.%s",
		db, target, strings.Join(names, ", "), strings.Join(values, ", "), db, source), nil
}

// tables reads what the database holds of every table.
func (s *Store) tables(ctx context.Context) (map[string]TableState, error) {
	have := map[string]TableState{}
	tables, err := s.conn.Query(ctx, "SELECT name, sorting_key FROM system.tables WHERE database = ?", s.cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("read the tables of %s: %w", s.cfg.Database, err)
	}
	defer func() { _ = tables.Close() }()
	for tables.Next() {
		var name, key string
		if err := tables.Scan(&name, &key); err != nil {
			return nil, err
		}
		have[name] = TableState{TenantFirst: key == "tenant" || strings.HasPrefix(key, "tenant,")}
	}
	if err := tables.Err(); err != nil {
		return nil, err
	}
	rows, err := s.conn.Query(ctx, "SELECT table, name FROM system.columns WHERE database = ?", s.cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", s.cfg.Database, err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			return nil, err
		}
		if t, ok := have[table]; ok {
			t.Columns = append(t.Columns, column)
			have[table] = t
		}
	}
	return have, rows.Err()
}
