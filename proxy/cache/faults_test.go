package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// newTiersLease is newTiers with the given invalidation lease.
func newTiersLease(t testing.TB, rdb redis.UniversalClient, prefix string, lease time.Duration) *Tiers {
	t.Helper()
	tr, err := New(Config{
		Cache: rules.Cache{L1MaxBytes: 1 << 20, L1MaxEntries: 1000, KeyPrefix: prefix, RedisTimeout: time.Second, InvalidationLease: lease},
		Redis: rdb, HealthInterval: lease / 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	waitTrusted(t, tr.Gens, true)
	return tr
}

// refuseNewClients makes Redis refuse every new connection ("max number of clients
// reached") and drops the existing command connections, while subscriptions (and
// admin's own connection) stay up: a Redis at maxclients. The returned func ends it.
func refuseNewClients(t testing.TB, admin *redis.Client) func() {
	t.Helper()
	ctx := context.Background()
	list, err := admin.Do(ctx, "client", "list", "type", "pubsub").Text()
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(list, "\n") + 1 // the subscribers and admin
	if err := admin.ConfigSet(ctx, "maxclients", fmt.Sprint(n)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := admin.ConfigSet(ctx, "maxclients", "10000").Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// Redis refusing commands while pub/sub stays up (at maxmemory, at maxclients): the
// write's bump fails. The writing replica must not serve what the write outdated,
// from L1 (strong or eventual) or from L2 (whose entry Redis still calls current),
// nor stamp reads of it, until the bump is replayed; then the shared truth has it.
func TestRefusedBumpInvalidatesLocallyUntilReplayed(t *testing.T) {
	for name, refuse := range map[string]func(testing.TB, *redis.Client) func(){
		"oom":        refuseWrites,
		"maxclients": refuseNewClients,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			addr, admin := testbed.PrivateRedis(t)
			tr := newTiersLease(t, testClient(t, addr, 300*time.Millisecond), "t:", time.Second)
			k, tags := key("GET p1"), []string{tagP1, tagAll}
			other := key("GET p2")
			otherTags := []string{docTag("products/p2"), tagAll}
			read(t, tr, k, tags, rules.Strong, "before")
			read(t, tr, other, otherTags, rules.Eventual, "p2")
			if body, src := read(t, tr, k, tags, rules.Strong, "x"); src != HitL1 || body != "before" {
				t.Fatalf("warm-up: %s %s", src, body)
			}
			before, err := admin.Get(ctx, "t:gen:"+tagP1).Uint64()
			if err != nil {
				t.Fatal(err)
			}

			undo := refuse(t, admin)
			if err := tr.AfterWrite(ctx, []string{tagP1}); err == nil {
				t.Fatal("test premise: the bump succeeded although Redis refuses commands")
			}
			for _, c := range []rules.Consistency{rules.Strong, rules.Eventual} {
				if e, src, _ := tr.Lookup(ctx, k, tags, c, time.Now()); e != nil {
					t.Fatalf("%s read after a write whose bump failed: %s %q, the value the write replaced", c, src, e.Body)
				}
			}
			if tr.Gens.Trusted() {
				t.Fatal("replica trusts its table with a failed bump pending")
			}
			if _, err := tr.Begin(ctx, tags); err == nil {
				t.Fatal("a read of a tag whose bump failed was stamped with the generation the bump should have replaced")
			}
			// Degrade, not forget: an eventual entry of other tags is still served.
			if e, src, _ := tr.Lookup(ctx, other, otherTags, rules.Eventual, time.Now()); e == nil || src != HitL1 {
				t.Errorf("eventual entry of unrelated tags not served during the fault: %v", src)
			}

			undo()
			waitTrusted(t, tr.Gens, true)
			after, err := admin.Get(ctx, "t:gen:"+tagP1).Uint64()
			if err != nil || after <= before {
				t.Fatalf("the failed bump was not replayed to Redis: generation %d then %d (%v)", before, after, err)
			}
			if e, src, _ := tr.Lookup(ctx, k, tags, rules.Strong, time.Now()); e != nil {
				t.Fatalf("after the replay the old entry is served: %s %q", src, e.Body)
			}
			read(t, tr, k, tags, rules.Strong, "after")
			if body, src := read(t, tr, k, tags, rules.Strong, "x"); src != HitL1 || body != "after" {
				t.Fatalf("cache does not work again after the replay: %s %s", src, body)
			}
		})
	}
}

// A write that fails to bump thousands of tags (Redis refusing) is replayed tag by
// tag once Redis is back: never widened into a purge of the whole database.
func TestRefusedBigBumpIsNeverWidenedToTheDatabase(t *testing.T) {
	ctx := context.Background()
	addr, admin := testbed.PrivateRedis(t)
	g, err := NewGenerations(GenerationsOptions{
		Redis: testClient(t, addr, time.Second), Prefix: "t:", Timeout: time.Second,
		Lease: 300 * time.Millisecond, HealthInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	waitTrusted(t, g, true)
	tags := make([]string, 5000)
	for i := range tags {
		tags[i] = docTag(fmt.Sprintf("products/p%d", i))
	}
	undo := refuseWrites(t, admin)
	if err := g.Bump(ctx, tags, WaitApplied); err == nil {
		t.Fatal("test premise: the bump succeeded although Redis refuses writes")
	}
	undo()
	waitTrusted(t, g, true)
	if n := admin.Exists(ctx, "t:gen:"+tagAll).Val(); n != 0 {
		t.Fatal("a failed write was widened into a purge of the whole database")
	}
	if n := len(admin.Keys(ctx, "t:gen:*").Val()); n != len(tags) {
		t.Fatalf("%d generation keys after the replay, want one per tag (%d)", n, len(tags))
	}
}

// One write touching 20k documents is bumped in short script calls: none overruns the
// Redis timeout, every tag reaches every replica, and nothing else is bumped.
func TestBigBumpIsChunked(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	opt := func() GenerationsOptions {
		return GenerationsOptions{Redis: testClient(t, redisAddr, time.Second), Prefix: prefix,
			Timeout: 200 * time.Millisecond, Lease: 5 * time.Second, HealthInterval: 100 * time.Millisecond}
	}
	a, err := NewGenerations(opt())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := NewGenerations(opt())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	waitTrusted(t, a, true)
	waitTrusted(t, b, true)
	tags := make([]string, 20000)
	for i := range tags {
		tags[i] = docTag(fmt.Sprintf("products/p%05d", i))
	}
	// A loaded machine may make b slower than the lease to acknowledge: that is not a
	// failure of the bump (b then stopped trusting its table), a Redis error is.
	if err := a.Bump(ctx, tags, WaitApplied); err != nil && !errors.Is(err, ErrAckTimeout) {
		t.Fatal(err)
	}
	if a.pending.Load() {
		t.Fatal("part of the bump failed")
	}
	rdb := testClient(t, redisAddr, time.Second)
	for _, tag := range []string{tags[0], tags[len(tags)/2], tags[len(tags)-1]} {
		if rdb.Exists(ctx, prefix+"gen:"+tag).Val() != 1 {
			t.Fatalf("Redis has no generation for %s", tag)
		}
		deadline := time.Now().Add(time.Minute)
		for gen, _ := b.table.get(hashTag(tag), tag); gen == 0; gen, _ = b.table.get(hashTag(tag), tag) {
			if time.Now().After(deadline) {
				t.Fatalf("replica b never applied the bump of %s", tag)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if n := rdb.Exists(ctx, prefix+"gen:"+tagAll).Val(); n != 0 {
		t.Fatal("a big write bumped the whole database")
	}
}

// A replica whose link to the bus is slow (300 ms each way) or silent (paused) never
// validates an entry a write outdated once that write's bump returned: the slow one
// applied it (the writer waited for its acknowledgement), the silent one stopped
// trusting its table (the writer waited out the lease).
func TestSlowOrSilentReplicaStopsServingBeforeTheWriteReturns(t *testing.T) {
	const lease = 2 * time.Second
	for _, fault := range []string{"latency", "pause"} {
		t.Run(fault, func(t *testing.T) {
			ctx := context.Background()
			prefix := testbed.RedisPrefix(t, "cache")
			relay := testbed.NewRelay(t, redisAddr)
			opt := func(addr string) GenerationsOptions {
				return GenerationsOptions{Redis: testClient(t, addr, time.Second), Prefix: prefix,
					Timeout: time.Second, Lease: lease, HealthInterval: 100 * time.Millisecond}
			}
			slow, err := NewGenerations(opt(relay.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { slow.Close() })
			writer, err := NewGenerations(opt(redisAddr))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { writer.Close() })
			waitTrusted(t, slow, true)
			waitTrusted(t, writer, true)
			tags := []string{tagP1, tagAll}
			st, err := slow.Snapshot(ctx, tags)
			if err != nil {
				t.Fatal(err)
			}
			e := stamped(tags, st, "old")
			if !slow.Valid(e) {
				t.Fatal("fresh entry not valid")
			}
			switch fault {
			case "latency":
				relay.SetLatency(300 * time.Millisecond)
			case "pause":
				relay.Pause()
			}
			for round := range 3 {
				err := writer.Bump(ctx, []string{tagP1}, WaitApplied)
				// Once its presence has expired (it cannot renew it either), writers
				// no longer wait for the paused replica: it holds no lease.
				if fault == "pause" && round == 0 && !errors.Is(err, ErrAckTimeout) {
					t.Fatalf("round %d: a paused replica acknowledged: %v", round, err)
				}
				t.Logf("round %d (%s): bump returned %v", round, fault, err)
				if slow.Valid(e) || slow.ValidEventual(e) && slow.Trusted() {
					t.Fatalf("round %d (%s): the slow replica still validates an entry older than a returned bump (err %v)", round, fault, err)
				}
			}
			relay.SetLatency(0)
			relay.Resume()
			waitTrusted(t, slow, true)
			if slow.Valid(e) {
				t.Fatal("after the fault the old entry validates again")
			}
		})
	}
}

// Keys a read creates are short-lived, and only as many as a cacheable read has tags:
// reads of documents that never exist (or a batchGet of 20k of them) leave nothing
// long-lived in Redis. Storing an entry makes its keys outlive it; a write makes them
// last GenTTL.
func TestReadCreatedGenerationKeysAreBounded(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	tr := newTiersLease(t, rdb, prefix, 5*time.Second)
	tags := []string{docTag("products/never"), tagAll}
	st, err := tr.Begin(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, prefix+"gen:"+tags[0]).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("a read created a generation key living %v, want at most a minute", ttl)
	}
	e := stamped(tags, st, "{}")
	e.StaleUntil = time.Now().Add(10 * time.Minute)
	if stored, err := tr.L2.Set(ctx, key("GET never"), e); err != nil || !stored {
		t.Fatalf("L2 set: %v %v", stored, err)
	}
	if ttl := rdb.PTTL(ctx, prefix+"gen:"+tags[0]).Val(); ttl < 9*time.Minute {
		t.Fatalf("a stored entry's generation key lives %v, less than the entry", ttl)
	}
	if err := tr.AfterWrite(ctx, tags[:1]); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, prefix+"gen:"+tags[0]).Val(); ttl < 24*time.Hour {
		t.Fatalf("a written tag's generation key lives %v", ttl)
	}

	many := make([]string, maxStampTags+1)
	for i := range many {
		many[i] = docTag(fmt.Sprintf("missing/m%d", i))
	}
	if e, _, st, _ := tr.LookupStamped(ctx, key("batchGet many"), many, rules.Strong, time.Now()); e != nil || st.Gens != nil {
		t.Fatal("a read of too many tags was looked up in L2 or stamped")
	}
	if _, err := tr.Begin(ctx, many); !errors.Is(err, ErrTooManyTags) {
		t.Fatalf("Begin of %d tags: %v, want ErrTooManyTags", len(many), err)
	}
	if n := rdb.Exists(ctx, prefix+"gen:"+many[0], prefix+"gen:"+many[len(many)-1]).Val(); n != 0 {
		t.Fatal("a read of too many tags to cache created generation keys")
	}
}

// A replica whose subscription Redis dropped while the replica has not noticed yet
// (its link hung, the close still in flight) is not a receiver of the next bump, but
// it may still hold a lease: the writer finds it in the presence set and waits for it,
// so once the bump returns that replica no longer trusts its table.
func TestReplicaDroppedByRedisIsWaitedFor(t *testing.T) {
	const lease = 2 * time.Second
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	name := "dropped-" + testbed.RandomHex(4)
	droppedClient := redis.NewClient(&redis.Options{Addr: relay.Addr(), ClientName: name, ContextTimeoutEnabled: true,
		MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, PoolTimeout: time.Second})
	t.Cleanup(func() { droppedClient.Close() })
	opt := func(rdb redis.UniversalClient) GenerationsOptions {
		return GenerationsOptions{Redis: rdb, Prefix: prefix, Timeout: time.Second, Lease: lease, HealthInterval: 100 * time.Millisecond}
	}
	dropped, err := NewGenerations(opt(droppedClient))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropped.Close() })
	writer, err := NewGenerations(opt(testClient(t, redisAddr, time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close() })
	waitTrusted(t, dropped, true)
	waitTrusted(t, writer, true)
	tags := []string{tagP1, tagAll}
	st, err := dropped.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	e := stamped(tags, st, "old")

	relay.Pause() // the replica hears nothing more, not even that Redis closed it
	admin := testClient(t, redisAddr, time.Second)
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " flags=P ") {
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := admin.Do(ctx, "client", "kill", "id", id).Err(); err != nil {
						t.Fatal(err)
					}
					killed++
				}
			}
		}
	}
	if killed != 1 {
		t.Fatalf("test premise: found %d subscriptions named %s", killed, name)
	}
	if !dropped.Valid(e) {
		t.Fatal("test premise: the dropped replica stopped trusting its table before the bump")
	}
	err = writer.Bump(ctx, []string{tagP1}, WaitApplied)
	if dropped.Valid(e) {
		t.Fatalf("a replica Redis dropped still validates an entry older than a returned bump (%v)", err)
	}
	relay.Resume()
}
