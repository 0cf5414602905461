package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// Redis cut mid-load: reads and writes during the cut get the upstream's answers and
// never an error; a write through one replica during the cut is read back on the
// other (neither serves L1 while unsubscribed); after Restore both resubscribe, and the
// write is still what both serve (no L1 or L2 entry from before it comes back).
func TestRedisCutDegradesWithoutErrors(t *testing.T) {
	relay := testbed.NewRelay(t, redisAddr)
	h := newHarness(t, setup{replicas: 2, redis: relay.Addr()})
	const docs = 8
	path := func(i int) string { return fmt.Sprintf("%s/products/p%d", h.docs(), i) }
	for i := range docs {
		h.put(fmt.Sprintf("products/p%d", i), `{"v":{"stringValue":"before"}}`)
	}
	for rep := range h.replicas {
		for i := range docs {
			h.via(rep, "GET", path(i), "")
			if a := h.via(rep, "GET", path(i), ""); a.cache() != "HIT-L1" {
				t.Fatalf("warm-up, replica %d, p%d: %v", rep, i, a)
			}
		}
	}

	relay.Cut()
	for rep, r := range h.replicas {
		waitFor(t, fmt.Sprintf("replica %d to notice the cut", rep), func() bool { return !r.tiers.Gens.Trusted() })
	}

	// Load: concurrent reads on both replicas while replica 0 writes.
	var wg sync.WaitGroup
	errs := make(chan string, 1000)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 30 {
				rep, i := (w+n)%2, (w*7+n)%docs
				a, err := h.send(h.replicas[rep].url, "GET", path(i), "")
				if err != nil || a.status != 200 {
					errs <- fmt.Sprintf("read p%d on replica %d during the cut: %v %v", i, rep, a, err)
				}
			}
		}()
	}
	for i := range 3 {
		if a := h.via(0, "PATCH", path(i), `{"fields":{"v":{"stringValue":"during"}}}`); a.status != 200 {
			t.Errorf("write p%d during the cut: %v", i, a)
		}
		if a := h.via(1, "GET", path(i), ""); !strings.Contains(string(a.body), `"during"`) {
			t.Errorf("p%d on the other replica right after the write, Redis cut: %v", i, a)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	relay.Restore()
	for rep, r := range h.replicas {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := r.tiers.Gens.WaitTrusted(ctx); err != nil {
			t.Fatalf("replica %d never resubscribed after Restore: %v", rep, err)
		}
		cancel()
	}
	for round := range 2 {
		for rep := range h.replicas {
			for i := range docs {
				want := `"before"`
				if i < 3 {
					want = `"during"`
				}
				if a := h.via(rep, "GET", path(i), ""); a.status != 200 || !strings.Contains(string(a.body), want) {
					t.Errorf("round %d, replica %d, p%d after recovery: %v, want %s", round, rep, i, a, want)
				}
			}
		}
	}
	// And the cache works again: a second read is a hit.
	if a := h.via(1, "GET", path(7), ""); !isHit(a.cache()) {
		t.Errorf("after recovery the cache does not serve: %v", a)
	}
}
