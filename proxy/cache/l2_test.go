package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

func TestL2SetGet(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	g := newGens(t, rdb, prefix)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	tags := []string{tagP1, tagAll}
	k := key("GET products/p1")

	if e, gens, err := l2.Get(ctx, k, tags); err != nil || e != nil || len(gens) != 2 {
		t.Fatalf("empty L2: %v %v %v", e, gens, err)
	}
	st, _ := g.Snapshot(ctx, tags)
	e := stamped(tags, st, `{"fields":{}}`)
	if ok, err := l2.Set(ctx, k, e); !ok || err != nil {
		t.Fatalf("Set: %v %v", ok, err)
	}
	got, gens, err := l2.Get(ctx, k, tags)
	if err != nil || got == nil {
		t.Fatalf("Get: %v %v", got, err)
	}
	if !bytes.Equal(got.Body, e.Body) || !got.Current(tags, gens) {
		t.Fatalf("Get returned %+v with gens %v", got, gens)
	}
	ttl := rdb.PTTL(ctx, prefix+"e:"+k.String()).Val()
	if ttl <= 0 || ttl > 2*time.Minute {
		t.Fatalf("entry TTL %v, want until StaleUntil (2m)", ttl)
	}
	// A write after the fill: the entry is still there, but no longer current.
	g.Bump(ctx, []string{tagP1}, NoWait)
	got, gens, _ = l2.Get(ctx, k, tags)
	if got == nil || got.Current(tags, gens) {
		t.Fatal("entry reads as current after its tag was bumped")
	}
	// A dead entry is not stored.
	dead := stamped(tags, st, "x")
	dead.StaleUntil = time.Now().Add(-time.Second)
	if ok, _ := l2.Set(ctx, key("dead"), dead); ok {
		t.Fatal("stored an entry past StaleUntil")
	}
}

// No stale fill: a read stamped before a write's bump cannot be stored after it.
func TestL2SetRefusesStaleFill(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	reader := newGens(t, rdb, prefix)
	writer := newGens(t, testClient(t, redisAddr, time.Second), prefix)
	l2 := NewL2(rdb, prefix, time.Second, NewMetrics(nil))
	tags := []string{tagColl, tagAll}
	k := key("runQuery products")

	st, _ := reader.Snapshot(ctx, tags) // the read begins
	if err := writer.Bump(ctx, []string{tagColl}, NoWait); err != nil {
		t.Fatal(err) // a write starts before the read's answer is stored
	}
	ok, err := l2.Set(ctx, k, stamped(tags, st, "pre-write answer"))
	if err != nil || ok {
		t.Fatalf("stale fill stored=%v err=%v; want refused", ok, err)
	}
	if e, _, _ := l2.Get(ctx, k, tags); e != nil {
		t.Fatal("refused entry is in Redis")
	}
	st2, _ := reader.Snapshot(ctx, tags)
	if ok, err := l2.Set(ctx, k, stamped(tags, st2, "post-write answer")); !ok || err != nil {
		t.Fatalf("fresh fill refused: %v %v", ok, err)
	}
}

func TestL2GarbageIsAnError(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	k := key("garbage")
	rdb.Set(ctx, prefix+"e:"+k.String(), "\x01\xff\xff", time.Minute)
	e, _, err := l2.Get(ctx, k, []string{tagP1})
	if e != nil || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage entry: %v %v", e, err)
	}
}

func TestL2RedisCutIsAnError(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	l2 := NewL2(testClient(t, relay.Addr(), 200*time.Millisecond), prefix, 200*time.Millisecond, nil)
	e := &Entry{Status: 200, StaleUntil: time.Now().Add(time.Minute)}
	relay.Cut()
	if _, _, err := l2.Get(ctx, key("k"), []string{tagP1}); err == nil {
		t.Fatal("Get succeeded with Redis cut")
	}
	if _, err := l2.Set(ctx, key("k"), e); err == nil {
		t.Fatal("Set succeeded with Redis cut")
	}
	relay.Restore()
	relay.Pause() // a hung Redis: calls end at the timeout
	if _, _, err := l2.Get(ctx, key("k"), []string{tagP1}); err == nil {
		t.Fatal("Get succeeded with Redis hung")
	}
	relay.Resume()
}
