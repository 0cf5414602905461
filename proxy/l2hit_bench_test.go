package proxy

import (
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
)

// BenchmarkHitL2 is an L2 hit (L1 off, the shared Redis) from 64 concurrent callers
// of Handle in process: what the proxy itself spends per L2 hit, round trips shared.
func BenchmarkHitL2(b *testing.B) {
	prefix := testbed.RedisPrefix(b, "l2hit")
	yaml := "cache:\n  l1_max_bytes: 0\n  key_prefix: \"" + prefix + "\"\n" + hitRules
	p, _ := hitProxyRedis(b, yaml, "redis://"+redisAddr)
	if err := p.tiers.Gens.WaitTrusted(b.Context()); err != nil {
		b.Fatal(err)
	}
	for i, want := range []string{"MISS", "HIT-L2"} {
		ctx := hitRequest("GET", hitProductURI, "")
		p.Handle(ctx)
		if got := string(ctx.Response.Header.Peek("X-Cache")); got != want {
			b.Fatalf("read %d: %s, want %s", i, got, want)
		}
	}
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := hitRequest("GET", hitProductURI, "")
		for pb.Next() {
			ctx.Response.Reset()
			p.Handle(ctx)
			if string(ctx.Response.Header.Peek("X-Cache")) != "HIT-L2" {
				b.Fatalf("not an L2 hit: %s", ctx.Response.Header.Peek("X-Cache"))
			}
		}
	})
}
