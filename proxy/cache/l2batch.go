package cache

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// L2 lookups are coalesced into shared round trips (auto-pipelining). go-redis v9 has
// none: each Pipeline().Exec takes a pooled connection and costs its caller one write
// and one read system call, so under 64 concurrent hits the proxy spent most of its CPU
// in the network stack. (rueidis auto-pipelines, but it is a second Redis client
// module; what L2 needs is this small batcher on top of go-redis.)
//
// The rule: a lookup that arrives while no batch is running starts one at once; lookups
// that arrive while a batch is in flight are sent together, as one pipeline, as soon as
// it answers (at most maxBatch per round trip, oldest first). No lookup waits for a
// timer; with one P the batcher only yields once before taking each batch, so that
// the goroutines already runnable queue their lookups into it (see run). Lookups of
// the same key in one batch share one command and one decode (a singleflight for
// L2). Every lookup is still bounded by the L2 timeout counted from
// when it was queued: a batch's deadline is its oldest lookup's, and a lookup whose
// budget ran out while queued fails without being sent.

// maxBatch bounds the commands of one round trip.
const maxBatch = 128

// l2Get is one queued lookup and, once done is signalled, its answer.
type l2Get struct {
	key    Key
	tags   []string
	create bool // read the gens with lookupScript (creating missing ones), not MGET
	since  time.Time
	done   chan struct{} // capacity 1: the batcher never blocks on it

	e    *Entry
	gens []uint64
	err  error
}

var l2GetPool = sync.Pool{New: func() any { return &l2Get{done: make(chan struct{}, 1)} }}

// batcher is L2's lookup queue. The goroutine running batches exists only while
// lookups are queued: it exits when the queue is empty, so there is nothing to close.
type batcher struct {
	l *L2

	mu      sync.Mutex
	queue   []*l2Get
	spare   []*l2Get
	running bool

	// Owned by the running goroutine.
	first map[Key]int
	owner []int
}

// get queues one lookup and waits for its answer (or ctx). Its timeout counts from
// since (zero: now).
func (b *batcher) get(ctx context.Context, k Key, tags []string, create bool, since time.Time) (*Entry, []uint64, error) {
	if since.IsZero() {
		since = time.Now()
	}
	r := l2GetPool.Get().(*l2Get)
	r.key, r.tags, r.create, r.since = k, tags, create, since
	b.mu.Lock()
	b.queue = append(b.queue, r)
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		// Abandoned: the batcher still owns r and will signal into its buffer; r is
		// not returned to the pool.
		return nil, nil, fmt.Errorf("cache: l2 get %x: %w", k[:4], ctx.Err())
	}
	e, gens, err := r.e, r.gens, r.err
	*r = l2Get{done: r.done}
	l2GetPool.Put(r)
	return e, gens, err
}

// run sends batches until the queue is empty.
func (b *batcher) run() {
	var batch []*l2Get
	for {
		// With one P the callers cannot run while this goroutine does, and a reply
		// wakes it ahead of them: let every goroutine already runnable (connections
		// whose requests arrived, waiters just answered) queue its lookup first. No
		// timer; on a busy process one round trip then carries the whole backlog
		// instead of a few (make bench, L2 row at GOMAXPROCS=1: from about 40k to
		// 75-85k requests/s). With more Ps the callers queue in parallel meanwhile,
		// and yielding only delays the batch.
		if runtime.GOMAXPROCS(0) == 1 {
			runtime.Gosched()
		}
		b.mu.Lock()
		n := len(b.queue)
		if n == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		if n <= maxBatch {
			batch, b.queue = b.queue, b.spare[:0]
		} else {
			batch = append(b.spare[:0], b.queue[:maxBatch]...)
			rest := copy(b.queue, b.queue[maxBatch:])
			clear(b.queue[rest:])
			b.queue = b.queue[:rest]
		}
		b.mu.Unlock()
		b.send(batch)
		clear(batch)
		b.mu.Lock()
		b.spare = batch[:0]
		b.mu.Unlock()
	}
}

// send runs one batch as one pipeline and signals every lookup in it.
func (b *batcher) send(batch []*l2Get) {
	l := b.l
	now := time.Now()
	// Lookups whose budget ran out while queued fail unsent (the queue is FIFO, so
	// they are at the front).
	live := batch
	for len(live) > 0 && now.Sub(live[0].since) >= l.timeout {
		r := live[0]
		l.m.redisError("l2_get")
		r.err = fmt.Errorf("cache: l2 get %x: %w", r.key[:4], context.DeadlineExceeded)
		r.done <- struct{}{}
		live = live[1:]
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), live[0].since.Add(l.timeout))
	defer cancel()

	// One command per distinct key (and tags); owner[i] is the lookup whose command
	// answers lookup i.
	if b.first == nil {
		b.first = make(map[Key]int)
	}
	clear(b.first)
	b.owner = b.owner[:0]
	for i, r := range live {
		if j, ok := b.first[r.key]; ok && sameTags(live[j].tags, r.tags) {
			live[j].create = live[j].create || r.create
			b.owner = append(b.owner, j)
			continue
		}
		b.first[r.key] = i
		b.owner = append(b.owner, i)
	}
	cmds := make([]redis.Cmder, len(live))
	for i, r := range live {
		if b.owner[i] == i {
			cmds[i] = l.lookupCmd(ctx, r.key, r.tags, r.create)
		}
	}
	if len(b.first) == 1 {
		_ = l.rdb.Process(ctx, cmds[0]) // a batch of one: no pipeline to build
	} else {
		pipe := l.rdb.Pipeline()
		for _, c := range cmds {
			if c != nil {
				_ = pipe.Process(ctx, c)
			}
		}
		_, _ = pipe.Exec(ctx) // errors are per command, below
	}
	for i, r := range live {
		if b.owner[i] != i {
			continue
		}
		r.e, r.gens, r.err = l.lookupResult(ctx, r.key, r.tags, cmds[i])
	}
	for i, r := range live {
		if j := b.owner[i]; j != i {
			o := live[j]
			r.gens, r.err = o.gens, o.err
			if o.e != nil {
				c := *o.e // Tiers stamps the Epoch of what it returns: one Entry each
				r.e = &c
			}
		}
	}
	for _, r := range live {
		r.done <- struct{}{}
	}
}

func sameTags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// lookupScript is MGET of the entry and the generations, except that missing
// generation keys are first created as snapshotScript does (never read as 0, with
// the short read key TTL), so the generations it answers can stamp a read that
// begins now. KEYS: entry key, gen keys…; ARGV: read key TTL ms. Returns {entry or false, gen…}.
const lookupScript = genOrCreateLua + `
local out = {redis.call('GET', KEYS[1])}
for i = 2, #KEYS do
  out[i] = genOrCreate(KEYS[i], ARGV[1])
end
return out
`

// lookupCmd is the command that reads the entry under k and the generations of tags
// in one reply: MGET, or (create) EVALSHA of lookupScript.
func (l *L2) lookupCmd(ctx context.Context, k Key, tags []string, create bool) redis.Cmder {
	if !create {
		args := make([]any, 2+len(tags))
		args[0], args[1] = "mget", l.entryKey(k)
		for i, t := range tags {
			args[2+i] = l.genKey(t)
		}
		return redis.NewSliceCmd(ctx, args...)
	}
	args := make([]any, 0, 5+len(tags))
	args = append(args, "evalsha", l.lookup.Hash(), 1+len(tags), l.entryKey(k))
	for _, t := range tags {
		args = append(args, l.genKey(t))
	}
	args = append(args, l.readKeyTTL.Milliseconds())
	return redis.NewSliceCmd(ctx, args...)
}

// lookupResult decodes a lookupCmd's reply (running lookupScript with EVAL when
// Redis did not know its hash).
func (l *L2) lookupResult(ctx context.Context, k Key, tags []string, cmd redis.Cmder) (*Entry, []uint64, error) {
	sc := cmd.(*redis.SliceCmd)
	vals, err := sc.Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		keys := make([]string, 1+len(tags))
		keys[0] = l.entryKey(k)
		for i, t := range tags {
			keys[1+i] = l.genKey(t)
		}
		vals, err = l.lookup.Eval(ctx, l.rdb, keys, l.readKeyTTL.Milliseconds()).Slice()
	}
	if err == nil && len(vals) != 1+len(tags) {
		err = fmt.Errorf("lookup answered %d values for %d tags", len(vals), len(tags))
	}
	gens := make([]uint64, len(tags))
	if err == nil {
		err = parseGens(vals[1:], gens)
	}
	if err != nil {
		l.m.redisError("l2_get")
		return nil, nil, fmt.Errorf("cache: l2 get %x: %w", k[:4], err)
	}
	var raw string
	switch v := vals[0].(type) {
	case nil:
		return nil, gens, nil
	case string:
		raw = v
	default:
		l.m.redisError("l2_get")
		return nil, nil, fmt.Errorf("cache: l2 get %x: entry of type %T", k[:4], v)
	}
	e, err := decodeEntryString(raw)
	if err != nil {
		l.m.redisError("l2_decode")
		return nil, gens, fmt.Errorf("cache: l2 get %x: %w", k[:4], err)
	}
	return e, gens, nil
}
