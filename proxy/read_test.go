package proxy

import (
	"bytes"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Every cacheable read kind: the first read is a MISS, the second a hit with the very
// same bytes that reaches no upstream (the meter's counts do not move) and carries
// Age; with L1 off the hit comes from Redis.
func TestEveryReadKindIsCached(t *testing.T) {
	for _, tc := range []struct {
		name    string
		s       setup
		wantHit string
	}{
		{"L1 only", setup{}, "HIT-L1"},
		{"L2 only", setup{redis: redisAddr, cache: []string{"l1_max_bytes: 0"}}, "HIT-L2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.s)
			h.put("farmers/f1", `{"name":{"stringValue":"Ann"}}`)
			h.put("farmers/f1/products/a", `{"status":{"stringValue":"on"}}`)
			h.put("farmers/f1/products/b", `{"status":{"stringValue":"off"}}`)
			for _, r := range h.readsOf("f1") {
				miss := h.via(0, r.method, r.path, r.body)
				if miss.status != 200 || miss.cache() != "MISS" {
					t.Fatalf("%s: first read = %v, want 200 MISS", r.name, miss)
				}
				if truth := h.direct(r.method, r.path, r.body); normalized(t, truth.body) != normalized(t, miss.body) {
					t.Fatalf("%s: MISS body differs from the emulator's:\n proxy %s\n emu   %s", r.name, miss.body, truth.body)
				}
				reqs, billed := h.counts()
				hit := h.via(0, r.method, r.path, r.body)
				if hit.status != 200 || hit.cache() != tc.wantHit {
					t.Fatalf("%s: second read = %v, want 200 %s", r.name, hit, tc.wantHit)
				}
				if !bytes.Equal(hit.body, miss.body) {
					t.Errorf("%s: hit body differs from the MISS body:\n hit  %s\n miss %s", r.name, hit.body, miss.body)
				}
				if age, err := strconv.Atoi(hit.header.Get("Age")); err != nil || age < 0 {
					t.Errorf("%s: hit has Age %q, want a number of seconds", r.name, hit.header.Get("Age"))
				}
				if ct := hit.header.Get("Content-Type"); ct != miss.header.Get("Content-Type") || ct == "" {
					t.Errorf("%s: hit Content-Type %q, MISS had %q", r.name, ct, miss.header.Get("Content-Type"))
				}
				if r2, b2 := h.counts(); r2 != reqs || b2 != billed {
					t.Errorf("%s: the hit reached the upstream: requests %d -> %d, billed reads %d -> %d", r.name, reqs, r2, billed, b2)
				}
			}
		})
	}
}

// scope user keys entries by the whole Authorization header: a second caller's first
// read is a MISS the upstream sees, and so is a caller without the header; scope
// shared serves one entry to everyone.
func TestScopeUserNeverSharesAnEntry(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /sessions/{s}
    ttl: 10m
  - match: /products/{p}
    ttl: 10m
    scope: shared
`})
	h.put("sessions/s1", `{"v":{"stringValue":"secret"}}`)
	h.put("products/p1", `{"v":{"stringValue":"public"}}`)
	alice, bob := unsignedJWT(h.project, "alice"), unsignedJWT(h.project, "bob")
	path := h.docs() + "/sessions/s1"

	read := func(who, auth, want string) {
		t.Helper()
		before, _ := h.counts()
		a := h.via(0, "GET", path, "", "Authorization", auth)
		after, _ := h.counts()
		if a.status != 200 || a.cache() != want {
			t.Fatalf("%s: read = %v, want 200 %s", who, a, want)
		}
		if upstream := after - before; (want == "MISS") != (upstream == 1) {
			t.Fatalf("%s: %s reached the upstream %d times", who, want, upstream)
		}
	}
	read("alice", alice, "MISS")
	read("alice again", alice, "HIT-L1")
	read("bob (another token)", bob, "MISS")
	read("bob again", bob, "HIT-L1")
	read("no Authorization", "", "MISS")
	read("no Authorization again", "", "HIT-L1")

	shared := h.docs() + "/products/p1"
	if a := h.via(0, "GET", shared, "", "Authorization", alice); a.cache() != "MISS" {
		t.Fatalf("shared, alice: %v, want MISS", a)
	}
	for who, auth := range map[string]string{"bob": bob, "anonymous": ""} {
		if a := h.via(0, "GET", shared, "", "Authorization", auth); a.status != 200 || a.cache() != "HIT-L1" {
			t.Errorf("shared, %s: %v, want the entry alice filled (HIT-L1)", who, a)
		}
	}
}

// Only 200 answers are cached: a single document's 404 only under negative_ttl, and
// an upstream 500/503 never, passed through as Firestore's JSON.
func TestOnlySuccessIsCached(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /neg/{d}
    ttl: 10m
    scope: shared
    negative_ttl: 10m
  - match: /products/{p}
    ttl: 10m
    scope: shared
`})
	t.Run("404 without negative_ttl", func(t *testing.T) {
		path := h.docs() + "/products/missing"
		for i := range 2 {
			before, _ := h.counts()
			a := h.via(0, "GET", path, "")
			after, _ := h.counts()
			if a.status != 404 || a.cache() != "MISS" || after-before != 1 {
				t.Fatalf("read %d: %v (upstream calls %d), want 404 MISS from the upstream", i, a, after-before)
			}
		}
	})
	t.Run("404 with negative_ttl", func(t *testing.T) {
		path := h.docs() + "/neg/missing"
		if a := h.via(0, "GET", path, ""); a.status != 404 || a.cache() != "MISS" {
			t.Fatalf("first: %v, want 404 MISS", a)
		}
		if a := h.via(0, "GET", path, ""); a.status != 404 || a.cache() != "HIT-L1" {
			t.Fatalf("second: %v, want 404 HIT-L1", a)
		}
		// And a create through the proxy ends the negative entry.
		if a := h.via(0, "PATCH", path, `{"fields":{"v":{"integerValue":"1"}}}`); a.status != 200 {
			t.Fatalf("create: %v", a)
		}
		if a := h.via(0, "GET", path, ""); a.status != 200 {
			t.Fatalf("after create: %v, want 200", a)
		}
	})
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			h.put("products/p"+strconv.Itoa(status), `{"v":{"integerValue":"1"}}`)
			path := h.docs() + "/products/p" + strconv.Itoa(status)
			h.meter.FailWith(status)
			for i := range 2 {
				a := h.via(0, "GET", path, "")
				if a.status != status || a.cache() != "MISS" {
					t.Fatalf("read %d while failing: %v, want %d passed through", i, a, status)
				}
				if code, _ := firestoreError(t, a); code != status {
					t.Errorf("error code %d, want %d", code, status)
				}
			}
			h.meter.Heal()
			if a := h.via(0, "GET", path, ""); a.status != 200 || a.cache() != "MISS" {
				t.Fatalf("after heal: %v, want 200 MISS (the error was not cached)", a)
			}
		})
	}
}

// Upstream refused: a rule with stale_if_error serves the expired entry as STALE; a
// rule without answers 503 UNAVAILABLE in Firestore's shape.
func TestUpstreamDownServesStaleIfError(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /products/{p}
    ttl: 1ms
    scope: shared
    stale_if_error: 1h
  - match: /farmers/{f}
    ttl: 1ms
    scope: shared
`})
	h.put("products/p1", `{"v":{"stringValue":"kept"}}`)
	h.put("farmers/f1", `{"v":{"stringValue":"lost"}}`)
	withStale, without := h.docs()+"/products/p1", h.docs()+"/farmers/f1"
	first := h.via(0, "GET", withStale, "")
	if first.status != 200 || first.cache() != "MISS" {
		t.Fatalf("fill: %v", first)
	}
	if a := h.via(0, "GET", without, ""); a.status != 200 {
		t.Fatalf("fill: %v", a)
	}
	time.Sleep(5 * time.Millisecond) // let the 1ms TTL pass: the entries are expired, not gone

	h.meter.Refuse()
	defer h.meter.Accept()
	a := h.via(0, "GET", withStale, "")
	if a.status != 200 || a.cache() != "STALE" || !bytes.Equal(a.body, first.body) {
		t.Fatalf("stale_if_error with upstream down: %v, want 200 STALE with the cached body", a)
	}
	if a.header.Get("Age") == "" {
		t.Errorf("STALE answer has no Age")
	}
	a = h.via(0, "GET", without, "")
	if a.status != http.StatusServiceUnavailable {
		t.Fatalf("no stale_if_error, upstream down: %v, want 503", a)
	}
	if code, status := firestoreError(t, a); code != 503 || status != "UNAVAILABLE" {
		t.Errorf("error = %d %s, want 503 UNAVAILABLE", code, status)
	}
}

// stale_while_revalidate: an expired entry is served STALE at once and refreshed in
// the background with one upstream read however many readers find it expired; a later
// read has the new data.
func TestStaleWhileRevalidateRefreshesOnce(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /products/{p}
    ttl: 1s
    scope: shared
    stale_while_revalidate: 1h
`})
	h.put("products/p1", `{"v":{"stringValue":"old"}}`)
	path := h.docs() + "/products/p1"
	if a := h.via(0, "GET", path, ""); a.cache() != "MISS" {
		t.Fatalf("fill: %v", a)
	}
	h.put("products/p1", `{"v":{"stringValue":"new"}}`) // behind the proxy's back
	time.Sleep(1100 * time.Millisecond)                 // past the TTL

	gets := func() int64 { return h.meter.Snapshot().Requests["get"] }
	before := gets()
	h.meter.SetLatency(100 * time.Millisecond) // the refresh is still in flight while the readers come
	const readers = 8
	answers := make([]answer, readers)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = h.via(0, "GET", path, "") }()
	}
	wg.Wait()
	for _, a := range answers {
		if a.status != 200 || a.cache() != "STALE" || !bytes.Contains(a.body, []byte(`"old"`)) {
			t.Fatalf("expired read: %v, want the old entry served STALE", a)
		}
	}
	waitFor(t, "the background refresh to reach the upstream", func() bool { return gets() >= before+1 })
	var a answer
	waitFor(t, "the refreshed entry to be served", func() bool {
		a = h.via(0, "GET", path, "")
		return !bytes.Contains(a.body, []byte(`"old"`))
	})
	// Counted before the refreshed entry can expire again (its TTL is 1s, the
	// refresh took 100ms): any further get is a second refresh of the same expiry.
	if n := gets(); n != before+1 {
		t.Errorf("upstream gets after %d expired reads: %d, want exactly one refresh", readers, n-before)
	}
	if a.status != 200 || !bytes.Contains(a.body, []byte(`"new"`)) {
		t.Fatalf("after refresh: %v, want the new data", a)
	}
}

// A malformed query body is a Firestore 400 the upstream never sees; a body over
// server.max_body_bytes is a Firestore 413.
func TestBadRequestsAreAnsweredByTheProxy(t *testing.T) {
	h := newHarness(t, setup{server: []string{"max_body_bytes: 4KiB"}})
	before, _ := h.counts()
	a := h.via(0, "POST", h.docs()+":runQuery", `{"structuredQuery": {"from": [`)
	if a.status != 400 {
		t.Fatalf("malformed runQuery: %v, want 400", a)
	}
	if code, status := firestoreError(t, a); code != 400 || status != "INVALID_ARGUMENT" {
		t.Errorf("malformed runQuery: %d %s, want 400 INVALID_ARGUMENT", code, status)
	}
	if after, _ := h.counts(); after != before {
		t.Errorf("the upstream saw the malformed request (%d requests)", after-before)
	}

	big := `{"structuredQuery":{"from":[{"collectionId":"` + string(bytes.Repeat([]byte("x"), 8<<10)) + `"}]}}`
	a = h.via(0, "POST", h.docs()+":runQuery", big)
	if a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %v, want 413", a)
	}
	if code, _ := firestoreError(t, a); code != 413 {
		t.Errorf("oversized body: error code %d, want 413", code)
	}
	if after, _ := h.counts(); after != before {
		t.Errorf("the upstream saw the oversized request")
	}
}
