package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/testbed"
)

// setRefusingWrites makes Redis answer -OOM to every command that may write (the
// invalidation and stamping scripts, L2 fills) while reads, PUBLISH and subscriptions
// go on, as at maxmemory with noeviction; or ends it.
func setRefusingWrites(admin *redis.Client, on bool) error {
	ctx := context.Background()
	if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		return err
	}
	limit := "0"
	if on {
		limit = "1"
	}
	return admin.ConfigSet(ctx, "maxmemory", limit).Err()
}

// slowReplica adds a replica to h whose Redis link goes through a relay to addr, so
// the test can delay or pause it; h's own replicas use addr directly.
func slowReplica(h *harness, addr string) (*replica, *testbed.Relay) {
	h.t.Helper()
	relay := testbed.NewRelay(h.t, addr)
	s := h.setup
	s.redis = relay.Addr()
	r := h.startReplica(h.rulesPath, s, h.meter.URL())
	h.replicas = append(h.replicas, r)
	return r, relay
}

// A write the upstream refuses changes nothing, so it invalidates nothing: anyone
// could otherwise empty every replica's cache with writes they may not make.
func TestRefusedWriteInvalidatesNothing(t *testing.T) {
	h := newHarness(t, setup{replicas: 2, redis: redisAddr})
	h.put("products/p1", `{"v":{"stringValue":"kept"}}`)
	path := h.docs() + "/products/p1"
	for rep := range h.replicas {
		h.via(rep, "GET", path, "")
		if a := h.via(rep, "GET", path, ""); a.cache() != "HIT-L1" {
			t.Fatalf("warm-up, replica %d: %v", rep, a)
		}
	}
	for _, status := range []int{403, 400, 404, 409} {
		h.meter.FailWith(status)
		a := h.via(0, "PATCH", path, `{"fields":{"v":{"stringValue":"refused"}}}`, "Authorization", "")
		h.meter.Heal()
		if a.status != status {
			t.Fatalf("refused write answered %v, want %d", a, status)
		}
		for rep := range h.replicas {
			if a := h.via(rep, "GET", path, ""); a.cache() != "HIT-L1" || !strings.Contains(string(a.body), `"kept"`) {
				t.Errorf("after a write refused with %d, replica %d: %v, want the cached answer", status, rep, a)
			}
		}
	}
}

// A replica whose Redis link is slow (300 ms, then 600 ms each way): a write through
// another replica is answered only once the slow one applied its invalidation (or
// stopped trusting its L1), so a read through the slow replica right after the answer
// sees the write. The lease (3s) is longer than the slow round trip, so the slow
// replica keeps trusting its L1 and it is the writer's wait that protects it.
func TestSlowReplicaServesNoStaleReadAfterAWrite(t *testing.T) {
	h := newHarness(t, setup{replicas: 1, redis: redisAddr, cache: []string{"invalidation_lease: 3s"}})
	slow, relay := slowReplica(h, redisAddr)
	path := h.docs() + "/products/p1"
	h.put("products/p1", `{"v":{"integerValue":"0"}}`)
	v := 0
	for _, latency := range []time.Duration{300 * time.Millisecond, 600 * time.Millisecond} {
		relay.SetLatency(0)
		waitFor(t, "the slow replica to trust its L1", slow.tiers.Gens.Trusted)
		for rep := range h.replicas {
			h.via(rep, "GET", path, "")
			if a := h.via(rep, "GET", path, ""); a.cache() != "HIT-L1" {
				t.Fatalf("warm-up, replica %d: %v", rep, a)
			}
		}
		relay.SetLatency(latency)
		for range 3 {
			v++
			if a := h.via(0, "PATCH", path, fmt.Sprintf(`{"fields":{"v":{"integerValue":"%d"}}}`, v)); a.status != 200 {
				t.Fatalf("write v%d: %v", v, a)
			}
			if a := h.via(1, "GET", path, ""); !strings.Contains(string(a.body), fmt.Sprintf(`"%d"`, v)) {
				t.Fatalf("slow replica (%v each way) right after write v%d was answered: %v", latency, v, a)
			}
		}
	}
	if !slow.tiers.Gens.Trusted() {
		t.Log("the slow replica's lease lapsed during the test (a loaded machine): the writer's wait was not what protected it")
	}
}

// faultCycle runs Redis faults until stop is closed, phase after phase: none, the
// slow replica's link delayed, Redis refusing writes (each window shorter than the
// lease the workload runs with), both at once.
func faultCycle(t *testing.T, admin *redis.Client, relay *testbed.Relay, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer relay.SetLatency(0)
		defer setRefusingWrites(admin, false)
		phases := []struct {
			latency time.Duration
			refuse  bool
		}{{0, false}, {200 * time.Millisecond, false}, {0, false}, {0, true}, {200 * time.Millisecond, true}}
		for i := 0; ; i++ {
			p := phases[i%len(phases)]
			relay.SetLatency(p.latency)
			if err := setRefusingWrites(admin, p.refuse); err != nil {
				t.Errorf("fault: %v", err)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return &wg
}
