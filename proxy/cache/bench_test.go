package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// BenchmarkL1Get is an L1 hit under parallel load (1000 hot keys, 1 KiB bodies).
func BenchmarkL1Get(b *testing.B) {
	c := NewL1(64<<20, 100000, nil)
	keys := make([]Key, 1000)
	for i := range keys {
		keys[i] = key(fmt.Sprint("k", i))
		c.Add(keys[i], entryOfSize(1<<10))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if c.Get(keys[i%len(keys)]) == nil {
				b.Fatal("miss")
			}
			i++
		}
	})
}

// BenchmarkValid is the generation check of an L1 hit (two tags: document and
// database), in parallel.
func BenchmarkValid(b *testing.B) {
	g, _ := NewGenerations(GenerationsOptions{})
	tags := []string{tagP1, tagAll}
	st, _ := g.Snapshot(context.Background(), tags)
	e := stamped(tags, st, "x")
	e.prepare()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !g.Valid(e) {
				b.Fatal("invalid")
			}
		}
	})
}

// BenchmarkLookupL1 is the whole L1 hit path of Tiers: Get, Usable, Valid.
func BenchmarkLookupL1(b *testing.B) {
	tr, _ := New(Config{Cache: rules.Cache{L1MaxBytes: 64 << 20, L1MaxEntries: 100000}})
	ctx := context.Background()
	tags := []string{tagP1, tagAll}
	keys := make([]Key, 1000)
	for i := range keys {
		keys[i] = key(fmt.Sprint("k", i))
		st, _ := tr.Begin(ctx, tags)
		tr.Fill(ctx, keys[i], stamped(tags, st, "body"))
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, src, _ := tr.Lookup(ctx, keys[i%len(keys)], tags, rules.Strong, now); src != HitL1 {
				b.Fatal(src)
			}
			i++
		}
	})
}

// BenchmarkL2Get is one L2 lookup against the real Redis (entry + 2 generations in
// one round trip, 1 KiB body), sequential: the round-trip latency.
func BenchmarkL2Get(b *testing.B) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(b, "cache")
	rdb := testClient(b, redisAddr, time.Second)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	tags := []string{tagP1, tagAll}
	e := stamped(tags, Stamp{Gens: []uint64{0, 0}}, string(make([]byte, 1<<10)))
	k := key("bench")
	if ok, err := l2.Set(ctx, k, e); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if e, _, err := l2.Get(ctx, k, tags); e == nil || err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkL2GetParallel is L2 lookups from 64 concurrent callers (the shape of an L2
// hit under load): their round trips are shared.
func BenchmarkL2GetParallel(b *testing.B) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(b, "cache")
	rdb := testClient(b, redisAddr, time.Second)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	tags := []string{tagP1, tagAll}
	e := stamped(tags, Stamp{Gens: []uint64{0, 0}}, string(make([]byte, 1<<10)))
	keys := make([]Key, 16)
	for i := range keys {
		keys[i] = key(fmt.Sprint("bench", i))
		if ok, err := l2.Set(ctx, keys[i], e); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if e, _, err := l2.Get(ctx, keys[i%len(keys)], tags); e == nil || err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
