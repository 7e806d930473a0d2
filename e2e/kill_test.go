package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projections/postgres"
)

// buildKappa compiles the binary once per test run.
func buildKappa(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kappa")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../cmd/kappa")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build kappa: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs `kappa process` with env, its output in a log file
// whose path it returns; the test kills it at its end.
func startProcess(t *testing.T, bin string, env []string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, "process")
	cmd.Env = env
	log := filepath.Join(t.TempDir(), "process.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			logTail(t, log, 80)
		}
	})
	return cmd, log
}

// logTail logs the last lines of a process's log, for a failed test whose
// log directory goes with it.
func logTail(t *testing.T, file string, lines int) {
	out, err := os.ReadFile(file)
	if err != nil {
		t.Logf("%s: %v", file, err)
		return
	}
	all := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	t.Logf("the last %d lines of %s:\n%s", min(lines, len(all)), file, strings.Join(all[max(len(all)-lines, 0):], "\n"))
}

type projectorProcess struct {
	t    *testing.T
	bin  string
	env  []string
	cmds map[string]*exec.Cmd
}

func (p *projectorProcess) start(store string) {
	cmd := exec.Command(p.bin, "project", store)
	// A static member id: the restarted process takes its partitions back
	// without waiting for the group to expire the killed one.
	cmd.Env = append(os.Environ(), append(p.env, "KAPPA_INSTANCE_ID="+store+"-0")...)
	logFile, err := os.Create(filepath.Join(p.t.TempDir(), store+".log"))
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmds[store] = cmd
}

// kill sends SIGKILL: no flush, no commit, no goodbye.
func (p *projectorProcess) kill(store string) {
	cmd := p.cmds[store]
	if err := cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	_ = cmd.Wait() // killed: the exit status is expected to be an error
}

// TestKilledProjectorsResumeExactly SIGKILLs both projector processes
// repeatedly while they work through the stream; every event still ends up
// exactly once in ClickHouse and Postgres.
func TestKilledProjectorsResumeExactly(t *testing.T) {
	conn := kappatest.Kafka(t)
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	bin := buildKappa(t)
	sys := newSystem(t, conn, pg, ch, 3, 0)
	cfg, prefix := sys.cfg, sys.cfg.TopicPrefix

	procs := &projectorProcess{t: t, bin: bin, cmds: map[string]*exec.Cmd{}, env: []string{
		// The rest of the connection (TLS, SASL, passwords) comes from the
		// environment the projectors inherit.
		"KAPPA_KAFKA_BROKERS=" + strings.Join(conn.Brokers, ","),
		"KAPPA_TOPIC_PREFIX=" + prefix, "KAPPA_GROUP_PREFIX=" + prefix,
		"KAPPA_POSTGRES_URL=" + pg.URL, "KAPPA_POSTGRES_SCHEMA=" + pg.Schema,
		"KAPPA_CLICKHOUSE_ADDR=" + strings.Join(ch.Addr, ","), "KAPPA_CLICKHOUSE_DATABASE=" + ch.Database,
		// Small batches, so that a kill lands between many of them.
		"KAPPA_MAX_BATCH_RECORDS=40", "KAPPA_CLICKHOUSE_FLUSH_INTERVAL=5ms", "KAPPA_POSTGRES_FLUSH_INTERVAL=5ms", "KAPPA_LOG_LEVEL=warn",
	}}
	t.Cleanup(func() {
		for _, c := range procs.cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	})
	procs.start("clickhouse")
	procs.start("postgres")

	chStore := openClickHouse(t, ch)
	pgStore, err := postgres.Open(t.Context(), pg)
	if err != nil {
		t.Fatal(err)
	}
	defer pgStore.Close()
	events := func() uint64 {
		var n uint64
		if err := chStore.Conn().QueryRow(t.Context(), "SELECT count() FROM "+ch.Database+".events").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	m := newModel()
	const rounds, perRound, carts = 4, 1000, 300
	for round := range rounds {
		var batch []command
		for i := range perRound {
			n := round*perRound + i
			batch = append(batch, m.add(fmt.Sprintf("cart-%d", n%carts), fmt.Sprintf("p%d", n%7), 1, 100))
		}
		sys.postBatch(t, batch)
		// Kill once the projectors are partway into this round.
		threshold := uint64(round*perRound + perRound/5)
		kappatest.Eventually(t, 60*time.Second, 5*time.Millisecond, func() error {
			if n := events(); n < threshold {
				return fmt.Errorf("kappa.events has %d rows, waiting for %d", n, threshold)
			}
			return nil
		})
		atKill := events()
		procs.kill("clickhouse")
		procs.kill("postgres")
		t.Logf("round %d: killed both projectors with %d of %d events in ClickHouse", round, atKill, (round+1)*perRound)
		procs.start("clickhouse")
		procs.start("postgres")
	}

	waitForProjections(t, sys, m, pg, ch)
	var total, distinct uint64
	if err := chStore.Conn().QueryRow(t.Context(), "SELECT count(), uniqExact(event_id) FROM "+ch.Database+".events").Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if total != rounds*perRound || distinct != total {
		t.Errorf("kappa.events: %d rows, %d distinct; want %d exactly once", total, distinct, rounds*perRound)
	}
	var lines uint64
	if err := chStore.Conn().QueryRow(t.Context(), "SELECT count() FROM "+ch.Database+".cart_lines").Scan(&lines); err != nil {
		t.Fatal(err)
	}
	if lines != rounds*perRound {
		t.Errorf("cart_lines: %d rows, want %d", lines, rounds*perRound)
	}
	assertPostgres(t, sys, m)

	// SIGTERM: both exit cleanly with everything applied and committed,
	// so Kafka's committed offsets equal the sinks' own positions.
	for _, store := range []string{"clickhouse", "postgres"} {
		cmd := procs.cmds[store]
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("%s projector after SIGTERM: %v", store, err)
		}
		delete(procs.cmds, store)
	}
	admin, err := conn.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	committed, err := kadm.NewClient(admin).FetchOffsets(t.Context(), prefix+"-postgres")
	if err != nil {
		t.Fatal(err)
	}
	positions, err := pgStore.Resume(t.Context(), cfg.Topics().Events, []int32{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	for p, next := range positions {
		got, ok := committed.Lookup(cfg.Topics().Events, p)
		if !ok || got.At != next {
			t.Errorf("partition %d: Kafka has committed %d, Postgres holds up to %d", p, got.At, next)
		}
	}
}
