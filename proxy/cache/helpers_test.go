package cache

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const redisAddr = "127.0.0.1:6379"

// testClient is a client for addr with the production options but a timeout
// generous enough for a loaded machine under -race.
func testClient(t testing.TB, addr string, timeout time.Duration) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, PoolTimeout: timeout,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// newGens starts Generations on rdb (nil: in-process) and waits until trusted.
func newGens(t testing.TB, rdb redis.UniversalClient, prefix string) *Generations {
	t.Helper()
	g, err := NewGenerations(GenerationsOptions{
		Redis: rdb, Prefix: prefix, Timeout: time.Second,
		HealthInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	waitTrusted(t, g, true)
	return g
}

func waitTrusted(t testing.TB, g *Generations, want bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := g.waitState(ctx, want); err != nil {
		t.Fatal(err)
	}
}

// stamped makes an entry for tags stamped with st.
func stamped(tags []string, st Stamp, body string) *Entry {
	now := time.Now()
	e := &Entry{
		Status: 200, Body: []byte(body), ContentType: "application/json; charset=UTF-8",
		StoredAt: now, FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(2 * time.Minute),
		Docs: 1, Tags: tags,
	}
	st.Apply(e)
	return e
}

// key hashes s into a Key, uniformly like the proxy's key hash.
func key(s string) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:8], maphash.String(keySeed, s))
	binary.LittleEndian.PutUint64(k[8:], maphash.String(keySeed, s+"#"))
	return k
}

var keySeed = maphash.MakeSeed()
