package projectiontest

// The suite's negative control: a checker is only trusted once it has
// failed on a deliberately broken sink. Each variant below breaks one
// promise of MemorySink; TestSuiteCatchesBrokenSinks runs the suite on
// each in a child process of this test binary (a failing subtest fails
// every test above it, so it cannot run in this one) and checks which
// subtests fail.

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kappa-cqrs/kappa/schemas"
)

// brokenSink is a MemorySink with some of its methods replaced.
type brokenSink struct {
	*MemorySink
	apply     func(ctx context.Context, batch []schemas.Record) error
	resume    func(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error)
	redrive   func(ctx context.Context, batch []schemas.Record) error
	permanent func(err error) bool
	bind      func(ctx context.Context, topic, topicID string) (string, error)
}

func (b *brokenSink) Apply(ctx context.Context, batch []schemas.Record) error {
	if b.apply != nil {
		return b.apply(ctx, batch)
	}
	return b.MemorySink.Apply(ctx, batch)
}

func (b *brokenSink) Resume(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	if b.resume != nil {
		return b.resume(ctx, topic, partitions)
	}
	return b.MemorySink.Resume(ctx, topic, partitions)
}

func (b *brokenSink) ApplyRedriven(ctx context.Context, batch []schemas.Record) error {
	if b.redrive != nil {
		return b.redrive(ctx, batch)
	}
	return b.MemorySink.ApplyRedriven(ctx, batch)
}

func (b *brokenSink) Permanent(err error) bool {
	if b.permanent != nil {
		return b.permanent(err)
	}
	return b.MemorySink.Permanent(err)
}

func (b *brokenSink) BindTopic(ctx context.Context, topic, topicID string) (string, error) {
	if b.bind != nil {
		return b.bind(ctx, topic, topicID)
	}
	return b.MemorySink.BindTopic(ctx, topic, topicID)
}

// brokenVariants are the broken sinks by name, each with the subtests of
// the suite that must catch it; every other subtest must pass.
var brokenVariants = map[string]struct {
	breakSink func(b *brokenSink)
	caughtBy  []string
}{
	"applies redelivered records again": {
		breakSink: func(b *brokenSink) {
			b.apply = func(ctx context.Context, batch []schemas.Record) error {
				b.mu.Lock()
				for _, r := range batch {
					delete(b.next[r.Topic], r.Position.Partition)
				}
				b.mu.Unlock()
				return b.MemorySink.Apply(ctx, batch)
			}
		},
		// Poison too: the refused batch loses the positions of its partitions.
		caughtBy: []string{"duplicates", "restart", "poison", "redrive"},
	},
	"keeps no positions": {
		breakSink: func(b *brokenSink) {
			b.resume = func(context.Context, string, []int32) (map[int32]int64, error) { return map[int32]int64{}, nil }
		},
		caughtBy: []string{"replay", "duplicates", "restart", "parked", "poison", "redrive"},
	},
	"moves no position for parked records": {
		breakSink: func(b *brokenSink) {
			b.apply = func(ctx context.Context, batch []schemas.Record) error {
				return b.MemorySink.Apply(ctx, slices.DeleteFunc(slices.Clone(batch), func(r schemas.Record) bool {
					_, parked := r.Payload.(schemas.Parked)
					return parked
				}))
			}
		},
		caughtBy: []string{"parked", "poison"},
	},
	"applies parked records as outcomes": {
		breakSink: func(b *brokenSink) {
			b.apply = func(ctx context.Context, batch []schemas.Record) error {
				batch = slices.Clone(batch)
				for i, r := range batch {
					if _, parked := r.Payload.(schemas.Parked); parked {
						batch[i].Payload = schemas.Outcome{CommandID: "parked " + r.Position.String()}
					}
				}
				return b.MemorySink.Apply(ctx, batch)
			}
		},
		caughtBy: []string{"parked", "poison", "redrive"},
	},
	"redrives what it holds": {
		breakSink: func(b *brokenSink) {
			b.redrive = func(_ context.Context, batch []schemas.Record) error {
				b.mu.Lock()
				defer b.mu.Unlock()
				for _, r := range batch {
					b.record(r)
				}
				return nil
			}
		},
		caughtBy: []string{"redrive"},
	},
	"reports refusals as transient": {
		breakSink: func(b *brokenSink) { b.permanent = func(error) bool { return false } },
		caughtBy:  []string{"poison"},
	},
	"applies what it can of a refused batch": {
		breakSink: func(b *brokenSink) {
			b.apply = func(ctx context.Context, batch []schemas.Record) error {
				err := b.MemorySink.Apply(ctx, batch)
				if err != nil {
					for _, r := range batch {
						if refusal(r) == nil {
							_ = b.MemorySink.Apply(ctx, []schemas.Record{r})
						}
					}
				}
				return err
			}
		},
		caughtBy: []string{"poison"},
	},
	"lets the last id bound win": {
		breakSink: func(b *brokenSink) {
			b.bind = func(_ context.Context, topic, topicID string) (string, error) {
				b.mu.Lock()
				defer b.mu.Unlock()
				b.topics[topic] = topicID
				return topicID, nil
			}
		},
		caughtBy: []string{"topic binding"},
	},
}

// brokenEnv names the variant TestSuiteOnABrokenSink runs the suite on.
const brokenEnv = "KAPPA_PROJECTIONTEST_BROKEN_SINK"

// TestSuiteOnABrokenSink fails on purpose: TestSuiteCatchesBrokenSinks
// runs it in a child process.
func TestSuiteOnABrokenSink(t *testing.T) {
	name := os.Getenv(brokenEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenSinks, with " + brokenEnv + " naming a broken sink")
	}
	v, ok := brokenVariants[name]
	if !ok {
		t.Fatalf("no broken sink %q", name)
	}
	Run(t, func(t *testing.T) Harness[*brokenSink] {
		b := &brokenSink{MemorySink: NewMemorySink()}
		v.breakSink(b)
		return Harness[*brokenSink]{
			Open:     func(*testing.T) *brokenSink { return b },
			Contents: func(_ *testing.T, b *brokenSink) Contents { return b.Contents() },
			Want:     referenceContents(t),
			Refused:  []any{schemas.CartProductAddedV1{ProductID: "p1", Quantity: -1, UnitPriceCents: 10}},
		}
	})
}

// referenceContents is what a MemorySink holds after the stream.
func referenceContents(t *testing.T) Contents {
	s := NewMemorySink()
	if err := s.Apply(t.Context(), Stream().Records); err != nil {
		t.Fatal(err)
	}
	return s.Contents()
}

var subtestResult = regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): TestSuiteOnABrokenSink/([^/\s]+) \(`)

func TestSuiteCatchesBrokenSinks(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("this is the child process")
	}
	for _, name := range slices.Sorted(maps.Keys(brokenVariants)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSuiteOnABrokenSink$", "-test.v", "-test.count=1", "-test.timeout=5m")
			cmd.Env = append(os.Environ(), brokenEnv+"="+name)
			out, err := cmd.CombinedOutput()
			// The suite's subtests as they ran, and as they should have.
			got, want := map[string]string{}, map[string]string{}
			for _, m := range subtestResult.FindAllStringSubmatch(string(out), -1) {
				got[m[2]], want[m[2]] = m[1], "PASS"
			}
			for _, s := range brokenVariants[name].caughtBy {
				want[strings.ReplaceAll(s, " ", "_")] = "FAIL"
			}
			if len(got) < 7 || !maps.Equal(got, want) || err == nil {
				t.Errorf("the suite on a sink that %s (exit: %v):\n got %v\nwant %v\n\noutput:\n%s", name, err, got, want, out)
			}
		})
	}
}
