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
// upstream; the Entry it fills records those generations. An entry whose
// recorded generation differs from the current one is a miss. Invalidation therefore
// costs O(tags) per write, however many entries exist, and a read that raced a write
// can never be stored or served as fresh (the "no stale fill" guard: L2.Set compares
// and sets in one Lua script, and L1 fills check the local table).
//
// A write bumps its tags once, after the upstream answered (success, or an unknown
// outcome), before the client is answered; never before forwarding. That is all "no
// stale fill" needs: a read that began before the bump recorded older generations,
// so its fill is refused or, if it came first, outdated by the bump. A write the
// upstream refuses bumps nothing, so no one can invalidate what they may not write.
// A bump's work is proportional to the write (script calls of at most maxBumpChunk
// tags) and never widened to more tags than the write touches.
//
// Each replica keeps a local table of the generations it has seen, so an L1 hit costs
// no network round trip. Bumps are broadcast on <prefix>invalidate; every replica
// applies them and acknowledges, and Bump(…, WaitApplied) waits for those
// acknowledgements, so once a write is answered no replica's L1 can still validate
// an entry that predates it (docs/ARCHITECTURE.md, "Cache correctness", point 1). While a replica is
// not subscribed its local table is not trusted; on (re)subscription it forgets the
// table and starts a new epoch, and entries stamped in an earlier epoch never
// validate again.
//
// # Lease
//
// A replica that is subscribed but slow or silent (a delayed link, a hung peer)
// would apply a bump late. So a replica trusts its table only under a lease: every
// HealthInterval it PINGs on its subscription, and the answer to a PING sent at t
// proves that every bump published before Redis handled it has been applied (one
// connection delivers in order), so the lease runs to t + 4/5 of Lease (the last
// fifth absorbs a late timer). A writer waits for every acknowledgement or for Lease
// after its last bump was answered, whichever comes first: a replica that did not
// acknowledge by then heard nothing sent after the bump, so its lease, if any, came
// from a PING sent before it and has run out. Lease is rules.Cache.InvalidationLease.
//
// Which replicas a writer waits for is not PUBLISH's count of receivers (a replica
// whose subscription Redis dropped before the replica noticed is not one, yet may
// still hold a lease) but the presence set <prefix>replicas: every heartbeat a
// replica records there "until server time + Lease", and it never trusts its table
// beyond its own send time + 4/5 of Lease, so a replica missing from the set when the
// bump runs holds no lease. Close leaves the set.
//
// # Refused bumps
//
// When Redis does not take a bump (down, at maxclients, -OOM, a timeout), a waiting
// writer retries it for up to the lease; if it still fails, the local table forgets
// its tags at once (not even consistency eventual serves them), the replica stops
// trusting its table, L2 entries and stamps of those tags are refused (Redis still
// answers the generations the bump should have replaced), and the bump is replayed
// until Redis takes it. Other replicas cannot be told meanwhile: they may serve what
// the write outdated until the replay reaches them. The replay set is bounded
// (maxFailed); beyond it the excess is counted as lost and this replica starts a new
// epoch.
//
// Generation values are Redis server time in microseconds (or the previous value
// plus one), never a count from zero, so a tag whose key expired and is bumped again
// can never return to a value an old entry recorded (no ABA). A key a read creates
// lives only ReadKeyTTL; storing an entry in L2 extends its keys to the entry's
// lifetime, and a write's bump to GenTTL. A key that expires reads as missing, which
// matches no entry, and is recreated with a new value: expiry costs misses, never
// stale reads. A read with more than maxStampTags tags is not cached, so one
// request creates at most that many keys.
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
// Every Redis call on the request path is bounded by rules.Cache.RedisTimeout.
// Errors are returned wrapped with the operation, counted in metrics, and never
// panic; callers treat them as misses. Nothing in this package blocks a request for
// longer than that timeout, except Bump(…, WaitApplied), which waits at most the
// lease for acknowledgements (and, when Redis refuses the bump, retries it for at
// most the lease first).
// Concurrent L2 lookups share round trips (one pipeline per batch, see l2batch.go);
// a lookup's timeout counts from when it was queued. L2 writes of fills may run in
// the background (Tiers.FillBehind); they are the same compare-and-set, so running
// late never stores a stale entry.
package cache
