// Package cache is the proxy's storage: an in-process tier (L1), a Redis tier (L2)
// shared by every replica, and the generation counters that decide whether a stored
// answer may still be served. It does no HTTP.
//
// # Generations
//
// Every cached answer depends on tags (classify's "doc:…", "coll:…", "group:…",
// "colls:…", plus DatabaseTag). Each tag has a generation, a number that only grows;
// Redis (<prefix>gen:<tag>) is the source of truth, or the process itself when no
// Redis is configured. A read takes a Stamp (Generations.Snapshot) BEFORE it asks the
// upstream; the Entry it fills records those generations. A write bumps its tags
// before it is forwarded and again after the upstream's success. An entry whose
// recorded generation differs from the current one is a miss. Invalidation therefore
// costs O(tags) per write, however many entries exist, and a read that raced a write
// can never be stored or served as fresh (the "no stale fill" guard: L2.Set compares
// and sets in one Lua script).
//
// Each replica keeps a local table of the generations it has seen, so an L1 hit costs
// no network round trip. Bumps are broadcast on <prefix>invalidate; every replica
// applies them and acknowledges, and Bump(…, WaitApplied) waits for those
// acknowledgements, so once a write is answered no replica's L1 can still validate
// an entry that predates it (ARCHITECTURE.md, contract point 1). While a replica is
// not subscribed its local table is not trusted; on (re)subscription it forgets the
// table and starts a new epoch, and entries stamped in an earlier epoch never
// validate again.
//
// Generation values are Redis server time in microseconds (or the previous value
// plus one), never a count from zero, so a tag whose key expired and is bumped again
// can never return to a value an old entry recorded (no ABA).
//
// # Concurrency
//
// Every exported method of L1, L2, Generations and Tiers is safe for concurrent use.
// An *Entry is immutable once handed to any of them: readers share it without
// copying, so callers must not modify an Entry (or its Body, Tags, Gens) after
// Add, Fill or Set, nor an Entry they got back.
//
// # Faults
//
// Every Redis call is bounded by rules.Cache.RedisTimeout. Errors are returned
// wrapped with the operation, counted in metrics, and never panic; callers treat them
// as misses. Nothing in this package blocks a request for longer than that timeout,
// except Bump(…, WaitApplied), which waits at most the acknowledgement timeout.
// Concurrent L2 lookups share round trips (one pipeline per batch, see l2batch.go);
// a lookup's timeout counts from when it was queued. L2 writes of fills may run in
// the background (Tiers.FillBehind); they are the same compare-and-set, so running
// late never stores a stale entry.
package cache
