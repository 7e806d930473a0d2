// Package projectiontest is the conformance suite that every projection's
// sink passes: a whole stream replayed, batches delivered twice, a restart
// after every record of the stream (and a crash in the middle of a batch
// where the sink names one), parked records, records the store refuses,
// redrive, and topic binding. Every subtest compares what the store holds
// with a reference, in a form that shows a row written twice.
//
// A sink's tests call Run with a function that makes a Harness for an
// empty store. The suite is one file, longer than the usual 400 lines, so
// that every property a sink must have reads in one place. MemorySink passes the suite without a server and stands in
// for a real sink in unit tests.
package projectiontest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/kappa-cqrs/kappa/deadletter"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/schemas"
)

// Sink is what the suite drives: the projection runtime's Sink with the
// optional interfaces that every Kappa projection implements, and that
// the suite checks.
type Sink interface {
	projector.Sink
	projector.TopicBinder
	projector.PermanentClassifier
	deadletter.Applier
}

// Contents is what a store holds, in a form that compares across stores
// and runs: each key names one fact, such as a row with the columns that
// matter or a group of an aggregate, and its value is how many times the
// store holds that row, or the group's sum. A row written twice counts 2,
// and an aggregate fed twice sums twice. A zero value is the same as no key.
type Contents map[string]int64

// Harness gives the suite one store of the sink under test, empty when
// the harness is made. The suite makes a harness for every store it
// needs, and a few more to read its fields, so the store should come into
// being at the first Open.
type Harness[S Sink] struct {
	// Open opens an instance of the sink on the store. The suite calls it
	// again to restart: the new instance must know nothing but what the
	// store holds, as one opened by a new process. The harness closes
	// what it opens (t.Cleanup). Required.
	Open func(t *testing.T) S
	// Contents reads what the store holds, through s. Required.
	Contents func(t *testing.T, s S) Contents
	// Want is what the store holds after the records of Stream, written
	// out by hand (or derived from the stream), never read from the sink.
	// Every subtest that applies the whole stream ends with it. Required.
	Want Contents
	// Refused are event payloads the store refuses for their contents:
	// Apply fails with an error that the sink's Permanent reports. The
	// poison subtest runs once for each, and is skipped if there are none.
	Refused []any
	// Crashes are the ways, by name, in which a crash in the middle of
	// Apply(batch) can leave the store, for a batch whose records were
	// not applied before: ClickHouse, for example, has the rows in its
	// typed tables but not in its events table. The restart subtest
	// crashes this way after every record of the stream.
	Crashes map[string]func(t *testing.T, s S, batch []schemas.Record)
	// ResumeAtLastEvent is set for a store that records positions only in
	// the rows of the events it holds (ClickHouse): Resume may then return
	// the position after the last event applied on a partition, before
	// the outcomes and parked records after it, which are delivered again
	// and must change nothing. Otherwise Resume must return the position
	// after the last record applied.
	ResumeAtLastEvent bool
}

func (h Harness[S]) validate() error {
	var errs []error
	if h.Open == nil {
		errs = append(errs, errors.New("projectiontest: Harness.Open is required"))
	}
	if h.Contents == nil {
		errs = append(errs, errors.New("projectiontest: Harness.Contents is required"))
	}
	if len(h.Want) == 0 {
		errs = append(errs, errors.New("projectiontest: Harness.Want is required: what the store holds after Stream"))
	}
	for name, crash := range h.Crashes {
		if crash == nil {
			errs = append(errs, fmt.Errorf("projectiontest: Harness.Crashes[%q] is nil", name))
		}
	}
	return errors.Join(errs...)
}

// Run runs the conformance suite. newHarness makes a harness for an empty
// store of the sink, unique to the test it is given, which it cleans up
// after. The subtests and their own subtests run in parallel.
func Run[S Sink](t *testing.T, newHarness func(t *testing.T) Harness[S]) {
	s := suite[S]{newHarness: newHarness}
	for _, sub := range []struct {
		name string
		test func(t *testing.T)
	}{
		{"replay", s.replay},
		{"duplicates", s.duplicates},
		{"restart", s.restart},
		{"parked", s.parked},
		{"poison", s.poison},
		{"redrive", s.redrive},
		{"topic binding", s.topicBinding},
	} {
		t.Run(sub.name, func(t *testing.T) {
			t.Parallel()
			sub.test(t)
		})
	}
}

type suite[S Sink] struct {
	newHarness func(t *testing.T) Harness[S]
}

func (s suite[S]) harness(t *testing.T) Harness[S] {
	t.Helper()
	h := s.newHarness(t)
	if err := h.validate(); err != nil {
		t.Fatal(err)
	}
	return h
}

// replay: the whole stream, applied in batches of any size, leaves Want,
// and Resume is past every record. A new store is empty and resumes at
// the start; a topic the store never saw resumes at the start.
func (s suite[S]) replay(t *testing.T) {
	records := Stream().Records
	for _, size := range []int{1, 2, 3, 5, len(records)} {
		t.Run(fmt.Sprintf("batches of %d", size), func(t *testing.T) {
			t.Parallel()
			h := s.harness(t)
			sink := h.Open(t)
			h.expect(t, sink, Contents{}, "in a new store")
			h.resumed(t, sink, nil)
			if err := sink.Apply(t.Context(), nil); err != nil {
				t.Fatalf("Apply of an empty batch: %v", err)
			}
			apply(t, sink, records, size)
			h.expect(t, sink, h.Want, "after the stream")
			h.resumed(t, sink, records)
			next, err := sink.Resume(t.Context(), "another-topic", partitions)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range partitions {
				if next[p] != 0 {
					t.Errorf("Resume of a topic the store never saw: partition %d at %d, want the start", p, next[p])
				}
			}
		})
	}
}

// duplicates: records delivered again, in the same batch, in overlapping
// batches, or to another instance (a rebalance), leave one copy.
func (s suite[S]) duplicates(t *testing.T) {
	records := Stream().Records
	for _, c := range []struct {
		name string
		// deliver applies records, some of them more than once, and
		// returns the instance that applied the last batch.
		deliver func(t *testing.T, h Harness[S]) S
	}{
		{"the whole stream twice", func(t *testing.T, h Harness[S]) S {
			sink := h.Open(t)
			apply(t, sink, records, len(records))
			apply(t, sink, records, len(records))
			return sink
		}},
		{"every batch twice", func(t *testing.T, h Harness[S]) S {
			sink := h.Open(t)
			for batch := range slices.Chunk(records, 3) {
				apply(t, sink, batch, len(batch))
				apply(t, sink, batch, len(batch))
			}
			return sink
		}},
		{"overlapping batches", func(t *testing.T, h Harness[S]) S {
			sink := h.Open(t)
			for i := 0; i < len(records); i += 4 {
				batch := records[max(0, i-3):min(i+5, len(records))]
				apply(t, sink, batch, len(batch))
			}
			return sink
		}},
		{"again to a new instance", func(t *testing.T, h Harness[S]) S {
			apply(t, h.Open(t), records, 4)
			sink := h.Open(t)
			apply(t, sink, records, 5)
			return sink
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := s.harness(t)
			sink := c.deliver(t, h)
			h.expect(t, sink, h.Want, "after records delivered twice")
			h.resumed(t, sink, records)
		})
	}
}

// restart: after every record of the stream, and after each crash the
// harness names in the middle of the next batch, a new instance resumes
// where the store says, gets a redelivery of records it holds, and
// applies the rest: the store ends with Want.
func (s suite[S]) restart(t *testing.T) {
	records := Stream().Records
	crashes := slices.Sorted(maps.Keys(s.harness(t).Crashes))
	for cut := 0; cut <= len(records); cut++ {
		t.Run(fmt.Sprintf("after %d records", cut), func(t *testing.T) {
			t.Parallel()
			s.restartAt(t, records, cut, "")
		})
		for _, crash := range crashes {
			if cut < len(records) {
				t.Run(fmt.Sprintf("after %d records and a crash: %s", cut, crash), func(t *testing.T) {
					t.Parallel()
					s.restartAt(t, records, cut, crash)
				})
			}
		}
	}
}

func (s suite[S]) restartAt(t *testing.T, records []schemas.Record, cut int, crash string) {
	h := s.harness(t)
	first := h.Open(t)
	apply(t, first, records[:cut], cut)
	reached := records[:cut]
	if crash != "" {
		batch := records[cut:min(cut+3, len(records))]
		h.Crashes[crash](t, first, batch)
		reached = records[:cut+len(batch)]
	}

	second := h.Open(t)
	next := h.resume(t, second, records[:cut], reached)
	// The first instance did not commit its last records to Kafka.
	apply(t, second, records[max(0, cut-4):cut], 4)
	apply(t, second, kappatest.From(records, next), 4)
	h.expect(t, second, h.Want, "after the restart")
	h.resumed(t, second, records)
}

// parked: a parked record changes nothing but the position, which Resume
// moves past, in a batch of its own too.
func (s suite[S]) parked(t *testing.T) {
	records := Stream().Records
	t.Run("every record", func(t *testing.T) {
		t.Parallel()
		h := s.harness(t)
		sink := h.Open(t)
		all := make([]schemas.Record, len(records))
		for i, r := range records {
			all[i] = parked(r, "undecodable")
		}
		apply(t, sink, all, 5)
		h.expect(t, sink, Contents{}, "after nothing but parked records")
		h.resumed(t, sink, all)
	})
	t.Run("an aggregate's later events", func(t *testing.T) {
		t.Parallel()
		variant, originals := parkBehind(records, parkedFrom)
		h := s.harness(t)
		sink := h.Open(t)
		for i, r := range variant {
			apply(t, sink, []schemas.Record{r}, 1)
			h.resumed(t, sink, variant[:i+1])
		}
		got := h.Contents(t, sink)
		if d := Diff(got, s.reference(t, without(records, originals))); d != "" {
			t.Fatalf("with some events parked, the store differs from one that never got them:%s", d)
		}
		if Diff(got, h.Want) == "" {
			t.Fatal("parking events changed nothing in the store: Contents does not show them")
		}
	})
}

// reference is what a new store holds after records.
func (s suite[S]) reference(t *testing.T, records []schemas.Record) Contents {
	t.Helper()
	h := s.harness(t)
	sink := h.Open(t)
	apply(t, sink, records, 4)
	return h.Contents(t, sink)
}

// poison: a record the store refuses fails its batch with a permanent
// error and moves no position past it. Applied record by record, as the
// projector isolates a refused batch, the other records go in, the
// refused one fails again, and once it is parked the store ends as if
// the stream never had it.
func (s suite[S]) poison(t *testing.T) {
	refused := s.harness(t).Refused
	if len(refused) == 0 {
		t.Skip("the harness names no event the store refuses")
	}
	for n := range refused {
		t.Run(fmt.Sprintf("%d %s", n, schemas.TypeOf(refused[n])), func(t *testing.T) {
			t.Parallel()
			h := s.harness(t)
			records, i := poisoned(h.Refused[n])
			bad := records[i]
			applied := slices.Clone(records) // as the sink got them, the refused record parked
			lo, hi := max(0, i-3), min(i+4, len(records))
			sink := h.Open(t)
			apply(t, sink, records[:lo], 4)

			err := sink.Apply(t.Context(), records[lo:hi])
			if err == nil {
				t.Fatalf("Apply of a batch with %+v at %s succeeded", bad.Payload, bad.Position)
			}
			if !sink.Permanent(err) {
				t.Fatalf("Apply of a batch with %+v failed with %v, which Permanent does not report", bad.Payload, err)
			}
			if next := h.resume(t, sink, records[:lo], records[:hi]); next[bad.Position.Partition] > bad.Position.Offset {
				t.Fatalf("after the refused batch, Resume is at %d on partition %d, past the refused record at %d",
					next[bad.Position.Partition], bad.Position.Partition, bad.Position.Offset)
			}

			for _, r := range records[lo:hi] {
				err := sink.Apply(t.Context(), []schemas.Record{r})
				if r.Position != bad.Position {
					if err != nil {
						t.Fatalf("Apply of the record at %s alone: %v", r.Position, err)
					}
					continue
				}
				if err == nil || !sink.Permanent(err) {
					t.Fatalf("Apply of the refused record alone returned %v, want a permanent error", err)
				}
				applied[i] = parked(r, err.Error())
				apply(t, sink, applied[i:i+1], 1)
				h.resumed(t, sink, applied[:i+1])
			}
			apply(t, sink, records[hi:], 4)
			if d := Diff(h.Contents(t, sink), s.reference(t, without(records, records[i:i+1]))); d != "" {
				t.Fatalf("the store differs from one that never got the refused record:%s", d)
			}
			h.resumed(t, sink, applied)
		})
	}
}

// redrive: records applied parked and then redriven are in the store
// once, whether redriven per aggregate or one at a time, again after a
// restart, or delivered again afterwards; redrive moves no position.
func (s suite[S]) redrive(t *testing.T) {
	records := Stream().Records
	variant, originals := parkBehind(records, parkedFrom)
	for _, c := range []struct {
		name    string
		batches [][]schemas.Record
	}{
		{"per aggregate", byAggregate(originals)},
		{"one record at a time", slices.Collect(slices.Chunk(originals, 1))},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := s.harness(t)
			first := h.Open(t)
			apply(t, first, variant, 4)
			redrive := func(sink S, after string) {
				t.Helper()
				for _, b := range c.batches {
					if err := sink.ApplyRedriven(t.Context(), b); err != nil {
						t.Fatalf("ApplyRedriven of %d records of %s: %v", len(b), b[0].Envelope.AggregateID, err)
					}
				}
				h.expect(t, sink, h.Want, after)
				h.resumed(t, sink, variant)
			}
			redrive(first, "after the redrive")
			redrive(first, "after the same redrive again")
			second := h.Open(t)
			redrive(second, "after the redrive repeated after a restart")
			apply(t, second, records, 5)
			h.expect(t, second, h.Want, "after the stream delivered again")
		})
	}
}

// topic binding: the first id bound to a topic holds, across restarts,
// and each topic has its own.
func (s suite[S]) topicBinding(t *testing.T) {
	h := s.harness(t)
	instances := []S{h.Open(t)}
	for _, step := range []struct {
		instance  int
		topic, id string
		want      string
		what      string
	}{
		{0, Topic, "first", "first", "the first bind"},
		{0, Topic, "second", "first", "a second id"},
		{0, "other", "x", "x", "another topic"},
		{1, Topic, "third", "first", "a new id after a restart"},
		{1, "other", "y", "x", "the other topic after a restart"},
	} {
		if step.instance == len(instances) {
			instances = append(instances, h.Open(t))
		}
		bound, err := instances[step.instance].BindTopic(t.Context(), step.topic, step.id)
		if err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		if bound != step.want {
			t.Errorf("%s: BindTopic(%q, %q) = %q, want %q", step.what, step.topic, step.id, bound, step.want)
		}
	}
}

// apply applies records in batches of size.
func apply[S Sink](t *testing.T, sink S, records []schemas.Record, size int) {
	t.Helper()
	for b := range slices.Chunk(records, max(size, 1)) {
		if err := sink.Apply(t.Context(), b); err != nil {
			t.Fatalf("Apply of %d records from %s: %v", len(b), b[0].Position, err)
		}
	}
}

// expect fails the test unless the store holds want.
func (h Harness[S]) expect(t *testing.T, sink S, want Contents, after string) {
	t.Helper()
	if d := Diff(h.Contents(t, sink), want); d != "" {
		t.Fatalf("contents %s:%s", after, d)
	}
}

// resumed checks Resume after the records applied, and returns it.
func (h Harness[S]) resumed(t *testing.T, sink S, applied []schemas.Record) map[int32]int64 {
	t.Helper()
	return h.resume(t, sink, applied, applied)
}

// resume calls Resume on every partition and checks that it is past every
// record of done (every event of done if ResumeAtLastEvent) and not past
// any record after those of reached.
func (h Harness[S]) resume(t *testing.T, sink S, done, reached []schemas.Record) map[int32]int64 {
	t.Helper()
	next, err := sink.Resume(t.Context(), Topic, partitions)
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	least, most := map[int32]int64{}, map[int32]int64{}
	for _, r := range done {
		if isEvent(r) || !h.ResumeAtLastEvent {
			least[r.Position.Partition] = max(least[r.Position.Partition], r.Position.Offset+1)
		}
	}
	for _, r := range reached {
		most[r.Position.Partition] = max(most[r.Position.Partition], r.Position.Offset+1)
	}
	var wrong []string
	for _, p := range partitions {
		if got := next[p]; got < least[p] || got > most[p] {
			want := fmt.Sprint(least[p])
			if least[p] != most[p] {
				want = fmt.Sprintf("from %d to %d", least[p], most[p])
			}
			wrong = append(wrong, fmt.Sprintf("partition %d at %d, want %s", p, got, want))
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("Resume: %s", strings.Join(wrong, "; "))
	}
	return next
}

// Diff lists the facts whose counts differ, each on a line of its own
// after a newline, or returns "" if there are none.
func Diff(got, want Contents) string {
	keys := slices.Sorted(maps.Keys(got))
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if g, w := got[k], want[k]; g != w {
			fmt.Fprintf(&b, "\n\t%s: got %d, want %d", k, g, w)
		}
	}
	return b.String()
}
