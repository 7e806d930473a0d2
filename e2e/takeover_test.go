package e2e_test

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/kappatest"
)

// TestAKilledStaticProcessorTakesItsPartitionsBack: a processor with an
// instance id, SIGKILLed and started again, decides commands on every
// partition long before its session timeout (60 s) would have let the
// group give its partitions to anyone: the group hands them back to the
// same instance id at once, and its transactional id fences whatever the
// killed one left open.
func TestAKilledStaticProcessorTakesItsPartitionsBack(t *testing.T) {
	conn := kappatest.Kafka(t)
	bin := buildKappa(t)
	sys := newSystem(t, conn, kappatest.Postgres(t), kappatest.ClickHouse(t), 3, 20*time.Millisecond)
	sys.stop("process")
	env := append(os.Environ(),
		"KAPPA_KAFKA_BROKERS="+strings.Join(conn.Brokers, ","),
		"KAPPA_TOPIC_PREFIX="+sys.cfg.TopicPrefix, "KAPPA_GROUP_PREFIX="+sys.cfg.GroupPrefix,
		"KAPPA_INSTANCE_ID=process-0", "KAPPA_STATE_DIR="+t.TempDir(), "KAPPA_SESSION_TIMEOUT=60s", "KAPPA_LOG_LEVEL=info")
	start := func() *exec.Cmd {
		cmd, _ := startProcess(t, bin, env)
		return cmd
	}
	m := newModel()
	// decideAll sends a command to a cart on each partition and needs
	// every one decided within the wait.
	decideAll := func(round string) {
		t.Helper()
		for i := range 12 { // carts spread over the three partitions
			body, err := json.Marshal(m.add("cart-"+round+"-"+string(rune('a'+i)), "p1", 1, 100))
			if err != nil {
				t.Fatal(err)
			}
			status, out := sys.do(t, http.MethodPost, "/v1/commands", "application/json", body, map[string]string{"Prefer": "wait=20"})
			if status != http.StatusOK {
				t.Fatalf("%s: command %d: %d %s; want it decided, not left to the session timeout", round, i, status, out)
			}
		}
	}
	first := start()
	decideAll("before")
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	start()
	decideAll("after")
}
