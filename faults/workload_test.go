package faults_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
)

// workload sends batches of commands at a steady pace. Every command has an
// idempotency key, and a batch that fails (503, refused connection, timeout)
// is sent again with the same keys until it is acknowledged, as a careful
// client does; so the set of acknowledged commands is exact.
type workload struct {
	base      string
	batchSize int
	every     time.Duration
	rng       *rand.Rand
	run       string

	client   *http.Client
	sending  sync.Mutex // held while a batch is sent
	paused   bool
	stopping chan struct{}
	done     chan struct{}

	mu    sync.Mutex
	acked map[string]bool // command ids

	attempts, retries atomic.Int64
	seq               int
}

func newWorkload(base string, batchSize int, every time.Duration) *workload {
	return &workload{
		base: base, batchSize: batchSize, every: every, rng: rand.New(rand.NewPCG(42, 7)),
		run: fmt.Sprint(time.Now().UnixNano()), stopping: make(chan struct{}), done: make(chan struct{}), acked: map[string]bool{},
		client: &http.Client{Timeout: 10 * time.Second},
	}
}

func startWorkload(t *testing.T, base string, batchSize int, every time.Duration) *workload {
	t.Helper()
	w := newWorkload(base, batchSize, every)
	go w.loop(t)
	return w
}

func (w *workload) loop(t *testing.T) {
	defer close(w.done)
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	for {
		select {
		case <-w.stopping:
			return
		case <-tick.C:
		}
		w.sending.Lock()
		var err error
		if !w.paused {
			err = w.send()
		}
		w.sending.Unlock()
		if err != nil {
			t.Error(err)
			return
		}
	}
}

// send sends the next batch until it is acknowledged.
func (w *workload) send() error {
	batch := w.next()
	body, err := json.Marshal(batch)
	if err != nil {
		return err
	}
	for {
		w.attempts.Add(1)
		ids, status, err := post(w.client, w.base+"/v1/commands:batch", body)
		if err == nil && (status == http.StatusAccepted || status == http.StatusOK) {
			w.mu.Lock()
			for _, id := range ids {
				w.acked[id] = true
			}
			w.mu.Unlock()
			return nil
		}
		if err == nil && status < 500 {
			return fmt.Errorf("workload batch refused with %d", status)
		}
		w.retries.Add(1)
		time.Sleep(200 * time.Millisecond) // a client's retry delay, not synchronisation
	}
}

// pause stops sending until resume; it returns once the batch in hand is
// acknowledged.
func (w *workload) pause() {
	w.sending.Lock()
	defer w.sending.Unlock()
	w.paused = true
}

func (w *workload) resume() {
	w.sending.Lock()
	defer w.sending.Unlock()
	w.paused = false
}

// snapshot returns the command ids acknowledged so far.
func (w *workload) snapshot() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.acked)
}

func post(client *http.Client, url string, body []byte) ([]string, int, error) {
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode >= 300 {
		return nil, resp.StatusCode, nil
	}
	var v struct {
		Commands []struct {
			CommandID string `json:"command_id"`
		} `json:"commands"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, 0, err
	}
	ids := make([]string, len(v.Commands))
	for i, c := range v.Commands {
		ids[i] = c.CommandID
	}
	return ids, resp.StatusCode, nil
}

type command struct {
	Type           string         `json:"type"`
	AggregateID    string         `json:"aggregate_id"`
	Data           map[string]any `json:"data"`
	IdempotencyKey string         `json:"idempotency_key"`
}

// next makes a batch over 150 carts and 40 articles; some commands are
// rejected by the aggregates (removing what is not there, checking out an
// empty or checked-out cart, updating an unpublished article).
func (w *workload) next() []command {
	batch := make([]command, w.batchSize)
	for i := range batch {
		w.seq++
		cart := fmt.Sprintf("cart-%d", w.rng.IntN(150))
		product := w.rng.IntN(10)
		article := fmt.Sprintf("article-%d", w.rng.IntN(40))
		var c command
		switch r := w.rng.IntN(100); {
		case r < 55:
			c = command{Type: "cart.add_product", AggregateID: cart, Data: map[string]any{
				"product_id": fmt.Sprintf("p%d", product), "quantity": 1 + w.rng.IntN(3), "unit_price_cents": 100 + 10*product}}
		case r < 65:
			c = command{Type: "cart.remove_product", AggregateID: cart, Data: map[string]any{"product_id": fmt.Sprintf("p%d", product), "quantity": 1}}
		case r < 70:
			c = command{Type: "cart.checkout", AggregateID: cart, Data: map[string]any{"customer_id": fmt.Sprintf("customer-%d", w.rng.IntN(20))}}
		case r < 85:
			c = command{Type: "article.publish", AggregateID: article, Data: map[string]any{
				"author_id": fmt.Sprintf("author-%d", w.rng.IntN(8)), "title": "t", "body": "b", "tags": []string{"x"}}}
		default:
			c = command{Type: "article.update", AggregateID: article, Data: map[string]any{"title": fmt.Sprintf("title %d", w.seq)}}
		}
		c.IdempotencyKey = fmt.Sprintf("wl-%s-%d", w.run, w.seq)
		batch[i] = c
	}
	return batch
}

// stop ends the workload once the batch in hand is acknowledged and
// returns the acknowledged command ids.
func (w *workload) stop(t *testing.T) map[string]bool {
	t.Helper()
	close(w.stopping)
	select {
	case <-w.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the workload's last batch was not acknowledged within 2 minutes")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked
}

func (w *workload) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}
