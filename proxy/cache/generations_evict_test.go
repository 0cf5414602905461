package cache

import (
	"context"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// A generation key Redis evicts or loses reads as missing again. A read stamped before
// the loss must never validate afterwards, even though no replica saw a bump: the
// stamp is never the missing value.
func TestLostGenerationKeyNeverValidatesAnOldEntry(t *testing.T) {
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	ctx := context.Background()
	l2 := NewL2(rdb, prefix, time.Second, NewMetrics(nil))
	gens, err := NewGenerations(GenerationsOptions{Redis: rdb, Prefix: prefix, Timeout: time.Second, Metrics: NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gens.Close() })

	tags := []string{"doc:projects/p/databases/(default)/documents/products/never-written"}
	st, err := gens.Snapshot(ctx, tags)
	if err != nil {
		t.Fatal(err)
	}
	if st.Gens[0] == 0 {
		t.Fatal("a read was stamped with generation 0, the value a lost key reads as")
	}
	e := &Entry{Status: 200, Body: []byte("{}"), StoredAt: time.Now(), FreshUntil: time.Now().Add(time.Hour),
		StaleUntil: time.Now().Add(time.Hour), Tags: tags}
	st.Apply(e)
	var key Key
	key[0] = 1
	if stored, err := l2.Set(ctx, key, e); err != nil || !stored {
		t.Fatalf("L2 set: stored=%v err=%v", stored, err)
	}
	// Redis loses the generation key (eviction under maxmemory, a failover).
	if err := rdb.Del(ctx, prefix+"gen:"+tags[0]).Err(); err != nil {
		t.Fatal(err)
	}
	got, cur, err := l2.Get(ctx, key, tags)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatal("the entry itself should still be in L2 for this test to mean anything")
	}
	if got.Current(tags, cur) {
		t.Fatalf("entry stamped %v validated against generations %v after its key was lost", st.Gens, cur)
	}
}
