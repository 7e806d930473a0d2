// Package metrics defines Kappa's Prometheus metrics and adapts them to the
// components' observer hooks, so that the components themselves import no
// metrics library. Each role registers into its own registry, served on
// /metrics.
package metrics

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/kappa-cqrs/kappa/producer/processor"
)

// Handler serves a registry's metrics. Each ?name=N limits the page to the
// family N, so that a frequent scraper (the load-test harness reads the
// projections' progress every 50 ms) gets a few lines instead of every
// metric, and costs the process it measures less.
func Handler(reg *prometheus.Registry) http.Handler {
	all := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		names := r.URL.Query()["name"]
		if len(names) == 0 {
			all.ServeHTTP(w, r)
			return
		}
		some := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			families, err := reg.Gather()
			return slices.DeleteFunc(families, func(f *dto.MetricFamily) bool { return !slices.Contains(names, f.GetName()) }), err
		})
		promhttp.HandlerFor(some, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	})
}

// member observes whether a consumer-group member does its share; it
// implements groupwatch.Observer for the projections and the processors.
type member struct {
	ready      prometheus.Gauge
	partitions prometheus.Gauge
	notReady   *prometheus.GaugeVec
}

// memberReasons are groupwatch's reasons, so that every series exists
// from the start.
var memberReasons = []string{"starting", "outside_group", "idle_while_partitions_unowned", "stalled_with_lag", "check_failed"}

func newMember(reg prometheus.Registerer, role string) *member {
	labels := prometheus.Labels{"role": role}
	m := &member{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_group_member_ready",
			Help: "1 while this consumer-group member does its share: in its group, holding partitions while some have no owner, applying what waits.", ConstLabels: labels}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_group_member_partitions",
			Help: "Partitions this member holds, as its group's coordinator lists them.", ConstLabels: labels}),
		notReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kappa_group_member_not_ready",
			Help: "1 for the reason this member is not ready, 0 for the others.", ConstLabels: labels}, []string{"reason"}),
	}
	for _, r := range memberReasons {
		m.notReady.WithLabelValues(r)
	}
	reg.MustRegister(m.ready, m.partitions, m.notReady)
	return m
}

// Checked records a verdict on the member.
func (m *member) Checked(ready bool, reason string, partitions int) {
	v := 0.0
	if ready {
		v = 1
	}
	m.ready.Set(v)
	m.partitions.Set(float64(partitions))
	for _, r := range memberReasons {
		v := 0.0
		if r == reason {
			v = 1
		}
		m.notReady.WithLabelValues(r).Set(v)
	}
}

// Projection observes one projection's consumer; it implements
// projector.Observer and groupwatch.Observer.
type Projection struct {
	*member
	applied      prometheus.Counter
	batches      prometheus.Histogram
	failures     prometheus.Counter
	deadLettered prometheus.Counter
	newest       prometheus.Gauge
	lastApplied  prometheus.Gauge
	dlq          *prometheus.GaugeVec
	through      *prometheus.GaugeVec
}

// NewProjection registers the metrics of the named projection.
func NewProjection(reg prometheus.Registerer, projection string) *Projection {
	labels := prometheus.Labels{"projection": projection}
	m := &Projection{
		member: newMember(reg, projection),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_projection_applied_records_total",
			Help: "Records applied to the sink, including outcome records.", ConstLabels: labels}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kappa_projection_batch_apply_seconds",
			Help: "Time to apply one batch to the sink, retries included.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_projection_apply_failures_total",
			Help: "Failed attempts to apply a batch; each is retried.", ConstLabels: labels}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_projection_dead_lettered_total",
			Help: "Records parked in the dead-letter topic.", ConstLabels: labels}),
		newest: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_projection_newest_applied_event_timestamp_seconds",
			Help: "ce_time of the newest event applied; now minus this is the projection's staleness.", ConstLabels: labels}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_projection_last_apply_timestamp_seconds",
			Help: "When the last batch was applied.", ConstLabels: labels}),
	}
	m.dlq = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kappa_projection_dead_letters",
		Help: "Dead letters of this projection by state: open (parked now), parked (ever), redriven, discarded.", ConstLabels: labels}, []string{"state"})
	m.through = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kappa_projection_commands_through",
		Help: "Per partition, the offset in the commands topic of the last command whose outcome and events are applied.", ConstLabels: labels}, []string{"partition"})
	reg.MustRegister(m.applied, m.batches, m.failures, m.deadLettered, m.newest, m.lastApplied, m.dlq, m.through)
	return m
}

// CommandsThrough records how far a partition's commands are applied.
func (m *Projection) CommandsThrough(partition int32, commandOffset int64) {
	m.through.WithLabelValues(strconv.Itoa(int(partition))).Set(float64(commandOffset))
}

// Parked records the counts of the dead-letter book.
func (m *Projection) Parked(open, parked, redriven, discarded int) {
	m.dlq.WithLabelValues("open").Set(float64(open))
	m.dlq.WithLabelValues("parked").Set(float64(parked))
	m.dlq.WithLabelValues("redriven").Set(float64(redriven))
	m.dlq.WithLabelValues("discarded").Set(float64(discarded))
}

// BatchApplied records a batch the sink accepted.
func (m *Projection) BatchApplied(records int, took time.Duration, newest time.Time) {
	m.applied.Add(float64(records))
	m.batches.Observe(took.Seconds())
	m.lastApplied.SetToCurrentTime()
	if !newest.IsZero() {
		m.newest.Set(float64(newest.UnixNano()) / 1e9)
	}
}

// BatchFailed records an attempt the sink refused.
func (m *Projection) BatchFailed(error) { m.failures.Inc() }

// DeadLettered records records parked in the dead-letter topic.
func (m *Projection) DeadLettered(n int) { m.deadLettered.Add(float64(n)) }

// Processor observes the command processors; it implements
// processor.Observer and groupwatch.Observer.
type Processor struct {
	*member
	commands   *prometheus.CounterVec
	committed  prometheus.Counter
	aborted    prometheus.Counter
	txCommands prometheus.Histogram
	txSeconds  prometheus.Histogram
	decision   prometheus.Histogram
	restores   prometheus.Histogram
	restored   prometheus.Counter
	aggregates prometheus.Gauge
	inMemory   prometheus.Gauge
	keyed      prometheus.Gauge
	bytes      prometheus.Gauge
	storeReads prometheus.Counter
}

// NewProcessor registers the processors' metrics.
func NewProcessor(reg prometheus.Registerer) *Processor {
	m := &Processor{
		member: newMember(reg, "processor"),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kappa_processor_commands_total",
			Help: "Commands decided, by outcome: accepted, rejected, or duplicate (a retry answered with the first outcome)."}, []string{"outcome"}),
		committed: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_processor_transactions_committed_total",
			Help: "Transactions committed; each writes a marker to every partition it touched."}),
		aborted: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_processor_transactions_aborted_total",
			Help: "Transactions aborted; their commands are decided again."}),
		txCommands: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kappa_processor_transaction_commands",
			Help: "Commands per committed transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		txSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kappa_processor_transaction_seconds",
			Help: "Time from a committed transaction's begin to its end.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kappa_processor_decision_seconds",
			Help: "Time from a command's record (written by ingest) to the commit of its decision.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		restores: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kappa_processor_restore_seconds",
			Help: "Time to restore the state of newly assigned partitions.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_processor_restored_records_total",
			Help: "Records read to restore state: the changelog's, or the events' of a partition the changelog lacks."}),
		aggregates: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_processor_aggregates",
			Help: "Aggregates of the owned partitions in the processor's local state store."}),
		inMemory: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_processor_aggregates_in_memory",
			Help: "Aggregates held in memory: those the last transaction changed."}),
		keyed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_processor_keyed_outcomes",
			Help: "Outcomes of commands with idempotency keys remembered for their window."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kappa_processor_state_memory_bytes",
			Help: "Bytes the local state store holds in memory: block cache, memtables and the filters of the aggregates it holds."}),
		storeReads: prometheus.NewCounter(prometheus.CounterOpts{Name: "kappa_processor_store_reads_total",
			Help: "Aggregates read from the local state store because the cache of decoded aggregates did not hold them (--state-cache-aggregates)."}),
	}
	reg.MustRegister(m.commands, m.committed, m.aborted, m.txCommands, m.txSeconds, m.decision, m.restores, m.restored,
		m.aggregates, m.inMemory, m.keyed, m.bytes, m.storeReads)
	return m
}

// Committed records a committed transaction.
func (m *Processor) Committed(tx processor.Transaction) {
	m.committed.Inc()
	m.commands.WithLabelValues("accepted").Add(float64(tx.Accepted))
	m.commands.WithLabelValues("rejected").Add(float64(tx.Rejected))
	m.commands.WithLabelValues("duplicate").Add(float64(tx.Duplicates))
	m.txCommands.Observe(float64(len(tx.Decided)))
	m.txSeconds.Observe(tx.Took.Seconds())
	m.storeReads.Add(float64(tx.StoreReads))
	for _, d := range tx.Decided {
		m.decision.Observe(d.Seconds())
	}
}

// Restored records a restore of state.
func (m *Processor) Restored(records int, took time.Duration) {
	m.restores.Observe(took.Seconds())
	m.restored.Add(float64(records))
}

// Held records the state held.
func (m *Processor) Held(h processor.Held) {
	m.aggregates.Set(float64(h.Aggregates))
	m.inMemory.Set(float64(h.InMemory))
	m.keyed.Set(float64(h.Keyed))
	m.bytes.Set(float64(h.MemoryBytes))
}

// Aborted records an aborted transaction.
func (m *Processor) Aborted() { m.aborted.Inc() }

// Refusals counts the API's refusals by reason (api.Refusals):
// unauthenticated, forbidden, rate_limited, too_many_waiters.
type Refusals struct{ refused *prometheus.CounterVec }

// NewRefusals registers the refusal counter.
func NewRefusals(reg prometheus.Registerer) *Refusals {
	r := &Refusals{refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kappa_api_refusals_total",
		Help: "Requests the API refused before doing anything, by reason."}, []string{"reason"})}
	reg.MustRegister(r.refused)
	return r
}

// Refused counts one refusal.
func (r *Refusals) Refused(reason string) { r.refused.WithLabelValues(reason).Inc() }

// HTTP counts requests by route pattern and status and times them.
func HTTP(reg prometheus.Registerer, next http.Handler) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kappa_http_requests_total",
		Help: "HTTP requests by method and status code."}, []string{"method", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kappa_http_request_seconds",
		Help: "HTTP request latency by method.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"method"})
	reg.MustRegister(requests, latency)
	return promhttp.InstrumentHandlerCounter(requests, promhttp.InstrumentHandlerDuration(latency, next))
}
