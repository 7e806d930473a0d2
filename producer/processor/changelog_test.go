package processor_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/schemas"
)

// versionAccepted returns the version the last accepted decision of cart
// left it at, from the outcomes on the events topic.
func (c *cluster) versionAccepted(t *testing.T, cart string) int64 {
	t.Helper()
	var version int64 = -1
	for _, d := range c.readEvents(t).outcomes {
		if d.outcome.AggregateID == schemas.AggregateKey("tenant", cart) && d.outcome.Status == schemas.StatusAccepted {
			version = d.outcome.Events[len(d.outcome.Events)-1].AggregateVersion
		}
	}
	return version
}

// TestStateBootstrappedFromEvents: a deployment whose events predate the
// changelog is decided from its events, and its state lands in the
// changelog, so that a processor without a store restores it from there:
// also the aggregates no command touched since. A changelog that holds
// only an aborted transaction has no state either; and when the
// transaction that writes the rebuilt state aborts, the retry writes it.
func TestStateBootstrappedFromEvents(t *testing.T) {
	for _, tt := range []struct {
		name                            string
		abortedFirst, bootstrapAborting bool
	}{
		{name: "fresh changelog"},
		{name: "aborted changelog transaction first", abortedFirst: true},
		{name: "the bootstrap's transaction aborts", bootstrapAborting: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testStateBootstrappedFromEvents(t, tt.abortedFirst, tt.bootstrapAborting)
		})
	}
}

func testStateBootstrappedFromEvents(t *testing.T, abortedFirst, bootstrapAborting bool) {
	c := newCluster(t, 1)
	if abortedFirst {
		c.writeAborted(t, &kgo.Record{Topic: c.topics.State, Key: []byte("m"), Value: []byte{}})
	}
	history := []schemas.Envelope{productAdded("cart-old", 1), productAdded("cart-old", 2), productAdded("cart-untouched", 1)}
	for _, e := range history {
		if err := c.producer.ProduceSync(t.Context(), kafka.Record(c.topics.Events, 0, e)).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	a := c.start(t, "a")
	first := addProduct(0, "cart-old", "q1")
	if bootstrapAborting {
		withFault(func(kafka.Topics) kfake.Fault {
			return kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Group: group, Err: kerr.UnknownServerError}
		})(t, c, []command{first})
		if a.obs.aborted.Load() == 0 {
			t.Fatal("no transaction aborted")
		}
	} else {
		c.sendAndWait(t, first)
	}
	if got := c.versionAccepted(t, "cart-old"); got != 3 {
		t.Fatalf("the first decision after the history left cart-old at version %d, want 3", got)
	}
	a.stop(t)
	if _, restored := a.obs.state(); restored < len(history) {
		t.Errorf("a replayed %d records, want at least the %d events", restored, len(history))
	}

	b := c.start(t, "b") // no store, and the changelog has the state
	c.sendAndWait(t, addProduct(0, "cart-old", "q2"), addProduct(0, "cart-untouched", "q3"))
	if got := c.versionAccepted(t, "cart-old"); got != 4 {
		t.Errorf("after a restore from the changelog cart-old is at version %d, want 4", got)
	}
	if got := c.versionAccepted(t, "cart-untouched"); got != 2 {
		t.Errorf("after a restore from the changelog cart-untouched is at version %d, want 2", got)
	}
	b.stop(t)
	if _, restored := b.obs.state(); restored == 0 {
		t.Error("b restored nothing from the changelog")
	}
}

// TestStoreOfAnotherClusterIsDropped: a store kept from a Kafka cluster
// that is gone (a development machine whose Kafka was reset) is not
// decided from: its changelog topic has another id.
func TestStoreOfAnotherClusterIsDropped(t *testing.T) {
	first := newCluster(t, 1)
	a := first.start(t, "a")
	first.sendAndWait(t, adds(0, "cart", 3)...)
	a.stop(t)

	second := newCluster(t, 1)
	second.stateDir = first.stateDir
	a = second.start(t, "a")
	second.sendAndWait(t, adds(0, "cart", 2)...)
	a.stop(t)
	if got := second.versionAccepted(t, "cart"); got != 2 {
		t.Errorf("on a new cluster, the cart is at version %d after 2 commands, want 2", got)
	}
	second.verify(t)
}

// TestKeyedOutcomesExpire: the outcome of a keyed command is forgotten
// once its window has passed, in the store and in the changelog (a
// tombstone, which compaction removes): a retry after the window is
// decided again.
func TestKeyedOutcomesExpire(t *testing.T) {
	c := newCluster(t, 1)
	// Every retry comes later than this after its original.
	a := c.start(t, "a", func(cfg *processor.Config) { cfg.IdempotencyWindow = time.Millisecond })
	first := addProduct(0, "cart", "p1")
	first.env.IdempotencyKey = "key-1"
	c.sendAndWait(t, first)
	retry := first
	c.sendAndWait(t, retry)
	a.stop(t)
	if got := a.obs.duplicates.Load(); got != 0 {
		t.Errorf("%d retries answered as duplicates after the window, want none", got)
	}
	if got := c.versionAccepted(t, "cart"); got != 2 {
		t.Errorf("the cart is at version %d, want 2: the retry decided again", got)
	}
	var tombstones int
	records, _ := kappatest.ReadTopic(t, c.conn, c.topics.State)
	for _, r := range records {
		if string(r.Key) == "k"+first.env.ID && r.Value == nil {
			tombstones++
		}
	}
	if tombstones != 1 {
		t.Errorf("%d tombstones for the expired outcome in the changelog, want 1", tombstones)
	}
}

// TestAStoreBehindTheChangelogCatchesUp: a store that lost its latest
// writes, as one does when a processor dies between a commit and its
// write to the store, or when a volume is restored from a backup, reads
// the changelog from its older checkpoint and decides from the committed
// state.
func TestAStoreBehindTheChangelogCatchesUp(t *testing.T) {
	c := newCluster(t, 2)
	a := c.start(t, "a")
	c.sendAndWait(t, append(adds(0, "cart-0", 2), adds(1, "cart-1", 2)...)...)
	a.stop(t)
	dir := filepath.Join(c.stateDir, "processor-a")
	backup := t.TempDir()
	if err := os.CopyFS(backup, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}

	a = c.start(t, "a")
	c.sendAndWait(t, append(adds(0, "cart-0", 3), adds(1, "cart-1", 3)...)...)
	a.stop(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}

	a = c.start(t, "a") // its store two commits behind
	c.sendAndWait(t, append(adds(0, "cart-0", 1), adds(1, "cart-1", 1)...)...)
	a.stop(t)
	if _, restored := a.obs.state(); restored == 0 {
		t.Error("the store behind restored nothing from the changelog")
	}
	for _, cart := range []string{"cart-0", "cart-1"} {
		if got := c.versionAccepted(t, cart); got != 6 {
			t.Errorf("%s is at version %d after 6 commands, want 6", cart, got)
		}
	}
	c.verify(t)
}

// TestARestoreLongerThanATransactionTimeoutFinishes: every fetch of the
// changelog takes longer than the processor's transaction timeout, so a
// restore bounded by it would fail again and again; the restore is not,
// and the processor decides.
func TestARestoreLongerThanATransactionTimeoutFinishes(t *testing.T) {
	c := newCluster(t, 1)
	shortTransactions := func(cfg *processor.Config) { cfg.TransactionTimeout = time.Second }
	a := c.start(t, "a", shortTransactions)
	c.sendAndWait(t, adds(0, "cart", 2)...)
	a.stop(t)

	id, err := kafka.TopicID(t.Context(), c.producer, c.topics.State)
	if err != nil {
		t.Fatal(err)
	}
	var delayed atomic.Int64
	c.broker.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.broker.KeepControl()
		for _, topic := range req.(*kmsg.FetchRequest).Topics {
			if topic.TopicID == id || topic.Topic == c.topics.State {
				delayed.Add(1)
				c.broker.SleepControl(func() { <-time.After(1500 * time.Millisecond) })
				break
			}
		}
		return nil, nil, false
	})
	b := c.start(t, "b", shortTransactions) // no store: it reads the changelog
	c.sendAndWait(t, adds(0, "cart", 1)...)
	b.stop(t)
	if delayed.Load() == 0 {
		t.Fatal("no fetch of the changelog was delayed")
	}
	if got := c.versionAccepted(t, "cart"); got != 3 {
		t.Errorf("the cart is at version %d, want 3", got)
	}
}

// TestABootstrapInChunks: a bootstrap larger than a transaction may write
// goes to the changelog in chunks. A processor that restores while only
// part of it is there rebuilds from the events instead; once all of it is,
// a processor restores from the changelog alone.
func TestABootstrapInChunks(t *testing.T) {
	c := newCluster(t, 1)
	const carts = 25
	for i := range carts {
		if err := c.producer.ProduceSync(t.Context(), kafka.Record(c.topics.Events, 0, productAdded(fmt.Sprintf("cart-h-%d", i), 1))).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	chunks := processor.WithBootstrapChunk(10)

	a := c.start(t, "a", chunks)
	c.sendAndWait(t, addProduct(0, "cart-h-0", "q1")) // the first chunk: 10 of 25
	a.stop(t)

	b := c.start(t, "b", chunks) // no store; the changelog holds a part
	c.sendAndWait(t, addProduct(0, "cart-h-24", "q1"))
	if got := c.versionAccepted(t, "cart-h-24"); got != 2 {
		t.Fatalf("restored while the changelog held part of the bootstrap, cart-h-24 is at version %d, want 2", got)
	}
	for range 3 { // the rest of b's own bootstrap
		c.sendAndWait(t, addProduct(0, "cart-h-1", fmt.Sprintf("r%d", c.versionAccepted(t, "cart-h-1"))))
	}
	b.stop(t)
	var begun, ended int
	records, _ := kappatest.ReadTopic(t, c.conn, c.topics.State)
	for _, r := range records {
		if string(r.Key) == "s" {
			switch string(r.Value) {
			case "begun":
				begun++
			case "ended":
				ended++
			}
		}
	}
	if begun != 2 || ended != 1 {
		t.Errorf("the changelog holds %d records of a bootstrap begun and %d of one ended, want 2 (a's, b's) and 1 (b's)", begun, ended)
	}

	d := c.start(t, "d", chunks) // no store; the changelog holds it all
	c.sendAndWait(t, addProduct(0, "cart-h-12", "q1"), addProduct(0, "cart-h-23", "q1"))
	d.stop(t)
	for cart, want := range map[string]int64{"cart-h-12": 2, "cart-h-23": 2, "cart-h-24": 2, "cart-h-0": 2, "cart-h-1": 4} {
		if got := c.versionAccepted(t, cart); got != want {
			t.Errorf("restored from the changelog alone, %s is at version %d, want %d", cart, got, want)
		}
	}
	if _, restored := d.obs.state(); restored < carts || restored > 3*carts {
		t.Errorf("d read %d records, want the changelog's few dozen", restored)
	}
}
