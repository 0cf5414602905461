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
	// NoWait returns once Redis has the new generations (the bump before a write is
	// forwarded: it only has to beat fills that start later).
	NoWait BumpMode = iota
	// WaitApplied also waits until every subscribed replica has applied the bump to
	// its local table (the bump after the upstream's success, before the client is
	// answered). Without it, replica B could still validate an old L1 entry in the
	// window between A's PUBLISH and B's subscriber applying it, and a client that
	// wrote through A and reads through B would not see its write.
	WaitApplied
)

// ErrAckTimeout is wrapped by Bump(…, WaitApplied) when some replica did not
// acknowledge in time. The generations WERE bumped in Redis: the write may be
// answered; a slow replica may serve an old L1 entry until its subscriber catches up.
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
	// AckTimeout bounds Bump(…, WaitApplied)'s wait for acknowledgements. Default 100ms.
	AckTimeout time.Duration
	// MaxTags bounds the local table. Default 1<<18 (roughly 35 MiB with long tags).
	MaxTags int
	// GenTTL is how long a generation key lives after its last bump. It must exceed
	// every entry's lifetime (Tiers caps lifetimes at GenTTL/2). Default 7 days.
	GenTTL time.Duration
	// HealthInterval: an idle subscription is PINGed this often and declared dead
	// after two intervals without an answer. Default 1s.
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
	if o.AckTimeout <= 0 {
		o.AckTimeout = 100 * time.Millisecond
	}
	if o.MaxTags <= 0 {
		o.MaxTags = 1 << 18
	}
	if o.GenTTL <= 0 {
		o.GenTTL = 7 * 24 * time.Hour
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
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

	table *table
	// state is epoch<<1 | trusted, one word so the hot path reads both at once.
	state atomic.Uint64
	clock atomic.Uint64 // in-process generations
	seq   atomic.Uint64 // bump message ids

	bump *redis.Script
	snap *redis.Script // snapshotScript

	mu      sync.Mutex
	waiters map[uint64]*ackWait
	failed  map[string]struct{} // tags whose bump failed: bumped again once Redis answers
	stateCh chan struct{}       // closed and replaced at every change of state
	ps      *redis.PubSub

	acks   chan ackOut
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type ackWait struct {
	got, need int // need < 0: not known yet (PUBLISH has not answered)
	done      chan struct{}
}

type ackOut struct {
	writer string
	id     uint64
}

// maxFailed bounds the remembered failed bumps; beyond it whole databases are bumped.
const maxFailed = 4096

// bumpScript sets each generation to max(old+1, server time in µs), refreshes its
// TTL, and publishes the new values, all in one round trip. ARGV: ttl ms, channel,
// message head (the gens are appended, comma-separated). Returns {receivers, gens…}.
// Values are formatted with %d: Lua's tostring would round them to 14 digits.
const bumpScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {0}
local gens = {}
for i, k in ipairs(KEYS) do
  local v = tonumber(redis.call('GET', k) or '0') or 0
  if v < now then v = now else v = v + 1 end
  local s = string.format('%d', v)
  redis.call('SET', k, s, 'PX', ARGV[1])
  gens[i] = s
  out[i + 1] = s
end
out[1] = redis.call('PUBLISH', ARGV[2], ARGV[3] .. table.concat(gens, ','))
return out
`

// snapshotScript reads generations, first setting any that do not exist to the server
// time in µs (with the generation TTL). A read is therefore never stamped with 0, the
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
	if g.rdb == nil {
		g.state.Store(1<<1 | 1) // epoch 1, trusted: this process is the truth
		return g, nil
	}
	g.state.Store(1 << 1)
	g.m.setSubscribed(false)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.acks = make(chan ackOut, 1024)
	g.wg.Add(2)
	go g.subscribe(ctx)
	go g.sendAcks(ctx)
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
	g.setTrusted(false)
	return nil
}

// Trusted reports whether the local table reflects every bump: always with no
// Redis; with Redis, only while subscribed. When false, rules with consistency
// strong must treat L1 as empty; eventual rules may use ValidEventual.
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
// eventual while the replica is not subscribed: e matches the last generations this
// replica saw. Freshness still bounds it (Entry.Usable); entries from before a
// subscription gap never validate (the epoch changed).
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

// Snapshot returns the current generations of tags, to stamp a read that is about
// to begin. With Redis it is one script call (snapshotScript: missing keys are
// created, never read as 0), and the local table learns the answer; with no Redis the
// local table answers.
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
	drops := g.table.drops.Load()
	ctx, cancel := context.WithTimeout(ctx, g.opt.Timeout)
	defer cancel()
	vals, err := g.snap.Run(ctx, g.rdb, g.genKeys(tags), g.opt.GenTTL.Milliseconds()).Slice()
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
// table.learn for why the epoch and drops guards).
func (g *Generations) learn(tags []string, gens []uint64, epoch, drops uint64) {
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
// Redis, in Redis (one round trip that also publishes the new values to every
// replica). With WaitApplied it then waits until every replica that received the
// broadcast has applied it, or AckTimeout (the error then wraps ErrAckTimeout).
// A failed bump is remembered and retried when Redis answers again.
func (g *Generations) Bump(ctx context.Context, tags []string, mode BumpMode) error {
	if len(tags) == 0 {
		return nil
	}
	if g.rdb == nil {
		for _, tag := range tags {
			g.table.raise(hashTag(tag), tag, g.clock.Add(1))
		}
		g.m.bumped(len(tags))
		return nil
	}
	id := g.seq.Add(1)
	var w *ackWait
	if mode == WaitApplied {
		// Registered before publishing: an ack may arrive before PUBLISH's answer.
		w = &ackWait{need: -1, done: make(chan struct{})}
		g.mu.Lock()
		g.waiters[id] = w
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			delete(g.waiters, id)
			g.mu.Unlock()
		}()
	}
	receivers, err := g.bumpRedis(ctx, id, tags)
	if err != nil {
		g.rememberFailed(tags)
		return err
	}
	if w == nil {
		return nil
	}
	g.mu.Lock()
	w.need = receivers
	if w.got >= w.need {
		close(w.done)
	}
	g.mu.Unlock()
	timer := time.NewTimer(g.opt.AckTimeout)
	defer timer.Stop()
	select {
	case <-w.done:
		g.m.ackWaited(false)
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	g.m.ackWaited(true)
	g.mu.Lock()
	got := w.got
	g.mu.Unlock()
	return fmt.Errorf("cache: bump of %d tags: %d of %d replicas acknowledged: %w", len(tags), got, receivers, ErrAckTimeout)
}

// bumpRedis runs bumpScript and applies the new generations locally.
func (g *Generations) bumpRedis(ctx context.Context, id uint64, tags []string) (int, error) {
	var head strings.Builder
	fmt.Fprintf(&head, "h1 %s %d %d\n", g.id, id, len(tags))
	for _, t := range tags {
		head.WriteString(strconv.Itoa(len(t)))
		head.WriteByte(':')
		head.WriteString(t)
	}
	ctx, cancel := context.WithTimeout(ctx, g.opt.Timeout)
	defer cancel()
	res, err := g.bump.Run(ctx, g.rdb, g.genKeys(tags), g.opt.GenTTL.Milliseconds(), g.invalCh, head.String()).Slice()
	if err == nil && len(res) != len(tags)+1 {
		err = fmt.Errorf("script answered %d values for %d tags", len(res), len(tags))
	}
	var receivers int64
	gens := make([]uint64, len(tags))
	if err == nil {
		var ok bool
		if receivers, ok = res[0].(int64); !ok {
			err = fmt.Errorf("receivers of type %T", res[0])
		} else {
			err = parseGens(res[1:], gens)
		}
	}
	if err != nil {
		g.m.redisError("bump")
		return 0, fmt.Errorf("cache: bump of %d tags: %w", len(tags), err)
	}
	for i, tag := range tags {
		g.table.raise(hashTag(tag), tag, gens[i])
	}
	g.m.bumped(len(tags))
	return int(receivers), nil
}

// rememberFailed keeps tags whose bump did not reach Redis, to bump them when it is
// back: other replicas (and L2) may hold entries the write made outdated.
func (g *Generations) rememberFailed(tags []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range tags {
		if len(g.failed) < maxFailed {
			g.failed[t] = struct{}{}
			continue
		}
		if db := databaseOf(t); db != "" {
			g.failed[DatabaseTag(db)] = struct{}{} // too many: bump the whole database
		} else {
			g.log.Error("failed invalidation not remembered: too many, and no database in tag", "tag", t)
		}
	}
}

// retryFailed bumps the remembered failed tags again.
func (g *Generations) retryFailed(ctx context.Context) error {
	g.mu.Lock()
	if len(g.failed) == 0 {
		g.mu.Unlock()
		return nil
	}
	tags := make([]string, 0, len(g.failed))
	for t := range g.failed {
		tags = append(tags, t)
	}
	clear(g.failed)
	g.mu.Unlock()
	for len(tags) > 0 { // in batches: one script call must stay short
		n := min(len(tags), 256)
		if _, err := g.bumpRedis(ctx, g.seq.Add(1), tags[:n]); err != nil {
			g.rememberFailed(tags)
			return err
		}
		g.log.Info("re-sent invalidations that had failed", "tags", n)
		tags = tags[n:]
	}
	return nil
}

// setTrusted changes the trust bit (keeping the epoch) and wakes waiters.
func (g *Generations) setTrusted(on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.state.Load()
	if (st&1 == 1) == on {
		return
	}
	g.state.Store(st&^1 | b2u(on))
	g.m.setSubscribed(on)
	close(g.stateCh)
	g.stateCh = make(chan struct{})
}

// newEpoch forgets the local table, untrusted. The epoch is bumped BEFORE the
// table is cleared, so a concurrent learn either sees the new epoch (and skips) or
// stores into a shard that is cleared afterwards.
func (g *Generations) newEpoch() {
	g.mu.Lock()
	st := g.state.Load()
	g.state.Store(((st >> 1) + 1) << 1)
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
		g.setTrusted(false)
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

func (g *Generations) subscribeOnce(ctx context.Context) error {
	ps := g.rdb.Subscribe(ctx)
	g.mu.Lock()
	g.ps = ps
	g.mu.Unlock()
	defer ps.Close()
	// The ack channel first: once the invalidate confirmation arrives, both are live.
	if err := ps.Subscribe(ctx, g.ackCh, g.invalCh); err != nil {
		return fmt.Errorf("cache: subscribe: %w", err)
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, g.opt.HealthInterval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Idle: prove the connection is alive (a hung peer never errors).
				pinged = true
				if err := ps.Ping(ctx); err != nil {
					return fmt.Errorf("cache: subscription ping: %w", err)
				}
				if g.Trusted() {
					if err := g.retryFailed(ctx); err != nil {
						g.log.Warn("re-sending failed invalidations", "err", err)
					}
				}
				continue
			}
			return fmt.Errorf("cache: subscription receive: %w", err)
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == g.invalCh {
				// Bumps may have been missed while not subscribed: nothing this replica
				// learned before may validate again.
				g.newEpoch()
				if err := g.retryFailed(ctx); err != nil {
					return err
				}
				g.setTrusted(true)
				g.log.Info("subscribed to invalidations; new local epoch", "epoch", g.Epoch())
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

// apply applies one bump message to the local table, then acknowledges it.
func (g *Generations) apply(ctx context.Context, payload string) {
	writer, id, tags, gens, err := parseBump(payload)
	if err != nil {
		g.log.Error("ignoring malformed invalidation message", "err", err)
		return
	}
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
	id, err := strconv.ParseUint(payload, 10, 64)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	w := g.waiters[id]
	if w == nil {
		return // a bump that did not wait, or gave up
	}
	w.got++
	if w.need >= 0 && w.got == w.need {
		close(w.done)
	}
}

// sendAcks publishes acknowledgements, pipelining whatever has queued up, so the
// subscriber never waits for a round trip per message.
func (g *Generations) sendAcks(ctx context.Context) {
	defer g.wg.Done()
	for {
		var a ackOut
		select {
		case a = <-g.acks:
		case <-ctx.Done():
			return
		}
		pipe := g.rdb.Pipeline()
		pipe.Publish(ctx, g.opt.Prefix+"ack:"+a.writer, strconv.FormatUint(a.id, 10))
	drain:
		for pipe.Len() < 256 {
			select {
			case a = <-g.acks:
				pipe.Publish(ctx, g.opt.Prefix+"ack:"+a.writer, strconv.FormatUint(a.id, 10))
			default:
				break drain
			}
		}
		cctx, cancel := context.WithTimeout(ctx, g.opt.Timeout)
		if _, err := pipe.Exec(cctx); err != nil {
			g.m.redisError("ack")
		}
		cancel()
	}
}

// databaseOf returns "projects/p/databases/d" from a tag holding a resource name,
// or "".
func databaseOf(tag string) string {
	i := strings.Index(tag, "projects/")
	if i < 0 {
		return ""
	}
	s := tag[i:]
	parts := strings.SplitN(s, "/", 5)
	if len(parts) < 4 || parts[2] != "databases" || parts[1] == "" || parts[3] == "" {
		return ""
	}
	return strings.Join(parts[:4], "/")
}
