package processor_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/encoding/json"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/schemas"
)

// group is the consumer group of every processor in these tests; each test
// has a broker of its own.
const group = "processors"

// waitFor bounds every wait of these tests for the processors to catch up.
const waitFor = 8 * time.Second

// TestDecidedOnceAcrossAbort makes one transaction abort after the
// processor has decided its commands in memory, and checks that the retry
// decides each command once, from state rebuilt out of the committed events
// rather than from the state the aborted decisions left behind.
func TestDecidedOnceAcrossAbort(t *testing.T) {
	tests := []struct {
		name string
		// decideInterrupted writes batch and waits until it is decided,
		// interrupting the transaction that first decides it.
		decideInterrupted func(t *testing.T, c *cluster, batch []command)
	}{
		{
			// The events and outcomes are written; committing the
			// command offsets into the transaction fails, so End aborts.
			name: "offset commit fails",
			decideInterrupted: withFault(func(kafka.Topics) kfake.Fault {
				return kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Group: group, Err: kerr.UnknownServerError}
			}),
		},
		{
			// Writing the events fails; the processor aborts.
			name: "event produce fails",
			decideInterrupted: withFault(func(topics kafka.Topics) kfake.Fault {
				return kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topics.Events, Err: kerr.InvalidRecord}
			}),
		},
		{
			// A second processor joins while the first one's events are
			// on their way: the first one's partitions are revoked in
			// the middle of its transaction, which the session aborts.
			// The partition that moves is decided by the newcomer, whose
			// rebuild must not count the aborted events.
			name:              "rebalance while producing",
			decideInterrupted: rebalanceWhileProducing,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 2)
			a := c.start(t, "a")

			// State before the abort, so that the aborted decisions
			// change state that already exists.
			c.sendAndWait(t, adds(0, "cart-0", 3)...)
			c.sendAndWait(t, adds(1, "cart-1", 3)...)

			tt.decideInterrupted(t, c, append(adds(0, "cart-0", 3), adds(1, "cart-1", 3)...))
			if a.obs.aborted.Load() == 0 {
				t.Fatal("no transaction aborted")
			}

			// And the processors go on deciding after the abort.
			c.sendAndWait(t, append(adds(0, "cart-0", 2), adds(1, "cart-1", 2)...)...)
			c.verify(t)
		})
	}
}

// withFault injects a broker fault into the next request it matches.
func withFault(f func(kafka.Topics) kfake.Fault) func(*testing.T, *cluster, []command) {
	return func(t *testing.T, c *cluster, batch []command) {
		t.Helper()
		h := c.broker.Fault(f(c.topics))
		t.Cleanup(h.Remove)
		c.sendAndWait(t, batch...)
		if h.Hits() == 0 {
			t.Fatal("the fault never fired")
		}
	}
}

// rebalanceWhileProducing holds the first transactional produce request
// for batch at the broker until a second processor, "b", has joined the
// group and taken a partition.
func rebalanceWhileProducing(t *testing.T, c *cluster, batch []command) {
	t.Helper()
	holding, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseProduce := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseProduce)
	var held atomic.Bool
	c.broker.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		// Only the processors produce in transactions.
		if req.(*kmsg.ProduceRequest).TransactionID == nil || !held.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		c.broker.DropControl()
		close(holding)
		c.broker.SleepControl(func() { <-release })
		return nil, nil, false // now the broker handles it
	})
	if err := c.send(t.Context(), batch...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-holding:
	case <-time.After(waitFor):
		t.Fatal("the processor never produced the batch's events")
	}
	c.start(t, "b")
	c.waitMembers(t, "a", "b")
	releaseProduce()
	c.waitDecided(t)
}

// TestRebuildFailureRetried fails the restore of a partition's state
// after a restart: the processor must decide nothing without the state,
// and decide the commands once a restore succeeds.
func TestRebuildFailureRetried(t *testing.T) {
	c := newCluster(t, 1)
	a := c.start(t, "a")
	c.sendAndWait(t, adds(0, "cart", 3)...)
	a.stop(t)

	// Until the restarted processor's restore has met the fault, nothing
	// else lists the offsets of the state topic.
	h := c.broker.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: c.topics.State, Err: kerr.UnknownServerError})
	t.Cleanup(h.Remove)
	a = c.start(t, "a")
	if err := c.send(t.Context(), adds(0, "cart", 3)...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if err := h.Wait(ctx, 1); err != nil {
		t.Fatalf("the restore never met the fault: %v", err)
	}
	c.waitDecided(t)
	c.sendAndWait(t, adds(0, "cart", 2)...)
	a.stop(t)
	c.verify(t)
}

// TestDecidedOnceAcrossRebalanceAndRestart keeps commands flowing while a
// second processor joins the group, the first one stops, and then comes
// back as a new instance: every command is decided exactly once and every
// aggregate's versions run 1, 2, 3, … without gaps or repeats.
func TestDecidedOnceAcrossRebalanceAndRestart(t *testing.T) {
	c := newCluster(t, 4)
	carts := []string{"cart-0", "cart-1", "cart-2", "cart-3"}
	round := func() []command {
		var cmds []command
		for i, cart := range carts {
			cmds = append(cmds, adds(int32(i), cart, 2)...)
		}
		return cmds
	}
	// streaming writes commands in rounds until stop, without waiting
	// for them to be decided, so that the group changes mid-stream.
	streaming := func(t *testing.T) (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		go func() {
			defer close(done)
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := c.send(ctx, round()...); err != nil && ctx.Err() == nil {
					t.Errorf("send commands: %v", err)
					return
				}
			}
		}()
		return stop
	}

	a := c.start(t, "a")
	c.sendAndWait(t, round()...)

	stop := streaming(t)
	b := c.start(t, "b")
	c.waitMembers(t, "a", "b")
	c.waitDecided(t)
	a.stop(t) // a rebalance: b takes every partition
	c.waitMembers(t, "b")
	c.waitDecided(t)
	a = c.start(t, "a") // a restart under the same transactional id
	c.waitMembers(t, "a", "b")
	c.waitDecided(t)
	stop()

	c.sendAndWait(t, round()...)
	b.stop(t)
	a.stop(t) // once Run returns, the observers have heard of every commit
	if a.obs.accepted.Load() == 0 || b.obs.accepted.Load() == 0 {
		t.Errorf("accepted by the restarted a: %d, by b: %d; want both to have decided commands",
			a.obs.accepted.Load(), b.obs.accepted.Load())
	}
	c.verify(t)
}

// TestStateRebuiltWhenPartitionComesBack moves a partition to a second
// processor, lets that one decide commands on it, and moves it back: the
// first processor must decide from the events the second one wrote, not
// from what it knew before the partition left.
func TestStateRebuiltWhenPartitionComesBack(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(t, "a")
	c.sendAndWait(t, append(adds(0, "cart-0", 3), adds(1, "cart-1", 3)...)...)

	b := c.start(t, "b")
	moved := c.waitMembers(t, "a", "b")["b"]
	if len(moved) != 1 {
		t.Fatalf("b holds partitions %v, want one of the two", moved)
	}
	c.sendAndWait(t, append(adds(0, "cart-0", 3), adds(1, "cart-1", 3)...)...)

	b.stop(t) // the partition comes back to a
	if got := b.obs.accepted.Load(); got != 3 {
		t.Fatalf("b accepted %d commands, want the 3 of its partition %d", got, moved[0])
	}
	c.waitMembers(t, "a")
	c.sendAndWait(t, append(adds(0, "cart-0", 3), adds(1, "cart-1", 3)...)...)
	a.stop(t)
	if got := a.obs.accepted.Load(); got != 15 {
		t.Errorf("a accepted %d commands, want the other 15", got)
	}
	c.verify(t)
}

// TestRebuildWaitsForOpenTransaction starts a rebuild while a transaction
// on the events topic is open, and ends the transaction only once the
// rebuild has read the partition's offsets: a rebuild that stopped at the
// last stable offset would miss what the transaction wrote.
func TestRebuildWaitsForOpenTransaction(t *testing.T) {
	tests := []struct {
		name   string
		commit bool
		// What the rebuild returns: the cart's version and the number
		// of events replayed.
		wantVersion int64
		wantEvents  int
	}{
		{name: "commit", commit: true, wantVersion: 2, wantEvents: 2},
		{name: "abort", commit: false, wantVersion: 1, wantEvents: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 1)
			ctx := t.Context()
			a := c.start(t, "a")
			c.sendAndWait(t, adds(0, "cart", 1)...)
			a.stop(t)

			// A transaction left open, as by a processor that died
			// mid-transaction, holding the cart's second event.
			txn, err := c.conn.NewClient(kgo.TransactionalID("writer"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(txn.Close)
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := txn.ProduceSync(ctx, kafka.Record(c.topics.Events, 0, productAdded("cart", 2))).FirstErr(); err != nil {
				t.Fatal(err)
			}

			listed := c.broker.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Topic: c.topics.Events, Observe: true, Count: -1})
			t.Cleanup(listed.Remove)
			type result struct {
				parts  map[int32]*processor.Replayed
				events int
				err    error
			}
			done, exited := make(chan result, 1), make(chan struct{})
			t.Cleanup(func() { <-exited }) // ctx has ended by then
			go func() {
				defer close(exited)
				parts, events, err := processor.Rebuild(ctx, c.conn, c.topics.Events, []int32{0}, time.Now().Add(-time.Hour), logger(t, "rebuild"))
				done <- result{parts, events, err}
			}()

			// Once the rebuild has asked for the partition's offsets,
			// it has seen the open transaction: the broker answers
			// requests one at a time, so that answer predates the end
			// of the transaction below.
			waitCtx, cancel := context.WithTimeout(ctx, waitFor)
			defer cancel()
			if err := listed.Wait(waitCtx, 1); err != nil {
				t.Fatalf("the rebuild never listed the offsets of %s: %v", c.topics.Events, err)
			}
			select {
			case r := <-done:
				t.Fatalf("Rebuild returned while a transaction was open: cart at version %d, %d events, err %v",
					versionOf(r.parts, 0, "cart"), r.events, r.err)
			default:
			}
			if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(tt.commit)); err != nil {
				t.Fatal(err)
			}

			var r result
			select {
			case r = <-done:
			case <-time.After(waitFor):
				t.Fatal("Rebuild did not return after the transaction ended")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			if got := versionOf(r.parts, 0, "cart"); got != tt.wantVersion {
				t.Errorf("cart version = %d, want %d", got, tt.wantVersion)
			}
			if r.events != tt.wantEvents {
				t.Errorf("events replayed = %d, want %d", r.events, tt.wantEvents)
			}
		})
	}
}

// TestKeyedRetryDecidedOnce sends a command with an idempotency key twice
// under the same command id, as a client retry does: the retry gets an
// outcome that points at the original and repeats its events, and no new
// events are written.
func TestKeyedRetryDecidedOnce(t *testing.T) {
	tests := []struct {
		name string
		// between runs once the original is decided, before its retry
		// is written; nil writes both before the processor starts, so
		// that its first batch holds both.
		between func(t *testing.T, c *cluster, a *running) *running
	}{
		{name: "same transaction"},
		{
			name:    "later transaction",
			between: func(_ *testing.T, _ *cluster, a *running) *running { return a },
		},
		{
			// The restarted processor knows the original only from its
			// outcome on the events topic.
			name: "after a restart",
			between: func(t *testing.T, c *cluster, a *running) *running {
				a.stop(t)
				return c.start(t, "a")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, 1)
			original := addProduct(0, "cart", "retried")
			original.env.IdempotencyKey = "key-1"
			other := adds(0, "cart", 1)[0]
			var a *running
			if tt.between == nil {
				if err := c.send(t.Context(), original, other, original); err != nil {
					t.Fatal(err)
				}
				a = c.start(t, "a")
				c.waitDecided(t)
			} else {
				a = c.start(t, "a")
				c.sendAndWait(t, original, other)
				a = tt.between(t, c, a)
				c.sendAndWait(t, original)
			}
			// An unkeyed command after the retry: the retry must not
			// have taken a version.
			c.sendAndWait(t, adds(0, "cart", 1)...)
			a.stop(t)
			c.verify(t)

			log := c.readEvents(t)
			var first, retry *decision
			for i, d := range log.outcomes {
				if d.outcome.CommandID != original.env.ID {
					continue
				}
				if d.outcome.DuplicateOf == nil {
					first = &log.outcomes[i]
				} else {
					retry = &log.outcomes[i]
				}
			}
			if first == nil || retry == nil {
				t.Fatalf("the keyed command has a first decision: %t, a duplicate outcome: %t; want both", first != nil, retry != nil)
			}
			var events int
			for _, e := range log.events {
				if e.env.CommandID == original.env.ID {
					events++
				}
			}
			if events != 1 {
				t.Errorf("the keyed command has %d events, want the 1 of its first decision", events)
			}
			if *retry.outcome.DuplicateOf != first.outcome.CommandPosition {
				t.Errorf("retry is a duplicate of %v, want %v", *retry.outcome.DuplicateOf, first.outcome.CommandPosition)
			}
			if retry.outcome.Status != first.outcome.Status || !slices.Equal(retry.outcome.Events, first.outcome.Events) {
				t.Errorf("retry outcome %+v does not repeat the original %+v", retry.outcome, first.outcome)
			}
			if a.obs.duplicates.Load() != 1 {
				t.Errorf("duplicates observed = %d, want 1", a.obs.duplicates.Load())
			}
			if tt.between == nil {
				a.obs.mu.Lock()
				defer a.obs.mu.Unlock()
				if want := (commit{accepted: 2, duplicates: 1}); len(a.obs.commits) == 0 || a.obs.commits[0] != want {
					t.Errorf("commits %+v, want the first to be %+v", a.obs.commits, want)
				}
			}
		})
	}
}

// cluster is an in-process Kafka with Kappa's topics, and what the test
// wrote to it.
type cluster struct {
	broker   *kfake.Cluster
	conn     kafka.Connection
	topics   kafka.Topics
	producer *kgo.Client
	admin    *kadm.Client
	stateDir string

	mu   sync.Mutex
	sent []command // with their positions
}

func newCluster(t *testing.T, partitions int32) *cluster {
	t.Helper()
	topics := kafka.TopicsFor("kappa")
	broker, err := kfake.NewCluster(kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topics.Commands, topics.Events, topics.EventsDeadLetter, topics.State))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	conn := kafka.Connection{
		Brokers: broker.ListenAddrs(),
		// Rebalances finish once every member has heard of them at its
		// next heartbeat; the default 3s would make each take seconds.
		Opts: []kgo.Opt{
			kgo.HeartbeatInterval(250 * time.Millisecond),
			// Every LZ4 writer and reader clears megabytes of buffers,
			// which the race detector makes cost more than all the
			// rest of a test; compression has no part in what these
			// tests check. (Not ProducerBatchCompression: clients
			// built concurrently from one such option race on its
			// codec slice.)
			kgo.WithCompressor(uncompressed{}),
		},
	}
	producer, err := conn.NewClient(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	return &cluster{broker: broker, conn: conn, topics: topics, producer: producer, admin: kadm.NewClient(producer), stateDir: t.TempDir()}
}

// command is one command record, built as ingest builds it.
type command struct {
	partition int32
	env       schemas.Envelope
	position  schemas.Position // once written
}

func addProduct(partition int32, cart, product string) command {
	quantity, price := int64(1), int64(250)
	data, err := json.Marshal(schemas.AddProductV1{ProductID: product, Quantity: &quantity, UnitPriceCents: &price})
	if err != nil {
		panic(err)
	}
	return command{partition: partition, env: schemas.Envelope{
		ID: uuid.NewString(), Type: schemas.AddProductToCart, Source: "kappa/test", Time: time.Now().UTC(),
		SchemaVersion: 1, AggregateID: cart, Tenant: "tenant", Data: data,
	}}
}

// adds returns n commands that each add a product to cart.
func adds(partition int32, cart string, n int) []command {
	cmds := make([]command, n)
	for i := range cmds {
		cmds[i] = addProduct(partition, cart, fmt.Sprintf("product-%d", i))
	}
	return cmds
}

// productAdded is a cart.product_added event as a processor writes it.
func productAdded(cart string, version int64) schemas.Envelope {
	data, err := json.Marshal(schemas.CartProductAddedV1{ProductID: "p", Quantity: 1, UnitPriceCents: 250})
	if err != nil {
		panic(err)
	}
	return schemas.Envelope{
		ID: uuid.NewString(), Type: schemas.CartProductAdded, Source: "kappa/test", Time: time.Now().UTC(),
		SchemaVersion: 1, AggregateID: cart, Tenant: "tenant", AggregateVersion: version, CommandID: uuid.NewString(), Data: data,
	}
}

// send writes commands to the commands topic and records them.
func (c *cluster) send(ctx context.Context, cmds ...command) error {
	records := make([]*kgo.Record, len(cmds))
	for i, cmd := range cmds {
		records[i] = kafka.Record(c.topics.Commands, cmd.partition, cmd.env)
	}
	// ProduceSync lists results in the order they completed; each record
	// carries its own offset.
	if err := c.producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range records {
		cmds[i].position = kafka.Position(r)
		c.sent = append(c.sent, cmds[i])
	}
	return nil
}

// sendAndWait writes commands and waits until every command written so far
// has been decided.
func (c *cluster) sendAndWait(t *testing.T, cmds ...command) {
	t.Helper()
	if err := c.send(t.Context(), cmds...); err != nil {
		t.Fatalf("send commands: %v", err)
	}
	c.waitDecided(t)
}

// waitDecided waits until every command record written so far has its
// outcome on the events topic.
func (c *cluster) waitDecided(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	sent := slices.Clone(c.sent)
	c.mu.Unlock()
	kappatest.Eventually(t, waitFor, 50*time.Millisecond, func() error {
		log := c.readEvents(t)
		answered := map[schemas.Position]bool{}
		for _, d := range log.outcomes {
			answered[d.outcome.CommandPosition] = true
		}
		var missing int
		for _, cmd := range sent {
			if !answered[cmd.position] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d commands have no outcome", missing, len(sent))
		}
		return nil
	})
}

// waitMembers waits until the group is stable with exactly the named
// members (by client id) holding every partition, and returns each one's
// partitions of the commands topic.
func (c *cluster) waitMembers(t *testing.T, names ...string) map[string][]int32 {
	t.Helper()
	var held map[string][]int32
	kappatest.Eventually(t, waitFor, 50*time.Millisecond, func() error {
		described, err := c.admin.DescribeGroups(t.Context(), group)
		if err != nil {
			return err
		}
		g, ok := described[group]
		if !ok || g.Err != nil {
			return fmt.Errorf("describe group: %w", g.Err)
		}
		if g.State != "Stable" {
			return fmt.Errorf("group is %s", g.State)
		}
		held = map[string][]int32{}
		var total int
		for _, m := range g.Members {
			assigned, ok := m.Assigned.AsConsumer()
			if !ok {
				return fmt.Errorf("member %s has no consumer assignment", m.ClientID)
			}
			for _, tp := range assigned.Topics {
				if tp.Topic == c.topics.Commands {
					held[m.ClientID] = append(held[m.ClientID], tp.Partitions...)
					total += len(tp.Partitions)
				}
			}
		}
		var members []string
		for _, m := range g.Members {
			members = append(members, m.ClientID)
		}
		slices.Sort(members)
		if !slices.Equal(members, names) {
			return fmt.Errorf("members %v, want %v", members, names)
		}
		for _, name := range names {
			if len(held[name]) == 0 {
				return fmt.Errorf("%s holds no partition: %v", name, held)
			}
		}
		if partitions := c.partitions(t); total != partitions {
			return fmt.Errorf("%d of %d partitions assigned: %v", total, partitions, held)
		}
		return nil
	})
	return held
}

func (c *cluster) partitions(t *testing.T) int {
	t.Helper()
	ends, err := kafka.EndOffsets(t.Context(), c.producer, c.topics.Commands)
	if err != nil {
		t.Fatal(err)
	}
	return len(ends)
}

// decision is an outcome record of the events topic.
type decision struct {
	position schemas.Position
	env      schemas.Envelope
	outcome  schemas.Outcome
}

// event is an event record of the events topic.
type event struct {
	position schemas.Position
	env      schemas.Envelope
}

// eventsLog is the committed content of the events topic, in offset order
// per partition.
type eventsLog struct {
	outcomes []decision
	events   []event
}

// readEvents reads the committed records of the events topic up to its
// last stable offsets.
func (c *cluster) readEvents(t *testing.T) eventsLog {
	t.Helper()
	records, _ := kappatest.ReadTopic(t, c.conn, c.topics.Events)
	var log eventsLog
	for _, r := range records {
		rec, err := kafka.Decode(r)
		if err != nil {
			t.Errorf("undecodable record at %s: %v", kafka.Position(r), err)
			continue
		}
		if o, ok := rec.Payload.(schemas.Outcome); ok {
			log.outcomes = append(log.outcomes, decision{rec.Position, rec.Envelope, o})
		} else {
			log.events = append(log.events, event{rec.Position, rec.Envelope})
		}
	}
	return log
}

// verify checks the events topic against every command written: each
// command record has exactly one outcome; each command id is decided
// exactly once, and only a command with an idempotency key has outcomes
// that are duplicates; the n-th distinct command of an aggregate (in
// command order) is accepted with version n; and the events are exactly
// those the first decisions name, each aggregate's at versions 1, 2, 3, …
func (c *cluster) verify(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	sent := slices.Clone(c.sent)
	c.mu.Unlock()
	log := c.readEvents(t)

	byPosition := map[schemas.Position][]decision{}
	firstByID := map[string][]decision{}
	for _, d := range log.outcomes {
		byPosition[d.outcome.CommandPosition] = append(byPosition[d.outcome.CommandPosition], d)
		if d.outcome.DuplicateOf == nil {
			firstByID[d.outcome.CommandID] = append(firstByID[d.outcome.CommandID], d)
		}
	}
	sentPositions := map[schemas.Position]command{}
	for _, cmd := range sent {
		sentPositions[cmd.position] = cmd
		if n := len(byPosition[cmd.position]); n != 1 {
			t.Errorf("command %s at %s has %d outcomes, want 1", cmd.env.ID, cmd.position, n)
		}
	}
	for pos := range byPosition {
		if _, ok := sentPositions[pos]; !ok {
			t.Errorf("outcome for command position %s, which was never written", pos)
		}
	}

	// Command order per aggregate is offset order: one aggregate, one
	// partition.
	slices.SortFunc(sent, func(a, b command) int {
		return cmp.Or(cmp.Compare(a.position.Partition, b.position.Partition), cmp.Compare(a.position.Offset, b.position.Offset))
	})
	wantVersion := map[string]int64{}
	seen := map[string]bool{}
	wantEvents := map[string]schemas.EventRef{} // event id -> ref
	for _, cmd := range sent {
		id := cmd.env.ID
		firsts := firstByID[id]
		if seen[id] {
			if cmd.env.IdempotencyKey == "" {
				t.Errorf("command %s was written twice without an idempotency key", id)
			}
			for _, d := range byPosition[cmd.position] {
				switch {
				case d.outcome.DuplicateOf == nil:
					t.Errorf("retry of keyed command %s at %s was decided again", id, cmd.position)
				case d.env.AggregateVersion != wantVersion[cmd.env.AggregateID]:
					// A retry decides nothing: like a rejection, it
					// carries the version the aggregate is at.
					t.Errorf("retry of keyed command %s at %s carries version %d, want %s's %d",
						id, cmd.position, d.env.AggregateVersion, cmd.env.AggregateID, wantVersion[cmd.env.AggregateID])
				}
			}
			continue
		}
		seen[id] = true
		if len(firsts) != 1 {
			t.Errorf("command %s has %d first decisions, want 1", id, len(firsts))
			continue
		}
		d := firsts[0]
		if d.outcome.CommandPosition != cmd.position {
			t.Errorf("command %s first decided at %s, want its first record %s", id, d.outcome.CommandPosition, cmd.position)
		}
		if cmd.env.IdempotencyKey == "" {
			for _, o := range byPosition[cmd.position] {
				if o.outcome.DuplicateOf != nil {
					t.Errorf("unkeyed command %s has a duplicate outcome", id)
				}
			}
		}
		if !schemas.ExpectedVersionOK(cmd.env.ExpectedVersion, wantVersion[cmd.env.AggregateID]) {
			if d.outcome.Status != schemas.StatusRejected || d.outcome.Rejection == nil ||
				d.outcome.Rejection.Code != schemas.CodeVersionConflict || len(d.outcome.Events) != 0 {
				t.Errorf("command %s expects version %d of %s, which is at %d: %+v, want a version conflict",
					id, *cmd.env.ExpectedVersion, cmd.env.AggregateID, wantVersion[cmd.env.AggregateID], d.outcome)
			}
			continue
		}
		if d.outcome.Status != schemas.StatusAccepted || len(d.outcome.Events) != 1 {
			t.Errorf("command %s: status %s with %d events, want accepted with 1 (rejection %+v)",
				id, d.outcome.Status, len(d.outcome.Events), d.outcome.Rejection)
			continue
		}
		wantVersion[cmd.env.AggregateID]++
		v := wantVersion[cmd.env.AggregateID]
		ref := d.outcome.Events[0]
		if ref.AggregateVersion != v || d.env.AggregateVersion != v {
			t.Errorf("command %s (#%d of %s) decided at version %d (outcome envelope %d), want %d",
				id, v, cmd.env.AggregateID, ref.AggregateVersion, d.env.AggregateVersion, v)
		}
		wantEvents[ref.ID] = ref
	}

	versions := map[string][]int64{}
	for _, e := range log.events {
		versions[e.env.AggregateID] = append(versions[e.env.AggregateID], e.env.AggregateVersion)
		ref, ok := wantEvents[e.env.ID]
		if !ok {
			t.Errorf("event %s (%s version %d, command %s) at %s is named by no first decision",
				e.env.ID, e.env.AggregateID, e.env.AggregateVersion, e.env.CommandID, e.position)
			continue
		}
		delete(wantEvents, e.env.ID)
		if ref.Position != e.position || ref.AggregateVersion != e.env.AggregateVersion {
			t.Errorf("event %s at %s version %d, but its outcome names %s version %d",
				e.env.ID, e.position, e.env.AggregateVersion, ref.Position, ref.AggregateVersion)
		}
	}
	for id, ref := range wantEvents {
		t.Errorf("event %s (version %d) named by an outcome is not in the events topic", id, ref.AggregateVersion)
	}
	for aggregate, vs := range versions {
		for i, v := range vs {
			if v != int64(i+1) {
				t.Errorf("versions of %s = %v, want 1, 2, 3, … without gaps or repeats", aggregate, vs)
				break
			}
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%d command records, %d distinct commands, %d events", len(sent), len(seen), len(log.events))
}

// running is a processor running in its own goroutine.
type running struct {
	obs    *observer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a processor of the group; name is its client id and, as
// "processor-<name>", its transactional id. Its local store is in the
// cluster's state directory, so that a restart under the same name finds
// it; options change the configuration.
func (c *cluster) start(t *testing.T, name string, options ...func(*processor.Config)) *running {
	t.Helper()
	conn := c.conn
	conn.ClientID = name
	obs := &observer{}
	cfg := processor.Config{
		Kafka:           conn,
		Topics:          c.topics,
		Group:           group,
		TransactionalID: "processor-" + name,
		StateDir:        c.stateDir,
		// Two aggregates in the cache: the tests' few aggregates are
		// looked up in the store and its filter, as most are at scale.
		StateCacheAggregates: 2,
		Observer:             obs,
		Logger:               logger(t, name),
	}
	for _, o := range options {
		o(&cfg)
	}
	p, err := processor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	r := &running{obs: obs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends the processor's Run and waits for it to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after its context ended")
		}
	})
}

// observer counts what a processor reports.
type observer struct {
	accepted, rejected, duplicates, aborted atomic.Int64

	mu          sync.Mutex
	commits     []commit
	decided     int
	restored    int
	held        processor.Held
	maxInMemory int
}

// commit is what one committed transaction decided.
type commit struct{ accepted, rejected, duplicates int }

func (o *observer) Committed(tx processor.Transaction) {
	o.accepted.Add(int64(tx.Accepted))
	o.rejected.Add(int64(tx.Rejected))
	o.duplicates.Add(int64(tx.Duplicates))
	o.mu.Lock()
	defer o.mu.Unlock()
	o.commits = append(o.commits, commit{tx.Accepted, tx.Rejected, tx.Duplicates})
	o.decided += len(tx.Decided)
}

func (o *observer) Restored(records int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.restored += records
}

func (o *observer) Held(h processor.Held) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.held = h
	o.maxInMemory = max(o.maxInMemory, h.InMemory)
}

// state returns the last state held and the records restored so far.
func (o *observer) state() (processor.Held, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.held, o.restored
}

func (o *observer) Aborted() { o.aborted.Add(1) }

// logger writes a component's logs to the test's output, shown when the
// test fails.
func logger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", name)
}

// uncompressed is a kgo.Compressor that leaves every batch as it is.
type uncompressed struct{}

func (uncompressed) Compress(*bytes.Buffer, []byte, ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	return nil, kgo.CodecNone
}

// versionOf returns an aggregate's version in a rebuilt state.
// versionOf is the version of an aggregate of the tenant the test's
// commands carry.
func versionOf(parts map[int32]*processor.Replayed, partition int32, aggregate string) int64 {
	p, ok := parts[partition]
	if !ok {
		return -1
	}
	return p.Aggregates[schemas.AggregateKey("tenant", aggregate)].Version
}
