package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/internal/testbed"
)

// commitDirect commits writes straight to the emulator (as a gRPC front forwards a
// Commit) and returns its answer.
func (h *harness) commitDirect(writes []*firestorepb.Write) *firestorepb.CommitResponse {
	h.t.Helper()
	body, err := protojson.Marshal(&firestorepb.CommitRequest{Writes: writes})
	if err != nil {
		h.t.Fatal(err)
	}
	a := h.direct("POST", h.docs()+":commit", string(body))
	if a.status != 200 {
		h.t.Fatalf("commit upstream: %v", a)
	}
	cr := &firestorepb.CommitResponse{}
	if err := protojson.Unmarshal(a.body, cr); err != nil {
		h.t.Fatalf("commit answer: %v", err)
	}
	return cr
}

// The write core serves a front that is not REST: writes classified from protobuf
// (classify.FromWrites) and settled by a protobuf answer get the same events, ids and
// identity as through REST; a failed or unknown write emits nothing; a full outbox is
// a Refusal before anything is forwarded.
func TestWriteCoreFromAnotherFront(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL))
	r := h.replicas[0]
	waitBroker(t, r)
	db := "projects/" + h.project + "/databases/(default)"
	set := func(doc string) *firestorepb.Write {
		return &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{
			Name:   h.name(doc),
			Fields: map[string]*firestorepb.Value{"n": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 1}}},
		}}}
	}
	begin := func(writes []*firestorepb.Write) *pendingWrite {
		t.Helper()
		req, err := classify.FromWrites(classify.Commit, db, writes, false)
		if err != nil {
			t.Fatalf("FromWrites: %v", err)
		}
		w, refusal := r.beginWrite(context.Background(), &req, Caller{Identity: identityHash([]byte("Bearer someone"))}, nil)
		if refusal != nil {
			t.Fatalf("refused: %+v", refusal)
		}
		return w
	}

	// Settled failed, then unknown: no events.
	begin([]*firestorepb.Write{set("products/failed")}).failed()
	begin([]*firestorepb.Write{set("products/unknown")}).unknown()

	writes := []*firestorepb.Write{
		set("products/a"),
		{Operation: &firestorepb.Write_Delete{Delete: h.name("products/b")}},
	}
	w := begin(writes)
	w.succeeded(WriteAnswer{Commit: h.commitDirect(writes)})
	w.succeeded(WriteAnswer{}) // a front's bug: ignored, not a second set of events
	h.expect(q, want{typ: "written", doc: "products/a", index: 0, fields: map[string]string{"n": `{"integerValue":"1"}`}, auth: "Bearer someone"})
	h.expect(q, want{typ: "deleted", doc: "products/b", index: 1, auth: "Bearer someone"})

	// Nothing else was published: the next event is the next write's.
	w = begin([]*firestorepb.Write{set("products/c")})
	w.succeeded(WriteAnswer{Commit: h.commitDirect([]*firestorepb.Write{set("products/c")})})
	h.expect(q, want{typ: "written", doc: "products/c", auth: "Bearer someone"})
}

// A full outbox refuses through the core with a Firestore-shaped 503 that names no
// client input.
func TestWriteCoreRefusesWhenOutboxFull(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	relay.Cut()
	h := newHarness(t, eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/", "outbox_max_bytes: 1"))
	r := h.replicas[0]
	// One write fills a one-byte outbox.
	if a := h.via(0, "PATCH", h.docs()+"/products/p", `{"fields":{}}`); a.status != 200 {
		t.Fatalf("first write: %v", a)
	}
	req, err := classify.FromWrites(classify.Commit, "projects/"+h.project+"/databases/(default)",
		[]*firestorepb.Write{{Operation: &firestorepb.Write_Delete{Delete: h.name("products/secret-id")}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	w, refusal := r.beginWrite(context.Background(), &req, Caller{}, nil)
	if w != nil || refusal == nil {
		t.Fatalf("beginWrite with the outbox full: %v, %v; want a refusal", w, refusal)
	}
	if refusal.HTTPStatus != 503 || refusal.Status != "UNAVAILABLE" {
		t.Errorf("refusal %+v, want 503 UNAVAILABLE", refusal)
	}
	if contains := "secret-id"; len(refusal.Message) == 0 || strings.Contains(refusal.Message, contains) {
		t.Errorf("refusal message %q is empty or echoes client input", refusal.Message)
	}
}

// With the outbox's disk nearly full (below the outbox's cap), a write with events is
// refused with a Firestore-shaped 503 before it is forwarded, instead of being answered
// 200 with its events lost; a write without events still goes through.
func TestDiskFullRefusesEventWrites(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL))
	r := h.replicas[0]
	r.em.SetFreeSpaceFunc(func() (uint64, error) { return 4 << 10, nil })
	before := h.meter.Snapshot().Total
	a := h.via(0, "PATCH", h.docs()+"/products/full", `{"fields":{"n":{"integerValue":"1"}}}`)
	if code, status := firestoreError(t, a); code != 503 || status != "UNAVAILABLE" {
		t.Fatalf("write with the disk full: %v, want 503 UNAVAILABLE", a)
	}
	if after := h.meter.Snapshot().Total; after != before {
		t.Fatalf("the upstream saw %d requests of the refused write", after-before)
	}
	if a := h.direct("GET", h.docs()+"/products/full", ""); a.status != 404 {
		t.Fatalf("the refused write landed: %v", a)
	}
	if a := h.via(0, "PATCH", h.docs()+"/quiet/q", `{"fields":{}}`); a.status != 200 {
		t.Fatalf("a write without events with the disk full: %v", a)
	}
}

// A write whose answer was lost (the upstream applied it, the proxy saw a 502) is
// resolved against the upstream: it gets its event, with the id the answer would have
// given; a write that failed with a 502 before reaching the upstream gets none.
func TestUnknownOutcomeIsResolved(t *testing.T) {
	q := newEventQueue(t)
	var mu sync.Mutex
	mode := "" // "apply-then-502" or "502"
	s := eventSetup(q, brokerURL)
	s.upstream = func(_ int, meterURL string) string {
		target, _ := url.Parse(meterURL)
		rp := httputil.NewSingleHostReverseProxy(target)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			m := mode
			mu.Unlock()
			if r.Method != "PATCH" || m == "" {
				rp.ServeHTTP(w, r)
				return
			}
			if m == "apply-then-502" {
				rp.ServeHTTP(httptest.NewRecorder(), r) // applied; the answer is lost
			}
			http.Error(w, `{"error":{"code":502,"status":"UNAVAILABLE"}}`, http.StatusBadGateway)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	h := newHarness(t, s)
	r := h.replicas[0]
	waitBroker(t, r)
	for _, m := range []string{"apply-then-502", "502"} {
		mu.Lock()
		mode = m
		mu.Unlock()
		if a := h.via(0, "PATCH", h.docs()+"/products/"+m, `{"fields":{"n":{"integerValue":"7"}}}`); a.status != 502 {
			t.Fatalf("%s: %v, want the upstream's 502", m, a)
		}
	}
	mu.Lock()
	mode = ""
	mu.Unlock()
	if n := r.em.OpenIntents(); n != 2 {
		t.Fatalf("%d intents waiting for resolution, want 2", n)
	}
	if left := r.em.ResolveOpen(context.Background(), r.resolveIntent, 0); left != 0 {
		t.Fatalf("%d intents left unresolved", left)
	}
	// Only the applied write's event; a marker write after it proves nothing else came.
	d := h.expect(q, want{typ: "written", doc: "products/apply-then-502", fields: map[string]string{"n": `{"integerValue":"7"}`}, auth: owner})
	if a := h.direct("GET", h.docs()+"/products/apply-then-502", ""); !strings.Contains(string(a.body), d.ce.Time[:19]) {
		t.Errorf("event time %s is not the document's update time: %s", d.ce.Time, a.body)
	}
	if a := h.via(0, "PATCH", h.docs()+"/products/marker", `{"fields":{}}`); a.status != 200 {
		t.Fatal(a)
	}
	h.expect(q, want{typ: "written", doc: "products/marker", auth: owner})
}
