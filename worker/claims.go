package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Claims remembers which events each handler has done, in Redis, so that a side effect
// happens once per event id however often the broker delivers the event.
//
// The key <prefix>done:<handler>:<event id> moves through two states:
//
//   - claimed: SET NX with a random token and a short lease (the handler's Timeout plus
//     a margin). Only the holder acts. A redelivery that finds a live claim does not act
//     and does not ack as done: it is put back on the retry path until the claim is
//     released, completed, or its lease runs out.
//   - done: after the side effect succeeded the value becomes "done" with the long
//     IdempotencyTTL. Any later delivery of the event is acked without acting.
//
// On failure the holder deletes its claim (only if the token is still its own), so the
// retry can act. If the process dies while acting, the lease expires and a redelivery
// acts again.
//
// What this gives, honestly: at-least-once, with duplicates narrowed to one window. A
// crash after the side effect but before "done" is written (or a handler that outlives
// its lease) repeats the side effect on redelivery. A crash after "done" and before the
// ack is harmless: the redelivery is skipped. Exactly-once would need the side effect
// and the mark to commit together, which only a receiver that deduplicates on the event
// id (sent to webhooks as Idempotency-Key) can provide. Losing Redis data (flush,
// failover without persistence) forgets what was done, and events may repeat.
type Claims struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewClaims stores claims under prefix (e.g. "harvest:") in rdb.
func NewClaims(rdb redis.UniversalClient, prefix string) *Claims {
	return &Claims{rdb: rdb, prefix: prefix}
}

// ClaimState is what Claim found.
type ClaimState int

const (
	// Claimed: the caller holds the claim and must Complete or Release it.
	Claimed ClaimState = iota
	// Done: the event was handled before; do not act.
	Done
	// Held: another delivery holds a live claim; try again later.
	Held
)

const doneValue = "done"

// Key is the Redis key for handler's claim on eventID.
func (c *Claims) Key(handler, eventID string) string {
	return c.prefix + "done:" + handler + ":" + eventID
}

// Claim tries to take the claim for lease. The token identifies the holder for Release.
func (c *Claims) Claim(ctx context.Context, handler, eventID string, lease time.Duration) (ClaimState, string, error) {
	key := c.Key(handler, eventID)
	token := newToken()
	ok, err := c.rdb.SetNX(ctx, key, token, lease).Result()
	if err != nil {
		return 0, "", fmt.Errorf("claim %s: %w", key, err)
	}
	if ok {
		return Claimed, token, nil
	}
	v, err := c.rdb.Get(ctx, key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return Held, "", nil // released between our SET and GET: look again later
	case err != nil:
		return 0, "", fmt.Errorf("read claim %s: %w", key, err)
	case v == doneValue:
		return Done, "", nil
	default:
		return Held, "", nil
	}
}

// Complete marks the event done for ttl. It is written even when the caller's lease ran
// out: the side effect happened, and saying so prevents another.
func (c *Claims) Complete(ctx context.Context, handler, eventID string, ttl time.Duration) error {
	key := c.Key(handler, eventID)
	if err := c.rdb.Set(ctx, key, doneValue, ttl).Err(); err != nil {
		return fmt.Errorf("mark %s done: %w", key, err)
	}
	return nil
}

// releaseScript deletes the key only if it still holds the caller's token, so a holder
// whose lease expired cannot delete a newer holder's claim.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Release gives up a claim after a failed attempt, so the retry can act.
func (c *Claims) Release(ctx context.Context, handler, eventID, token string) error {
	key := c.Key(handler, eventID)
	if err := releaseScript.Run(ctx, c.rdb, []string{key}, token).Err(); err != nil {
		return fmt.Errorf("release claim %s: %w", key, err)
	}
	return nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
