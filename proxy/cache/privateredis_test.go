package cache

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

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
