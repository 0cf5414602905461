package cache

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// A miss's stamp comes from its L2 lookup (no Begin). A write on another replica
// between that lookup and the (background) fill must keep the fill out of every
// tier; without the write, the same sequence fills L2 (so the test is not vacuous).
func TestLookupStampRefusesFillAfterABump(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	a := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 0, nil) // L2 only
	b := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 1<<20, nil)
	c := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 0, nil)
	tags := []string{tagColl, tagAll} // never seen by a: the lookup creates the gen keys

	for _, bump := range []bool{false, true} {
		k := key(fmt.Sprint("list products ", bump))
		e, src, st, err := a.LookupStamped(ctx, k, tags, rules.Strong, time.Now())
		if e != nil || src != Miss || err != nil {
			t.Fatalf("first lookup: %v %s %v", e, src, err)
		}
		if len(st.Gens) != len(tags) || st.Epoch != a.Gens.Epoch() {
			t.Fatalf("lookup gave no stamp: %+v", st)
		}
		for i, g := range st.Gens {
			cur, err := a.L2.rdb.Get(ctx, prefix+"gen:"+tags[i]).Result()
			if g == 0 || err != nil || cur != strconv.FormatUint(g, 10) {
				t.Fatalf("stamp gen %d of %s = %d, Redis has %q (%v): want equal and non-zero", i, tags[i], g, cur, err)
			}
		}
		if bump { // a write through b lands after the read began, before it answers
			if err := b.AfterWrite(ctx, []string{tagColl}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.FillBehind(k, stamped(tags, st, "answer")); err != nil {
			t.Fatal(err)
		}
		a.fills.Wait()
		for name, tr := range map[string]*Tiers{"a": a, "b": b, "c": c} {
			e, src, err := tr.Lookup(ctx, k, tags, rules.Strong, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if bump && e != nil {
				t.Fatalf("replica %s serves a fill stamped before a write (%s)", name, src)
			}
			if !bump && (src != HitL2 || string(e.Body) != "answer") {
				t.Fatalf("replica %s: %v %s, want the filled entry from L2", name, e, src)
			}
		}
	}
}

// A lookup of a key this replica is still writing to L2 in the background waits for
// the write: the next read after a miss is a hit, not a second upstream call.
func TestFillBehindIsReadByTheNextLookup(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	tr := newTiers(t, testClient(t, redisAddr, time.Second), prefix, 0, nil)
	tags := []string{tagP1, tagAll}
	for i := range 50 {
		k := key(fmt.Sprint("GET p1 ", i))
		_, _, st, _ := tr.LookupStamped(ctx, k, tags, rules.Strong, time.Now())
		if st.Gens == nil {
			t.Fatal("no stamp")
		}
		if err := tr.FillBehind(k, stamped(tags, st, "v")); err != nil {
			t.Fatal(err)
		}
		if _, src, err := tr.Lookup(ctx, k, tags, rules.Strong, time.Now()); src != HitL2 {
			t.Fatalf("read %d right after its fill: %s %v", i, src, err)
		}
	}
}

// Concurrent lookups (shared round trips, duplicates coalesced) each get their own
// key's entry, and the generations Redis holds.
func TestL2ConcurrentLookups(t *testing.T) {
	ctx := context.Background()
	prefix := testbed.RedisPrefix(t, "cache")
	rdb := testClient(t, redisAddr, time.Second)
	g := newGens(t, rdb, prefix)
	l2 := NewL2(rdb, prefix, time.Second, nil)
	const keys = 16
	tagsOf := func(i int) []string { return []string{docTag(fmt.Sprint("products/p", i)), tagAll} }
	for i := range keys {
		st, err := g.Snapshot(ctx, tagsOf(i))
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := l2.Set(ctx, key(fmt.Sprint(i)), stamped(tagsOf(i), st, fmt.Sprint("body ", i))); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 50 {
				i := (w + n) % keys
				if n%3 == 0 {
					i = 0 // many lookups of one key in the same batches
				}
				tags := tagsOf(i)
				e, gens, err := l2.Get(ctx, key(fmt.Sprint(i)), tags)
				switch {
				case err != nil:
					errs <- err
				case e == nil || string(e.Body) != fmt.Sprint("body ", i) || !reflect.DeepEqual(e.Tags, tags):
					errs <- fmt.Errorf("key %d: got %+v", i, e)
				case !e.Current(tags, gens):
					errs <- fmt.Errorf("key %d: gens %v, entry has %v", i, gens, e.Gens)
				default:
					e.Epoch = uint64(w) // each caller owns its Entry (the race detector checks)
					continue
				}
				return
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A lookup queued behind a hung Redis gives up at the L2 timeout, counted from when it
// was queued, not after the batch in flight plus its own.
func TestL2QueuedLookupBoundedByTimeout(t *testing.T) {
	prefix := testbed.RedisPrefix(t, "cache")
	relay := testbed.NewRelay(t, redisAddr)
	const timeout = 200 * time.Millisecond
	l2 := NewL2(testClient(t, relay.Addr(), timeout), prefix, timeout, nil)
	if _, _, err := l2.Get(context.Background(), key("warm"), []string{tagP1}); err != nil {
		t.Fatal(err)
	}
	relay.Pause()
	defer relay.Resume()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 20 * time.Millisecond) // queue behind the first
			start := time.Now()
			_, _, err := l2.Get(context.Background(), key(fmt.Sprint(i)), []string{tagP1})
			d := time.Since(start)
			if err == nil {
				t.Error("Get succeeded with Redis hung")
			}
			mu.Lock()
			worst = max(worst, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if worst > timeout+timeout/2 {
		t.Fatalf("a queued lookup took %v, timeout %v", worst, timeout)
	}
}

// The zero-copy decode of L2 replies reads what MarshalBinary wrote.
func TestDecodeEntryString(t *testing.T) {
	e := sampleEntry()
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEntryString(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Body, e.Body) || got.ContentType != e.ContentType || !reflect.DeepEqual(got.Tags, e.Tags) ||
		!reflect.DeepEqual(got.Gens, e.Gens) || !got.StaleUntil.Equal(e.StaleUntil) || got.Docs != e.Docs {
		t.Fatalf("decoded %+v, want %+v", got, e)
	}
	if _, err := decodeEntryString(string(b[:len(b)-1])); err == nil {
		t.Fatal("truncated entry decoded")
	}
}
