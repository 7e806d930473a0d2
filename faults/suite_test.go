// Package faults_test is the fault-injection suite: it runs every role as
// its own process on the real local stack, drives a steady command workload
// through HTTP, injects faults (SIGKILLs of every role, several instances
// with one killed, pauses past the session timeout, Kafka restarts and
// outages under load, while idle and during a rebalance, ClickHouse and
// Postgres restarts, cut and slow connections, poison events), checks
// after each that every group is whole and consuming, then checks an
// oracle against the log.
//
// It runs with `make faults` (KAPPA_FAULTS=1) and in CI. A negative control
// repeats a short run with a deliberately broken projection and requires
// the oracle to fail.
package faults_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kappa-cqrs/kappa/kappatest"
)

func enabled(t *testing.T) {
	t.Helper()
	if os.Getenv("KAPPA_FAULTS") != "1" {
		t.Skip("the fault suite runs with `make faults` (KAPPA_FAULTS=1)")
	}
}

func build(t *testing.T, tags string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kappa")
	args := []string{"build", "-o", bin}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	out, err := exec.CommandContext(t.Context(), "go", append(args, "../cmd/kappa")...).CombinedOutput()
	if err != nil {
		t.Fatalf("build kappa %s: %v\n%s", tags, err, out)
	}
	return bin
}

// process is one running role.
type process struct {
	name string
	args []string
	env  []string
	log  string
	cmd  *exec.Cmd
}

type cluster struct {
	t        *testing.T
	bin      string
	dir      string
	baseEnv  []string
	procs    map[string]*process
	mu       sync.Mutex
	ingest   string
	chProxy  *proxy
	pgProxy  *proxy
	faults   []faultRecord
	started  time.Time
	topics   string
	database string
	schema   string
	pgURL    string // through the proxy, for the roles
	pgDirect string // straight to Postgres, for the oracle
	opsAddr  string // clickhouse-0's /readyz
}

type faultRecord struct {
	at     time.Duration
	fault  string
	detail string
}

func (c *cluster) record(fault, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, faultRecord{at: time.Since(c.started).Round(100 * time.Millisecond), fault: fault, detail: detail})
	c.t.Logf("fault %-28s %s", fault, detail)
}

func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	p := &process{name: name, args: args, log: filepath.Join(c.dir, name+".log")}
	ops := ""
	if name == "clickhouse-0" {
		c.opsAddr = "127.0.0.1:" + kappatest.FreePort(c.t)
		ops = c.opsAddr
	}
	p.env = append(append([]string{}, c.baseEnv...), "KAPPA_INSTANCE_ID="+name, "KAPPA_OPS_ADDR="+ops)
	c.launch(p)
	c.procs[name] = p
}

func (c *cluster) launch(p *process) {
	c.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.cmd = cmd
	go func() { _ = cmd.Wait(); _ = f.Close() }()
}

// kill SIGKILLs a role and starts it again at once, as a supervisor would.
func (c *cluster) kill(name string) {
	c.t.Helper()
	p := c.procs[name]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	waitExit(p.cmd)
	c.record("SIGKILL "+name, "restarted at once")
	c.launch(p)
}

// killFor SIGKILLs a role and leaves it down for a while, so that the other
// instance of its group takes its partitions.
func (c *cluster) killFor(name string, down time.Duration) {
	c.t.Helper()
	p := c.procs[name]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	waitExit(p.cmd)
	c.record("SIGKILL "+name+" (stays down)", fmt.Sprintf("down %s, its group's other instance takes over", down))
	time.Sleep(down) // the fault: an instance that is gone
	c.launch(p)
}

func waitExit(cmd *exec.Cmd) {
	for cmd.ProcessState == nil {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// remove stops a role for good with SIGTERM, as scaling down does.
func (c *cluster) remove(name string) {
	c.t.Helper()
	p := c.procs[name]
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(p.cmd)
	delete(c.procs, name)
	c.record("SIGTERM "+name, "removed for good")
}

func (c *cluster) stopAll() {
	for _, p := range c.procs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		waitExit(p.cmd)
	}
}

// stack runs deploy/stack.sh, which restarts real servers.
func (c *cluster) stack(args ...string) {
	c.t.Helper()
	out, err := exec.CommandContext(c.t.Context(), "bash", append([]string{"../deploy/stack.sh"}, args...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("stack.sh %v: %v\n%s", args, err, out)
	}
}

func (c *cluster) restartStore(component string) {
	c.t.Helper()
	start := time.Now()
	c.stack("down", component)
	c.stack("up", component)
	c.record("restart "+component, fmt.Sprintf("down and up again in %s", time.Since(start).Round(100*time.Millisecond)))
}

func (c *cluster) cut(p *proxy, store string, d time.Duration) {
	p.setCut(true)
	end := time.Now().Add(d)
	readiness := ""
	if store == "clickhouse" {
		// clickhouse-0 must say it is not ready while its store is cut off.
		readiness = ", clickhouse-0 /readyz never 503"
		for time.Now().Before(end) {
			if code := c.readyz(); code == http.StatusServiceUnavailable {
				readiness = ", clickhouse-0 /readyz 503 while cut"
				break
			}
			time.Sleep(50 * time.Millisecond) // polling readiness
		}
	}
	time.Sleep(time.Until(end)) // the fault: the link is down this long
	p.setCut(false)
	if store == "clickhouse" {
		recovered := time.Now()
		kappatest.Eventually(c.t, time.Minute, 100*time.Millisecond, func() error {
			if code := c.readyz(); code != http.StatusOK {
				return fmt.Errorf("readyz %d", code)
			}
			return nil
		})
		readiness += fmt.Sprintf(", 200 again %s after", time.Since(recovered).Round(100*time.Millisecond))
		if !strings.Contains(readiness, "503 while cut") {
			c.t.Errorf("clickhouse-0 reported ready while ClickHouse was cut off")
		}
	}
	c.record("cut "+store+" connections", fmt.Sprintf("every connection closed, new ones refused for %s%s", d, readiness))
}

func (c *cluster) readyz() int {
	resp, err := http.Get("http://" + c.opsAddr + "/readyz")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (c *cluster) slow(p *proxy, store string, latency, d time.Duration) {
	p.setLatency(latency)
	time.Sleep(d) // the fault: the link is slow this long
	p.setLatency(0)
	c.record("slow "+store+" link", fmt.Sprintf("+%s per chunk for %s", latency, d))
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// newCluster starts ingest and the given number of instances of every
// other role on fresh topics, schema and database.
func newCluster(t *testing.T, bin, name string, instances int) *cluster {
	t.Helper()
	brokers := strings.Join(kappatest.Brokers(t), ",")
	pg, ch := kappatest.Postgres(t), kappatest.ClickHouse(t)
	c := &cluster{
		t: t, bin: bin, dir: t.TempDir(), procs: map[string]*process{}, started: time.Now(),
		topics: kappatest.Name(t, name), database: ch.Database, schema: pg.Schema,
	}
	c.chProxy = newProxy(t, ch.Addr[0])
	pgHost := strings.SplitN(strings.SplitN(pg.URL, "@", 2)[1], "/", 2)[0]
	c.pgProxy = newProxy(t, pgHost)
	c.pgURL = strings.Replace(pg.URL, pgHost, c.pgProxy.addr(), 1)
	c.pgDirect = pg.URL
	c.ingest = "127.0.0.1:" + kappatest.FreePort(t)
	c.baseEnv = []string{
		"KAPPA_KAFKA_BROKERS=" + brokers, "KAPPA_TOPIC_PREFIX=" + c.topics, "KAPPA_GROUP_PREFIX=" + c.topics,
		"KAPPA_PARTITIONS=4",
		"KAPPA_POSTGRES_URL=" + c.pgURL, "KAPPA_POSTGRES_SCHEMA=" + pg.Schema,
		"KAPPA_CLICKHOUSE_ADDR=" + c.chProxy.addr(), "KAPPA_CLICKHOUSE_DATABASE=" + ch.Database,
		"KAPPA_MAX_BATCH_RECORDS=200", "KAPPA_CLICKHOUSE_FLUSH_INTERVAL=20ms", "KAPPA_POSTGRES_FLUSH_INTERVAL=20ms", "KAPPA_SESSION_TIMEOUT=6s",
		"KAPPA_HTTP_ADDR=" + c.ingest, "KAPPA_AUTH=none", "KAPPA_LOG_LEVEL=info",
		// Each instance keeps its store across its restarts, as on a
		// volume, and the test's directory goes with the test.
		"KAPPA_STATE_DIR=" + filepath.Join(c.dir, "state"),
	}
	t.Cleanup(func() {
		c.stopAll()
		if t.Failed() {
			kept := filepath.Join("..", ".stack", "faults-logs", t.Name())
			_ = os.MkdirAll(kept, 0o755)
			for name, p := range c.procs {
				t.Logf("--- last lines of %s:\n%s", name, tail(p.log, 15))
				if b, err := os.ReadFile(p.log); err == nil {
					_ = os.WriteFile(filepath.Join(kept, name+".log"), b, 0o644)
				}
			}
			t.Logf("full logs kept in %s", kept)
		}
	})
	migrate := exec.CommandContext(t.Context(), bin, "migrate")
	migrate.Env = append(os.Environ(), c.baseEnv...)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	c.start("ingest", "ingest")
	for i := range instances {
		c.start(fmt.Sprintf("process-%d", i), "process")
		c.start(fmt.Sprintf("clickhouse-%d", i), "project", "clickhouse")
		c.start(fmt.Sprintf("postgres-%d", i), "project", "postgres")
	}
	kappatest.Eventually(t, 60*time.Second, 50*time.Millisecond, func() error {
		resp, err := http.Get("http://" + c.ingest + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return c
}

// TestFaults is the suite: faults at several points of a steady workload,
// each followed by a check that every member is back and consuming, then
// the oracle.
func TestFaults(t *testing.T) {
	enabled(t)
	c := newCluster(t, build(t, ""), "faults", 2)
	w := startWorkload(t, "http://"+c.ingest, 10, 40*time.Millisecond)

	step := func() { time.Sleep(1500 * time.Millisecond) } // let the workload run between faults
	step()
	c.kill("clickhouse-0")
	step()
	c.kill("postgres-1")
	step()
	c.kill("process-0")
	step()
	c.kill("ingest")
	c.checkLiveness("SIGKILLs of one instance of every role")
	c.injectPoison(3)
	c.killFor("clickhouse-1", 8*time.Second)
	c.killFor("process-1", 8*time.Second)
	c.checkLiveness("instances down past the session timeout")
	c.cut(c.chProxy, "clickhouse", 4*time.Second)
	step()
	c.cut(c.pgProxy, "postgres", 4*time.Second)
	step()
	c.slow(c.chProxy, "clickhouse", 150*time.Millisecond, 4*time.Second)
	c.slow(c.pgProxy, "postgres", 150*time.Millisecond, 4*time.Second)
	c.checkLiveness("cut and slow store links")

	// Pauses past the session timeout: the group moves the member's
	// partitions while it may hold a batch (a slow store link keeps one
	// in flight), and it must neither write it twice nor stay out.
	c.chProxy.setLatency(50 * time.Millisecond)
	c.pause("clickhouse-0", 9*time.Second)
	c.chProxy.setLatency(0)
	c.checkLiveness("SIGSTOP of clickhouse-0")
	c.pgProxy.setLatency(50 * time.Millisecond)
	c.pause("postgres-1", 9*time.Second)
	c.pgProxy.setLatency(0)
	c.checkLiveness("SIGSTOP of postgres-1")
	c.pause("process-0", 9*time.Second)
	c.checkLiveness("SIGSTOP of process-0")
	c.pause("ingest", 9*time.Second)
	c.checkLiveness("SIGSTOP of ingest")

	c.restartStore("clickhouse")
	step()
	c.restartStore("postgres")
	c.checkLiveness("store restarts")

	// The broker: restarted under load, restarted while nothing flows,
	// away past the session timeout with a role started meanwhile, and
	// restarted in the middle of a rebalance.
	c.restartStore("kafka")
	c.checkLiveness("kafka restarted under load")
	w.pause()
	c.checkLiveness("the workload pausing")
	c.restartStore("kafka")
	w.resume()
	c.checkLiveness("kafka restarted while idle")
	c.kafkaOutage(15*time.Second, "for 15s, postgres-1 started meanwhile", func() { c.relaunch("postgres-1") })
	c.checkLiveness("kafka away for 15s")
	c.start("clickhouse-2", "project", "clickhouse")
	c.restartStore("kafka")
	c.checkLiveness("kafka restarted while clickhouse-2 joined")
	c.remove("clickhouse-2")
	c.checkLiveness("clickhouse-2 leaving")
	// Parking after the broker's faults: the dead-letter followers are back.
	c.injectPoison(3)

	c.kill("postgres-0")
	c.kill("clickhouse-0")
	c.kill("process-1")
	step()
	c.kill("ingest")
	c.checkLiveness("SIGKILLs at the end")

	acked := w.stop(t)
	report := c.check(t, acked, 3*time.Minute)
	c.printTable(t, w, report)
	if !report.ok() {
		t.Fatal("the oracle found violations; see the table above")
	}
}

// TestFaultsNegativeControl runs a short workload with kills against a
// build whose projection trusts Kafka's auto-committed offsets and inserts
// redelivered rows again. The oracle must catch it.
func TestFaultsNegativeControl(t *testing.T) {
	enabled(t)
	c := newCluster(t, build(t, "kappa_broken"), "broken", 2)
	w := startWorkload(t, "http://"+c.ingest, 10, 40*time.Millisecond)
	for range 3 {
		time.Sleep(2 * time.Second) // let rows flow between kills
		c.kill("clickhouse-0")
		c.kill("clickhouse-1")
	}
	acked := w.stop(t)
	report := c.check(t, acked, 90*time.Second)
	c.printTable(t, w, report)
	var caught []string
	for _, f := range report.failures() {
		if strings.Contains(f.name, "exactly once") {
			caught = append(caught, f.name)
		}
	}
	if len(caught) == 0 {
		t.Fatal("the oracle passed a projection that duplicates redelivered rows: it cannot see what it must")
	}
	t.Logf("negative control: the oracle caught the broken projection in %d checks: %s", len(caught), strings.Join(caught, "; "))
}

func (c *cluster) printTable(t *testing.T, w *workload, r *report) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "\n%-8s  %-34s  %s\n", "at", "fault", "detail")
	for _, f := range c.faults {
		fmt.Fprintf(&b, "%-8s  %-34s  %s\n", f.at, f.fault, f.detail)
	}
	fmt.Fprintf(&b, "\nworkload: %d commands acknowledged, %d HTTP attempts, %d retried after errors\n", w.ackedCount(), w.attempts.Load(), w.retries.Load())
	fmt.Fprintf(&b, "\n%-64s  %-6s  %s\n", "oracle check", "result", "found")
	for _, ch := range r.checks {
		result := "ok"
		if !ch.ok {
			result = "FAIL"
		}
		fmt.Fprintf(&b, "%-64s  %-6s  %s\n", ch.name, result, ch.found)
	}
	t.Log(b.String())
}
