package cache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/internal/testbed"
)

const db = "projects/p/databases/(default)"

// The cache treats tags as opaque strings; these are classify's, the tags the proxy
// gives it.
var (
	tagP1   = docTag("products/p1")
	tagColl = classify.CollectionTags(db, "products")[0] // coll:, then group:
	tagAll  = classify.DatabaseTag(db)
)

// docTag is the doc: tag of a document relative to db's documents root.
func docTag(doc string) string {
	for _, tag := range classify.WriteTags(db, doc) {
		if strings.HasPrefix(tag, "doc:") {
			return tag
		}
	}
	panic("no doc: tag for " + doc)
}

func TestGenerationsInProcess(t *testing.T) {
	ctx := context.Background()
	g := newGens(t, nil, "")
	if !g.Trusted() {
		t.Fatal("no-Redis generations must always be trusted")
	}
	tags := []string{tagP1, tagAll}
	st, err := g.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	e := stamped(tags, st, "v1")
	if !g.Valid(e) {
		t.Fatal("entry stamped with the current generations is not valid")
	}
	if err := g.Bump(ctx, []string{tagColl}, WaitApplied); err != nil {
		t.Fatal(err)
	}
	if !g.Valid(e) {
		t.Fatal("bump of an unrelated tag invalidated the entry")
	}
	if err := g.Bump(ctx, []string{tagP1}, WaitApplied); err != nil {
		t.Fatal(err)
	}
	if g.Valid(e) {
		t.Fatal("entry still valid after its tag was bumped")
	}
	st2, _ := g.Snapshot(ctx, tags)
	if st2.Gens[0] <= st.Gens[0] || st2.Gens[1] != st.Gens[1] {
		t.Fatalf("generations %v then %v: bumped tag must grow, the other stay", st.Gens, st2.Gens)
	}
	if !g.Valid(stamped(tags, st2, "v2")) {
		t.Fatal("re-stamped entry not valid")
	}
}

// A tag the bounded local table had to forget reads as unknown: a miss, never an
// old generation coming back.
func TestGenerationsForgottenTagIsUnknown(t *testing.T) {
	ctx := context.Background()
	g, err := NewGenerations(GenerationsOptions{MaxTags: tableShards}) // one tag per shard
	if err != nil {
		t.Fatal(err)
	}
	st, _ := g.Snapshot(ctx, []string{tagP1})
	e := stamped([]string{tagP1}, st, "v1")
	for i := 0; g.Valid(e); i++ {
		if i > 100000 {
			t.Fatal("table never dropped the tag")
		}
		g.Snapshot(ctx, []string{fmt.Sprint("doc:other/", i)})
	}
	st2, _ := g.Snapshot(ctx, []string{tagP1})
	if st2.Gens[0] == st.Gens[0] {
		t.Fatal("a forgotten tag came back with its old generation (ABA)")
	}
}

func TestGenerationsRedisBasics(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	g := newGens(t, rdb, prefix)
	tags := []string{tagP1, tagAll}
	st, err := g.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	if st.Gens[0] == 0 || st.Gens[1] == 0 {
		t.Fatalf("fresh tags read %v: a stamp must never be 0, the value of a missing key", st.Gens)
	}
	again, err := g.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	if again.Gens[0] != st.Gens[0] || again.Gens[1] != st.Gens[1] {
		t.Fatalf("generations moved without a bump: %v then %v", st.Gens, again.Gens)
	}
	e := stamped(tags, st, "v1")
	if !g.Valid(e) {
		t.Fatal("entry stamped with current generations is not valid")
	}
	if err := g.Bump(ctx, []string{tagP1}, NoWait); err != nil {
		t.Fatal(err)
	}
	if g.Valid(e) {
		t.Fatal("entry valid after its tag was bumped")
	}
	v, err := rdb.Get(ctx, prefix+"gen:"+tagP1).Uint64()
	if err != nil || v == 0 {
		t.Fatalf("generation in Redis: %d, %v", v, err)
	}
	if ttl := rdb.PTTL(ctx, prefix+"gen:"+tagP1).Val(); ttl <= 0 {
		t.Fatalf("generation key has no TTL (%v): keys would pile up forever", ttl)
	}
	st2, _ := g.Snapshot(ctx, tags)
	if st2.Gens[0] != v {
		t.Fatalf("snapshot %d, Redis %d", st2.Gens[0], v)
	}
	// Bumping again always grows, even within one microsecond.
	for i := 0; i < 5; i++ {
		g.Bump(ctx, []string{tagP1}, NoWait)
	}
	st3, _ := g.Snapshot(ctx, tags)
	if st3.Gens[0] < v+5 {
		t.Fatalf("after 5 more bumps generation %d, was %d", st3.Gens[0], v)
	}
}

// Read-your-writes across replicas: when A's Bump(WaitApplied) returns, B has
// applied it, with no sleep in between.
func TestGenerationsBumpReachesOtherReplicaBeforeReturning(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	a := newGens(t, testClient(t, redisAddr, time.Second), prefix)
	b := newGens(t, testClient(t, redisAddr, time.Second), prefix)
	c := newGens(t, testClient(t, redisAddr, time.Second), prefix)
	tags := []string{tagP1, tagAll}
	for i := 0; i < 50; i++ {
		stB, err := b.Snapshot(ctx, tags)
		if err != nil {
			t.Fatal(err)
		}
		stC, _ := c.Snapshot(ctx, tags)
		eB, eC := stamped(tags, stB, "old"), stamped(tags, stC, "old")
		if !b.Valid(eB) || !c.Valid(eC) {
			t.Fatalf("round %d: fresh entries not valid", i)
		}
		if err := a.Bump(ctx, []string{tagP1}, WaitApplied); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if b.Valid(eB) || c.Valid(eC) {
			t.Fatalf("round %d: another replica still validates an entry older than an acknowledged write", i)
		}
	}
}

// Redis cut: untrusted, calls fail; after Restore: resubscribed, trusted, and what
// was valid before the cut is not valid after (new epoch), even once the same
// generations are learned again. A bump that failed during the cut is re-sent.
func TestGenerationsRedisCut(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	rdb := testClient(t, relay.Addr(), 300*time.Millisecond)
	g := newGens(t, rdb, prefix)
	other := newGens(t, testClient(t, redisAddr, time.Second), prefix)

	tags := []string{tagP1, tagAll}
	st, err := g.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	e := stamped(tags, st, "before")
	if !g.Valid(e) || !g.ValidEventual(e) {
		t.Fatal("entry not valid before the cut")
	}
	epoch := g.Epoch()

	relay.Cut()
	waitTrusted(t, g, false)
	if g.Valid(e) {
		t.Fatal("Valid while not subscribed")
	}
	if !g.ValidEventual(e) {
		t.Fatal("ValidEventual must keep serving the last known state while untrusted")
	}
	if _, err := g.Snapshot(ctx, tags); err == nil {
		t.Fatal("Snapshot succeeded with Redis cut")
	}
	if err := g.Bump(ctx, []string{tagColl}, NoWait); err == nil {
		t.Fatal("Bump succeeded with Redis cut")
	}

	relay.Restore()
	waitTrusted(t, g, true)
	if g.Epoch() == epoch {
		t.Fatal("resubscription did not start a new epoch")
	}
	if g.Valid(e) || g.ValidEventual(e) {
		t.Fatal("entry from before the gap validates after it")
	}
	st2, err := g.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Gens[0] != st.Gens[0] {
		t.Fatal("test premise: generations unchanged across the gap")
	}
	if g.Valid(e) {
		t.Fatal("entry from before the gap validates once its generations are re-learned")
	}
	if !g.Valid(stamped(tags, st2, "after")) {
		t.Fatal("entry stamped after the gap not valid")
	}
	// The bump that failed during the cut was re-sent before the replica trusted
	// itself again: the shared truth has it.
	stO, err := other.Snapshot(ctx, []string{tagColl})
	if err != nil || stO.Gens[0] == 0 {
		t.Fatalf("the bump that failed during the cut was not re-sent: %v %v", stO.Gens, err)
	}
}

// A hung Redis (connection open, no bytes moving): the lease lapses, so the replica
// stops trusting its table, and trusts it again once the bus answers.
func TestGenerationsRedisHung(t *testing.T) {
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	g := newGens(t, testClient(t, relay.Addr(), 300*time.Millisecond), prefix)
	relay.Pause()
	waitTrusted(t, g, false)
	if _, err := g.Snapshot(context.Background(), []string{tagP1}); err == nil {
		t.Fatal("Snapshot succeeded with Redis hung")
	}
	relay.Resume()
	waitTrusted(t, g, true)
}

func TestParseBumpRejectsGarbage(t *testing.T) {
	for _, p := range []string{"", "h1 w 1 1\n", "h1 w 1 2\n3:abc1", "h1 w x 1\n1:a1", "h1 w 1 1\n9:a1", "h2 w 1 0\n"} {
		if _, _, _, _, err := parseBump(p); err == nil {
			t.Errorf("parseBump(%q) accepted garbage", p)
		}
	}
	w, id, tags, gens, err := parseBump("h1 w 7 2\n3:a:b1:c5,6")
	if err != nil || w != "w" || id != 7 || len(tags) != 2 || tags[0] != "a:b" || tags[1] != "c" || gens[0] != 5 || gens[1] != 6 {
		t.Fatalf("parseBump: %q %d %q %v %v", w, id, tags, gens, err)
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrAckTimeout), ErrAckTimeout) {
		t.Fatal("unreachable")
	}
}

// formatBump is the message bumpRedis and bumpScript publish, for the fuzz target.
func formatBump(writer string, id uint64, tags []string, gens []uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "h1 %s %d %d\n", writer, id, len(tags))
	for _, t := range tags {
		fmt.Fprintf(&b, "%d:%s", len(t), t)
	}
	for i, g := range gens {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d", g)
	}
	return b.String()
}

// FuzzParseBump: any message on the invalidation channel (anyone who can PUBLISH to
// Redis can send one) is parsed without panicking or allocating beyond its size, and
// what parses is exactly what formatting it again gives back.
func FuzzParseBump(f *testing.F) {
	f.Add(formatBump("w", 7, []string{"a:b", "c"}, []uint64{5, 6}))
	f.Add(formatBump("0123abcd", 1, []string{tagP1, tagColl, tagAll}, []uint64{1733390000000000, 2, 18446744073709551615}))
	for _, p := range []string{"", "h1 w 1 1\n", "h1 w 1 2\n3:abc1", "h1 w x 1\n1:a1", "h1 w 1 1\n9:a1", "h2 w 1 0\n", "h1 w 1 99999999999\n", "h1 w 1 1\n-1:1", "h1 w 1 1\n1:a1,2"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		w, id, tags, gens, err := parseBump(p)
		if err != nil {
			return
		}
		if len(tags) != len(gens) || len(tags) > len(p) {
			t.Fatalf("%d tags, %d gens from %d bytes", len(tags), len(gens), len(p))
		}
		w2, id2, tags2, gens2, err := parseBump(formatBump(w, id, tags, gens))
		if err != nil || w2 != w || id2 != id || fmt.Sprint(tags2) != fmt.Sprint(tags) || fmt.Sprint(gens2) != fmt.Sprint(gens) {
			t.Fatalf("round trip of %q: %q %d %q %v, %v", p, w2, id2, tags2, gens2, err)
		}
	})
}
