package api

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits per credential: a token bucket for commands (a batch takes one
// token per command) and one for reads, and a bound on the lookups of one
// credential that wait for a position at the same time. A credential is
// an API key, or a JWT subject, within its tenant.

// buckets are the token buckets of every credential seen lately.
type buckets struct {
	limit rate.Limit
	burst int

	mu     sync.Mutex
	byKey  map[string]*bucket
	swept  time.Time
	refill time.Duration // an idle bucket is full again after this long
}

type bucket struct {
	limiter *rate.Limiter
	seen    time.Time
}

// newBuckets returns buckets of perSecond tokens a second, holding burst;
// nil (no limit) for a negative rate.
func newBuckets(perSecond float64, burst int) *buckets {
	if perSecond < 0 {
		return nil
	}
	return &buckets{limit: rate.Limit(perSecond), burst: burst, byKey: map[string]*bucket{},
		refill: time.Duration(float64(burst) / perSecond * float64(time.Second))}
}

// take takes n tokens of credential's bucket, or says how long until
// they would be there and takes none.
func (b *buckets) take(credential string, n int, now time.Time) (retryAfter time.Duration, ok bool) {
	if b == nil {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	bk := b.byKey[credential]
	if bk == nil {
		bk = &bucket{limiter: rate.NewLimiter(b.limit, b.burst)}
		b.byKey[credential] = bk
	}
	bk.seen = now
	r := bk.limiter.ReserveN(now, n)
	if !r.OK() {
		// More than the bucket holds, which Config.Validate rules out.
		return b.refill, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweep forgets buckets idle long enough to be full again, which a new
// bucket is too: forgetting them changes nothing but the memory held.
func (b *buckets) sweep(now time.Time) {
	if now.Sub(b.swept) < time.Minute {
		return
	}
	b.swept = now
	for k, bk := range b.byKey {
		if now.Sub(bk.seen) > b.refill+time.Minute {
			delete(b.byKey, k)
		}
	}
}

// waiters counts each credential's position waits in progress.
type waiters struct {
	max   int
	mu    sync.Mutex
	byKey map[string]int
}

// enter admits one more wait of credential, unless it has max already;
// leave must follow an admitted one.
func (w *waiters) enter(credential string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey[credential] >= w.max {
		return false
	}
	w.byKey[credential]++
	return true
}

func (w *waiters) leave(credential string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey[credential]--; w.byKey[credential] <= 0 {
		delete(w.byKey, credential)
	}
}

// credentialOf names the credential a request's limits are counted by.
func credentialOf(r *http.Request) string {
	p := principalOf(r)
	return p.Tenant + "\x00" + p.Subject
}

// admitCommands takes n command tokens for the request's credential, or
// answers 429 itself.
func (s *Server) admitCommands(w http.ResponseWriter, r *http.Request, n int) bool {
	return s.admit(w, r, s.commandBuckets, n, s.cfg.CommandRate, "commands")
}

// read wraps a read endpoint: each request takes a read token of its
// credential, or is answered 429.
func (s *Server) read(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.admit(w, r, s.readBuckets, 1, s.cfg.ReadRate, "reads") {
			next(w, r)
		}
	}
}

func (s *Server) admit(w http.ResponseWriter, r *http.Request, b *buckets, n int, perSecond float64, what string) bool {
	wait, ok := b.take(credentialOf(r), n, time.Now())
	if ok {
		return true
	}
	s.tooMany(w, r, refusedRate, wait, fmt.Sprintf("this credential is over its limit of %g %s a second", perSecond, what))
	return false
}

// tooMany answers 429 with the seconds to wait in Retry-After.
func (s *Server) tooMany(w http.ResponseWriter, r *http.Request, reason string, wait time.Duration, detail string) {
	s.refusals.Refused(reason)
	seconds := max(1, int64(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.FormatInt(seconds, 10))
	writeProblem(w, r, Problem{Type: TypeRateLimited, Title: "Too many requests", Status: http.StatusTooManyRequests,
		Detail: fmt.Sprintf("%s; retry after %d s", detail, seconds)})
}
