package proxy

import (
	"sync"
	"testing"
	"time"
)

// Concurrent misses on one key make one upstream call: a page that fans out twenty
// identical reads of a cold document costs one billed read, not twenty.
func TestConcurrentMissesMakeOneUpstreamCall(t *testing.T) {
	h := newHarness(t, setup{redis: redisAddr})
	h.put("products/hot", `{"name":{"stringValue":"apples"}}`)
	h.meter.SetLatency(300 * time.Millisecond) // keep the first call in flight while the rest arrive
	h.meter.Reset()

	const callers = 20
	answers := make([]answer, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = h.send(h.replicas[0].url, "GET", h.docs()+"/products/hot", "")
		}()
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || answers[i].status != 200 {
			t.Fatalf("caller %d: %v %v", i, answers[i], errs[i])
		}
		if string(answers[i].body) != string(answers[0].body) {
			t.Fatalf("caller %d got a different answer:\n%s\nvs\n%s", i, answers[i].body, answers[0].body)
		}
	}
	if got := h.meter.Snapshot().Requests["get"]; got != 1 {
		t.Fatalf("%d concurrent reads of one cold document made %d upstream gets, want 1", callers, got)
	}
}
