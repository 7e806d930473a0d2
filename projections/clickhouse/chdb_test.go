package clickhouse_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/projections/clickhouse"
)

// TestModernDDLOnCurrentClickHouse runs the DDL chosen for a current server
// in chdb, current ClickHouse in-process, since the local server is 18.16.
// `make test` provides KAPPA_CHDB_PYTHON, a Python with chdb installed.
func TestModernDDLOnCurrentClickHouse(t *testing.T) {
	python := os.Getenv("KAPPA_CHDB_PYTHON")
	if python == "" {
		if os.Getenv("KAPPA_INTEGRATION") == "require" {
			t.Fatal("KAPPA_CHDB_PYTHON is not set but KAPPA_INTEGRATION=require; run `make test`")
		}
		t.Skip("KAPPA_CHDB_PYTHON is not set; run `make test` to install chdb")
	}
	// A database an earlier Kappa made, then migration 0003 over it.
	before, upgrade := clickhouse.UpgradeSteps(t, "kappa", 26)
	// The script writes rows of the earlier shape between the two and
	// checks that they become the default tenant's. The gates a writer
	// inserts through (fence.go): the script sends the order lines through
	// one, checks that they reach the table and its
	// view, drops the gates and checks that the gate refuses the next insert.
	var drops []string
	for _, table := range []string{"events", "cart_lines", "orders", "order_lines", "articles"} {
		drops = append(drops, clickhouse.DropTable("kappa", clickhouse.GateName("w1", table), 26))
	}
	data, err := json.Marshal(map[string]any{
		"ddl_before": before, "ddl_upgrade": upgrade, "create_gates": clickhouse.CreateGates("kappa", "w1"), "drop_gates": drops,
		"order_lines_gate": clickhouse.GateName("w1", "order_lines"),
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ddl.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), python, "testdata/chdb_ddl.py", file, "kappa").CombinedOutput()
	t.Logf("chdb:\n%s", out)
	if err != nil {
		t.Fatalf("modern DDL failed in chdb: %v", err)
	}
}
