package proxy

// Events through the proxy, end to end: real clients write through a replica in front
// of the emulator, and a consumer bound to a unique exchange on the real RabbitMQ sees
// what a harvest-worker would.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/api/option"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/internal/testbed"
)

const (
	brokerAddr = "127.0.0.1:5672"
	brokerURL  = "amqp://guest:guest@" + brokerAddr + "/"
)

// eventRules: products emit everything, orders only created and deleted (a plain set,
// "written", is kept too: it may be a creation), quiet/ is cached but emits nothing.
const eventRules = `
  - match: /products/{p}
    events: true
  - match: /items/{i}
    events: true
  - match: /orders/{o}
    events: [created, deleted]
  - match: /quiet/{q}
    ttl: 1m
    scope: shared
`

// delivery is one message as a consumer sees it.
type delivery struct {
	routingKey string
	messageID  string
	body       string
	ce         struct {
		SpecVersion string `json:"specversion"`
		ID          string `json:"id"`
		Source      string `json:"source"`
		Type        string `json:"type"`
		Subject     string `json:"subject"`
		Time        string `json:"time"`
		AuthHash    string `json:"authhash"`
		Data        struct {
			Value *struct {
				Name   string                     `json:"name"`
				Fields map[string]json.RawMessage `json:"fields"`
			} `json:"value"`
			OldValue *struct {
				Fields     map[string]json.RawMessage `json:"fields"`
				UpdateTime time.Time                  `json:"updateTime"`
			} `json:"oldValue"`
			UpdateMask *struct {
				FieldPaths []string `json:"fieldPaths"`
			} `json:"updateMask"`
		} `json:"data"`
	}
}

// field is a value's field as compact JSON: `{"stringValue":"apple"}`.
func (d delivery) field(name string) string {
	if d.ce.Data.Value == nil {
		return ""
	}
	return string(d.ce.Data.Value.Fields[name])
}

func (d delivery) String() string { return d.routingKey + " " + d.body }

// eventQueue is a consumer on a fresh exchange, straight to the broker.
type eventQueue struct {
	t        *testing.T
	exchange string
	ch       <-chan amqp.Delivery
}

// newEventQueue declares a unique durable topic exchange (as the publisher does) and an
// exclusive queue bound to it with "#"; both are deleted when the test ends.
func newEventQueue(t *testing.T) *eventQueue {
	t.Helper()
	exchange := testbed.UniqueName("test.events")
	return &eventQueue{t: t, exchange: exchange, ch: testbed.Subscribe(t, brokerURL, exchange)}
}

// next waits for the next delivery (the bound only keeps a broken test from hanging).
func (q *eventQueue) next(what string) delivery {
	q.t.Helper()
	select {
	case m, ok := <-q.ch:
		if !ok {
			q.t.Fatalf("consumer closed while waiting for %s", what)
		}
		d := delivery{routingKey: m.RoutingKey, messageID: m.MessageId, body: string(m.Body)}
		if err := json.Unmarshal(m.Body, &d.ce); err != nil {
			q.t.Fatalf("delivery is not a CloudEvent (%v): %s", err, m.Body)
		}
		return d
	case <-time.After(30 * time.Second):
		q.t.Fatalf("no event arrived for %s", what)
	}
	panic("unreachable")
}

// eventSetup is a one-replica harness whose emitter publishes to q's exchange at
// amqpURL (a relay in front of the broker, or the broker).
func eventSetup(q *eventQueue, amqpURL string, events ...string) setup {
	return setup{
		rules:   eventRules,
		emitter: true,
		amqp:    amqpURL,
		events:  append([]string{fmt.Sprintf("exchange: %q", q.exchange)}, events...),
	}
}

func waitBroker(t *testing.T, r *replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.em.WaitConnected(ctx); err != nil {
		t.Fatalf("the replica's emitter never connected to RabbitMQ: %v", err)
	}
}

// goClient is the official Go client in REST mode, through replica r, unauthenticated.
func goClient(t *testing.T, h *harness, r *replica) *firestore.Client {
	t.Helper()
	t.Setenv("FIRESTORE_EMULATOR_HOST", "") // NewRESTClient refuses to run with it set
	c, err := firestore.NewRESTClient(context.Background(), h.project,
		option.WithEndpoint(r.url), option.WithoutAuthentication())
	if err != nil {
		t.Fatalf("firestore.NewRESTClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// want is what one expected event must show.
type want struct {
	typ, doc string            // "created", "products/a"
	index    int               // the write's position in its request
	fields   map[string]string // value fields that must be present, compact JSON ("" = any value)
	auth     string            // the Authorization header sent ("": none, no authhash)
	// rewritten: the same request writes the document again later, so this earlier
	// write's id names its position (event.IndexedID).
	rewritten bool
}

func (h *harness) expect(q *eventQueue, w want) delivery {
	h.t.Helper()
	t := h.t
	d := q.next(w.typ + " " + w.doc)
	coll := strings.SplitN(w.doc, "/", 2)[0]
	if d.ce.Type != "google.cloud.firestore.document.v1."+w.typ ||
		d.ce.Subject != "documents/"+w.doc || d.routingKey != coll+"."+w.typ {
		t.Fatalf("want a %s event of %s (routing key %s.%s), got %v", w.typ, w.doc, coll, w.typ, d)
	}
	if d.ce.SpecVersion != "1.0" || d.ce.Source != "//firestore.googleapis.com/projects/"+h.project+"/databases/(default)" {
		t.Errorf("%s: specversion %q source %q", w.doc, d.ce.SpecVersion, d.ce.Source)
	}
	at, err := time.Parse(time.RFC3339Nano, d.ce.Time)
	if err != nil {
		t.Fatalf("%s: time %q: %v", w.doc, d.ce.Time, err)
	}
	id := event.ID(h.name(w.doc), at) // the version's update time is the commit time here
	switch {
	case w.rewritten:
		id = event.IndexedID(h.name(w.doc), at, w.index)
	case w.typ == "deleted":
		id = event.DeleteID(h.name(w.doc), time.Time{}, at) // the deleted version is unknown (no old_value)
	}
	if d.ce.ID != id || d.messageID != id {
		t.Errorf("%s: id %q (message_id %q), want the deterministic %q", w.doc, d.ce.ID, d.messageID, id)
	}
	for f, v := range w.fields {
		got := d.field(f)
		if got == "" || v != "" && got != v {
			t.Errorf("%s %s: data.value.fields.%s = %s, want %s\n%v", w.typ, w.doc, f, got, v, d)
		}
	}
	if w.typ == "deleted" && d.ce.Data.Value != nil {
		t.Errorf("deleted %s carries a value: %v", w.doc, d)
	}
	if got, wantHash := d.ce.AuthHash, identityHash([]byte(w.auth)); got != wantHash {
		t.Errorf("%s: authhash %q, want %q (hash of %q)", w.doc, got, wantHash, w.auth)
	}
	if w.auth != "" && strings.Contains(d.body, strings.TrimPrefix(w.auth, "Bearer ")) {
		t.Errorf("%s: the event carries the caller's raw token: %s", w.doc, d.body)
	}
	return d
}

// Every kind of write through the proxy, by the Go client and by raw REST, produces
// exactly its events, in order, each with its type, subject, source, deterministic id,
// routing key, the document as written and the caller's identity hash only. A path
// whose rule has no events emits nothing, and a rule's list filters the types.
func TestEventsFromEveryWriteKind(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL))
	r := h.replicas[0]
	waitBroker(t, r)
	ctx := context.Background()
	c := goClient(t, h, r)
	doc := func(p string) *firestore.DocumentRef { return c.Doc(p) }

	// The Go client: every write is a commit.
	if _, err := doc("products/a").Create(ctx, map[string]any{"name": "apple", "n": 1}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	h.expect(q, want{typ: "created", doc: "products/a", fields: map[string]string{"name": `{"stringValue":"apple"}`, "n": `{"integerValue":"1"}`}})

	if _, err := doc("products/b").Set(ctx, map[string]any{"name": "bean"}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	h.expect(q, want{typ: "written", doc: "products/b", fields: map[string]string{"name": `{"stringValue":"bean"}`}})

	if _, err := doc("products/a").Set(ctx, map[string]any{"n": 2}, firestore.MergeAll); err != nil {
		t.Fatalf("Set MergeAll: %v", err)
	}
	d := h.expect(q, want{typ: "updated", doc: "products/a", fields: map[string]string{"n": `{"integerValue":"2"}`}})
	if m := d.ce.Data.UpdateMask; m == nil || strings.Join(m.FieldPaths, ",") != "n" {
		t.Errorf("Set MergeAll: updateMask %+v, want [n]", m)
	}

	if _, err := doc("products/a").Update(ctx, []firestore.Update{{Path: "n", Value: 3}}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	h.expect(q, want{typ: "updated", doc: "products/a", fields: map[string]string{"n": `{"integerValue":"3"}`}})

	if _, err := doc("products/b").Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	h.expect(q, want{typ: "deleted", doc: "products/b"})

	// A WriteBatch of three writes, two with transforms: the events carry their results.
	//lint:ignore SA1019 WriteBatch is deprecated but still what apps use; its commit must emit events.
	b := c.Batch()
	b.Create(doc("products/c"), map[string]any{"name": "corn"})
	b.Set(doc("products/d"), map[string]any{"name": "date", "at": firestore.ServerTimestamp})
	b.Update(doc("products/a"), []firestore.Update{{Path: "n", Value: firestore.Increment(10)}})
	if _, err := b.Commit(ctx); err != nil {
		t.Fatalf("WriteBatch.Commit: %v", err)
	}
	h.expect(q, want{typ: "created", doc: "products/c", index: 0, fields: map[string]string{"name": `{"stringValue":"corn"}`}})
	d = h.expect(q, want{typ: "written", doc: "products/d", index: 1, fields: map[string]string{"name": `{"stringValue":"date"}`}})
	if !strings.Contains(d.field("at"), "timestampValue") {
		t.Errorf("server timestamp not resolved in the event: at = %s", d.field("at"))
	}
	h.expect(q, want{typ: "updated", doc: "products/a", index: 2, fields: map[string]string{"n": `{"integerValue":"13"}`}})

	// Raw REST with a user's token: authhash is the token's hash, never the token.
	jwt := unsignedJWT(h.project, "u1")
	auth := []string{"Authorization", jwt}
	if a := h.via(0, "POST", h.docs()+"/orders?documentId=o1", `{"fields":{"total":{"integerValue":"5"}}}`, auth...); a.status != 200 {
		t.Fatalf("create o1: %v", a)
	}
	h.expect(q, want{typ: "created", doc: "orders/o1", auth: jwt, fields: map[string]string{"total": `{"integerValue":"5"}`}})
	// updated is not in orders' list: filtered out. written (a plain set) is kept.
	if a := h.via(0, "PATCH", h.docs()+"/orders/o1?updateMask.fieldPaths=total&currentDocument.exists=true",
		`{"fields":{"total":{"integerValue":"6"}}}`, auth...); a.status != 200 {
		t.Fatalf("update o1: %v", a)
	}
	if a := h.via(0, "PATCH", h.docs()+"/orders/o2", `{"fields":{"total":{"integerValue":"7"}}}`, auth...); a.status != 200 {
		t.Fatalf("set o2: %v", a)
	}
	h.expect(q, want{typ: "written", doc: "orders/o2", auth: jwt, fields: map[string]string{"total": `{"integerValue":"7"}`}})
	if a := h.via(0, "DELETE", h.docs()+"/orders/o1", "", auth...); a.status != 200 {
		t.Fatalf("delete o1: %v", a)
	}
	h.expect(q, want{typ: "deleted", doc: "orders/o1", auth: jwt})
	// A create with a server-assigned id: the event names the new document.
	a := h.via(0, "POST", h.docs()+"/orders", `{"fields":{"total":{"integerValue":"8"}}}`, auth...)
	if a.status != 200 {
		t.Fatalf("create with server id: %v", a)
	}
	var created struct{ Name string }
	json.Unmarshal(a.body, &created)
	newID := created.Name[strings.LastIndexByte(created.Name, '/')+1:]
	h.expect(q, want{typ: "created", doc: "orders/" + newID, auth: jwt, fields: map[string]string{"total": ""}})

	// batchWrite (owner credentials) with one failing write: only successes emit.
	bw := fmt.Sprintf(`{"writes":[{"update":{"name":%q,"fields":{"name":{"stringValue":"egg"}}}},`+
		`{"update":{"name":%q,"fields":{}},"currentDocument":{"exists":true}},{"delete":%q}]}`,
		h.name("products/e"), h.name("products/missing"), h.name("products/d"))
	a = h.via(0, "POST", h.docs()+":batchWrite", bw)
	if a.status != 200 || !strings.Contains(string(a.body), `"code": 5`) && !strings.Contains(string(a.body), `"code":5`) {
		t.Fatalf("batchWrite: want 200 with one NOT_FOUND status, got %v", a)
	}
	h.expect(q, want{typ: "written", doc: "products/e", index: 0, auth: owner, fields: map[string]string{"name": `{"stringValue":"egg"}`}})
	h.expect(q, want{typ: "deleted", doc: "products/d", index: 2, auth: owner})

	// quiet/ has no events: nothing is published for it. The marker written after it is
	// the next event on the queue, and one channel keeps publish order.
	if a := h.via(0, "PATCH", h.docs()+"/quiet/q1", `{"fields":{}}`); a.status != 200 {
		t.Fatalf("quiet write: %v", a)
	}
	if _, err := doc("products/marker").Set(ctx, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	h.expect(q, want{typ: "written", doc: "products/marker"})

	// old_value is off: no write was preceded by a read upstream.
	if n := h.meter.Snapshot().Requests["batchGet"]; n != 0 {
		t.Errorf("old_value off, yet %d batchGet reached the upstream", n)
	}
}

// events.old_value: the proxy reads the document before writing it, so a plain set
// becomes created or updated, and an update carries the document it replaced.
func TestEventsOldValue(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL, "old_value: true"))
	waitBroker(t, h.replicas[0])
	h.put("products/a", `{"n":{"integerValue":"1"}}`)
	if a := h.via(0, "PATCH", h.docs()+"/products/a", `{"fields":{"n":{"integerValue":"2"}}}`); a.status != 200 {
		t.Fatal(a)
	}
	d := h.expect(q, want{typ: "updated", doc: "products/a", auth: owner, fields: map[string]string{"n": `{"integerValue":"2"}`}})
	if o := d.ce.Data.OldValue; o == nil || string(o.Fields["n"]) != `{"integerValue":"1"}` {
		t.Errorf("oldValue = %+v, want n=1", o)
	}
	if a := h.via(0, "PATCH", h.docs()+"/products/new", `{"fields":{"n":{"integerValue":"9"}}}`); a.status != 200 {
		t.Fatal(a)
	}
	d = h.expect(q, want{typ: "created", doc: "products/new", auth: owner, fields: map[string]string{"n": ""}})
	if d.ce.Data.OldValue != nil {
		t.Errorf("created event has an oldValue: %v", d)
	}

	// In a transaction (the Go client's RunTransaction: its commit carries the
	// transaction), the old document is read inside it.
	c := goClient(t, h, h.replicas[0])
	err := c.RunTransaction(context.Background(), func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(c.Doc("products/a"))
		if err != nil {
			return err
		}
		return tx.Set(c.Doc("products/a"), map[string]any{"n": snap.Data()["n"].(int64) + 1})
	})
	if err != nil {
		t.Fatalf("RunTransaction: %v", err)
	}
	d = h.expect(q, want{typ: "updated", doc: "products/a", fields: map[string]string{"n": `{"integerValue":"3"}`}})
	if o := d.ce.Data.OldValue; o == nil || string(o.Fields["n"]) != `{"integerValue":"2"}` {
		t.Errorf("in a transaction: oldValue = %+v, want n=2", o)
	}
}

// 500 writes while the broker connection is cut all succeed; once it is back, every
// one of their events arrives, each document's in the order it was written.
func TestEventsSurviveBrokerCut(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	h := newHarness(t, eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/"))
	r := h.replicas[0]
	waitBroker(t, r)
	relay.Cut()
	waitFor(t, "the emitter to notice the cut", func() bool { return !r.em.Connected() })

	const docs, perDoc = 10, 50
	var wg sync.WaitGroup
	errs := make(chan error, docs*perDoc)
	for d := range docs {
		wg.Go(func() {
			for i := range perDoc { // one document's writes in sequence: a defined order
				a, err := h.send(r.url, "PATCH", fmt.Sprintf("%s/items/i%d", h.docs(), d),
					fmt.Sprintf(`{"fields":{"seq":{"integerValue":"%d"}}}`, i))
				if err == nil && a.status != 200 {
					err = fmt.Errorf("write %d of items/i%d while the broker was cut: %v", i, d, a)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if p := r.em.Pending(); p != docs*perDoc {
		t.Fatalf("outbox holds %d events after %d writes with the broker cut", p, docs*perDoc)
	}

	relay.Restore()
	seen := map[string]bool{}
	last := map[string]int{}
	for len(seen) < docs*perDoc {
		d := q.next(fmt.Sprintf("event %d of %d", len(seen)+1, docs*perDoc))
		if seen[d.ce.ID] {
			continue // at least once: a redelivered event is dropped by id
		}
		seen[d.ce.ID] = true
		var seq int
		fmt.Sscanf(strings.Trim(strings.TrimPrefix(d.field("seq"), `{"integerValue":`), `"}`), "%d", &seq)
		prev, ok := last[d.ce.Subject]
		if ok && seq != prev+1 || !ok && seq != 0 {
			t.Fatalf("%s: event of write %d arrived after that of write %d (ok=%v)", d.ce.Subject, seq, prev, ok)
		}
		last[d.ce.Subject] = seq
	}
	waitFor(t, "the outbox to drain", func() bool { return r.em.Pending() == 0 })
}

// A proxy killed with events in its outbox (broker cut, Serve cancelled, the emitter
// closed without draining) publishes them after a restart on the same outbox.
func TestEventsSurviveRestart(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	relay.Cut() // the first process never reaches the broker
	s := eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/")
	s.outboxDir = t.TempDir()
	h := newHarness(t, s)
	first := h.replicas[0]
	const n = 20
	for i := range n {
		if a := h.via(0, "PATCH", fmt.Sprintf("%s/items/k%d", h.docs(), i), `{"fields":{}}`); a.status != 200 {
			t.Fatalf("write %d: %v", i, a)
		}
	}
	if p := first.em.Pending(); p != n {
		t.Fatalf("outbox holds %d events, want %d", p, n)
	}
	first.stop()

	relay.Restore()
	h.addReplica()
	got := map[string]bool{}
	for len(got) < n {
		d := q.next(fmt.Sprintf("outboxed event %d of %d after the restart", len(got)+1, n))
		got[d.ce.Subject] = true
	}
	for i := range n {
		if !got[fmt.Sprintf("documents/items/k%d", i)] {
			t.Errorf("event of items/k%d never arrived", i)
		}
	}
}

// BenchmarkWriteEventsAddedLatency is the write latency the emitter adds through the
// proxy: two proxies in front of the same emulator, one emitting events (confirmed by
// the real broker), one not, written to alternately so both see the same emulator and
// machine load. It reports p50 and p99 of each and the difference of the medians.
func BenchmarkWriteEventsAddedLatency(b *testing.B) {
	withURL, withDocs := benchProxy(b, true)
	withoutURL, withoutDocs := benchProxy(b, false)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	patch := func(url string, i int) time.Duration {
		req, _ := http.NewRequest("PATCH", fmt.Sprintf("%s/items/b%d", url, i%64),
			strings.NewReader(`{"fields":{"n":{"integerValue":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("PATCH: %s", resp.Status)
		}
		return time.Since(start)
	}
	with := make([]time.Duration, 0, b.N)
	without := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		with = append(with, patch(withURL+withDocs, i))
		without = append(without, patch(withoutURL+withoutDocs, i))
	}
	b.StopTimer()
	p := func(lat []time.Duration, q float64) float64 {
		slices.Sort(lat)
		return float64(lat[int(q*float64(len(lat)-1))].Microseconds())
	}
	b.ReportMetric(p(with, 0.5), "with-p50-µs")
	b.ReportMetric(p(with, 0.99), "with-p99-µs")
	b.ReportMetric(p(without, 0.5), "without-p50-µs")
	b.ReportMetric(p(without, 0.99), "without-p99-µs")
	b.ReportMetric(p(with, 0.5)-p(without, 0.5), "added-p50-µs")
}
