package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeKind is one way to write farmers/<f>/products, with the documents it needs
// beforehand and the read kinds it cannot change (checked against the emulator, so the
// test proves invalidation wherever the data did change).
type writeKind struct {
	name      string
	seed      map[string]string // document under farmers/<f>/ -> fields
	method    string
	path      func(h *harness, f string) string
	body      func(h *harness, f string) string
	unchanged []string
}

const on, off = `{"status":{"stringValue":"on"}}`, `{"status":{"stringValue":"off"}}`

func productsPath(h *harness, f string) string { return h.docs() + "/farmers/" + f + "/products" }

// threeWrites creates a and b (status on) and deletes c, which never existed.
func threeWrites(h *harness, f string) string {
	return fmt.Sprintf(`{"writes":[{"update":{"name":%q,"fields":%s}},{"update":{"name":%q,"fields":%s}},{"delete":%q}]}`,
		h.name("farmers/"+f+"/products/a"), on, h.name("farmers/"+f+"/products/b"), on, h.name("farmers/"+f+"/products/c"))
}

var writeKinds = []writeKind{
	{
		name: "PATCH set", method: "PATCH",
		path: func(h *harness, f string) string { return productsPath(h, f) + "/a" },
		body: func(*harness, string) string { return `{"fields":` + on + `}` },
	},
	{
		name: "PATCH updateMask", method: "PATCH", seed: map[string]string{"products/a": off},
		path: func(h *harness, f string) string {
			return productsPath(h, f) + "/a?updateMask.fieldPaths=status&currentDocument.exists=true"
		},
		body:      func(*harness, string) string { return `{"fields":` + on + `}` },
		unchanged: []string{"collectionIds"}, // the collection existed before
	},
	{
		name: "create with documentId", method: "POST",
		path: func(h *harness, f string) string { return productsPath(h, f) + "?documentId=a" },
		body: func(*harness, string) string { return `{"fields":` + on + `}` },
	},
	{
		name: "create with server id", method: "POST",
		path:      productsPath,
		body:      func(*harness, string) string { return `{"fields":` + on + `}` },
		unchanged: []string{"get", "batchGet"}, // they name a and b; the new id is neither
	},
	{
		name: "DELETE", method: "DELETE", seed: map[string]string{"products/a": on},
		path: func(h *harness, f string) string { return productsPath(h, f) + "/a" },
		body: func(*harness, string) string { return "" },
	},
	{
		name: "commit", method: "POST",
		path: func(h *harness, _ string) string { return h.docs() + ":commit" },
		body: threeWrites,
	},
	{
		name: "batchWrite", method: "POST",
		path: func(h *harness, _ string) string { return h.docs() + ":batchWrite" },
		body: threeWrites,
	},
}

// Read-your-writes through any replica: every write kind invalidates every read kind
// that depends on what it wrote, on the replica it went through and on another one
// sharing Redis. Both replicas hold a cached copy of every read before the write;
// after the write's success both answer with the emulator's new content.
func TestEveryWriteInvalidatesEveryDependentRead(t *testing.T) {
	h := newHarness(t, setup{replicas: 2, redis: redisAddr})
	for i, w := range writeKinds {
		t.Run(w.name, func(t *testing.T) {
			f := fmt.Sprintf("w%d", i)
			h.put("farmers/"+f, `{"name":{"stringValue":"farmer"}}`)
			for doc, fields := range w.seed {
				h.put("farmers/"+f+"/"+doc, fields)
			}
			reads := h.readsOf(f)
			before := map[string]string{}
			for _, r := range reads {
				before[r.name] = normalized(t, h.direct(r.method, r.path, r.body).body)
				for rep := range h.replicas {
					h.via(rep, r.method, r.path, r.body)
					if a := h.via(rep, r.method, r.path, r.body); !isHit(a.cache()) {
						t.Fatalf("replica %d, %s: not cached before the write: %v", rep, r.name, a)
					}
				}
			}

			a := h.via(0, w.method, w.path(h, f), w.body(h, f))
			if a.status != http.StatusOK {
				t.Fatalf("write through replica 0: %v", a)
			}

			for _, r := range reads {
				truth := normalized(t, h.direct(r.method, r.path, r.body).body)
				mayStay := strings.Contains(strings.Join(w.unchanged, ","), r.name)
				if truth == before[r.name] && !mayStay {
					t.Fatalf("%s: the write did not change the emulator's answer; the test proves nothing", r.name)
				}
				for rep, who := range []string{"the writing replica", "the other replica"} {
					got := h.via(rep, r.method, r.path, r.body)
					if g := normalized(t, got.body); g != truth {
						t.Errorf("%s on %s after %s: served %s\n got  %s\n want %s", r.name, who, w.name, got.cache(), g, truth)
					}
				}
			}
		})
	}
}

// gate stands between one replica and the meter, to stop a request at a chosen
// moment. When armed, the next request of its method closes arrived (the proxy has
// stamped the read, or made the write's first bump), waits for release first if
// holdRequest, is forwarded, closes answered once the upstream has answered, and goes
// back to the proxy only when release is closed if holdAnswer.
type gate struct {
	method      string
	holdRequest bool
	holdAnswer  bool
	armed       atomic.Bool
	arrived     chan struct{}
	answered    chan struct{}
	release     chan struct{}
}

func newGate(t *testing.T, upstream string, g *gate) string {
	g.arrived, g.answered, g.release = make(chan struct{}), make(chan struct{}), make(chan struct{})
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != g.method || !g.armed.CompareAndSwap(true, false) {
			rp.ServeHTTP(w, r)
			return
		}
		close(g.arrived)
		if g.holdRequest {
			<-g.release
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		close(g.answered)
		if g.holdAnswer {
			<-g.release
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// No stale fill: a read that began before a write through another replica, and
// raced it, is never served afterwards on either replica.
func TestReadRacingAWriteIsNotStoredAsFresh(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hold    bool          // the read's old answer is held until the write is done
		latency time.Duration // meter latency: the read is slow, the write overlaps it
	}{
		{name: "old answer arrives after the write succeeded", hold: true},
		{name: "slow upstream, write while the read is in flight", latency: 150 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gate{method: "GET", holdAnswer: tc.hold}
			h := newHarness(t, setup{replicas: 2, redis: redisAddr, upstream: func(i int, meter string) string {
				if i != 0 {
					return meter
				}
				return newGate(t, meter, g)
			}})
			h.put("products/p1", `{"v":{"stringValue":"old"}}`)
			path := h.docs() + "/products/p1"
			h.meter.SetLatency(tc.latency)

			g.armed.Store(true)
			read := make(chan answer, 1)
			go func() {
				a, err := h.send(h.replicas[0].url, "GET", path, "")
				if err != nil {
					t.Error(err)
				}
				read <- a
			}()
			<-g.arrived
			if tc.hold {
				<-g.answered // the emulator has served "old" to the read
			}
			if a := h.via(1, "PATCH", path, `{"fields":{"v":{"stringValue":"new"}}}`); a.status != 200 {
				t.Fatalf("write through replica 1: %v", a)
			}
			close(g.release)
			if a := <-read; a.status != 200 || a.cache() != "MISS" {
				t.Fatalf("racing read: %v, want 200 MISS", a)
			}
			h.meter.SetLatency(0)
			h.expectEverywhere(path, `"new"`)
		})
	}
}

// A read that begins while a write is on its way to the upstream (after the write's
// first bump) and is answered before the write lands gets the old data; the write's
// second bump must outdate what it stored, before the writer hears of its success.
func TestReadDuringAWriteIsOutdatedByIt(t *testing.T) {
	g := &gate{method: "PATCH", holdRequest: true}
	h := newHarness(t, setup{replicas: 2, redis: redisAddr, upstream: func(i int, meter string) string {
		if i != 0 {
			return meter
		}
		return newGate(t, meter, g)
	}})
	h.put("products/p1", `{"v":{"stringValue":"old"}}`)
	path := h.docs() + "/products/p1"

	g.armed.Store(true)
	write := make(chan answer, 1)
	go func() {
		a, err := h.send(h.replicas[0].url, "PATCH", path, `{"fields":{"v":{"stringValue":"new"}}}`)
		if err != nil {
			t.Error(err)
		}
		write <- a
	}()
	<-g.arrived // first bump made, the write not yet forwarded
	for rep := range h.replicas {
		if a := h.via(rep, "GET", path, ""); !strings.Contains(string(a.body), `"old"`) {
			t.Fatalf("replica %d before the write landed: %v", rep, a)
		}
	}
	close(g.release)
	if a := <-write; a.status != 200 {
		t.Fatalf("write: %v", a)
	}
	h.expectEverywhere(path, `"new"`)
}

// expectEverywhere reads path twice on every replica and wants want in each answer:
// neither a cached entry nor a fill from before the write may be served.
func (h *harness) expectEverywhere(path, want string) {
	h.t.Helper()
	for round := range 2 {
		for rep := range h.replicas {
			a := h.via(rep, "GET", path, "")
			if a.status != 200 || !strings.Contains(string(a.body), want) {
				h.t.Errorf("round %d, replica %d after the write: %v; an entry from before the write was served", round, rep, a)
			}
		}
	}
}
