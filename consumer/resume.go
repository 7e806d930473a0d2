package consumer

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// resumeFromSink replaces Kafka's committed offsets with the sink's, once
// the book of parked records is complete and the sink has shut out every
// writer that is no longer a member.
func (c *Consumer) resumeFromSink(ctx context.Context, cl *kgo.Client, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	if err := c.book.WaitCaughtUp(ctx, c.cfg.Kafka, c.cfg.DeadLetterTopic); err != nil {
		return nil, fmt.Errorf("read parked records: %w", err)
	}
	if err := c.fence(ctx, cl); err != nil {
		return nil, err
	}
	for topic, partitions := range assigned {
		ids := make([]int32, 0, len(partitions))
		for p := range partitions {
			ids = append(ids, p)
		}
		var next map[int32]int64
		retry := newBackoff(100*time.Millisecond, c.cfg.MaxRetryBackoff)
		for {
			var err error
			next, err = c.sink.Resume(ctx, topic, ids)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("resume %s from sink: %w", topic, err)
			}
			c.healthy.Store(false)
			c.log.Error("read resume positions from sink; retrying", "topic", topic, "err", err)
			if err := retry.wait(ctx); err != nil {
				return nil, err
			}
		}
		if err := c.checkTopic(ctx, topic); err != nil {
			return nil, err
		}
		if err := c.checkPositions(ctx, topic, next); err != nil {
			return nil, err
		}
		c.mu.Lock()
		for _, p := range ids {
			offset := kgo.NewOffset().AtStart()
			if o, ok := next[p]; ok {
				offset = kgo.NewOffset().At(o)
			}
			partitions[p] = offset.WithEpoch(-1)
			c.owned[p] = true
			c.watch.Progressed(p, next[p])
			c.log.Info("resume", "topic", topic, "partition", p, "offset", next[p])
		}
		c.mu.Unlock()
	}
	return assigned, nil
}

// checkTopic stops the consumer if the sink was built from another topic
// of the same name.
func (c *Consumer) checkTopic(ctx context.Context, topic string) error {
	binder, ok := c.sink.(TopicBinder)
	if !ok {
		return nil
	}
	details, err := c.admin.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("read the id of %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok {
		return fmt.Errorf("read the id of %s: not in the metadata", topic)
	}
	if d.Err != nil {
		return fmt.Errorf("read the id of %s: %w", topic, d.Err)
	}
	if d.ID == (kadm.TopicID{}) {
		return nil // the broker does not report topic ids; offsets are all there is to check
	}
	id := d.ID.String()
	bound, err := binder.BindTopic(ctx, topic, id)
	if err != nil {
		return fmt.Errorf("bind %s to the store: %w", topic, err)
	}
	if bound != id {
		err := fmt.Errorf("%w: projection %s was built from topic %s with id %s, but %s now has id %s, so it was deleted and created again; rebuild the projection (drop its schema or database) or point it at the topic it was built from",
			ErrTopicRecreated, c.cfg.Projection, topic, bound, topic, id)
		c.log.Error("refusing to resume", "err", err)
		c.stop(err)
		return err
	}
	return nil
}

// checkPositions stops the consumer if the store's positions are beyond
// the end of the topic: the topic was truncated, or recreated on a broker
// or sink that keeps no topic id.
func (c *Consumer) checkPositions(ctx context.Context, topic string, next map[int32]int64) error {
	ends, err := c.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("read the end offsets of %s: %w", topic, err)
	}
	for p, o := range next {
		end, ok := ends.Lookup(topic, p)
		if ok && end.Err == nil && o > end.Offset {
			err := fmt.Errorf("%w: projection %s has applied %s partition %d up to offset %d, but the topic ends at %d, so the topic was recreated or truncated after the store was built; rebuild the projection (drop its schema or database) or point it at the topic it was built from",
				ErrPositionsAheadOfTopic, c.cfg.Projection, topic, p, o-1, end.Offset)
			c.log.Error("refusing to resume", "err", err)
			c.stop(err)
			return err
		}
	}
	return nil
}

// fence lets a sink that needs it shut out the writers that are no longer
// members of the group, before positions are read from it. A member the
// group does not list (it was expelled meanwhile) does not fence: its
// assignment is stale, and failing it makes the client join again.
func (c *Consumer) fence(ctx context.Context, cl *kgo.Client) error {
	f, ok := c.sink.(Fencer)
	if !ok {
		return nil
	}
	member, _ := cl.GroupMetadata()
	retry := newBackoff(100*time.Millisecond, c.cfg.MaxRetryBackoff)
	for {
		live, err := c.members(ctx)
		if err == nil && !slices.Contains(live, member) {
			return fmt.Errorf("member %s is not in group %s any more; joining again", member, c.cfg.Group)
		}
		if err == nil {
			if err = f.Fence(ctx, member, live); err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fence former writers: %w", err)
		}
		c.healthy.Store(false)
		c.log.Error("fence former writers; retrying", "err", err)
		if err := retry.wait(ctx); err != nil {
			return err
		}
	}
}

// members returns the member ids of the group as the coordinator lists them.
func (c *Consumer) members(ctx context.Context) ([]string, error) {
	described, err := c.admin.DescribeGroups(ctx, c.cfg.Group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", c.cfg.Group, err)
	}
	var ids []string
	for _, m := range described[c.cfg.Group].Members {
		ids = append(ids, m.MemberID)
	}
	return ids, nil
}
