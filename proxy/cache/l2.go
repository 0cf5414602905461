package cache

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// L2 is the Redis tier shared by every replica: entries under <prefix>e:<hex key>,
// expiring at their StaleUntil. Every call is one round trip bounded by the timeout;
// concurrent lookups share round trips (see batcher).
type L2 struct {
	rdb        redis.UniversalClient
	prefix     string
	timeout    time.Duration
	readKeyTTL time.Duration // of generation keys lookupScript creates
	m          *Metrics
	set        *redis.Script
	lookup     *redis.Script
	batch      batcher
}

// setScript is the "no stale fill" guard: it stores the entry only if every tag's
// current generation still equals the one the read recorded when it began, checked
// and stored atomically. It then makes each generation key live at least as long as
// the entry (a key a read created lives only ReadKeyTTL; only stored entries and
// writes make keys that last). KEYS: entry key, gen keys…; ARGV: payload, ttl ms,
// gens….
const setScript = `
for i = 2, #KEYS do
  local cur = redis.call('GET', KEYS[i]) or '0'
  if cur ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left >= 0 and left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
`

// NewL2 makes an L2 on rdb (see NewRedisClient). prefix default "harvest:",
// timeout default 25ms; m may be nil.
func NewL2(rdb redis.UniversalClient, prefix string, timeout time.Duration, m *Metrics) *L2 {
	if prefix == "" {
		prefix = "harvest:"
	}
	if timeout <= 0 {
		timeout = 25 * time.Millisecond
	}
	l := &L2{
		rdb: rdb, prefix: prefix, timeout: timeout, readKeyTTL: time.Minute, m: m,
		set: redis.NewScript(setScript), lookup: redis.NewScript(lookupScript),
	}
	l.batch.l = l
	return l
}

func (l *L2) entryKey(k Key) string {
	var b [2 * len(k)]byte
	hex.Encode(b[:], k[:])
	return l.prefix + "e:" + string(b[:])
}

func (l *L2) genKey(tag string) string { return l.prefix + "gen:" + tag }

// Get fetches the entry under k and the current generations of tags in one round
// trip (one MGET, shared with concurrent lookups). The entry is nil when absent (or
// undecodable: that is counted and returned as an error too). gens is returned
// whenever err is nil, so the caller can compare (Entry.Current) and learn them; a
// generation key that does not exist reads as 0. Decoded entries have Epoch 0; gens
// must not be modified.
func (l *L2) Get(ctx context.Context, k Key, tags []string) (*Entry, []uint64, error) {
	return l.batch.get(ctx, k, tags, false, time.Time{})
}

// get is Get with the timeout counted from since (zero: now); with create, missing
// generation keys are created (lookupScript), so that no generation reads as 0 and
// the answer can stamp a read.
func (l *L2) get(ctx context.Context, k Key, tags []string, create bool, since time.Time) (*Entry, []uint64, error) {
	return l.batch.get(ctx, k, tags, create, since)
}

// Set stores e under k until e.StaleUntil, but only if every tag's current
// generation still equals e.Gens (one atomic script). It reports whether it stored:
// false with a nil error means a tag was bumped after the read began (or the entry
// is already dead), which is the guard doing its job.
func (l *L2) Set(ctx context.Context, k Key, e *Entry) (bool, error) {
	ttl := time.Until(e.StaleUntil).Milliseconds()
	if ttl <= 0 {
		return false, nil
	}
	if len(e.Tags) != len(e.Gens) {
		return false, fmt.Errorf("cache: l2 set: %d tags but %d gens", len(e.Tags), len(e.Gens))
	}
	payload, err := e.MarshalBinary()
	if err != nil {
		return false, err
	}
	keys := make([]string, 1+len(e.Tags))
	keys[0] = l.entryKey(k)
	args := make([]any, 2+len(e.Gens))
	args[0], args[1] = payload, ttl
	for i, t := range e.Tags {
		keys[i+1] = l.genKey(t)
		args[i+2] = strconv.FormatUint(e.Gens[i], 10)
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	n, err := l.set.Run(ctx, l.rdb, keys, args...).Int()
	if err != nil {
		l.m.redisError("l2_set")
		return false, fmt.Errorf("cache: l2 set %x: %w", k[:4], err)
	}
	if n == 0 {
		l.m.staleFillRefused()
	}
	return n == 1, nil
}

// Remove deletes the entry under k.
func (l *L2) Remove(ctx context.Context, k Key) error {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.rdb.Del(ctx, l.entryKey(k)).Err(); err != nil {
		l.m.redisError("l2_remove")
		return fmt.Errorf("cache: l2 remove %x: %w", k[:4], err)
	}
	return nil
}
