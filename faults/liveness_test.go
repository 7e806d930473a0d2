package faults_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
)

// liveBound is how long the groups may take to be whole and consuming
// again after a fault: a member expelled by a pause or an outage waits for
// the session timeout (6s here) before it rejoins, and a processor that
// takes over waits up to the transaction timeout (10s) for its
// predecessor's open transaction.
const liveBound = 90 * time.Second

// groupRoles maps each consumer group's suffix to the role whose instances
// are its members.
var groupRoles = map[string]string{"processor": "process", "clickhouse": "clickhouse", "postgres": "postgres"}

// instances returns the names of the running instances of a role.
func (c *cluster) instances(role string) []string {
	var names []string
	for name := range c.procs {
		if strings.HasPrefix(name, role+"-") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// pause stops a role with SIGSTOP for d and lets it continue, as a long
// GC pause, a frozen VM or a partition between it and Kafka does. Past
// the session timeout the group expels it while it may hold a batch.
func (c *cluster) pause(name string, d time.Duration) {
	c.t.Helper()
	p := c.procs[name]
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatalf("SIGSTOP %s: %v", name, err)
	}
	time.Sleep(d) // the fault: a process that does not run
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatalf("SIGCONT %s: %v", name, err)
	}
	c.record("SIGSTOP "+name, fmt.Sprintf("stopped for %s (session timeout 6s), then SIGCONT", d))
}

// kafkaOutage stops the broker, runs during (nil: nothing) while it is
// down, keeps it down for at least down, and starts it again.
func (c *cluster) kafkaOutage(down time.Duration, what string, during func()) {
	c.t.Helper()
	start := time.Now()
	c.stack("down", "kafka")
	if during != nil {
		during()
	}
	// A member that cannot reach its group is not ready, and says so on
	// /readyz and in its metrics.
	readiness := "clickhouse-0 never said it was not ready"
	for time.Now().Before(start.Add(down)) {
		code, body := c.get("/readyz")
		_, metrics := c.get("/metrics?name=kappa_group_member_ready")
		if code == http.StatusServiceUnavailable && strings.Contains(metrics, `kappa_group_member_ready{role="clickhouse"} 0`) {
			readiness = "clickhouse-0 /readyz 503 (" + strings.TrimSpace(body) + ") and kappa_group_member_ready 0"
			break
		}
		time.Sleep(200 * time.Millisecond) // polling readiness
	}
	if strings.HasPrefix(readiness, "clickhouse-0 never") {
		c.t.Errorf("Kafka away for %s: %s", down, readiness)
	}
	time.Sleep(time.Until(start.Add(down))) // the fault: the broker is gone this long
	c.stack("up", "kafka")
	c.record("kafka down "+what, fmt.Sprintf("down and up again in %s; %s", time.Since(start).Round(100*time.Millisecond), readiness))
}

// relaunch SIGKILLs a role and starts it again at once; with the broker
// down it must wait for it instead of exiting.
func (c *cluster) relaunch(name string) {
	c.t.Helper()
	p := c.procs[name]
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	waitExit(p.cmd)
	c.launch(p)
}

// get fetches a path of clickhouse-0's ops address and returns the status
// and body; 0 if it does not answer.
func (c *cluster) get(path string) (int, string) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + c.opsAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// logLines counts the lines of a role's log that contain s.
func (c *cluster) logLines(name, s string) int {
	b, err := os.ReadFile(c.procs[name].log)
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// exited returns the roles whose process has ended.
func (c *cluster) exited() []string {
	var names []string
	for name, p := range c.procs {
		if err := p.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// checkLiveness waits until every consumer group has each running instance
// of its role as a member, every partition assigned, and has consumed up to
// where its topic ended when the check began; it fails the test if that
// takes longer than liveBound. It also asks ingest for one decision, which
// needs the processors and ingest's outcome reader, and clickhouse-0's
// /readyz, which must say ready again.
func (c *cluster) checkLiveness(after string) {
	c.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.t.Context(), liveBound+30*time.Second)
	defer cancel()
	if gone := c.exited(); len(gone) > 0 {
		c.t.Errorf("after %s: roles exited: %v", after, gone)
	}
	brokers := kappatest.Brokers(c.t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	names := kafka.TopicsFor(c.topics)

	var why error
	targets := map[string]map[int32]int64{}
	deadline := start.Add(liveBound)
	for {
		why = nil
		if len(targets) == 0 {
			// Where the topics end now; a broker that is still starting
			// cannot say, so this is retried like the rest.
			commands, err := adm.ListEndOffsets(ctx, names.Commands)
			if err == nil {
				err = commands.Error()
			}
			if err != nil {
				why = fmt.Errorf("list end offsets of %s: %w", names.Commands, err)
			} else {
				events := dataEnds(c.t, brokers, names.Events)
				targets[c.topics+"-processor"] = map[int32]int64{}
				commands.Each(func(o kadm.ListedOffset) { targets[c.topics+"-processor"][o.Partition] = o.Offset })
				targets[c.topics+"-clickhouse"] = events
				targets[c.topics+"-postgres"] = events
			}
		}
		if why == nil {
			why = c.groupsWhole(ctx, adm, names, targets)
		}
		if why == nil {
			why = c.decides()
		}
		if why == nil {
			if code, body := c.get("/readyz"); code != http.StatusOK {
				why = fmt.Errorf("clickhouse-0 /readyz %d: %s", code, strings.TrimSpace(body))
			}
		}
		if why == nil {
			c.record("check: all live", fmt.Sprintf("after %s: every member back, every partition assigned and consumed, a decision answered; took %s", after, time.Since(start).Round(100*time.Millisecond)))
			return
		}
		if time.Now().After(deadline) {
			c.record("check: NOT LIVE", fmt.Sprintf("after %s: %v", after, why))
			c.t.Errorf("after %s, not live within %s: %v", after, liveBound, why)
			return
		}
		time.Sleep(250 * time.Millisecond) // polling the groups
	}
}

// groupsWhole says what keeps the groups from being whole and caught up
// with targets, or nil.
func (c *cluster) groupsWhole(ctx context.Context, adm *kadm.Client, names kafka.Topics, targets map[string]map[int32]int64) error {
	var problems []error
	for suffix, role := range groupRoles {
		group := c.topics + "-" + suffix
		topic := names.Events
		if suffix == "processor" {
			topic = names.Commands
		}
		described, err := adm.DescribeGroups(ctx, group)
		if err == nil {
			err = described.Error()
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("describe %s: %w", group, err))
			continue
		}
		d := described[group]
		var members []string
		for _, m := range d.Members {
			if m.InstanceID != nil {
				members = append(members, *m.InstanceID)
			}
		}
		sort.Strings(members)
		if want := c.instances(role); !slices.Equal(members, want) || d.State != "Stable" {
			problems = append(problems, fmt.Errorf("group %s is %s with members %v, want %v", group, d.State, members, want))
			continue
		}
		assigned := d.AssignedPartitions().Sorted()
		var got []int32
		for _, tp := range assigned {
			if tp.Topic == topic {
				got = tp.Partitions
			}
		}
		if len(got) != len(targets[group]) {
			problems = append(problems, fmt.Errorf("group %s has partitions %v of %s assigned, want %d", group, got, topic, len(targets[group])))
			continue
		}
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			problems = append(problems, fmt.Errorf("fetch offsets of %s: %w", group, err))
			continue
		}
		for p, want := range targets[group] {
			o, ok := committed.Lookup(topic, p)
			if want > 0 && (!ok || o.At < want) {
				problems = append(problems, fmt.Errorf("group %s is at %d on %s/%d, the topic had %d", group, o.At, topic, p, want))
			}
		}
	}
	return errors.Join(problems...)
}

// dataEnds returns, per partition of a topic, the offset after its last
// committed record: markers of transactions follow it, and no consumer
// commits past those.
func dataEnds(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	records, ends := kappatest.ReadTopic(t, kafka.Connection{Brokers: brokers}, topic)
	out := make(map[int32]int64, len(ends))
	for p := range ends {
		out[p] = 0
	}
	for _, r := range records {
		out[r.Partition] = max(out[r.Partition], r.Offset+1)
	}
	return out
}

// decides sends one command with Prefer: wait and returns nil once it is
// decided (200 or 409), which needs ingest, a processor and ingest's
// outcome reader.
func (c *cluster) decides() error {
	body := fmt.Sprintf(`{"type":"cart.add_product","aggregate_id":"probe-%d","data":{"product_id":"p1","quantity":1,"unit_price_cents":1}}`, time.Now().UnixNano())
	req, err := http.NewRequestWithContext(c.t.Context(), http.MethodPost, "http://"+c.ingest+"/v1/commands", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "wait=10")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("probe command: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("probe command answered %d, not a decision", resp.StatusCode)
	}
	return nil
}

// TestBrokerRestartWhileIdle: one instance of every role; commands; the
// broker restarts while nothing flows; every member must rejoin, and
// commands sent after it must reach both stores.
func TestBrokerRestartWhileIdle(t *testing.T) {
	enabled(t)
	c := newCluster(t, build(t, ""), "idle", 1)
	w := newWorkload("http://"+c.ingest, 6, 0)
	for range 2 {
		if err := w.send(); err != nil {
			t.Fatal(err)
		}
	}
	c.checkLiveness("start")
	c.restartStore("kafka")
	for range 2 {
		if err := w.send(); err != nil {
			t.Fatal(err)
		}
	}
	c.checkLiveness("kafka restarted while idle")
	report := c.check(t, w.snapshot(), time.Minute)
	c.printTable(t, w, report)
	if !report.ok() {
		t.Fatal("the oracle found violations; see the table above")
	}
}

// TestPausedClickHouseWriter: two ClickHouse projectors under load; one is
// stopped past its session timeout while it writes, so the other takes its
// partitions and writes them; when it continues, nothing it held may land
// twice.
func TestPausedClickHouseWriter(t *testing.T) {
	enabled(t)
	c := newCluster(t, build(t, ""), "pause", 1)
	c.start("clickhouse-1", "project", "clickhouse")
	w := startWorkload(t, "http://"+c.ingest, 10, 40*time.Millisecond)
	time.Sleep(2 * time.Second) // let the workload run before the fault
	for i, name := range []string{"clickhouse-0", "clickhouse-1"} {
		other := fmt.Sprintf("clickhouse-%d", 1-i)
		fencedBefore := c.logLines(other, "fenced off a former writer")
		// A slow link keeps a batch in flight most of the time, so the
		// pause most likely comes while the projector holds one.
		c.chProxy.setLatency(50 * time.Millisecond)
		c.pause(name, 10*time.Second)
		c.chProxy.setLatency(0)
		c.checkLiveness("SIGSTOP of " + name)
		if c.logLines(other, "fenced off a former writer") == fencedBefore {
			t.Errorf("%s took the partitions of %s without fencing it off", other, name)
		}
		t.Logf("%s hit the fence when it continued: %d times", name, c.logLines(name, "fenced off: the group gave"))
	}
	acked := w.stop(t)
	report := c.check(t, acked, 2*time.Minute)
	c.printTable(t, w, report)
	if !report.ok() {
		t.Fatal("the oracle found violations; see the table above")
	}
}
