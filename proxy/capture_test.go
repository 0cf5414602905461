package proxy

// Change capture through the whole proxy: writes made directly to the emulator (as a
// Cloud Function, the console or another client would) invalidate every replica's
// cache and become events, with one watch among the replicas.

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/harvest-hub/edge/internal/testbed"
)

// captureRules: products are cached for everybody and captured; orders are captured
// and emit every event type.
const captureRules = `
  - match: /products/{p}
    ttl: 10m
    scope: shared
    capture: true
  - match: /orders/{o}
    events: true
    capture: true
`

// captureSetup is a harness of n replicas sharing Redis whose rules capture, watching
// the emulator directly with a short lease. With q, events go to q's exchange.
func captureSetup(t *testing.T, n int, q *eventQueue) setup {
	t.Helper()
	s := setup{replicas: n, redis: redisAddr, rules: captureRules,
		capture: CaptureOptions{Upstream: testbed.Emulator(t).URL, LeaseTTL: 1500 * time.Millisecond}}
	if q != nil {
		s.emitter, s.amqp = true, brokerURL
		s.events = []string{fmt.Sprintf("exchange: %q", q.exchange)}
	}
	return s
}

// newCaptureHarness starts the harness with upstream.project set to its project
// through GOOGLE_CLOUD_PROJECT (as a deployment would) and waits until a replica watches.
func newCaptureHarness(t *testing.T, s setup) *harness {
	t.Helper()
	n := s.replicas
	s.replicas = -1 // none yet: the project is known once the harness made it
	h := newHarness(t, s)
	t.Setenv("GOOGLE_CLOUD_PROJECT", h.project)
	for range n {
		h.addReplica()
	}
	h.waitWatching()
	return h
}

// captureMetric is the value of a harvest_capture_* series of replica r for a watch
// ("collection products"), and whether it exists.
func captureMetric(t *testing.T, r *replica, name, watch string) (float64, bool) {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelOf(m, "watch") == watch {
				if g := m.GetGauge(); g != nil {
					return g.GetValue(), true
				}
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// holders are the live replicas that hold watch and finished a snapshot of it.
func (h *harness) holders(watch string) []int {
	var out []int
	for i, r := range h.replicas {
		if r == nil {
			continue
		}
		held, _ := captureMetric(h.t, r, "harvest_capture_lease_held", watch)
		if _, snap := captureMetric(h.t, r, "harvest_capture_resume_age_seconds", watch); held == 1 && snap {
			out = append(out, i)
		}
	}
	return out
}

// waitChanges waits until the replicas acted on n changes of the watch.
func (h *harness) waitChanges(watch string, n int) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		total := 0.0
		for _, r := range h.replicas {
			if r == nil {
				continue
			}
			mfs, err := r.reg.Gather()
			if err != nil {
				h.t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == "harvest_capture_changes_total" {
					for _, m := range mf.GetMetric() {
						if labelOf(m, "watch") == watch {
							total += m.GetCounter().GetValue()
						}
					}
				}
			}
		}
		if total >= float64(n) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("capture did not act on %d changes of %s within 30s", n, watch)
}

// waitWatching waits until each watch (products, orders) is held by one replica that
// has seen its first snapshot: from then on, every write is a change, not the
// baseline. It returns the replica holding the orders watch (each watch has its own
// lease: the two may be held by different replicas).
func (h *harness) waitWatching() int {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		products, orders := h.holders("collection products"), h.holders("collection orders")
		if len(products) > 1 || len(orders) > 1 {
			h.t.Fatalf("several replicas hold one watch: products %v, orders %v", products, orders)
		}
		if len(products) == 1 && len(orders) == 1 {
			return orders[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatal("the watches did not start within 30s")
	return -1
}

// value is a document's field v as the proxy (or emulator) answers it.
func value(a answer) string {
	i := strings.Index(string(a.body), `"stringValue": "`)
	if i < 0 {
		return ""
	}
	rest := string(a.body)[i+len(`"stringValue": "`):]
	return rest[:strings.IndexByte(rest, '"')]
}

func TestCaptureInvalidatesEveryReplicaOnADirectWrite(t *testing.T) {
	h := newCaptureHarness(t, captureSetup(t, 2, nil))
	doc := h.docs() + "/products/kale"
	h.direct("PATCH", doc, `{"fields":{"v":{"stringValue":"old"}}}`)
	// The creation is itself a change: capture counts it, then bumps it, so a read
	// cached in between is invalidated once more. Wait until the old value stays cached.
	h.waitChanges("collection products", 1)
	for i := range h.replicas {
		var a answer
		deadline := time.Now().Add(10 * time.Second)
		for {
			h.via(i, "GET", doc, "")
			if a = h.via(i, "GET", doc, ""); strings.HasPrefix(a.cache(), "HIT") && value(a) == "old" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d: %v, want a cached hit of the old value", i, a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	h.direct("PATCH", doc, `{"fields":{"v":{"stringValue":"new"}}}`) // around the proxy
	written := time.Now()
	for i := range h.replicas {
		for {
			a := h.via(i, "GET", doc, "")
			if value(a) == "new" {
				t.Logf("replica %d serves the new value %v after the direct write", i, time.Since(written))
				break
			}
			if time.Since(written) > 2*time.Second {
				t.Fatalf("replica %d still serves %v 2s after a direct write", i, a)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// drain reads events until the created event of the sentinel document, returning
// those before it as "type document id".
func drain(q *eventQueue, sentinel string) []delivery {
	var got []delivery
	for {
		d := q.next("the events before " + sentinel)
		if d.ce.Subject == "documents/"+sentinel {
			return got
		}
		got = append(got, d)
	}
}

func kinds(ds []delivery) string {
	var out []string
	for _, d := range ds {
		out = append(out, strings.TrimPrefix(d.ce.Type, "google.cloud.firestore.document.v1.")+" "+strings.TrimPrefix(d.ce.Subject, "documents/"))
	}
	return strings.Join(out, ", ")
}

func TestCaptureDirectWritesBecomeOneEventEach(t *testing.T) {
	q := newEventQueue(t)
	h := newCaptureHarness(t, captureSetup(t, 2, q))
	doc := h.docs() + "/orders/o1"
	h.direct("PATCH", doc, `{"fields":{"n":{"integerValue":"1"}}}`)
	h.expectEvent(q, "created orders/o1")
	h.direct("PATCH", doc, `{"fields":{"n":{"integerValue":"2"}}}`)
	h.expectEvent(q, "updated orders/o1")
	h.direct("DELETE", doc, "")
	h.expectEvent(q, "deleted orders/o1")
	// Nothing else: the next event is the sentinel's.
	h.direct("PATCH", h.docs()+"/orders/sentinel", `{"fields":{}}`)
	if rest := drain(q, "orders/sentinel"); len(rest) > 0 {
		t.Fatalf("more events than changes: %s", kinds(rest))
	}
}

// expectEvent waits for the next event and checks it is want ("created orders/o1"),
// with the value for anything but a delete.
func (h *harness) expectEvent(q *eventQueue, want string) delivery {
	h.t.Helper()
	d := q.next(want)
	if got := kinds([]delivery{d}); got != want {
		h.t.Fatalf("event %q, want %q: %v", got, want, d)
	}
	if !strings.HasPrefix(want, "deleted") && d.ce.Data.Value == nil {
		h.t.Fatalf("%s without data.value: %v", want, d)
	}
	return d
}

func TestCaptureAndAProxyWriteShareOneEventID(t *testing.T) {
	q := newEventQueue(t)
	h := newCaptureHarness(t, captureSetup(t, 2, q))
	if a := h.via(0, "PATCH", h.docs()+"/orders/o2", `{"fields":{"n":{"integerValue":"1"}}}`); a.status != 200 {
		t.Fatal(a)
	}
	if a := h.via(1, "PATCH", h.docs()+"/orders/o2?updateMask.fieldPaths=n", `{"fields":{"n":{"integerValue":"2"}}}`); a.status != 200 {
		t.Fatal(a)
	}
	h.direct("PATCH", h.docs()+"/orders/sentinel", `{"fields":{}}`)
	got := drain(q, "orders/sentinel")
	ids := map[string]bool{}
	for _, d := range got {
		ids[d.ce.ID] = true
	}
	// Two writes: each seen by the proxy that made it and by capture, one id each.
	if len(ids) != 2 || len(got) < 2 {
		t.Fatalf("%d distinct ids over %d events (%s), want 2: one per write, whichever path reported it", len(ids), len(got), kinds(got))
	}
}

func TestCaptureLeaseMovesToAnotherReplicaAndLosesNothing(t *testing.T) {
	q := newEventQueue(t)
	h := newCaptureHarness(t, captureSetup(t, 2, q))
	holder := h.waitWatching()
	h.direct("PATCH", h.docs()+"/orders/before", `{"fields":{}}`)
	h.expectEvent(q, "created orders/before")

	h.replicas[holder].stop() // its lease goes with it
	h.replicas[holder] = nil
	h.direct("PATCH", h.docs()+"/orders/during", `{"fields":{}}`) // perhaps while nobody watches
	if got := h.waitWatching(); got == holder {
		t.Fatalf("the stopped replica %d still holds the watch", holder)
	}
	h.direct("PATCH", h.docs()+"/orders/after", `{"fields":{}}`)
	h.expectEvent(q, "created orders/during")
	h.expectEvent(q, "created orders/after")
	h.direct("PATCH", h.docs()+"/orders/sentinel", `{"fields":{}}`)
	if rest := drain(q, "orders/sentinel"); len(rest) > 0 {
		t.Fatalf("duplicate or unexpected events after the takeover: %s", kinds(rest))
	}
}

// Every replica stopped, the documents changed, one started: it resumes from the state
// in Redis and reports exactly what changed. (The emulator answers every resume with a
// RESET and the complete state, so this is also the reset case: what was already
// reported is not reported again.)
func TestCaptureResumesAfterEveryReplicaStopped(t *testing.T) {
	q := newEventQueue(t)
	h := newCaptureHarness(t, captureSetup(t, 1, q))
	h.direct("PATCH", h.docs()+"/orders/kept", `{"fields":{"n":{"integerValue":"1"}}}`)
	h.direct("PATCH", h.docs()+"/orders/changed", `{"fields":{"n":{"integerValue":"1"}}}`)
	h.direct("PATCH", h.docs()+"/orders/gone", `{"fields":{}}`)
	seen := map[string]bool{}
	for len(seen) < 3 {
		seen[kinds([]delivery{q.next("the three creations")})] = true
	}
	h.replicas[0].stop()
	h.replicas[0] = nil

	h.direct("PATCH", h.docs()+"/orders/changed", `{"fields":{"n":{"integerValue":"2"}}}`)
	h.direct("DELETE", h.docs()+"/orders/gone", "")
	h.direct("PATCH", h.docs()+"/orders/new", `{"fields":{}}`)

	h.addReplica()
	got := map[string]bool{}
	for len(got) < 3 {
		d := q.next("the changes made while no replica watched")
		got[kinds([]delivery{d})] = true
	}
	for _, want := range []string{"updated orders/changed", "deleted orders/gone", "created orders/new"} {
		if !got[want] {
			t.Errorf("missing %q after the restart; got %v", want, got)
		}
	}
	h.direct("PATCH", h.docs()+"/orders/sentinel", `{"fields":{}}`)
	if rest := drain(q, "orders/sentinel"); len(rest) > 0 {
		t.Fatalf("events repeated after the restart: %s", kinds(rest))
	}
	if r, _ := captureMetric(t, h.replicas[1], "harvest_capture_resets_total", "collection orders"); r == 0 {
		t.Log("the upstream resumed without a reset")
	}
}

// Capture that a reload turns on starts without a restart.
func TestCaptureStartsWhenAReloadAsksForIt(t *testing.T) {
	s := captureSetup(t, 1, nil)
	s.rules = sharedRules
	n := s.replicas
	s.replicas = -1
	h := newHarness(t, s)
	t.Setenv("GOOGLE_CLOUD_PROJECT", h.project)
	for range n {
		h.addReplica()
	}
	if hs := append(h.holders("collection products"), h.holders("collection orders")...); len(hs) != 0 {
		t.Fatalf("replicas %v watch without a capture rule", hs)
	}
	s.rules = captureRules
	if err := os.WriteFile(h.rulesPath, []byte(h.rulesYAML(s)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.replicas[0].rules.Reload(); err != nil {
		t.Fatal(err)
	}
	h.waitWatching()
}
