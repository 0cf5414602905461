package testbed

import (
	"context"
	"fmt"
	"net"
	"os/exec"
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

// PrivateRedis starts a redis-server of the test's own on a free loopback port (so
// the test may make it refuse commands without touching the shared one) and stops it
// when the test ends. It returns its address and an admin client.
func PrivateRedis(t testing.TB) (string, *redis.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server (deploy/dev-services.sh installs it): %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := admin.Ping(ctx).Err()
		cancel()
		if err == nil {
			return addr, admin
		}
		if i > 100 {
			t.Fatalf("private redis-server on %s never answered: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
