package e2e_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/roles"
)

// TestProcessorsKilledWhileRestoringDecideOnce fills a processor's state,
// SIGKILLs it, deletes its local store, and then SIGKILLs its successors
// as soon as each starts restoring from the changelog, while commands
// wait. The processor that finally runs decides every command once, from
// the state the changelog holds: Postgres ends with every cart at exactly
// the version and lines the model expects.
func TestProcessorsKilledWhileRestoringDecideOnce(t *testing.T) {
	conn := kappatest.Kafka(t)
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	bin := buildKappa(t)
	sys := newSystem(t, conn, pg, ch, 3, 20*time.Millisecond)
	sys.stop("process")
	sys.start("postgres", roles.ProjectPostgres)
	sys.start("clickhouse", roles.ProjectClickHouse)
	stateDir := t.TempDir()
	env := append(os.Environ(),
		"KAPPA_KAFKA_BROKERS="+strings.Join(conn.Brokers, ","),
		"KAPPA_TOPIC_PREFIX="+sys.cfg.TopicPrefix, "KAPPA_GROUP_PREFIX="+sys.cfg.GroupPrefix,
		"KAPPA_INSTANCE_ID=process-0", "KAPPA_STATE_DIR="+stateDir, "KAPPA_LOG_LEVEL=info")
	type process struct {
		cmd *exec.Cmd
		log string
	}
	start := func() process {
		cmd, log := startProcess(t, bin, env)
		return process{cmd, log}
	}
	kill := func(p process) {
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
	}
	m := newModel()
	round := func(name string, carts int) {
		cmds := make([]command, carts)
		for i := range cmds {
			cmds[i] = m.add(fmt.Sprintf("cart-%d", i), "p-"+name, 1, 100)
		}
		sys.postBatch(t, cmds)
	}

	first := start()
	const carts = 1000
	round("a", carts)
	round("b", carts)
	waitForProjections(t, sys, m, pg, ch)
	kill(first)
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		p := start()
		round(fmt.Sprintf("c%d", i), carts/4) // commands that make it restore
		kappatest.Eventually(t, 30*time.Second, 5*time.Millisecond, func() error {
			out, err := os.ReadFile(p.log)
			if err != nil || !bytes.Contains(out, []byte("restoring aggregate state")) {
				return fmt.Errorf("processor %d has not begun restoring (%w)", i, err)
			}
			return nil
		})
		kill(p)
		out, _ := os.ReadFile(p.log)
		t.Logf("processor %d killed; had finished a restore: %v", i, bytes.Contains(out, []byte("restored aggregate state")))
	}

	last := start()
	round("d", carts)
	waitForProjections(t, sys, m, pg, ch)
	assertPostgres(t, sys, m)

	// The interrupted restores wrote without counting; the one that
	// finished counted every cart once.
	out, err := os.ReadFile(last.log)
	if err != nil {
		t.Fatal(err)
	}
	restores := regexp.MustCompile(`restored aggregate state.*aggregates_held=(\d+)`).FindAllSubmatch(out, -1)
	if len(restores) == 0 || string(restores[len(restores)-1][1]) != strconv.Itoa(carts) {
		t.Errorf("the last processor's restores: %q; want the last to hold %d aggregates", restores, carts)
	}
}
