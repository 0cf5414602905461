package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/rules"
)

// BenchmarkHitL2 is an L2 hit (L1 off, the shared Redis) from 64 concurrent callers
// of Handle in process: what the proxy itself spends per L2 hit, round trips shared.
func BenchmarkHitL2(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json; charset=UTF-8")
		ctx.SetBodyString(hitDoc)
	}}
	go up.Serve(ln)
	b.Cleanup(func() { up.Shutdown() })
	var rb [6]byte
	rand.Read(rb[:])
	prefix := "test:l2hit:" + hex.EncodeToString(rb[:]) + ":"
	b.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
		defer rdb.Close()
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
	path := filepath.Join(b.TempDir(), "rules.yaml")
	yaml := "cache:\n  l1_max_bytes: 0\n  key_prefix: \"" + prefix + "\"\n" + hitRules
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{Upstream: "http://" + ln.Addr().String(), Rules: store, Registry: prometheus.NewRegistry(),
		RedisURL: "redis://" + redisAddr})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.tiers.Close() })
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
