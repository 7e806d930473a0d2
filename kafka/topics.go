package kafka

// Kappa's topics, named from a prefix and created with explicit partition
// counts and retention. The commands and events topics share one partition
// count so that partition N of each belongs to the same aggregates: a
// processor that owns partition N of commands owns partition N of events.
// Outcomes are records of the events topic. The state topic is the
// processors' changelog, co-partitioned too: the latest state of every
// aggregate, compacted, so that a processor restores a partition from it
// in time that depends on the live aggregates, not on all of history.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Topics are the topic names of one Kappa deployment.
type Topics struct {
	Commands         string
	Events           string
	EventsDeadLetter string
	State            string
}

// TopicsFor derives the topic names from a prefix such as "kappa".
func TopicsFor(prefix string) Topics {
	return Topics{
		Commands:         prefix + ".commands",
		Events:           prefix + ".events",
		EventsDeadLetter: prefix + ".events.dlq",
		State:            prefix + ".state",
	}
}

// TopicConfig says how to create the topics.
type TopicConfig struct {
	// Partitions of the commands and events topics. Default 6.
	Partitions int32
	// ReplicationFactor of every topic; -1 takes the broker's default.
	// Default -1.
	ReplicationFactor int16
	// CommandRetention keeps commands this long; events are kept forever
	// because they are the source of truth. Default 7 days.
	CommandRetention time.Duration
}

func (c *TopicConfig) setDefaults() {
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1
	}
	if c.CommandRetention == 0 {
		c.CommandRetention = 7 * 24 * time.Hour
	}
}

// ErrPartitionMismatch reports co-partitioned topics whose partition counts
// differ, which would send a processor's events to the wrong partition.
var ErrPartitionMismatch = errors.New("co-partitioned topics have different partition counts")

// EnsureTopics creates the topics that do not exist yet and checks that
// the co-partitioned ones agree on their partition count. It returns that
// count.
func EnsureTopics(ctx context.Context, cl *kgo.Client, names Topics, cfg TopicConfig) (int32, error) {
	cfg.setDefaults()
	adm := kadm.NewClient(cl)
	retention := func(d time.Duration) map[string]*string {
		v := strconv.FormatInt(d.Milliseconds(), 10)
		return map[string]*string{"retention.ms": &v}
	}
	forever := "-1"
	specs := []struct {
		name       string
		partitions int32
		configs    map[string]*string
	}{
		{names.Commands, cfg.Partitions, retention(cfg.CommandRetention)},
		{names.Events, cfg.Partitions, map[string]*string{"retention.ms": &forever, "retention.bytes": &forever}},
		{names.EventsDeadLetter, cfg.Partitions, map[string]*string{"retention.ms": &forever}},
	}
	for _, s := range specs {
		if err := createTopic(ctx, adm, s.name, s.partitions, cfg.ReplicationFactor, s.configs); err != nil {
			return 0, err
		}
	}
	partitions, err := checkCoPartitioned(ctx, adm, names.Commands, names.Events)
	if err != nil || names.State == "" {
		return partitions, err
	}
	// The changelog follows the topics as they are, which may predate
	// this build or today's --partitions.
	// Compaction never touches a partition's active segment, so with the
	// default 1 GiB segments nothing would be compacted for a long time
	// (10 million commands wrote 61 MiB per partition). Segments of
	// 16 MiB, rolled at least hourly, keep what a restore without a local
	// store reads near the live state: 2 million aggregates took 8 MiB
	// per partition once compacted.
	compact, segment, roll := "compact", strconv.Itoa(16<<20), strconv.FormatInt(time.Hour.Milliseconds(), 10)
	if err := createTopic(ctx, adm, names.State, partitions, cfg.ReplicationFactor,
		map[string]*string{"cleanup.policy": &compact, "segment.bytes": &segment, "segment.ms": &roll}); err != nil {
		return 0, err
	}
	return checkCoPartitioned(ctx, adm, names.Commands, names.Events, names.State)
}

func createTopic(ctx context.Context, adm *kadm.Client, name string, partitions int32, replication int16, configs map[string]*string) error {
	resp, err := adm.CreateTopic(ctx, partitions, replication, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return nil
}

func checkCoPartitioned(ctx context.Context, adm *kadm.Client, names ...string) (int32, error) {
	details, err := describe(ctx, adm, names)
	if err != nil {
		return 0, err
	}
	var want int32
	for _, name := range names {
		d, ok := details[name]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("describe topic %s: %w", name, d.Err)
		}
		n := int32(len(d.Partitions))
		if want == 0 {
			want = n
		}
		if n != want {
			return 0, fmt.Errorf("%w: %s has %d, %s has %d", ErrPartitionMismatch, names[0], want, name, n)
		}
	}
	return want, nil
}

// describe lists the topics, waiting (up to 30s) while the broker's
// metadata does not know a topic just created: a new topic reaches the
// metadata cache a moment after CreateTopics answers.
func describe(ctx context.Context, adm *kadm.Client, names []string) (kadm.TopicDetails, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		details, err := adm.ListTopics(ctx, names...)
		if err != nil {
			return nil, fmt.Errorf("describe topics: %w", err)
		}
		unknown := false
		for _, name := range names {
			if d, ok := details[name]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
				unknown = true
			}
		}
		if !unknown || time.Now().After(deadline) {
			return details, nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// WithDefaults returns the configuration with every zero value replaced by
// its default, as the constructor uses it.
func (c TopicConfig) WithDefaults() TopicConfig {
	c.setDefaults()
	return c
}
