package cache

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"

	"github.com/redis/go-redis/v9"
)

// roundTrips counts the commands and pipelines a client sends.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestL2BatchesCoalesceOnOneCPU: with one P (how the proxy is deployed beside its
// peers), many concurrent lookups must share round trips. The batcher lets every
// runnable caller queue before it takes a batch; without that, each reply wakes it
// ahead of the callers and most round trips carry one or two lookups.
func TestL2BatchesCoalesceOnOneCPU(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	tags := []string{tagP1, tagAll}
	e := stamped(tags, Stamp{Gens: []uint64{0, 0}}, "body")
	keys := make([]Key, 16)
	for i := range keys {
		keys[i] = key(string(rune('a' + i)))
		if ok, err := l2.Set(ctx, keys[i], e); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	var rt roundTrips
	rdb.AddHook(&rt)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	const callers, each = 64, 100
	var wg sync.WaitGroup
	var failed atomic.Int64
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if got, _, err := l2.Get(ctx, keys[(c+i)%len(keys)], tags); got == nil || err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d lookups failed", n)
	}
	perTrip := float64(callers*each) / float64(rt.n.Load())
	t.Logf("%d lookups in %d round trips: %.1f per round trip", callers*each, rt.n.Load(), perTrip)
	if perTrip < 8 {
		t.Errorf("%.1f lookups per round trip with %d concurrent callers on one P, want at least 8", perTrip, callers)
	}
}
