package processor_test

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestForeignRecordsOnTheEventsTopicAreNoticed checks the prediction of
// event offsets (outcomes name their events' positions before the events
// are written): it holds across the processor's own commits, and when a
// record of another writer takes an offset it predicted, the transaction
// aborts instead of committing outcomes that point at the wrong records.
func TestForeignRecordsOnTheEventsTopicAreNoticed(t *testing.T) {
	c := newCluster(t, 1)
	a := c.start(t, "a")

	// The first transaction learns where its records land; the next ones
	// predict it.
	for range 3 {
		c.sendAndWait(t, adds(0, "cart-0", 2)...)
	}
	if n := a.obs.aborted.Load(); n != 0 {
		t.Fatalf("%d transactions aborted while only the processor wrote the events topic, want 0", n)
	}

	// A zombie's transaction on the partition: aborted, so no reader sees
	// its record, but the record takes an offset.
	c.writeAborted(t, &kgo.Record{Topic: c.topics.Events, Partition: 0, Value: []byte("zombie")})

	c.sendAndWait(t, adds(0, "cart-0", 2)...)
	if n := a.obs.aborted.Load(); n != 1 {
		t.Errorf("%d transactions aborted after a foreign record, want 1: the mispredicted one", n)
	}
	c.sendAndWait(t, adds(0, "cart-0", 2)...)
	if n := a.obs.aborted.Load(); n != 1 {
		t.Errorf("%d transactions aborted in all, want still 1: the processor learns the offsets again", n)
	}
	// Every outcome names the offsets its events really have.
	c.verify(t)
}

// writeAborted writes a record in a transaction of another producer that
// aborts: invisible to readers, it takes an offset.
func (c *cluster) writeAborted(t *testing.T, r *kgo.Record) {
	t.Helper()
	txn, err := c.conn.NewClient(kgo.TransactionalID("aborted"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(t.Context(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(t.Context(), kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
}
