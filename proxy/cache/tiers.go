package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/rules"
)

// Source says where Lookup found an answer; String is the X-Cache value.
type Source uint8

const (
	Miss Source = iota
	HitL1
	HitL2
)

func (s Source) String() string {
	switch s {
	case HitL1:
		return "HIT-L1"
	case HitL2:
		return "HIT-L2"
	}
	return "MISS"
}

// Config configures Tiers. Zero values take the defaults documented on
// GenerationsOptions and rules.Cache (Cache.InvalidationLease is the lease).
type Config struct {
	Cache rules.Cache
	// Redis, if set, is used instead of dialing Cache.RedisURL (tests, relays); Tiers
	// does not close it.
	Redis          redis.UniversalClient
	GenTTL         time.Duration
	ReadKeyTTL     time.Duration
	HealthInterval time.Duration
	MaxTags        int
	Registerer     prometheus.Registerer
	Logger         *slog.Logger
}

// Tiers is the facade the proxy uses: L1, L2 and Generations wired together so that
// the request path is four calls:
//
//	read:  e, src, _ := t.Lookup(ctx, key, tags, rule.Consistency, now)
//	       on miss: st, err := t.Begin(ctx, tags)   // BEFORE asking the upstream
//	       then:    e := &Entry{…, Tags: tags}; st.Apply(e); t.Fill(ctx, key, e)
//	               (skip Fill when Begin failed: the read cannot prove it is not stale)
//	write: forward; once it may have landed t.AfterWrite(ctx, tags)
//
// The proxy's fast variant of the read: LookupStamped, whose stamp (when it has one)
// replaces Begin, and FillBehind, which writes L2 after the client is answered.
//
// Errors are for logging only: a failed Lookup is a miss; a failed Begin means
// "serve the answer but do not Fill"; a failed AfterWrite must not fail
// the write (the failed bump is replayed until Redis takes it, and this replica does
// not trust what it covers meanwhile; ErrAckTimeout means a replica stayed silent
// for the whole lease, and has stopped trusting its L1). Every read's tags should include DatabaseTag(db), so that
// PurgeDatabase works.
// The fields are exported for metrics, admin and tests; L2 is nil without Redis.
type Tiers struct {
	L1   *L1
	L2   *L2
	Gens *Generations

	own     *redis.Client // dialed by New, closed by Close
	maxLife time.Duration
	log     *slog.Logger

	// Fills whose L2 write runs after the client was answered (FillBehind): at most
	// cap(fillSlots) at once; pending maps their key to a channel closed when done,
	// so that a Lookup of that key on this replica waits for the write instead of
	// missing (and asking the upstream again).
	fillSlots chan struct{}
	fills     sync.WaitGroup
	pending   sync.Map // Key -> chan struct{}
}

// maxFillsBehind bounds the L2 writes FillBehind runs in the background; beyond it
// FillBehind writes before returning (backpressure instead of unbounded memory).
const maxFillsBehind = 256

// NewRedisClient dials rules.Cache.RedisURL with options suited to a cache on the
// request path: context deadlines honored, every timeout = RedisTimeout, no retries
// (a miss is cheaper than a retry past the budget).
func NewRedisClient(c rules.Cache) (*redis.Client, error) {
	opt, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("cache: redis url: %w", err)
	}
	t := c.RedisTimeout
	if t <= 0 {
		t = 25 * time.Millisecond
	}
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = 4 * t
	opt.ReadTimeout = t
	opt.WriteTimeout = t
	opt.PoolTimeout = t
	opt.MaxRetries = -1
	return redis.NewClient(opt), nil
}

// New builds the tiers. With neither Config.Redis nor Cache.RedisURL, it is L1 only
// with in-process generations (always trusted).
func New(cfg Config) (*Tiers, error) {
	m := NewMetrics(cfg.Registerer)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Tiers{log: log.With("component", "cache.tiers"), fillSlots: make(chan struct{}, maxFillsBehind)}
	rdb := cfg.Redis
	if rdb == nil && cfg.Cache.RedisURL != "" {
		c, err := NewRedisClient(cfg.Cache)
		if err != nil {
			return nil, err
		}
		t.own, rdb = c, c
	}
	gens, err := NewGenerations(GenerationsOptions{
		Redis: rdb, Prefix: cfg.Cache.KeyPrefix, Timeout: cfg.Cache.RedisTimeout,
		Lease: cfg.Cache.InvalidationLease, MaxTags: cfg.MaxTags, GenTTL: cfg.GenTTL, ReadKeyTTL: cfg.ReadKeyTTL,
		HealthInterval: cfg.HealthInterval, Logger: cfg.Logger, Metrics: m,
	})
	if err != nil {
		t.Close()
		return nil, err
	}
	t.Gens = gens
	t.maxLife = gens.opt.GenTTL / 2
	t.L1 = NewL1(cfg.Cache.L1MaxBytes, cfg.Cache.L1MaxEntries, m)
	if t.L1 != nil {
		m.registerL1(cfg.Registerer, t.L1)
	}
	if rdb != nil {
		t.L2 = NewL2(rdb, gens.opt.Prefix, gens.opt.Timeout, m)
		t.L2.readKeyTTL = gens.opt.ReadKeyTTL
	}
	return t, nil
}

// Close waits for background fills, stops the subscription and closes a Redis
// client New dialed.
func (t *Tiers) Close() error {
	t.fills.Wait()
	var errs []error
	if t.Gens != nil {
		errs = append(errs, t.Gens.Close())
	}
	if t.own != nil {
		errs = append(errs, t.own.Close())
	}
	return errors.Join(errs...)
}

// Lookup returns an answer for key that may be served at now, or Miss:
//   - L1, if Generations.Valid (or, for consistency eventual while untrusted,
//     ValidEventual);
//   - else L2, if the entry's recorded generations equal Redis's current ones for
//     tags (read in the same round trip); it is then promoted into L1.
//
// Returned entries are Usable at now; Entry.Fresh tells a hit from a stale one. An
// error (Redis) comes with Miss and is only for logging: serve from upstream.
func (t *Tiers) Lookup(ctx context.Context, key Key, tags []string, c rules.Consistency, now time.Time) (*Entry, Source, error) {
	e, src, _, err := t.LookupStamped(ctx, key, tags, c, now)
	return e, src, err
}

// LookupStamped is Lookup that also begins the read when it asks L2: the
// generations L2 answers are read in the same atomic command as the entry, after the
// epoch was taken, with missing generation keys created as Snapshot does (never 0).
// They are exactly what Begin would have returned at that moment, which is before
// the caller asks the upstream; so st may stamp the read that follows a miss, and no
// separate Begin round trip is needed. st.Gens is nil when there is no such stamp
// (an L1 answer, no Redis, a Redis error): call Begin then. st.Gens must not be
// modified.
func (t *Tiers) LookupStamped(ctx context.Context, key Key, tags []string, c rules.Consistency, now time.Time) (e *Entry, src Source, st Stamp, err error) {
	if e := t.L1.Get(key); e != nil && e.Usable(now) {
		if t.Gens.Valid(e) || (c == rules.Eventual && t.Gens.ValidEventual(e)) {
			return e, HitL1, Stamp{}, nil
		}
	}
	if t.L2 == nil {
		return nil, Miss, Stamp{}, nil
	}
	if err := t.Gens.stampable(tags); err != nil {
		// Too many tags to cache, or a bump of one of them failed here and Redis still
		// holds the generation it outdated: neither L2 nor a stamp can be trusted.
		return nil, Miss, Stamp{}, nil
	}
	var since time.Time
	if v, ok := t.pending.Load(key); ok {
		// This replica is writing key to L2 (FillBehind): read what it wrote. The wait
		// counts against the lookup's one Redis timeout.
		since = time.Now()
		select {
		case <-v.(chan struct{}):
		case <-ctx.Done():
		}
	}
	epoch, drops := t.Gens.Epoch(), t.Gens.table.drops.Load()
	// Usually the replica has seen these tags, so their keys exist: a plain MGET,
	// cheapest for Redis (a key that vanished since reads 0: then no stamp). Else
	// lookupScript, which creates them.
	var gens []uint64
	e, gens, err = t.L2.get(ctx, key, tags, !t.Gens.knows(tags), since)
	if err != nil {
		return nil, Miss, Stamp{}, err
	}
	t.Gens.learn(tags, gens, epoch, drops)
	if !slices.Contains(gens, 0) {
		st = Stamp{Gens: gens, Epoch: epoch}
	}
	if e == nil || !e.Current(tags, gens) || !e.Usable(now) {
		return nil, Miss, st, nil
	}
	// Current as of a read that began in epoch: stamp it so, for L1.
	e.Epoch = epoch
	t.L1.Add(key, e)
	return e, HitL2, st, nil
}

// Begin stamps a read about to be sent upstream (Generations.Snapshot).
func (t *Tiers) Begin(ctx context.Context, tags []string) (Stamp, error) {
	return t.Gens.Snapshot(ctx, tags)
}

// Fill stores the answer of a read stamped by Begin: in L1 if no bump of its tags
// has been seen since the stamp, and in L2 under the atomic generation check. The
// entry's lifetime is capped at half the generation keys' TTL. e must not be shared
// yet; it must not be modified afterwards. The error is only for logging.
func (t *Tiers) Fill(ctx context.Context, key Key, e *Entry) error {
	if err := t.fillL1(key, e); err != nil || t.L2 == nil {
		return err
	}
	_, err := t.L2.Set(ctx, key, e)
	return err
}

// FillBehind is Fill with the L2 write done in the background, so the caller can
// answer its client without waiting for it. That cannot store a stale entry: the
// write is the same compare-and-set against the generations e recorded, so a bump
// at any moment after the stamp (before or while the write is queued) makes Redis
// refuse it, exactly as if it had been written synchronously later. At most
// maxFillsBehind writes run at once; beyond that FillBehind writes before returning.
// Errors of background writes are counted (redis errors, l2_set) and logged. Close
// waits for them.
func (t *Tiers) FillBehind(key Key, e *Entry) error {
	if err := t.fillL1(key, e); err != nil || t.L2 == nil {
		return err
	}
	select {
	case t.fillSlots <- struct{}{}:
	default:
		_, err := t.L2.Set(context.Background(), key, e)
		return err
	}
	done := make(chan struct{})
	t.pending.Store(key, done)
	t.fills.Add(1)
	go func() {
		defer func() {
			t.pending.CompareAndDelete(key, done)
			close(done)
			<-t.fillSlots
			t.fills.Done()
		}()
		if _, err := t.L2.Set(context.Background(), key, e); err != nil {
			t.log.Debug("background L2 fill failed", "err", err)
		}
	}()
	return nil
}

// fillL1 checks and caps e, and adds it to L1 if no bump of its tags has been seen
// since its stamp.
func (t *Tiers) fillL1(key Key, e *Entry) error {
	if len(e.Tags) != len(e.Gens) {
		return fmt.Errorf("cache: fill: %d tags but %d gens (not stamped?)", len(e.Tags), len(e.Gens))
	}
	if limit := time.Now().Add(t.maxLife); e.StaleUntil.After(limit) {
		e.StaleUntil = limit
		if e.FreshUntil.After(limit) {
			e.FreshUntil = limit
		}
	}
	e.prepare()
	if t.Gens.Valid(e) {
		t.L1.Add(key, e)
	}
	return nil
}

// A write bumps nothing before it is forwarded: a write the upstream refuses (a
// 403, a 400) must not invalidate anything, or anyone could empty everyone's cache
// with writes they may not make. The no-stale-fill promise does not need a bump
// before forwarding: every fill is a compare-and-set against the generations its
// read began with (L2.Set, and Valid for L1), and AfterWrite's bump, made once the
// write may have landed and before it is answered, outdates every read that began
// before it, whether its fill comes before or after the bump.

// AfterWrite bumps the tags a write touches once it may have landed (a success, or
// an unknown outcome: no answer, a 5xx), and waits until every replica applied it or
// the lease passed: once the client is answered no replica serves what the write
// outdated. A bump Redis does not take is handled by Generations.Bump (forgotten
// locally, this replica untrusted, replayed); it is never widened beyond the write's
// own tags. The work is proportional to the write (chunks of maxBumpChunk tags).
func (t *Tiers) AfterWrite(ctx context.Context, tags []string) error {
	return t.Gens.Bump(ctx, tags, WaitApplied)
}

// The purges take their tags from classify, the one owner of the tag vocabulary, so
// a purge invalidates exactly what a write of the same thing would.

// ErrNotAResource is a purge of something that names no document or collection.
var ErrNotAResource = errors.New("cache: not a document or collection path")

// PurgeDocument invalidates what a write of one document would, on every replica:
// the document, the collection and group queries that may contain it, and the
// collection-id lists of its ancestors. doc is relative to db's documents root.
func (t *Tiers) PurgeDocument(ctx context.Context, db, doc string) error {
	tags := classify.WriteTags(db, doc)
	if tags == nil {
		return ErrNotAResource
	}
	return t.Gens.Bump(ctx, tags, WaitApplied)
}

// PurgeCollection invalidates a collection's lists and queries (and group queries
// on its id). Single-document entries keep their own doc tags: use PurgeDocument or
// PurgeDatabase for those.
func (t *Tiers) PurgeCollection(ctx context.Context, db, coll string) error {
	tags := classify.CollectionTags(db, coll)
	if tags == nil {
		return ErrNotAResource
	}
	return t.Gens.Bump(ctx, tags, WaitApplied)
}

// PurgeGroup invalidates collection-group queries on collectionID.
func (t *Tiers) PurgeGroup(ctx context.Context, db, collectionID string) error {
	return t.Gens.Bump(ctx, []string{classify.GroupTag(db, collectionID)}, WaitApplied)
}

// PurgeDatabase invalidates everything cached for db, in O(1).
func (t *Tiers) PurgeDatabase(ctx context.Context, db string) error {
	return t.Gens.Bump(ctx, []string{classify.DatabaseTag(db)}, WaitApplied)
}
