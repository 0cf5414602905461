package testbed

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisAddr is the shared Redis every machine of ours runs (deploy/dev-services.sh).
const RedisAddr = "127.0.0.1:6379"

// RedisPrefix returns a key prefix of this test's own ("test:<name>:<random>:") on the
// shared Redis, failing the test when Redis does not answer, and deletes every key
// under it when the test ends. Call it before starting what writes there: cleanups run
// last-registered first, so the keys are deleted after those have stopped. The shared
// Redis is never flushed.
func RedisPrefix(t testing.TB, name string) string {
	t.Helper()
	prefix := "test:" + name + ":" + RandomHex(6) + ":"
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("Redis at %s does not answer (deploy/dev-services.sh starts it): %v", RedisAddr, err)
	}
	t.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("testbed: scanning Redis keys %s*: %v", prefix, err)
			return
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := rdb.Del(ctx, keys[:n]...).Err(); err != nil {
				t.Errorf("testbed: deleting Redis keys %s*: %v", prefix, err)
				return
			}
			keys = keys[n:]
		}
	})
	return prefix
}
