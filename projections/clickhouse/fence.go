package clickhouse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// Fencing stale writers.
//
// ClickHouse cannot check a row's position against what a table holds in
// the same step as the insert, so two writers of one partition would both
// insert: a member stopped past its session timeout (a GC pause, a frozen
// VM, a partition between it and Kafka) while it holds a batch comes back
// and writes it after the member that took its partitions over has
// written the same records.
//
// Each group member therefore writes through gates of its own: for every
// table, a Buffer table named writer_<member hash>_<table> whose flush
// thresholds are zero, so that every insert passes straight through to
// the table, as one block, and fires its materialized views. A member that
// is assigned partitions creates its gates and then drops the gates of
// every writer that is no longer a member of the group, before it reads
// where to resume. Dropping a table waits for the inserts into it that are
// running (18.16 takes the table's lock; current servers take an exclusive
// lock for non-MergeTree tables and DROP ... SYNC waits until no query
// uses the table), so once the drops return, every write of a former
// member has either landed, and the resume positions read next include
// it, or can never land: its gate is gone and its insert fails with
// UNKNOWN_TABLE, which the store reports as ErrFenced.
//
// Other ways were weighed. ReplicatedMergeTree's block deduplication (and
// insert_deduplication_token on current servers) drops a repeated block
// only if both writers form identical blocks, which needs deterministic
// batch boundaries or a record of each intended block beforehand, as
// ClickHouse Kafka Connect keeps in KeeperMap; it needs ZooKeeper or
// Keeper, and 18.16 has neither KeeperMap nor tokens. A lock held in
// another system (a Postgres advisory lock) is not atomic with the insert.
// A gate is checked by the insert itself, under ClickHouse's own table
// lock, on 18.16 and on current servers alike. Materialized views chained
// behind a view do not fire on 18.16, which rules out a Null table with a
// view as the gate; a Buffer table inserts into its destination the way a
// client does.

// ErrFenced reports a write refused because this writer's gates were
// dropped: the group gave its partitions to another member while it was
// not looking. Nothing of the refused write landed.
var ErrFenced = errors.New("clickhouse: this writer was fenced off; another member owns its partitions now")

// writerPrefix starts the names of gate tables.
const writerPrefix = "writer_"

// codeUnknownTable is ClickHouse's UNKNOWN_TABLE.
const codeUnknownTable = 60

// writerID turns a group member id, which may hold any characters, into a
// short part of a table name.
func writerID(member string) string {
	sum := sha256.Sum256([]byte(member))
	return hex.EncodeToString(sum[:8])
}

// GateName is the gate of a writer for a table.
func GateName(writer, table string) string {
	return writerPrefix + writer + "_" + table
}

// CreateGates returns the statements that create a writer's gates: Buffer
// tables with zero thresholds, through which every insert goes straight to
// the table as one block.
func CreateGates(db, writer string) []string {
	stmts := make([]string, 0, len(insertOrder))
	for _, t := range insertOrder {
		stmts = append(stmts, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s AS %s.%s ENGINE = Buffer(%s, %s, 1, 0, 0, 0, 0, 0, 0)",
			db, GateName(writer, t), db, t, db, t))
	}
	return stmts
}

// DropTable returns the statement that drops a table (a gate, say) if it
// exists and waits for the inserts into it that are running. In an Atomic
// database (the default from 20.10) a DROP only detaches the table unless
// it says SYNC; SYNC is understood from 20.x and chosen here from 21.
func DropTable(db, table string, major int) string {
	stmt := fmt.Sprintf("DROP TABLE IF EXISTS %s.%s", db, table)
	if major >= 21 {
		stmt += " SYNC"
	}
	return stmt
}

// Fence makes member this store's writer and shuts out every writer not
// in live (the members of the group now): it creates member's gates,
// drops the others, and forgets what it knew of every table's contents,
// which Resume reads again. When it returns, no write of a former member
// is in flight, and none can land any more.
func (s *Store) Fence(ctx context.Context, member string, live []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := writerID(member)
	keep := map[string]bool{id: true}
	for _, m := range live {
		keep[writerID(m)] = true
	}
	for _, stmt := range CreateGates(s.cfg.Database, id) {
		if err := s.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create the gates of writer %s: %w", id, err)
		}
	}
	gates, err := s.gates(ctx)
	if err != nil {
		return err
	}
	major, _, err := s.ServerVersion(ctx)
	if err != nil {
		return err
	}
	for _, g := range gates {
		owner := strings.SplitN(strings.TrimPrefix(g, writerPrefix), "_", 2)[0]
		if keep[owner] {
			continue
		}
		if err := s.conn.Exec(ctx, DropTable(s.cfg.Database, g, major)); err != nil {
			return fmt.Errorf("drop gate %s of a former writer: %w", g, err)
		}
		s.log.Info("fenced off a former writer", "gate", g)
	}
	s.writer = id
	clear(s.known)
	return nil
}

// Fenced reports whether an error of Apply means this writer was fenced
// off, so that retrying cannot help.
func (s *Store) Fenced(err error) bool { return errors.Is(err, ErrFenced) }

// gates lists the gate tables of every writer.
func (s *Store) gates(ctx context.Context) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? AND startsWith(name, ?)", s.cfg.Database, writerPrefix)
	if err != nil {
		return nil, fmt.Errorf("list writer gates: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("list writer gates: %w", err)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, rows.Err()
}

// target is the table an insert into table goes to: the writer's gate
// once Fence has named a writer, the table itself before (tools, tests).
func (s *Store) target(table string) string {
	if s.writer == "" {
		return table
	}
	return GateName(s.writer, table)
}

// fenced turns the refusal of a gate that was dropped into ErrFenced.
func (s *Store) fenced(err error) error {
	var ex *ch.Exception
	if s.writer != "" && errors.As(err, &ex) && ex.Code == codeUnknownTable && strings.Contains(ex.Message, writerPrefix+s.writer) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}
