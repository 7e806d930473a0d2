package schemas

import "embed"

// DDL holds the versioned migrations of both read stores:
// ddl/postgres/*.sql in goose's format, and ddl/clickhouse/*.sql as Go
// templates rendered per server version (see projections/clickhouse).
//
//go:embed ddl/postgres/*.sql ddl/clickhouse/*.sql
var DDL embed.FS
