package processor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/segmentio/encoding/json"

	"github.com/kappa-cqrs/kappa/producer/aggregate"
	"github.com/kappa-cqrs/kappa/schemas"
)

// The local store: a Pebble database that holds, per partition, the
// latest state of every aggregate and the outcomes of keyed commands, as
// of a checkpoint, the offset of the changelog it has applied up to. It is
// a cache of the changelog topic, which is the truth: a store that is lost,
// stale or from another cluster is restored from the changelog; one that is
// current costs a restart only the changelog's tail. Pebble keeps it on
// disk with a bounded cache in memory, so memory does not grow with the
// number of aggregates.
//
// Keys: a kind byte, the partition (4 bytes, big-endian), then
//
//	'a' aggregate key  -> aggregate.MarshalState
//	'k' command id     -> keyed outcome (marshalKeyed)
//	'x' decided at (8 bytes, big-endian) command id -> nothing: keyed outcomes by age, to expire them
//	'c'                -> checkpoint
//
// and one key of the whole store, 'm' "changelog", the id of the changelog
// topic its contents came from.

const (
	kindAggregate  byte = 'a'
	kindKeyed      byte = 'k'
	kindExpiry     byte = 'x'
	kindCheckpoint byte = 'c'
	kindMeta       byte = 'm'
)

// store is the processor's local store.
type store struct {
	db   *pebble.DB
	lock *pebble.Lock
	dir  string
}

// maxStoreSlots bounds the directories that processors of one group on one
// host take turns in; each running one holds one.
const maxStoreSlots = 64

// openSlotStore opens the store in the first directory "<base>-<n>" that
// no running processor holds: a processor whose transactional id changes
// from start to start (it has no instance id) still finds the store of an
// earlier one, so that it restores only what the changelog gained since,
// and no store is left behind for each start.
func openSlotStore(base string, cacheBytes int64, log *slog.Logger) (*store, error) {
	var errs []error
	for n := range maxStoreSlots {
		st, err := openStore(base+"-"+strconv.Itoa(n), cacheBytes, log)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("state store: all %d directories %s-N are in use or cannot be opened: %w", maxStoreSlots, base, errors.Join(errs...))
}

// openStore opens (or creates) the store in dir, which no other process
// may have open.
func openStore(dir string, cacheBytes int64, log *slog.Logger) (*store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("open the state store in %s (another processor is using it): %w", dir, err)
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:  cache,
		Lock:   lock,
		Logger: pebbleLogger{log.With("store", dir)},
		// The memtable is where recent writes wait for a flush; two of
		// them bound what writes hold in memory.
		MemTableSize:                4 << 20,
		MemTableStopWritesThreshold: 2,
		// No write-ahead log: the changelog is the store's log. A crash
		// loses what the memtables held, and the store comes back as of
		// an earlier flush, checkpoint included (a memtable is flushed
		// whole), so the restore reads a longer tail; it is never wrong.
		DisableWAL: true,
	}
	// Every command to an id not seen before looks it up and finds
	// nothing; bloom filters answer that without reading each table.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open the state store in %s: %w", dir, err), lock.Close())
	}
	return &store{db: db, lock: lock, dir: dir}, nil
}

func (s *store) close() error {
	// Without a log, what the memtables hold is written only by a flush.
	return errors.Join(s.db.Flush(), s.db.Close(), s.lock.Close())
}

func storeKey(kind byte, part int32, rest string) []byte {
	return appendStoreKey(make([]byte, 0, 5+len(rest)), kind, part, rest)
}

// appendStoreKey appends the store key of kind, part and rest to dst.
func appendStoreKey[Rest string | []byte](dst []byte, kind byte, part int32, rest Rest) []byte {
	dst = binary.BigEndian.AppendUint32(append(dst, kind), uint32(part))
	return append(dst, rest...)
}

// partitionBounds are the first key of a partition and the first after it.
func partitionBounds(kind byte, part int32) (lower, upper []byte) {
	return storeKey(kind, part, ""), storeKey(kind, part+1, "")
}

func (s *store) get(key []byte) ([]byte, bool, error) {
	v, ok, err := lookUp(s.db, key)
	if err != nil {
		return nil, false, fmt.Errorf("state store: %w", err)
	}
	return v, ok, nil
}

// lookUp returns a copy of key's value in the store or a batch.
func lookUp(r pebble.Reader, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	return out, true, closer.Close()
}

// aggregate returns an aggregate's state; the zero state if it has none.
func (s *store) aggregate(part int32, key string) (aggregate.State, error) {
	v, ok, err := s.get(storeKey(kindAggregate, part, key))
	if err != nil || !ok {
		return aggregate.State{}, err
	}
	st, err := aggregate.UnmarshalState(v)
	if err != nil {
		return aggregate.State{}, fmt.Errorf("state store: aggregate %s: %w", key, err)
	}
	return st, nil
}

// keyed returns the remembered outcome of a keyed command.
func (s *store) keyed(part int32, commandID string) (KeyedOutcome, bool, error) {
	v, ok, err := s.get(storeKey(kindKeyed, part, commandID))
	if err != nil || !ok {
		return KeyedOutcome{}, false, err
	}
	k, err := unmarshalKeyed(v)
	if err != nil {
		return KeyedOutcome{}, false, fmt.Errorf("state store: outcome of %s: %w", commandID, err)
	}
	return k, true, nil
}

// checkpoint is how far a partition's part of the store follows the
// changelog, and what it holds.
type checkpoint struct {
	// Next is the changelog offset after the last record applied.
	Next int64
	// Aggregates and Keyed count the entries of the partition;
	// Aggregates is uncounted (negative) while a restore from the
	// changelog's start is under way.
	Aggregates, Keyed int64
	// Seeded says the changelog held a committed record of the
	// partition: its state is the changelog's, not yet the events'.
	// Seeding says part of it only: a bootstrap written in chunks began
	// and has not ended.
	Seeded, Seeding bool
}

func (s *store) checkpoint(part int32) (checkpoint, error) {
	v, ok, err := s.get(storeKey(kindCheckpoint, part, ""))
	if err != nil || !ok {
		return checkpoint{}, err
	}
	if len(v) != 25 {
		return checkpoint{}, fmt.Errorf("state store: checkpoint of partition %d has %d bytes, want 25", part, len(v))
	}
	return checkpoint{
		Next:       int64(binary.BigEndian.Uint64(v)),
		Aggregates: int64(binary.BigEndian.Uint64(v[8:])),
		Keyed:      int64(binary.BigEndian.Uint64(v[16:])),
		Seeded:     v[24] >= 1,
		Seeding:    v[24] == 2,
	}, nil
}

var changelogIDKey = []byte{kindMeta, 'c', 'h', 'a', 'n', 'g', 'e', 'l', 'o', 'g'}

// forChangelog makes sure the store holds state of the changelog topic
// with this id, and wipes it if it held another's: a topic deleted and
// created again starts from offset 0, and offsets of the old one would
// point into it.
func (s *store) forChangelog(id [16]byte, log *slog.Logger) error {
	v, ok, err := s.get(changelogIDKey)
	if err != nil || (ok && bytes.Equal(v, id[:])) {
		return err
	}
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	if ok {
		log.Warn("the state store holds another changelog topic's state; dropping it", "store", s.dir)
		if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
			return err
		}
	}
	if err := b.Set(changelogIDKey, id[:], nil); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// countAggregates counts the aggregates of a partition.
func (s *store) countAggregates(part int32) (n int64, err error) {
	lower, upper := partitionBounds(kindAggregate, part)
	_, err = s.eachBetween(lower, upper, func(_, _ []byte) bool { n++; return true })
	return n, err
}

// chunk calls fn with up to limit entries of a partition's state, its
// aggregates and then its keyed outcomes, in the form the changelog keeps,
// from the first after the store key after (nil: from the first of all).
// It returns the store key of the last entry it passed if more may
// follow, nil once none is left.
func (s *store) chunk(part int32, after []byte, limit int, fn func(kind byte, key string, value []byte)) (last []byte, err error) {
	n := 0
	for _, kind := range []byte{kindAggregate, kindKeyed} {
		lower, upper := partitionBounds(kind, part)
		if after != nil && bytes.Compare(after, upper) >= 0 {
			continue
		}
		if after != nil && bytes.Compare(after, lower) >= 0 {
			lower = append(bytes.Clone(after), 0)
		}
		more, err := s.eachBetween(lower, upper, func(key, value []byte) bool {
			if n == limit {
				return false
			}
			fn(kind, string(key[5:]), bytes.Clone(value))
			last, n = bytes.Clone(key), n+1
			return true
		})
		if err != nil || more {
			return last, err
		}
	}
	return nil, nil
}

// eachBetween calls fn with the entries from lower to upper until fn
// returns false, and reports whether it did.
func (s *store) eachBetween(lower, upper []byte, fn func(key, value []byte) bool) (stopped bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return false, fmt.Errorf("state store: %w", err)
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for it.First(); it.Valid(); it.Next() {
		if !fn(it.Key(), it.Value()) {
			return true, nil
		}
	}
	return false, it.Error()
}

// expiredKeyed lists up to limit keyed outcomes of a partition decided
// before the given time, oldest first.
func (s *store) expiredKeyed(part int32, before time.Time, limit int) (_ []expiry, err error) {
	lower, _ := partitionBounds(kindExpiry, part)
	upper := storeKey(kindExpiry, part, string(binary.BigEndian.AppendUint64(nil, uint64(before.UnixNano()))))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var out []expiry
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		k := it.Key()[5:]
		out = append(out, expiry{decidedAt: int64(binary.BigEndian.Uint64(k)), commandID: string(k[8:])})
	}
	return out, it.Error()
}

// expiry names a keyed outcome in the expiry index.
type expiry struct {
	decidedAt int64 // Unix nanoseconds
	commandID string
}

func expiryKey(part int32, e expiry) []byte {
	rest := binary.BigEndian.AppendUint64(nil, uint64(e.decidedAt))
	return storeKey(kindExpiry, part, string(append(rest, e.commandID...)))
}

// memoryBytes is what the store holds in memory: its block cache and
// memtables.
func (s *store) memoryBytes() int64 {
	m := s.db.Metrics()
	return m.BlockCache.Size + int64(m.MemTable.Size)
}

// storeBatch is a set of changes to the store that apply at once. It reads
// its own writes, so that a restore counts the entries it adds once.
type storeBatch struct {
	b      *pebble.Batch
	closed bool
	// scratch holds a key being built; the batch copies what it is given.
	scratch []byte
}

func (s *store) newBatch() *storeBatch { return &storeBatch{b: s.db.NewIndexedBatch()} }

// setAggregate stores an aggregate's encoded state; it reports whether the
// aggregate is new to the store.
func (b *storeBatch) setAggregate(part int32, key string, state []byte) (bool, error) {
	k := storeKey(kindAggregate, part, key)
	_, had, err := lookUp(b.b, k)
	if err != nil {
		return false, err
	}
	return !had, b.b.Set(k, state, nil)
}

// setKeyed stores a keyed outcome in its changelog form; it reports
// whether the outcome is new to the store.
func (b *storeBatch) setKeyed(part int32, commandID string, value []byte) (bool, error) {
	k := storeKey(kindKeyed, part, commandID)
	old, ok, err := lookUp(b.b, k)
	if err != nil {
		return false, err
	}
	if ok {
		// Written again (a restore reading what it had): the old index
		// entry goes.
		if at, err := keyedDecidedAt(old); err == nil {
			if err := b.b.Delete(expiryKey(part, expiry{at, commandID}), nil); err != nil {
				return false, err
			}
		}
	}
	at, err := keyedDecidedAt(value)
	if err != nil {
		return false, err
	}
	if err := b.b.Set(k, value, nil); err != nil {
		return false, err
	}
	return !ok, b.b.Set(expiryKey(part, expiry{at, commandID}), nil, nil)
}

// deleteKeyed forgets a keyed outcome; it reports whether there was one.
func (b *storeBatch) deleteKeyed(part int32, commandID string) (bool, error) {
	k := storeKey(kindKeyed, part, commandID)
	old, ok, err := lookUp(b.b, k)
	if err != nil || !ok {
		return false, err
	}
	if at, err := keyedDecidedAt(old); err == nil {
		if err := b.b.Delete(expiryKey(part, expiry{at, commandID}), nil); err != nil {
			return false, err
		}
	}
	return true, b.b.Delete(k, nil)
}

func (b *storeBatch) setCheckpoint(part int32, cp checkpoint) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(cp.Next))
	v = binary.BigEndian.AppendUint64(v, uint64(cp.Aggregates))
	v = binary.BigEndian.AppendUint64(v, uint64(cp.Keyed))
	seeded := byte(0)
	switch {
	case cp.Seeded && cp.Seeding:
		seeded = 2
	case cp.Seeded:
		seeded = 1
	}
	v = append(v, seeded)
	return b.b.Set(storeKey(kindCheckpoint, part, ""), v, nil)
}

// wipe drops everything the store holds of a partition.
func (b *storeBatch) wipe(part int32) error {
	for _, kind := range []byte{kindAggregate, kindKeyed, kindExpiry, kindCheckpoint} {
		lower, upper := partitionBounds(kind, part)
		if err := b.b.DeleteRange(lower, upper, nil); err != nil {
			return err
		}
	}
	return nil
}

// commit applies the batch. It does not wait for the disk: a store that
// loses its last writes in a crash is behind the changelog, not wrong,
// because every checkpoint is written in the batch whose changes it
// counts.
func (b *storeBatch) commit() error {
	defer b.close()
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	return nil
}

func (b *storeBatch) close() {
	if !b.closed {
		b.closed = true
		_ = b.b.Close()
	}
}

// marshalKeyed is the stored and changelog form of a keyed outcome: when
// it was decided (Unix nanoseconds, 8 bytes) and the outcome as JSON.
func marshalKeyed(k KeyedOutcome) ([]byte, error) {
	data, err := json.Marshal(k.Outcome)
	if err != nil {
		return nil, err
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(k.DecidedAt.UnixNano())), data...), nil
}

func keyedDecidedAt(v []byte) (int64, error) {
	if len(v) < 8 {
		return 0, errors.New("keyed outcome: truncated")
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func unmarshalKeyed(v []byte) (KeyedOutcome, error) {
	at, err := keyedDecidedAt(v)
	if err != nil {
		return KeyedOutcome{}, err
	}
	var o schemas.Outcome
	if err := json.Unmarshal(v[8:], &o); err != nil {
		return KeyedOutcome{}, fmt.Errorf("keyed outcome: %w", err)
	}
	return KeyedOutcome{Outcome: o, DecidedAt: time.Unix(0, at)}, nil
}

// pebbleLogger writes Pebble's logs to the processor's.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
	os.Exit(1)
}
