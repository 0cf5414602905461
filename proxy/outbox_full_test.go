package proxy

import (
	"fmt"
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
)

// With the broker cut and the outbox at its cap, a write whose events could not be
// kept is refused with a Firestore-shaped 503 before it is forwarded (the upstream
// sees none of them and the data is unchanged), while writes to paths without events
// still succeed.
func TestOutboxFullRefusesEventWrites(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	relay.Cut()
	h := newHarness(t, eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/", "outbox_max_bytes: 2000"))
	r := h.replicas[0]

	// Fill the outbox: each event is a few hundred bytes, so a handful of writes do.
	filled := false
	for i := 0; i < 50 && !filled; i++ {
		a := h.via(0, "PATCH", fmt.Sprintf("%s/products/p%d", h.docs(), i), `{"fields":{"n":{"integerValue":"1"}}}`)
		switch a.status {
		case 200:
		case 503:
			filled = true
		default:
			t.Fatalf("write %d: %v", i, a)
		}
	}
	if !filled {
		t.Fatalf("50 writes with the broker cut never filled a 2000-byte outbox (pending %d)", r.em.Pending())
	}

	before := h.meter.Snapshot().Total
	commit := fmt.Sprintf(`{"writes":[{"update":{"name":%q,"fields":{}}}]}`, h.name("products/y"))
	for _, w := range []struct{ method, path, body string }{
		{"PATCH", h.docs() + "/products/x", `{"fields":{}}`},
		{"POST", h.docs() + "/products", `{"fields":{}}`}, // server-assigned id
		{"DELETE", h.docs() + "/products/p0", ""},
		{"POST", h.docs() + ":commit", commit},
	} {
		a := h.via(0, w.method, w.path, w.body)
		if a.status != 503 {
			t.Fatalf("%s %s with the outbox full: %v, want 503", w.method, w.path, a)
		}
		if code, status := firestoreError(t, a); code != 503 || status != "UNAVAILABLE" {
			t.Errorf("%s %s: error %d %s, want 503 UNAVAILABLE", w.method, w.path, code, status)
		}
	}
	if after := h.meter.Snapshot().Total; after != before {
		t.Fatalf("the upstream saw %d of the refused writes", after-before)
	}
	for _, doc := range []string{"products/x", "products/y"} {
		if a := h.direct("GET", h.docs()+"/"+doc, ""); a.status != 404 {
			t.Errorf("refused write of %s landed: %v", doc, a)
		}
	}
	if a := h.direct("GET", h.docs()+"/products/p0", ""); a.status != 200 {
		t.Errorf("refused DELETE of products/p0 landed: %v", a)
	}

	// A path without events does not need the outbox.
	if a := h.via(0, "PATCH", h.docs()+"/quiet/q1", `{"fields":{}}`); a.status != 200 {
		t.Fatalf("write to a path without events while the outbox is full: %v", a)
	}
	if after := h.meter.Snapshot().Total; after != before+1 {
		t.Errorf("upstream requests went from %d to %d, want one more", before, after)
	}
}
