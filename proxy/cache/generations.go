package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// BumpMode says whether Bump waits for the other replicas.
type BumpMode uint8

const (
	// NoWait returns once Redis has the new generations (replays, and callers that
	// need no read-your-writes).
	NoWait BumpMode = iota
	// WaitApplied also waits until every subscribed replica has applied the bump to
	// its local table (the bump after the upstream's success, before the client is
	// answered). Without it, replica B could still validate an old L1 entry in the
	// window between A's PUBLISH and B's subscriber applying it, and a client that
	// wrote through A and reads through B would not see its write.
	WaitApplied
)

// ErrAckTimeout is wrapped by Bump(…, WaitApplied) when some replica did not
// acknowledge within the lease. The generations WERE bumped in Redis and the write
// may be answered: a replica silent that long has stopped trusting its L1 (see
// "Lease" in doc.go).
var ErrAckTimeout = errors.New("cache: invalidation not acknowledged by every replica in time")

// Stamp is what a read records when it BEGINS: the generation of each of its tags
// and the local epoch. Copy both into the Entry the read fills.
type Stamp struct {
	Gens  []uint64
	Epoch uint64
}

// Apply records the stamp in e (e.Gens, e.Epoch).
func (s Stamp) Apply(e *Entry) { e.Gens, e.Epoch = s.Gens, s.Epoch }

// GenerationsOptions configures Generations. Zero values take the defaults given.
type GenerationsOptions struct {
	// Redis holds the generations and carries the broadcasts. nil: in-process only,
	// the local table is the truth and is always trusted. Use NewRedisClient (its
	// calls respect context deadlines, which the timeouts below rely on).
	Redis redis.UniversalClient
	// Prefix of every key and channel. Default "harvest:".
	Prefix string
	// Timeout bounds each Redis call. Default 25ms.
	Timeout time.Duration
	// Lease is the bound of the invalidation bus (rules.Cache.InvalidationLease): a
	// replica trusts its local table only while it has heard from the bus within it
	// (see "Lease" in doc.go), and Bump(…, WaitApplied) waits at most this long for a
	// replica that does not acknowledge, which by then has stopped trusting its L1.
	// Default 1s.
	Lease time.Duration
	// MaxTags bounds the local table. Default 1<<18 (roughly 35 MiB with long tags).
	MaxTags int
	// GenTTL is how long a generation key lives after its last bump (a write). It must
	// exceed every entry's lifetime (Tiers caps lifetimes at GenTTL/2). Default 7 days.
	GenTTL time.Duration
	// ReadKeyTTL is the lifetime of a generation key a read creates (a tag no write has
	// bumped yet): long enough for the read to reach its fill, short so that reads of
	// documents that never exist leave nothing behind. Storing an entry in L2 extends
	// its keys to the entry's own lifetime. Default 1m.
	ReadKeyTTL time.Duration
	// HealthInterval is the heartbeat: the subscription is PINGed this often, and each
	// answer renews the lease. Default Lease/5.
	HealthInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Metrics; nil records nothing.
	Metrics *Metrics
}

func (o *GenerationsOptions) defaults() {
	if o.Prefix == "" {
		o.Prefix = "harvest:"
	}
	if o.Timeout <= 0 {
		o.Timeout = 25 * time.Millisecond
	}
	if o.Lease <= 0 {
		o.Lease = time.Second
	}
	if o.MaxTags <= 0 {
		o.MaxTags = 1 << 18
	}
	if o.GenTTL <= 0 {
		o.GenTTL = 7 * 24 * time.Hour
	}
	if o.ReadKeyTTL <= 0 {
		o.ReadKeyTTL = time.Minute
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = o.Lease / 5
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Generations tracks tag generations: the source of truth (Redis, or this process),
// this replica's local table of them, and the subscription that keeps the table
// current. Construct with NewGenerations; Close stops its goroutines.
type Generations struct {
	opt     GenerationsOptions
	rdb     redis.UniversalClient
	log     *slog.Logger
	m       *Metrics
	id      string // this replica's id: its ack channel
	invalCh string
	ackCh   string
	// presenceKey is the sorted set of replicas that may hold a lease (see "Lease").
	presenceKey string

	table *table
	// state is epoch<<1 | trusted, one word so the hot path reads both at once. The
	// trusted bit is subscribed && lease running && nothing pending (updateTrustLocked).
	state atomic.Uint64
	clock atomic.Uint64 // in-process generations
	seq   atomic.Uint64 // bump message ids
	// pending is set while some bump failed and has not been replayed (failed is not
	// empty): a cheap check for the lookup path before it takes mu.
	pending atomic.Bool

	bump *redis.Script
	snap *redis.Script // snapshotScript

	// onInvalidate, when set, is told the tags of every bump this replica makes or
	// applies from the bus, before the bump is made or acknowledged (OnInvalidate).
	onInvalidate atomic.Pointer[func(tags []string)]

	mu         sync.Mutex
	waiters    map[uint64]*ackWait
	failed     map[string]struct{} // tags whose bump failed: replayed until Redis takes them
	subscribed bool
	leaseUntil time.Time   // the local lease from the bus: trusted only before it
	presentTil time.Time   // the lease from the presence set: trusted only before it
	leaseTimer *time.Timer // fires at leaseUntil, to drop trust on time
	stateCh    chan struct{}
	ps         *redis.PubSub

	acks   chan ackOut
	ackRdb redis.UniversalClient // sends acks; see ackClient
	ownAck *redis.Client         // ackRdb when dialed by ackClient
	replay chan struct{}         // wakes the replay loop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ackWait is one bump message's wait: done is closed once every other replica that
// may hold a lease (expect, from the presence set; nil until the bump answered) has
// acknowledged it (got).
type ackWait struct {
	expect map[string]struct{}
	got    map[string]struct{}
	done   chan struct{}
}

// finishIfComplete closes done, once, when every expected replica acknowledged. Call
// with g.mu held.
func (w *ackWait) finishIfComplete() {
	select {
	case <-w.done:
		return
	default:
	}
	if w.complete() {
		close(w.done)
	}
}

// complete reports whether every expected replica acknowledged. Call with g.mu held.
func (w *ackWait) complete() bool {
	if w.expect == nil {
		return false
	}
	for id := range w.expect {
		if _, ok := w.got[id]; !ok {
			return false
		}
	}
	return true
}

type ackOut struct {
	writer string
	id     uint64
}

// maxFailed bounds the tags of failed bumps remembered for replay. Beyond it the
// excess is lost (counted and logged): this replica forgets its whole local table,
// but other replicas and L2 may serve what those writes outdated until their TTL. A
// client's request is never escalated to a database-wide purge.
const maxFailed = 1 << 16

// maxBumpChunk bounds the tags of one bump script call (and of one broadcast
// message): Redis runs a script alone, so a write touching thousands of documents is
// bumped in several short calls, each with its own timeout, instead of one call that
// overruns it (the work is proportional to the write, whose size the upstream and
// server.max_body_bytes bound).
const maxBumpChunk = 256

// maxStampTags bounds the tags of a read that may be cached with Redis: a read with
// more (a batchGet of thousands of documents) is served uncached, so no one request
// creates more generation keys than this.
const maxStampTags = 1000

// ErrTooManyTags is wrapped by Snapshot for a read with more than maxStampTags tags.
var ErrTooManyTags = errors.New("cache: read depends on too many tags to be cached")

// ErrPending is wrapped by Snapshot when a tag of the read has a bump that failed and
// is not yet replayed: Redis holds an outdated generation for it, which must not
// stamp a read.
var ErrPending = errors.New("cache: an invalidation of this read's tags is pending")

// bumpScript sets each generation to max(old+1, server time in µs), refreshes its
// TTL, and publishes the new values, all in one round trip. KEYS: gen keys…, then the
// presence set. ARGV: ttl ms, channel, message head (the gens are appended,
// comma-separated). Returns {ids of the replicas whose presence has not expired,
// gens…}. Values are formatted with %d: Lua's tostring would round them to 14 digits.
const bumpScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {0}
local gens = {}
for i = 1, #KEYS - 1 do
  local k = KEYS[i]
  local v = tonumber(redis.call('GET', k) or '0') or 0
  if v < now then v = now else v = v + 1 end
  local s = string.format('%d', v)
  redis.call('SET', k, s, 'PX', ARGV[1])
  gens[i] = s
  out[i + 1] = s
end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. table.concat(gens, ','))
out[1] = redis.call('ZRANGEBYSCORE', KEYS[#KEYS], string.format('%d', math.floor(now / 1000)), '+inf')
return out
`

// presenceScript records that replica ARGV[1] may trust its L1 until the server's
// time + ARGV[2] ms, in the sorted set KEYS[1] (and forgets expired replicas).
const presenceScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
`

// snapshotScript reads generations, first setting any that do not exist to the server
// time in µs (with ARGV[1], the read key TTL: see GenerationsOptions.ReadKeyTTL). A read is therefore never stamped with 0, the
// value of a missing key: if Redis later evicts or loses the key, it reads 0 again,
// which matches no entry, instead of validating an entry stamped before writes that
// the lost key had counted.
const snapshotScript = genOrCreateLua + `
local out = {}
for i, k in ipairs(KEYS) do
  out[i] = genOrCreate(k, ARGV[1])
end
return out
`

// genOrCreateLua defines genOrCreate(key, ttlMillis) for the scripts that stamp a read
// (snapshotScript, lookupScript): a generation key's value, first set to the server
// time in µs when it does not exist, so no stamp is ever 0.
const genOrCreateLua = `
local now
local function genOrCreate(k, ttl)
  local v = redis.call('GET', k)
  if not v then
    if not now then
      local t = redis.call('TIME')
      now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    v = now
    redis.call('SET', k, v, 'PX', ttl)
  end
  return v
end
`

// NewGenerations starts tracking generations. With Redis it subscribes in the
// background and is untrusted until subscribed (WaitTrusted).
func NewGenerations(opt GenerationsOptions) (*Generations, error) {
	opt.defaults()
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, fmt.Errorf("cache: replica id: %w", err)
	}
	g := &Generations{
		opt:     opt,
		rdb:     opt.Redis,
		log:     opt.Logger.With("component", "cache.generations"),
		m:       opt.Metrics,
		id:      hex.EncodeToString(idb[:]),
		table:   newTable(opt.MaxTags),
		waiters: map[uint64]*ackWait{},
		failed:  map[string]struct{}{},
		stateCh: make(chan struct{}),
		bump:    redis.NewScript(bumpScript),
		snap:    redis.NewScript(snapshotScript),
	}
	g.invalCh = opt.Prefix + "invalidate"
	g.ackCh = opt.Prefix + "ack:" + g.id
	g.presenceKey = opt.Prefix + "replicas"
	if g.rdb == nil {
		g.state.Store(1<<1 | 1) // epoch 1, trusted: this process is the truth
		return g, nil
	}
	g.state.Store(1 << 1)
	g.m.setSubscribed(false)
	g.m.setTrusted(false)
	g.leaseTimer = time.AfterFunc(time.Hour, g.updateTrust)
	g.leaseTimer.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.acks = make(chan ackOut, 1024)
	g.ackRdb = g.rdb
	if c, ok := g.rdb.(*redis.Client); ok {
		g.ownAck = ackClient(c, opt.Lease)
		g.ackRdb = g.ownAck
	}
	g.replay = make(chan struct{}, 1)
	g.wg.Add(4)
	go g.subscribe(ctx)
	go g.sendAcks(ctx)
	go g.replayLoop(ctx)
	go g.presenceLoop(ctx)
	return g, nil
}

// Close stops the subscription. Generations must not be used afterwards.
func (g *Generations) Close() error {
	if g.cancel == nil {
		return nil
	}
	g.cancel()
	g.mu.Lock()
	if g.ps != nil {
		g.ps.Close() // unblocks a pending receive
	}
	g.mu.Unlock()
	g.wg.Wait()
	g.mu.Lock()
	g.subscribed = false
	g.updateTrustLocked()
	g.mu.Unlock()
	g.leaseTimer.Stop()
	// Leave the presence set, so that writers stop waiting for this replica at once.
	ctx, cancel := context.WithTimeout(context.Background(), g.opt.Timeout)
	g.ackRdb.ZRem(ctx, g.presenceKey, g.id)
	cancel()
	if g.ownAck != nil {
		g.ownAck.Close()
	}
	return nil
}

// ackClient is a client like c whose timeouts are the lease: an acknowledgement is
// useful to its writer for that long, and is sent off the request path, so a replica
// whose link is slower than the request path's Redis timeout still acknowledges
// (and its writers need not wait out the lease).
func ackClient(c *redis.Client, lease time.Duration) *redis.Client {
	opt := *c.Options()
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = lease, lease, lease, lease
	opt.PoolSize, opt.MinIdleConns = 2, 0
	opt.PushNotificationProcessor, opt.MaintNotificationsConfig = nil, nil // per client: not shared
	return redis.NewClient(&opt)
}

// Trusted reports whether the local table reflects every bump: always with no
// Redis; with Redis, only while subscribed, within the lease, and with no failed bump
// of this replica waiting to be replayed. When false, rules with consistency strong
// must treat L1 as empty; eventual rules may use ValidEventual.
func (g *Generations) Trusted() bool { return g.state.Load()&1 == 1 }

// Epoch is the current local epoch; it changes at every (re)subscription.
func (g *Generations) Epoch() uint64 { return g.state.Load() >> 1 }

// ID is this replica's id (its acknowledgement channel is <prefix>ack:<id>).
func (g *Generations) ID() string { return g.id }

// WaitTrusted blocks until Trusted or ctx ends (for readiness probes and tests).
func (g *Generations) WaitTrusted(ctx context.Context) error { return g.waitState(ctx, true) }

func (g *Generations) waitState(ctx context.Context, trusted bool) error {
	for {
		g.mu.Lock()
		ok, ch := g.Trusted() == trusted, g.stateCh
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cache: waiting for trusted=%v: %w", trusted, ctx.Err())
		}
	}
}

// Valid reports whether e may be served from L1: the table is trusted, e was
// stamped in the current epoch, and every tag's local generation is known and
// equals the one e recorded. This is the hot path: no allocation, no I/O.
func (g *Generations) Valid(e *Entry) bool {
	st := g.state.Load()
	return st&1 == 1 && st>>1 == e.Epoch && g.matches(e)
}

// ValidEventual is Valid without the trust requirement, for rules with consistency
// eventual while the replica is not trusted: e matches the last generations this
// replica saw. Freshness still bounds it (Entry.Usable); entries from before a
// subscription gap never validate (the epoch changed), nor entries of tags whose
// bump by this replica failed (forgotten until replayed).
func (g *Generations) ValidEventual(e *Entry) bool {
	return g.state.Load()>>1 == e.Epoch && g.matches(e)
}

func (g *Generations) matches(e *Entry) bool {
	if len(e.Tags) != len(e.Gens) {
		return false
	}
	hashed := len(e.tagHashes) == len(e.Tags)
	for i, tag := range e.Tags {
		var h uint64
		if hashed {
			h = e.tagHashes[i]
		} else {
			h = hashTag(tag)
		}
		gen, ok := g.table.get(h, tag)
		if !ok || gen != e.Gens[i] {
			return false
		}
	}
	return true
}

// knows reports whether the local table holds a generation for every tag (so their
// keys exist in Redis, unless one expired or was lost since).
func (g *Generations) knows(tags []string) bool {
	for _, tag := range tags {
		if gen, ok := g.table.get(hashTag(tag), tag); !ok || gen == 0 {
			return false
		}
	}
	return true
}

// stampable reports whether a read of tags may be stamped from Redis: not too many
// tags, and none whose bump by this replica failed and is not replayed yet (Redis
// still holds the generation that write outdated).
func (g *Generations) stampable(tags []string) error {
	if len(tags) > maxStampTags {
		return ErrTooManyTags
	}
	if !g.pending.Load() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range tags {
		if _, ok := g.failed[t]; ok {
			return ErrPending
		}
	}
	return nil
}

// Snapshot returns the current generations of tags, to stamp a read that is about
// to begin. With Redis it is one script call (snapshotScript: missing keys are
// created, with a short TTL, never read as 0), and the local table learns the
// answer; with no Redis the local table answers. It fails (ErrTooManyTags,
// ErrPending) for reads that must not be stamped from Redis.
func (g *Generations) Snapshot(ctx context.Context, tags []string) (Stamp, error) {
	st := g.state.Load()
	epoch := st >> 1
	gens := make([]uint64, len(tags))
	if g.rdb == nil {
		for i, tag := range tags {
			gens[i] = g.table.getOrInsert(hashTag(tag), tag, &g.clock)
		}
		return Stamp{Gens: gens, Epoch: epoch}, nil
	}
	if len(tags) == 0 {
		return Stamp{Gens: gens, Epoch: epoch}, nil
	}
	if err := g.stampable(tags); err != nil {
		return Stamp{}, fmt.Errorf("cache: snapshot of %d tags: %w", len(tags), err)
	}
	drops := g.table.drops.Load()
	ctx, cancel := context.WithTimeout(ctx, g.opt.Timeout)
	defer cancel()
	vals, err := g.snap.Run(ctx, g.rdb, g.genKeys(tags), g.opt.ReadKeyTTL.Milliseconds()).Slice()
	if err == nil {
		err = parseGens(vals, gens)
	}
	if err != nil {
		g.m.redisError("snapshot")
		return Stamp{}, fmt.Errorf("cache: snapshot of %d tags: %w", len(tags), err)
	}
	g.learn(tags, gens, epoch, drops)
	return Stamp{Gens: gens, Epoch: epoch}, nil
}

// learn records generations read from Redis by a read that began in epoch (see
// table.learn for why the epoch and drops guards). Nothing is learned while a failed
// bump is pending: Redis may answer the generation that bump should have replaced.
func (g *Generations) learn(tags []string, gens []uint64, epoch, drops uint64) {
	if g.pending.Load() {
		return
	}
	for i, tag := range tags {
		g.table.learn(hashTag(tag), tag, gens[i], &g.state, epoch, drops)
	}
}

func (g *Generations) genKeys(tags []string) []string {
	keys := make([]string, len(tags))
	for i, t := range tags {
		keys[i] = g.opt.Prefix + "gen:" + t
	}
	return keys
}

func parseGens(vals []any, gens []uint64) error {
	if len(vals) != len(gens) {
		return fmt.Errorf("got %d generations for %d tags", len(vals), len(gens))
	}
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
			gens[i] = 0
		case string:
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return fmt.Errorf("generation %q: %w", v, err)
			}
			gens[i] = n
		default:
			return fmt.Errorf("generation of type %T", v)
		}
	}
	return nil
}

// Bump gives each tag a new, higher generation, at once in the local table and, with
// Redis, in Redis (script calls of at most maxBumpChunk tags, each of which also
// publishes the new values to every replica). With WaitApplied it then waits until
// every replica that received the broadcast has applied it, or for the lease from the
// last call's answer: a replica that stayed silent that long has stopped trusting its
// L1 by then (see "Lease" in doc.go). The error then wraps ErrAckTimeout, and the
// write may be answered.
//
// A bump Redis did not take (an error, a refusal, a timeout) is not lost: its tags
// are forgotten by the local table at once (this replica's L1 no longer validates
// what they cover), this replica stops trusting its table, serving L2 for them and
// stamping reads of them, and the bump is replayed until Redis takes it.
func (g *Generations) Bump(ctx context.Context, tags []string, mode BumpMode) error {
	if len(tags) == 0 {
		return nil
	}
	g.invalidated(tags)
	if g.rdb == nil {
		for _, tag := range tags {
			g.table.raise(hashTag(tag), tag, g.clock.Add(1))
		}
		g.m.bumped(len(tags))
		return nil
	}
	var waits []*ackWait
	var ids []uint64
	if mode == WaitApplied {
		defer func() {
			g.mu.Lock()
			for _, id := range ids {
				delete(g.waiters, id)
			}
			g.mu.Unlock()
		}()
		for start := 0; start < len(tags); start += maxBumpChunk {
			// Registered before publishing: an ack may arrive before PUBLISH's answer.
			id := g.seq.Add(1)
			w := &ackWait{got: map[string]struct{}{}, done: make(chan struct{})}
			g.mu.Lock()
			g.waiters[id] = w
			g.mu.Unlock()
			ids = append(ids, id)
			waits = append(waits, w)
		}
	}
	for i, start := 0, 0; start < len(tags); i, start = i+1, start+maxBumpChunk {
		chunk := tags[start:min(len(tags), start+maxBumpChunk)]
		var id uint64
		if waits == nil {
			id = g.seq.Add(1)
		} else {
			id = ids[i]
		}
		leased, err := g.bumpRedis(ctx, id, chunk)
		if err != nil && waits != nil {
			// A writer waiting for its bump: Redis refusing commands for a moment must
			// not cost read-your-writes on the other replicas, so try again for up to
			// the lease before giving up on them.
			leased, err = g.retryBump(ctx, id, chunk)
		}
		if err != nil {
			g.bumpFailed(tags[start:])
			return err
		}
		if waits != nil {
			g.mu.Lock()
			w := waits[i]
			w.expect = leased
			w.finishIfComplete()
			g.mu.Unlock()
		}
	}
	if waits == nil {
		return nil
	}
	timer := time.NewTimer(g.opt.Lease)
	defer timer.Stop()
	for _, w := range waits {
		select {
		case <-w.done:
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		g.m.ackWaited(true)
		return fmt.Errorf("cache: bump of %d tags: a replica did not acknowledge within the lease (%v): %w", len(tags), g.opt.Lease, ErrAckTimeout)
	}
	g.m.ackWaited(false)
	return nil
}

// retryBump retries a failed bump every bumpRetry until Redis takes it or the lease
// has passed since the first failure.
func (g *Generations) retryBump(ctx context.Context, id uint64, tags []string) (map[string]struct{}, error) {
	deadline := time.Now().Add(g.opt.Lease)
	for {
		wait := min(bumpRetry, time.Until(deadline))
		if wait <= 0 {
			return nil, fmt.Errorf("cache: bump of %d tags not taken by Redis within the lease (%v)", len(tags), g.opt.Lease)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if leased, err := g.bumpRedis(ctx, id, tags); err == nil {
			return leased, nil
		}
	}
}

// bumpRetry is how often a writer retries a bump Redis refused.
const bumpRetry = 50 * time.Millisecond

// bumpRedis runs bumpScript and applies the new generations locally. It returns the
// other replicas that may hold a lease (the presence set when the bump ran).
func (g *Generations) bumpRedis(ctx context.Context, id uint64, tags []string) (map[string]struct{}, error) {
	var head strings.Builder
	fmt.Fprintf(&head, "h1 %s %d %d\n", g.id, id, len(tags))
	for _, t := range tags {
		head.WriteString(strconv.Itoa(len(t)))
		head.WriteByte(':')
		head.WriteString(t)
	}
	ctx, cancel := context.WithTimeout(ctx, g.opt.Timeout)
	defer cancel()
	keys := append(g.genKeys(tags), g.presenceKey)
	res, err := g.bump.Run(ctx, g.rdb, keys, g.opt.GenTTL.Milliseconds(), g.invalCh, head.String()).Slice()
	if err == nil && len(res) != len(tags)+1 {
		err = fmt.Errorf("script answered %d values for %d tags", len(res), len(tags))
	}
	gens := make([]uint64, len(tags))
	leased := map[string]struct{}{}
	if err == nil {
		ids, ok := res[0].([]any)
		if !ok {
			err = fmt.Errorf("presence of type %T", res[0])
		}
		for _, v := range ids {
			if id, ok := v.(string); ok && id != g.id {
				leased[id] = struct{}{}
			}
		}
		if err == nil {
			err = parseGens(res[1:], gens)
		}
	}
	if err != nil {
		g.m.redisError("bump")
		return nil, fmt.Errorf("cache: bump of %d tags: %w", len(tags), err)
	}
	for i, tag := range tags {
		g.table.raise(hashTag(tag), tag, gens[i])
	}
	g.m.bumped(len(tags))
	return leased, nil
}

// bumpFailed handles tags whose bump Redis did not take: they are remembered for
// replay (this replica is untrusted until then) and forgotten by the local table
// right away, so that not even ValidEventual serves what they cover.
func (g *Generations) bumpFailed(tags []string) {
	g.mu.Lock()
	lost := 0
	for _, t := range tags {
		if len(g.failed) >= maxFailed {
			lost++
			continue
		}
		g.failed[t] = struct{}{}
	}
	g.pending.Store(true) // before the table forgets: a learn that checks later skips
	g.m.setPending(len(g.failed))
	g.updateTrustLocked()
	g.mu.Unlock()
	for _, t := range tags {
		g.table.forget(hashTag(t), t)
	}
	if lost > 0 {
		// Nothing left to replay them with: at least this replica forgets everything.
		g.m.invalidationsLost(lost)
		g.log.Error("failed invalidations beyond the replay bound were dropped; other replicas may serve what they outdated until the TTL",
			"dropped", lost, "bound", maxFailed)
		g.newEpoch()
	}
	select {
	case g.replay <- struct{}{}:
	default:
	}
}

// replayLoop re-sends failed bumps until Redis takes them: at once when one fails,
// then every heartbeat while any is left.
func (g *Generations) replayLoop(ctx context.Context) {
	defer g.wg.Done()
	tick := time.NewTicker(g.opt.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.replay:
		case <-tick.C:
		}
		if !g.pending.Load() {
			continue
		}
		if err := g.retryFailed(ctx); err != nil {
			g.log.Debug("re-sending failed invalidations", "err", err)
		}
	}
}

// retryFailed bumps the remembered failed tags again; once all are taken, this
// replica may trust its table again.
func (g *Generations) retryFailed(ctx context.Context) error {
	g.mu.Lock()
	tags := make([]string, 0, len(g.failed))
	for t := range g.failed {
		tags = append(tags, t)
	}
	g.mu.Unlock()
	for len(tags) > 0 {
		n := min(len(tags), maxBumpChunk)
		if _, err := g.bumpRedis(ctx, g.seq.Add(1), tags[:n]); err != nil {
			return err
		}
		g.mu.Lock()
		for _, t := range tags[:n] {
			delete(g.failed, t)
		}
		g.m.setPending(len(g.failed))
		g.mu.Unlock()
		g.log.Info("re-sent invalidations that had failed", "tags", n)
		tags = tags[n:]
	}
	g.mu.Lock()
	if len(g.failed) == 0 {
		g.pending.Store(false)
		g.updateTrustLocked()
	}
	g.mu.Unlock()
	return nil
}

// updateTrust recomputes the trust bit (the lease timer calls it).
func (g *Generations) updateTrust() {
	g.mu.Lock()
	g.updateTrustLocked()
	g.mu.Unlock()
}

// updateTrustLocked sets the trust bit to subscribed && lease running && no failed
// bump pending (keeping the epoch), arms the lease timer, and wakes waiters.
func (g *Generations) updateTrustLocked() {
	now := time.Now()
	until := g.leaseUntil
	if g.presentTil.Before(until) {
		until = g.presentTil
	}
	on := g.subscribed && !g.pending.Load() && now.Before(until)
	if on {
		g.leaseTimer.Reset(until.Sub(now))
	}
	st := g.state.Load()
	if (st&1 == 1) == on {
		return
	}
	if !on && g.subscribed && !g.pending.Load() {
		g.m.leaseLapsed()
	}
	g.state.Store(st&^1 | b2u(on))
	g.m.setTrusted(on)
	close(g.stateCh)
	g.stateCh = make(chan struct{})
}

// renewLease extends the lease to sent + the lease's local share: sent is when a
// message went out whose answer proves that everything published before Redis
// handled it has been applied (a PING on the subscription, or the SUBSCRIBE).
// The local share is 4/5 of the lease: writers wait the whole lease, and the rest
// absorbs a late timer.
func (g *Generations) renewLease(sent time.Time) {
	until := sent.Add(g.opt.Lease - g.opt.Lease/5)
	g.mu.Lock()
	if until.After(g.leaseUntil) {
		g.leaseUntil = until
	}
	g.updateTrustLocked()
	g.mu.Unlock()
}

// presenceLoop keeps this replica in the presence set every heartbeat, so that
// writers wait for its acknowledgement; this replica's lease never outlasts its
// entry there (renewPresence), so a writer that does not find it can skip it.
func (g *Generations) presenceLoop(ctx context.Context) {
	defer g.wg.Done()
	script := redis.NewScript(presenceScript)
	tick := time.NewTicker(g.opt.HealthInterval)
	defer tick.Stop()
	for {
		sent := time.Now()
		cctx, cancel := context.WithTimeout(ctx, g.opt.Lease)
		err := script.Run(cctx, g.ackRdb, []string{g.presenceKey}, g.id, g.opt.Lease.Milliseconds()).Err()
		cancel()
		if err == nil {
			g.mu.Lock()
			if until := sent.Add(g.opt.Lease - g.opt.Lease/5); until.After(g.presentTil) {
				g.presentTil = until
			}
			g.updateTrustLocked()
			g.mu.Unlock()
		} else if ctx.Err() == nil {
			g.m.redisError("presence")
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (g *Generations) setSubscribed(on bool) {
	g.mu.Lock()
	g.subscribed = on
	if !on {
		g.leaseUntil = time.Time{}
	}
	g.m.setSubscribed(on)
	g.updateTrustLocked()
	g.mu.Unlock()
}

// newEpoch forgets the local table. The epoch is bumped BEFORE the table is
// cleared, so a concurrent learn either sees the new epoch (and skips) or stores
// into a shard that is cleared afterwards.
func (g *Generations) newEpoch() {
	g.mu.Lock()
	st := g.state.Load()
	g.state.Store(((st>>1)+1)<<1 | st&1)
	g.mu.Unlock()
	g.table.clear()
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// subscribe keeps a subscription to the invalidate channel (and this replica's ack
// channel) alive, reconnecting with backoff.
func (g *Generations) subscribe(ctx context.Context) {
	defer g.wg.Done()
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := g.subscribeOnce(ctx)
		g.setSubscribed(false)
		if ctx.Err() != nil {
			return
		}
		g.log.Warn("invalidation subscription lost; L1 untrusted until resubscribed", "err", err)
		if time.Since(start) > 5*time.Second {
			backoff = 10 * time.Millisecond
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// subscribeOnce runs one subscription: it applies bump messages, counts
// acknowledgements, and renews the lease with the answers to the heartbeat (a PING
// every HealthInterval, sent by pingLoop: go-redis lets a PING be written while a
// receive waits, so no receive is ever cut short mid-message). It returns when the
// connection fails or when nothing has been heard on it for two leases (a hung peer
// never errors).
func (g *Generations) subscribeOnce(ctx context.Context) error {
	ps := g.rdb.Subscribe(ctx)
	g.mu.Lock()
	g.ps = ps
	g.mu.Unlock()
	var pinger sync.WaitGroup
	defer pinger.Wait()
	defer ps.Close()
	sent := time.Now()
	// The ack channel first: once the invalidate confirmation arrives, both are live.
	if err := ps.Subscribe(ctx, g.ackCh, g.invalCh); err != nil {
		return fmt.Errorf("cache: subscribe: %w", err)
	}
	deadAfter := max(2*g.opt.Lease, 4*g.opt.HealthInterval)
	pings := &pingLog{sent: map[string]time.Time{}}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	pinger.Add(1)
	go g.pingLoop(pctx, ps, pings, deadAfter, &pinger)
	for {
		msg, err := ps.ReceiveTimeout(ctx, deadAfter)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("cache: nothing heard on the subscription for %v", deadAfter)
			}
			return fmt.Errorf("cache: subscription receive: %w", err)
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == g.invalCh {
				// Bumps may have been missed while not subscribed: nothing this replica
				// learned before may validate again.
				g.newEpoch()
				g.setSubscribed(true)
				g.renewLease(sent)
				g.log.Info("subscribed to invalidations; new local epoch", "epoch", g.Epoch())
			}
		case *redis.Pong:
			if t, ok := pings.answered(m.Payload); ok {
				g.renewLease(t)
			}
		case *redis.Message:
			switch m.Channel {
			case g.invalCh:
				g.apply(ctx, m.Payload)
			case g.ackCh:
				g.acked(m.Payload)
			}
		}
	}
}

// pingLog remembers when each heartbeat PING was sent, by payload.
type pingLog struct {
	mu   sync.Mutex
	seq  uint64
	sent map[string]time.Time
}

// next records a PING about to be sent and returns its payload; answers older than
// forget that never came (a reconnect lost them) are dropped.
func (l *pingLog) next(now time.Time, forget time.Duration) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	p := strconv.FormatUint(l.seq, 10)
	l.sent[p] = now
	for q, t := range l.sent {
		if now.Sub(t) > forget {
			delete(l.sent, q)
		}
	}
	return p
}

// answered returns when the PING with payload p was sent, once.
func (l *pingLog) answered(p string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.sent[p]
	delete(l.sent, p)
	return t, ok
}

// pingLoop sends the heartbeat until ctx ends; a PING that cannot be written closes
// the subscription, so that subscribeOnce returns and resubscribes.
func (g *Generations) pingLoop(ctx context.Context, ps *redis.PubSub, pings *pingLog, forget time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(g.opt.HealthInterval)
	defer tick.Stop()
	for {
		if err := ps.Ping(ctx, pings.next(time.Now(), forget)); err != nil {
			if ctx.Err() == nil {
				g.log.Warn("invalidation subscription ping failed", "err", err)
				ps.Close()
			}
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// OnInvalidate registers f to be told the tags of every bump this replica makes (at
// the start of Bump) or applies from the bus (before acknowledging it): so a writer
// that waited for the acknowledgements knows every replica's f saw its tags. Readers
// that answer from something the generations do not stamp (the Listen fan-out's live
// views) use it as a barrier. f must be quick; it may run concurrently.
func (g *Generations) OnInvalidate(f func(tags []string)) { g.onInvalidate.Store(&f) }

func (g *Generations) invalidated(tags []string) {
	if f := g.onInvalidate.Load(); f != nil {
		(*f)(tags)
	}
}

// apply applies one bump message to the local table, then acknowledges it.
func (g *Generations) apply(ctx context.Context, payload string) {
	writer, id, tags, gens, err := parseBump(payload)
	if err != nil {
		g.log.Error("ignoring malformed invalidation message", "err", err)
		return
	}
	g.invalidated(tags)
	for i, tag := range tags {
		g.table.raise(hashTag(tag), tag, gens[i])
	}
	select {
	case g.acks <- ackOut{writer: writer, id: id}:
	case <-ctx.Done():
	}
}

// parseBump reads "h1 <writer> <id> <n>\n" {<len>:<tag>}×n <gen>,…,<gen>.
func parseBump(p string) (writer string, id uint64, tags []string, gens []uint64, err error) {
	head, rest, ok := strings.Cut(p, "\n")
	f := strings.Fields(head)
	if !ok || len(f) != 4 || f[0] != "h1" {
		return "", 0, nil, nil, fmt.Errorf("bad head %q", head)
	}
	writer = f[1]
	if id, err = strconv.ParseUint(f[2], 10, 64); err != nil {
		return "", 0, nil, nil, fmt.Errorf("bad id: %w", err)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil || n < 0 || n > len(rest) {
		return "", 0, nil, nil, fmt.Errorf("bad tag count %q", f[3])
	}
	tags = make([]string, n)
	for i := range tags {
		ls, r, ok := strings.Cut(rest, ":")
		l, err := strconv.Atoi(ls)
		if !ok || err != nil || l < 0 || l > len(r) {
			return "", 0, nil, nil, fmt.Errorf("bad tag %d", i)
		}
		tags[i], rest = r[:l], r[l:]
	}
	gs := strings.Split(rest, ",")
	if len(gs) != n {
		return "", 0, nil, nil, fmt.Errorf("%d generations for %d tags", len(gs), n)
	}
	gens = make([]uint64, n)
	for i, s := range gs {
		if gens[i], err = strconv.ParseUint(s, 10, 64); err != nil {
			return "", 0, nil, nil, fmt.Errorf("bad generation: %w", err)
		}
	}
	return writer, id, tags, gens, nil
}

// acked counts one acknowledgement of this replica's bump message.
func (g *Generations) acked(payload string) {
	ids, replica, _ := strings.Cut(payload, " ")
	id, err := strconv.ParseUint(ids, 10, 64)
	if err != nil || replica == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.waiters[id]
	if w == nil {
		return // a bump that did not wait, or gave up
	}
	if _, dup := w.got[replica]; dup {
		return
	}
	w.got[replica] = struct{}{}
	w.finishIfComplete()
}

// sendAcks publishes acknowledgements, pipelining whatever has queued up, so the
// subscriber never waits for a round trip per message.
func (g *Generations) sendAcks(ctx context.Context) {
	defer g.wg.Done()
	// Open the connection now, not at the first ack: on a slow link the handshake
	// takes round trips a writer would wait out.
	pctx, cancel := context.WithTimeout(ctx, g.opt.Lease)
	g.ackRdb.Ping(pctx)
	cancel()
	for {
		var a ackOut
		select {
		case a = <-g.acks:
		case <-ctx.Done():
			return
		}
		pipe := g.ackRdb.Pipeline()
		pipe.Publish(ctx, g.opt.Prefix+"ack:"+a.writer, strconv.FormatUint(a.id, 10)+" "+g.id)
	drain:
		for pipe.Len() < 256 {
			select {
			case a = <-g.acks:
				pipe.Publish(ctx, g.opt.Prefix+"ack:"+a.writer, strconv.FormatUint(a.id, 10)+" "+g.id)
			default:
				break drain
			}
		}
		cctx, cancel := context.WithTimeout(ctx, g.opt.Lease)
		if _, err := pipe.Exec(cctx); err != nil {
			g.m.redisError("ack")
		}
		cancel()
	}
}
