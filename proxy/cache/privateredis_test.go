package cache

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis starts a redis-server of the test's own on a free loopback port (so
// the test may make it refuse commands without touching the shared one) and stops it
// when the test ends. It returns its address and an admin client.
func privateRedis(t testing.TB) (string, *redis.Client) {
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

// refuseWrites makes Redis answer -OOM to every command that may write (the bump and
// stamping scripts), while reads, PUBLISH and subscriptions go on, as a Redis at its
// maxmemory with noeviction does. The returned func ends it.
func refuseWrites(t testing.TB, admin *redis.Client) func() {
	t.Helper()
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := admin.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
			t.Fatal(err)
		}
	}
}
