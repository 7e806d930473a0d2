package kafka

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// EndOffsets returns each partition's high watermark: the offset the next
// record written will get.
func EndOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	listed, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	return offsetsOf(topic, "end", listed, err)
}

// StableOffsets returns each partition's last stable offset: where
// read_committed consumers see the end, before the first record of a
// transaction that is still open.
func StableOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	listed, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	return offsetsOf(topic, "stable end", listed, err)
}

// StartOffsets returns each partition's log start offset: the first
// offset still kept.
func StartOffsets(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	listed, err := kadm.NewClient(cl).ListStartOffsets(ctx, topic)
	return offsetsOf(topic, "start", listed, err)
}

// TopicID returns the id the cluster gave the topic when it was created;
// a topic deleted and created again under its name has a new one.
func TopicID(ctx context.Context, cl *kgo.Client, topic string) ([16]byte, error) {
	details, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return [16]byte{}, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok {
		return [16]byte{}, fmt.Errorf("describe topic %s: not listed", topic)
	}
	if d.Err != nil {
		return [16]byte{}, fmt.Errorf("describe topic %s: %w", topic, d.Err)
	}
	return d.ID, nil
}

func offsetsOf(topic, what string, listed kadm.ListedOffsets, err error) (map[int32]int64, error) {
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w", what, topic, err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) {
		if o.Topic == topic {
			out[o.Partition] = o.Offset
		}
	})
	return out, nil
}

// CommittedOffsets returns the offsets a consumer group has committed for
// a topic; a partition with none is missing.
func CommittedOffsets(ctx context.Context, cl *kgo.Client, group, topic string) (map[int32]int64, error) {
	fetched, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err == nil {
		err = fetched.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch the offsets of group %s: %w", group, err)
	}
	out := map[int32]int64{}
	for p, o := range fetched[topic] {
		if o.Err == nil && o.At >= 0 {
			out[p] = o.At
		}
	}
	return out, nil
}
