package cache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

func newTiers(t testing.TB, rdb redis.UniversalClient, prefix string, l1Bytes int64, reg prometheus.Registerer) *Tiers {
	t.Helper()
	tr, err := New(Config{
		Cache: rules.Cache{L1MaxBytes: l1Bytes, L1MaxEntries: 1000, KeyPrefix: prefix, RedisTimeout: time.Second, InvalidationLease: 5 * time.Second},
		Redis: rdb, HealthInterval: 200 * time.Millisecond, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	waitTrusted(t, tr.Gens, true)
	return tr
}

// read is what the proxy does for one cacheable read: look up, else stamp, "ask
// the upstream" (answer), fill.
func read(t testing.TB, tr *Tiers, k Key, tags []string, c rules.Consistency, answer string) (string, Source) {
	t.Helper()
	ctx := context.Background()
	if e, src, _ := tr.Lookup(ctx, k, tags, c, time.Now()); e != nil {
		return string(e.Body), src
	}
	st, err := tr.Begin(ctx, tags)
	if err != nil {
		return answer, Miss // not stamped: not cached
	}
	if err := tr.Fill(ctx, k, stamped(tags, st, answer)); err != nil {
		t.Fatal(err)
	}
	return answer, Miss
}

func TestTiersWithoutRedis(t *testing.T) {
	ctx := context.Background()
	tr := newTiers(t, nil, "", 1<<20, nil)
	if tr.L2 != nil || !tr.Gens.Trusted() {
		t.Fatal("no-Redis tiers must be L1 only and trusted")
	}
	k, tags := key("GET p1"), []string{tagP1, tagAll}
	if _, src := read(t, tr, k, tags, rules.Strong, "v1"); src != Miss {
		t.Fatal("first read hit")
	}
	if body, src := read(t, tr, k, tags, rules.Strong, "v2"); src != HitL1 || body != "v1" {
		t.Fatalf("second read: %s %s", src, body)
	}
	tr.AfterWrite(ctx, []string{tagP1})
	if body, src := read(t, tr, k, tags, rules.Strong, "v2"); src != Miss || body != "v2" {
		t.Fatalf("read after write: %s %s", src, body)
	}
	if body, _ := read(t, tr, k, tags, rules.Strong, "v3"); body != "v2" {
		t.Fatalf("refilled answer not served: %s", body)
	}
	tr.PurgeDatabase(ctx, db)
	if _, src := read(t, tr, k, tags, rules.Strong, "v4"); src != Miss {
		t.Fatal("PurgeDatabase left a hit")
	}
}

// Two replicas sharing Redis: a fill on A is an L2 hit on B, then an L1 hit on B;
// a write through A makes B miss as soon as A's AfterWrite returns.
func TestTiersAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	reg := prometheus.NewRegistry()
	a := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 1<<20, reg)
	b := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 1<<20, nil)
	k, tags := key("GET p1"), []string{tagP1, tagAll}

	read(t, a, k, tags, rules.Strong, "v1")
	if body, src := read(t, b, k, tags, rules.Strong, "x"); src != HitL2 || body != "v1" {
		t.Fatalf("B after A's fill: %s %s", src, body)
	}
	if _, src := read(t, b, k, tags, rules.Strong, "x"); src != HitL1 {
		t.Fatalf("B second read: %s, want HIT-L1 (promoted)", src)
	}
	if err := a.AfterWrite(ctx, []string{tagP1}); err != nil {
		t.Fatal(err)
	}
	if body, src := read(t, b, k, tags, rules.Strong, "v2"); src != Miss || body != "v2" {
		t.Fatalf("B after A's write: %s %s", src, body)
	}
	if body, src := read(t, a, k, tags, rules.Strong, "x"); src != HitL2 || body != "v2" {
		t.Fatalf("A after B's refill: %s %s", src, body)
	}
	// Purge by document, from B, reaches A's L1.
	if err := b.PurgeDocument(ctx, db, "products/p1"); err != nil {
		t.Fatal(err)
	}
	if _, src := read(t, a, k, tags, rules.Strong, "v3"); src != Miss {
		t.Fatalf("A after purge: %s", src)
	}
	// A purge invalidates what a write of the document would, its ancestors'
	// collection-id lists included (it used to build its tags by hand and miss them).
	lk, ltags := key("listCollectionIds f1"), []string{"colls:" + db + "/documents/farmers/f1", tagAll}
	read(t, a, lk, ltags, rules.Strong, "[products]")
	if _, src := read(t, a, lk, ltags, rules.Strong, "x"); src != HitL1 {
		t.Fatalf("listCollectionIds warm-up: %s", src)
	}
	if err := b.PurgeDocument(ctx, db, "farmers/f1/products/p9"); err != nil {
		t.Fatal(err)
	}
	if _, src := read(t, a, lk, ltags, rules.Strong, "[]"); src != Miss {
		t.Fatalf("listCollectionIds after a purge of a document below it: %s, want a miss", src)
	}
	if err := b.PurgeDocument(ctx, db, "farmers"); err != ErrNotAResource {
		t.Errorf("purge of a collection as a document: %v, want ErrNotAResource", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["harvest_cache_invalidation_subscribed"] != 1 || got["harvest_cache_l1_entries"] < 1 ||
		got["harvest_cache_l1_bytes"] < 1 || got["harvest_cache_bump_ack_waits_total"] < 1 ||
		got["harvest_cache_invalidations_total"] < 1 {
		t.Fatalf("metrics of replica A: %v", got)
	}
}

// A read that began before a write and answers after it is stored nowhere.
func TestTiersNoStaleFill(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	a := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 1<<20, nil)
	b := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 1<<20, nil)
	k, tags := key("list products"), []string{tagColl, tagAll}

	st, err := a.Begin(ctx, tags) // A's read begins
	if err != nil {
		t.Fatal(err)
	}
	b.AfterWrite(ctx, []string{tagColl})
	a.Fill(ctx, k, stamped(tags, st, "pre-write")) // A's read answers
	for _, tr := range []*Tiers{a, b} {
		if e, src, _ := tr.Lookup(ctx, k, tags, rules.Strong, time.Now()); e != nil {
			t.Fatalf("stale fill served as %s", src)
		}
	}
}

// L1 off: every answer comes from L2.
func TestTiersL1Disabled(t *testing.T) {
	prefix := testbed.RedisPrefix(t, "cache")
	tr := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 0, nil)
	k, tags := key("GET p1"), []string{tagP1}
	read(t, tr, k, tags, rules.Strong, "v1")
	for i := 0; i < 3; i++ {
		if _, src := read(t, tr, k, tags, rules.Strong, "x"); src != HitL2 {
			t.Fatalf("read %d: %s, want HIT-L2", i, src)
		}
	}
	if tr.L1.Len() != 0 {
		t.Fatal("disabled L1 holds entries")
	}
}

// While not subscribed: strong rules do not use L1, eventual ones do; errors from
// L2 are misses, not failures.
func TestTiersUntrustedConsistency(t *testing.T) {
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	tr := newTiers(t, testClient(t, relay.Addr(), 300*time.Millisecond), prefix, 1<<20, nil)
	k, tags := key("GET p1"), []string{tagP1}
	read(t, tr, k, tags, rules.Strong, "v1")
	if _, src := read(t, tr, k, tags, rules.Strong, "x"); src != HitL1 {
		t.Fatal("not an L1 hit while trusted")
	}
	relay.Cut()
	waitTrusted(t, tr.Gens, false)
	if body, src := read(t, tr, k, tags, rules.Strong, "upstream"); src != Miss || body != "upstream" {
		t.Fatalf("strong read while untrusted: %s %s", src, body)
	}
	if body, src := read(t, tr, k, tags, rules.Eventual, "upstream"); src != HitL1 || body != "v1" {
		t.Fatalf("eventual read while untrusted: %s %s", src, body)
	}
	relay.Restore()
	waitTrusted(t, tr.Gens, true)
	if _, src, _ := tr.Lookup(context.Background(), k, tags, rules.Eventual, time.Now()); src == HitL1 {
		t.Fatal("L1 entry from before the gap served after it")
	}
}

func TestSourceString(t *testing.T) {
	got := strings.Join([]string{Miss.String(), HitL1.String(), HitL2.String()}, ",")
	if got != "MISS,HIT-L1,HIT-L2" {
		t.Fatal(got)
	}
}
