package projector_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/kappatest"
	"github.com/kappa-cqrs/kappa/projector"
)

// TestMemberRejoinsAfterAnIdleBrokerRestart: the broker restarts while no
// record flows; the member's group session breaks and must be joined
// again, so that records written after the restart are applied. A member
// that kept polling without letting the rebalance through stayed out of
// its group for good.
func TestMemberRejoinsAfterAnIdleBrokerRestart(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	start := func() *kfake.Cluster {
		broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(1, "events", "events.dlq"))
		if err != nil {
			t.Fatal(err)
		}
		return broker
	}
	broker := start()
	produce(t, broker, event("a1", "cart-a", "p1", 1), event("b1", "cart-b", "p1", 1))
	sink := &memorySink{next: map[int32]int64{}}
	logs := &logRecorder{}
	c, err := projector.New(projector.Config{
		Kafka: kafka.Connection{Brokers: broker.ListenAddrs()}, Group: "g", Topic: "events", DeadLetterTopic: "events.dlq", Projection: "memory",
		FlushInterval: 10 * time.Millisecond, SessionTimeout: 6 * time.Second, MaxRetryBackoff: 200 * time.Millisecond,
		Logger: slog.New(logs),
	}, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitApplied(t, sink, "[a1 b1]")

	broker.Close()
	// The member notices: its group session ends and cannot be joined
	// again while the broker is away.
	kappatest.Eventually(t, 60*time.Second, 20*time.Millisecond, func() error {
		if !logs.has("unable to join group session") {
			return errors.New("the member has not lost its group session yet")
		}
		return nil
	})
	broker = start()
	t.Cleanup(broker.Close)
	produce(t, broker, event("a2", "cart-a", "p1", 2), event("b2", "cart-b", "p1", 2))
	waitApplied(t, sink, "[a1 b1 a2 b2]")
}

func waitApplied(t *testing.T, sink *memorySink, want string) {
	t.Helper()
	kappatest.Eventually(t, 60*time.Second, 20*time.Millisecond, func() error {
		if got := fmt.Sprint(sink.appliedIDs()); got != want {
			return fmt.Errorf("applied %s, want %s", got, want)
		}
		return nil
	})
}

func produce(t *testing.T, broker *kfake.Cluster, records ...*kgo.Record) {
	t.Helper()
	producer, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(t.Context(), records...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// logRecorder keeps the messages and errors a component logs.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	return nil
}

func (l *logRecorder) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
