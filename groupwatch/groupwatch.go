// Package groupwatch tells whether a consumer-group member does its share,
// for readiness endpoints and metrics. A member that is alive is not
// necessarily useful: it can sit outside its group, hold no partition while
// partitions of its topic have no owner, or hold partitions whose records
// wait while it applies none of them. franz-go rejoins by itself; this makes
// a member that does not visible, with the reason.
//
// The group's coordinator is asked every CheckInterval (DescribeGroups,
// committed offsets, stable end offsets). Being outside the group counts at
// once; holding nothing while partitions have no owner, and lag without
// progress, must last StallTimeout, so that ordinary rebalances and slow
// batches do not flap.
package groupwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
)

// Reasons a member is not ready; Observer receives them as labels.
const (
	ReasonNone       = ""
	ReasonStarting   = "starting"
	ReasonOutside    = "outside_group"
	ReasonIdle       = "idle_while_partitions_unowned"
	ReasonStalled    = "stalled_with_lag"
	ReasonCheckError = "check_failed"
)

// Observer receives each verdict; metrics plug in here.
type Observer interface {
	// Checked reports whether the member is ready, why not, and how many
	// partitions it holds.
	Checked(ready bool, reason string, partitions int)
}

type noObserver struct{}

func (noObserver) Checked(bool, string, int) {}

// Config configures a Watch. Zero values take the documented defaults.
type Config struct {
	// Kafka is how the coordinator is reached. Required.
	Kafka kafka.Connection
	// Group is the consumer group. Required.
	Group string
	// Topic is the topic the group consumes. Required.
	Topic string
	// StallTimeout is how long a member may hold no partition while some
	// have no owner, or hold partitions with records waiting and apply
	// none, before it is not ready. Default 30s.
	StallTimeout time.Duration
	// CheckInterval is how often the coordinator is asked. Default 5s.
	CheckInterval time.Duration
	// Observer receives each verdict if it implements Observer; a role
	// passes its metrics observer, whatever else it observes. Default none.
	Observer any
	// Logger receives a line when the verdict changes. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	errs := []error{c.Kafka.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("groupwatch: Group is required"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("groupwatch: Topic is required"))
	}
	if c.StallTimeout < 0 || c.CheckInterval < 0 {
		errs = append(errs, errors.New("groupwatch: durations must not be negative"))
	}
	return errors.Join(errs...)
}

// NotReady is the verdict on a member that does not do its share.
type NotReady struct {
	Reason string
	Detail string
}

func (e *NotReady) Error() string { return e.Detail }

// Watch judges one member. Its methods are safe for concurrent use.
type Watch struct {
	cfg      Config
	observer Observer
	client   *kgo.Client
	adm      *kadm.Client
	log      *slog.Logger

	mu       sync.Mutex
	member   func() string
	verdict  error
	since    map[string]time.Time      // condition -> when it was first seen, while it lasts
	progress map[int32]partitionStatus // of the partitions this member holds
	probed   map[int32]int64           // partition -> stable end at which a probe found nothing to apply
}

type partitionStatus struct {
	next  int64     // where the member is: the next offset to apply
	since time.Time // when next last moved, or the partition came to this member
}

// New returns a Watch with a client of its own; Close releases it.
func New(cfg Config) (*Watch, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := cfg.Kafka.NewClient()
	if err != nil {
		return nil, err
	}
	observer, ok := cfg.Observer.(Observer)
	if !ok {
		observer = noObserver{}
	}
	return &Watch{
		cfg: cfg, observer: observer, client: client, adm: kadm.NewClient(client), log: cfg.Logger.With("group", cfg.Group),
		member:   func() string { return "" },
		verdict:  &NotReady{Reason: ReasonStarting, Detail: "the member's group has not been checked yet"},
		since:    map[string]time.Time{},
		progress: map[int32]partitionStatus{},
		probed:   map[int32]int64{},
	}, nil
}

// Close releases the Watch's client.
func (w *Watch) Close() { w.client.Close() }

// SetMember tells the Watch how to read the member id of the current group
// client (kgo.Client.GroupMetadata); a member that joins again gets a new one.
func (w *Watch) SetMember(member func() string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.member = member
}

// Progressed records that the member applied a partition up to next.
func (w *Watch) Progressed(partition int32, next int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st, ok := w.progress[partition]; !ok || next > st.next {
		w.progress[partition] = partitionStatus{next: next, since: time.Now()}
	}
}

// Ready returns nil if the member does its share, else a *NotReady with
// the reason. It returns the last verdict and asks nobody.
func (w *Watch) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.verdict
}

// Run checks every CheckInterval until ctx ends.
func (w *Watch) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.CheckInterval)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check asks the coordinator once and updates the verdict.
func (w *Watch) Check(ctx context.Context) {
	checkCtx, cancel := context.WithTimeout(ctx, w.cfg.CheckInterval+5*time.Second)
	defer cancel()
	held, verdict := w.judge(checkCtx)
	if ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	previous := w.verdict
	w.verdict = verdict
	w.mu.Unlock()
	reason := ReasonNone
	var nr *NotReady
	if errors.As(verdict, &nr) {
		reason = nr.Reason
	}
	if (previous == nil) != (verdict == nil) || (verdict != nil && previous.Error() != verdict.Error() && reason != ReasonCheckError) {
		if verdict == nil {
			w.log.Info("member ready", "partitions", held)
		} else {
			w.log.Warn("member not ready", "reason", reason, "detail", verdict.Error())
		}
	}
	w.observer.Checked(verdict == nil, reason, held)
}

// judge returns the number of partitions the member holds and the verdict.
func (w *Watch) judge(ctx context.Context) (int, error) {
	w.mu.Lock()
	member := w.member()
	w.mu.Unlock()
	now := time.Now()

	described, err := w.adm.DescribeGroups(ctx, w.cfg.Group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		return 0, &NotReady{Reason: ReasonCheckError, Detail: fmt.Sprintf("describe group %s: %v", w.cfg.Group, err)}
	}
	group := described[w.cfg.Group]
	var mine []int32
	owned := map[int32]bool{}
	inGroup := false
	for _, m := range group.Members {
		c, ok := m.Assigned.AsConsumer()
		if m.MemberID == member && member != "" {
			inGroup = true
		}
		if !ok {
			continue
		}
		for _, t := range c.Topics {
			if t.Topic != w.cfg.Topic {
				continue
			}
			for _, p := range t.Partitions {
				owned[p] = true
				if m.MemberID == member {
					mine = append(mine, p)
				}
			}
		}
	}
	slices.Sort(mine)
	if !inGroup {
		// Members stay listed through a rebalance, so this is no passing
		// state: the member has not joined yet, or was expelled.
		return 0, &NotReady{Reason: ReasonOutside, Detail: fmt.Sprintf("not a member of group %s (state %s, %d members)",
			w.cfg.Group, group.State, len(group.Members))}
	}

	ends, err := w.adm.ListCommittedOffsets(ctx, w.cfg.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return len(mine), &NotReady{Reason: ReasonCheckError, Detail: fmt.Sprintf("list stable end offsets of %s: %v", w.cfg.Topic, err)}
	}
	var unowned []int32
	ends.Each(func(o kadm.ListedOffset) {
		if !owned[o.Partition] {
			unowned = append(unowned, o.Partition)
		}
	})
	slices.Sort(unowned)
	if w.lasted(ReasonIdle, len(mine) == 0 && len(unowned) > 0, now) {
		return 0, &NotReady{Reason: ReasonIdle, Detail: fmt.Sprintf("holds no partition of %s while partitions %v have had no owner for %s",
			w.cfg.Topic, unowned, w.cfg.StallTimeout)}
	}

	committed, err := w.adm.FetchOffsets(ctx, w.cfg.Group)
	if err != nil {
		return len(mine), &NotReady{Reason: ReasonCheckError, Detail: fmt.Sprintf("fetch offsets of %s: %v", w.cfg.Group, err)}
	}
	w.mu.Lock()
	for p := range w.progress {
		if !slices.Contains(mine, p) {
			delete(w.progress, p)
		}
	}
	for _, p := range mine {
		st, ok := w.progress[p]
		if c, found := committed.Lookup(w.cfg.Topic, p); found && c.Err == nil && (!ok || c.At > st.next) {
			st = partitionStatus{next: c.At, since: now}
		} else if !ok {
			// Nothing committed or reported yet: Kappa's groups start
			// at the beginning of the topic.
			st = partitionStatus{next: 0, since: now}
		}
		w.progress[p] = st
	}
	status := maps.Clone(w.progress)
	w.mu.Unlock()

	for _, p := range mine {
		st := status[p]
		end, ok := ends.Lookup(w.cfg.Topic, p)
		if !ok || end.Err != nil || end.Offset <= st.next || now.Sub(st.since) < w.cfg.StallTimeout {
			continue
		}
		if w.nothingPast(ctx, p, st.next, end.Offset) {
			continue
		}
		return len(mine), &NotReady{Reason: ReasonStalled, Detail: fmt.Sprintf("partition %d of %s has records from offset %d on and none was applied for %s",
			p, w.cfg.Topic, st.next, now.Sub(st.since).Round(time.Second))}
	}
	return len(mine), nil
}

// lasted records whether a condition holds now and reports whether it has
// held for StallTimeout.
func (w *Watch) lasted(condition string, holds bool, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !holds {
		delete(w.since, condition)
		return false
	}
	first, ok := w.since[condition]
	if !ok {
		w.since[condition] = now
		return false
	}
	return now.Sub(first) >= w.cfg.StallTimeout
}

// nothingPast reports whether a partition has nothing to apply from next
// on although its stable end is further: read_committed consumers skip
// transaction markers and aborted records, which count in offsets. It
// reads the partition from next to find out, once per end offset.
func (w *Watch) nothingPast(ctx context.Context, partition int32, next, end int64) bool {
	w.mu.Lock()
	probedEnd, probed := w.probed[partition]
	w.mu.Unlock()
	if probed && probedEnd == end {
		return true
	}
	cl, err := w.cfg.Kafka.NewClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{w.cfg.Topic: {partition: kgo.NewOffset().At(next)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return false
	}
	defer cl.Close()
	pollCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	fetches := cl.PollRecords(pollCtx, 1)
	found := false
	fetches.EachRecord(func(r *kgo.Record) {
		if r.Offset >= next && r.Offset < end {
			found = true
		}
	})
	if found || pollCtx.Err() == nil && fetches.Err0() != nil {
		return false
	}
	w.mu.Lock()
	w.probed[partition] = end
	w.mu.Unlock()
	return true
}
