package projector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

// resumeFromSink replaces Kafka's committed offsets with the sink's, once
// the book of parked records is complete and the sink has shut out every
// writer that is no longer a member.
func (p *Projector) resumeFromSink(ctx context.Context, cl *kgo.Client, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	if err := p.parker.CaughtUp(ctx); err != nil {
		return nil, fmt.Errorf("read parked records: %w", err)
	}
	if err := p.fence(ctx, cl); err != nil {
		return nil, err
	}
	for topic, partitions := range assigned {
		ids := make([]int32, 0, len(partitions))
		for part := range partitions {
			ids = append(ids, part)
		}
		var next map[int32]int64
		retry := newBackoff(100*time.Millisecond, p.cfg.MaxRetryBackoff)
		for {
			var err error
			next, err = p.sink.Resume(ctx, topic, ids)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("resume %s from sink: %w", topic, err)
			}
			p.healthy.Store(false)
			p.log.Error("read resume positions from sink; retrying", "topic", topic, "err", err)
			if err := retry.wait(ctx); err != nil {
				return nil, err
			}
		}
		if err := p.checkTopic(ctx, topic); err != nil {
			return nil, err
		}
		if err := p.checkPositions(ctx, topic, next); err != nil {
			return nil, err
		}
		p.mu.Lock()
		for _, part := range ids {
			offset := kgo.NewOffset().AtStart()
			if o, ok := next[part]; ok {
				offset = kgo.NewOffset().At(o)
			}
			partitions[part] = offset.WithEpoch(-1)
			p.owned[part] = true
			p.watch.Progressed(part, next[part])
			p.log.Info("resume", "topic", topic, "partition", part, "offset", next[part])
		}
		p.mu.Unlock()
	}
	return assigned, nil
}

// checkTopic stops the consumer if the sink was built from another topic
// of the same name.
func (p *Projector) checkTopic(ctx context.Context, topic string) error {
	binder, ok := p.sink.(TopicBinder)
	if !ok {
		return nil
	}
	details, err := p.admin.ListTopics(ctx, topic)
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
			ErrTopicRecreated, p.cfg.Projection, topic, bound, topic, id)
		p.log.Error("refusing to resume", "err", err)
		p.stop(err)
		return err
	}
	return nil
}

// checkPositions stops the consumer if the store's positions are beyond
// the end of the topic: the topic was truncated, or recreated on a broker
// or sink that keeps no topic id.
func (p *Projector) checkPositions(ctx context.Context, topic string, next map[int32]int64) error {
	ends, err := kafka.EndOffsets(ctx, p.client, topic)
	if err != nil {
		return err
	}
	for part, o := range next {
		end, ok := ends[part]
		if ok && o > end {
			err := fmt.Errorf("%w: projection %s has applied %s partition %d up to offset %d, but the topic ends at %d, so the topic was recreated or truncated after the store was built; rebuild the projection (drop its schema or database) or point it at the topic it was built from",
				ErrPositionsAheadOfTopic, p.cfg.Projection, topic, part, o-1, end)
			p.log.Error("refusing to resume", "err", err)
			p.stop(err)
			return err
		}
	}
	return nil
}

// fence lets a sink that needs it shut out the writers that are no longer
// members of the group, before positions are read from it. A member the
// group does not list (it was expelled meanwhile) does not fence: its
// assignment is stale, and failing it makes the client join again.
func (p *Projector) fence(ctx context.Context, cl *kgo.Client) error {
	f, ok := p.sink.(Fencer)
	if !ok {
		return nil
	}
	member, _ := cl.GroupMetadata()
	retry := newBackoff(100*time.Millisecond, p.cfg.MaxRetryBackoff)
	for {
		live, err := p.members(ctx)
		if err == nil && !slices.Contains(live, member) {
			return fmt.Errorf("member %s is not in group %s any more; joining again", member, p.cfg.Group)
		}
		if err == nil {
			if err = f.Fence(ctx, member, live); err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fence former writers: %w", err)
		}
		p.healthy.Store(false)
		p.log.Error("fence former writers; retrying", "err", err)
		if err := retry.wait(ctx); err != nil {
			return err
		}
	}
}

// members returns the member ids of the group as the coordinator lists them.
func (p *Projector) members(ctx context.Context) ([]string, error) {
	described, err := p.admin.DescribeGroups(ctx, p.cfg.Group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("describe group %s: %w", p.cfg.Group, err)
	}
	var ids []string
	for _, m := range described[p.cfg.Group].Members {
		ids = append(ids, m.MemberID)
	}
	return ids, nil
}
