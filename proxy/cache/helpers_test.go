package cache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"hash/maphash"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const redisAddr = "127.0.0.1:6379"

// testPrefix returns a key prefix unique to this test and deletes every key under it
// when the test ends. Redis must be up: the test fails, never skips.
func testPrefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	prefix := "test:cache:" + hex.EncodeToString(b[:]) + ":"
	admin := redis.NewClient(&redis.Options{Addr: redisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.Ping(ctx).Err(); err != nil {
		admin.Close()
		t.Fatalf("Redis at %s is required by this test and is not answering: %v", redisAddr, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx := context.Background()
		iter := admin.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleanup scan: %v", err)
		}
		if len(keys) > 0 {
			if err := admin.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("cleanup del: %v", err)
			}
		}
	})
	return prefix
}

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
		Redis: rdb, Prefix: prefix, Timeout: time.Second, AckTimeout: 5 * time.Second,
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
