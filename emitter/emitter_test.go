package emitter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/emitter/publisher"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

const (
	brokerAddr = "127.0.0.1:5672"
	brokerURL  = "amqp://guest:guest@" + brokerAddr + "/"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// subscribe is testbed.Subscribe on the broker itself.
func subscribe(t testing.TB, exchange string) <-chan amqp.Delivery {
	t.Helper()
	return testbed.Subscribe(t, brokerURL, exchange)
}

func newEmitter(t testing.TB, cfg rules.Events) (*Emitter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(cfg, testLogger(t), reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e, reg
}

func waitConnected(t testing.TB, e *Emitter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.pub.WaitConnected(ctx); err != nil {
		t.Fatalf("emitter never connected to RabbitMQ at %s: %v", brokerAddr, err)
	}
}

// docEvent builds the event of the seq-th set of document doc through event.Build,
// with seq in the document so order can be checked on arrival.
func docEvent(t testing.TB, doc string, seq int) event.Event {
	name := "projects/p/databases/(default)/documents/items/" + doc
	d := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{
		"seq": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: int64(seq)}},
	}, UpdateTime: timestamppb.New(time.Unix(1700000000, int64(seq)*1000))}
	evs, err := event.Build(event.BuildInput{
		Writes:   []classify.DocWrite{{Name: name, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: d}}}},
		Document: d,
	})
	if err != nil || len(evs) != 1 {
		t.Fatalf("Build: %v, %d events", err, len(evs))
	}
	return evs[0]
}

// arrival is what a consumer learns from one delivery.
type arrival struct {
	id, doc string
	seq     int64
}

func parseDelivery(t testing.TB, d amqp.Delivery) arrival {
	var ce struct {
		ID       string `json:"id"`
		Document string `json:"document"`
		Data     struct {
			Value json.RawMessage `json:"value"`
		} `json:"data"`
	}
	if err := json.Unmarshal(d.Body, &ce); err != nil {
		t.Fatalf("delivery is not a CloudEvent: %v", err)
	}
	var v struct {
		Fields struct {
			Seq struct {
				IntegerValue string `json:"integerValue"`
			} `json:"seq"`
		} `json:"fields"`
	}
	json.Unmarshal(ce.Data.Value, &v)
	var seq int64
	fmt.Sscan(v.Fields.Seq.IntegerValue, &seq)
	return arrival{id: ce.ID, doc: ce.Document, seq: seq}
}

// collect receives until want distinct ids arrived, checking per-document order on
// first arrivals (a redelivered duplicate may come late; that is at-least-once).
func collect(t *testing.T, deliveries <-chan amqp.Delivery, want int) map[string]arrival {
	t.Helper()
	seen := map[string]arrival{}
	last := map[string]int64{}
	// A guard against a hang, not a speed assertion.
	guard := time.After(60 * time.Second)
	for len(seen) < want {
		select {
		case d := <-deliveries:
			a := parseDelivery(t, d)
			if _, dup := seen[a.id]; dup {
				continue
			}
			if prev, ok := last[a.doc]; ok && a.seq <= prev {
				t.Fatalf("document %s: event seq %d arrived after seq %d", a.doc, a.seq, prev)
			}
			last[a.doc] = a.seq
			seen[a.id] = a
		case <-guard:
			t.Fatalf("only %d of %d distinct events arrived", len(seen), want)
		}
	}
	return seen
}

func TestPublishAndConsume(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	deliveries := subscribe(t, exchange)
	e, reg := newEmitter(t, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: t.TempDir()})
	waitConnected(t, e)

	evs := []event.Event{docEvent(t, "a", 1), docEvent(t, "b", 1), docEvent(t, "a", 2)}
	if err := e.Emit(context.Background(), evs); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	for i, want := range evs {
		d := <-deliveries
		if d.MessageId != want.ID || d.Type != want.Type || d.RoutingKey != "items.written" ||
			d.ContentType != publisher.ContentType || d.DeliveryMode != amqp.Persistent ||
			!d.Timestamp.Equal(want.Time.Truncate(time.Second)) || string(d.Body) != string(want.Body) {
			t.Errorf("delivery %d: id %s type %s key %s ct %s mode %d ts %v\nwant id %s type %s ts %v",
				i, d.MessageId, d.Type, d.RoutingKey, d.ContentType, d.DeliveryMode, d.Timestamp, want.ID, want.Type, want.Time)
		}
	}
	if got := counterValue(t, e.metrics.confirmed); got != 3 {
		t.Errorf("confirmed metric = %v, want 3", got)
	}
	if got := counterValue(t, e.metrics.outboxed); got != 0 {
		t.Errorf("outboxed metric = %v with a healthy broker", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gauges := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetType() == dto.MetricType_GAUGE {
			gauges[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if gauges["harvest_events_broker_connected"] != 1 || gauges["harvest_events_outbox_depth_events"] != 0 {
		t.Errorf("gauges = %v, want broker_connected 1 and an empty outbox", gauges)
	}
}

// TestCutConnectionLosesNothing cuts the broker connection in the middle of 500
// concurrent emits and restores it: every Emit returns nil, and all 500 events
// arrive, in order per document.
func TestCutConnectionLosesNothing(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	deliveries := subscribe(t, exchange)
	relay := testbed.NewRelay(t, brokerAddr)
	e, _ := newEmitter(t, rules.Events{AMQPURL: "amqp://guest:guest@" + relay.Addr() + "/", Exchange: exchange, OutboxDir: t.TempDir()})
	waitConnected(t, e)

	const docs, perDoc = 10, 50
	var emitted atomic.Int64
	var cut, restore sync.Once
	var wg sync.WaitGroup
	for d := 0; d < docs; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			doc := fmt.Sprintf("doc%02d", d)
			for s := 1; s <= perDoc; s++ {
				if err := e.Emit(context.Background(), []event.Event{docEvent(t, doc, s)}); err != nil {
					t.Errorf("Emit %s/%d: %v", doc, s, err)
					return
				}
				switch n := emitted.Add(1); {
				case n == 150:
					cut.Do(relay.Cut)
				case n == 350:
					restore.Do(relay.Restore)
				}
			}
		}()
	}
	wg.Wait()
	got := collect(t, deliveries, docs*perDoc)
	if len(got) != docs*perDoc {
		t.Fatalf("%d distinct events arrived, want %d", len(got), docs*perDoc)
	}
	if counterValue(t, e.metrics.outboxed) == 0 {
		t.Error("no event went through the outbox: the cut did not exercise it")
	}
}

// TestOutboxSurvivesRestart: events kept in the outbox by a process without a broker
// are delivered by the next process on the same directory, and only once it drained
// are they gone for good (a third start republishes nothing).
func TestOutboxSurvivesRestart(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	dir := t.TempDir()

	first, _ := newEmitter(t, rules.Events{OutboxDir: dir})
	var want []event.Event
	for s := 1; s <= 20; s++ {
		ev := docEvent(t, fmt.Sprintf("doc%d", s%3), s)
		want = append(want, ev)
		if err := first.Emit(context.Background(), []event.Event{ev}); err != nil {
			t.Fatalf("Emit without broker: %v", err)
		}
	}
	if p := first.Pending(); p != 20 {
		t.Fatalf("outbox pending = %d, want 20", p)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	deliveries := subscribe(t, exchange)
	second, _ := newEmitter(t, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: dir})
	got := collect(t, deliveries, 20)
	for _, ev := range want {
		if _, ok := got[ev.ID]; !ok {
			t.Errorf("event %s was not delivered after restart", ev.ID)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); second.Pending() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d events after delivery", second.Pending())
		}
	}
	second.Close()

	third, _ := newEmitter(t, rules.Events{OutboxDir: dir})
	if p := third.Pending(); p != 0 {
		t.Fatalf("after a drained restart the outbox holds %d events: the cursor was not persisted", p)
	}
}

// TestOrderHoldsBehindOutbox: while the outbox holds events, a new event for the same
// document must queue behind them even though the broker is up.
func TestOrderHoldsBehindOutbox(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	dir := t.TempDir()
	first, _ := newEmitter(t, rules.Events{OutboxDir: dir})
	const queued = 2000 // several drain batches, so the drainer is still busy below
	for s := 1; s <= queued; s += 100 {
		batch := make([]event.Event, 0, 100)
		for i := s; i < s+100; i++ {
			batch = append(batch, docEvent(t, "x", i))
		}
		if err := first.Emit(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()

	deliveries := subscribe(t, exchange)
	second, _ := newEmitter(t, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: dir})
	waitConnected(t, second)
	for s := queued + 1; s <= queued+5; s++ {
		if err := second.Emit(context.Background(), []event.Event{docEvent(t, "x", s)}); err != nil {
			t.Fatal(err)
		}
	}
	collect(t, deliveries, queued+5)
}

func TestAdmitRefusesWhenOutboxFull(t *testing.T) {
	e, _ := newEmitter(t, rules.Events{OutboxDir: t.TempDir(), OutboxMaxBytes: 4096})
	for i := 0; ; i++ {
		if err := e.Admit(); err != nil {
			if !errors.Is(err, ErrOutboxFull) {
				t.Fatalf("Admit: %v, want ErrOutboxFull", err)
			}
			if i == 0 {
				t.Fatal("an empty outbox is full")
			}
			return
		}
		if i > 1000 {
			t.Fatal("the outbox never filled up")
		}
		if err := e.Emit(context.Background(), []event.Event{docEvent(t, "d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	ev := docEvent(t, "r", 7)
	got, err := decode(encode(ev))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.Type != ev.Type || got.RoutingKey != ev.RoutingKey || got.Document != ev.Document ||
		!got.Time.Equal(ev.Time) || string(got.Body) != string(ev.Body) {
		t.Fatalf("round trip changed the event:\n%+v\n%+v", got, ev)
	}
	for i := 0; i < len(encode(ev))-1; i++ {
		if _, err := decode(encode(ev)[:i]); err == nil {
			t.Fatalf("decode accepted a record cut at %d bytes", i)
		}
	}
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDocOrderSerialisesSameDocument: a second Emit of a document waits until the
// first one released it; other documents do not wait.
func TestDocOrderSerialisesSameDocument(t *testing.T) {
	o := docOrder{tails: map[string]*turn{}}
	x, y := []event.Event{{Document: "x"}}, []event.Event{{Document: "y"}, {Document: "x"}}
	releaseFirst := o.acquire(x)
	o.acquire([]event.Event{{Document: "z"}})() // unrelated: no wait

	entered := make(chan func())
	go func() { entered <- o.acquire(y) }()
	runtime.Gosched()
	select {
	case <-entered:
		t.Fatal("second Emit of x went ahead while the first one held it")
	case <-time.After(50 * time.Millisecond): // can only make the test pass wrongly, never fail wrongly
	}
	releaseFirst()
	(<-entered)()
	if len(o.tails) != 0 {
		t.Fatalf("tails left behind: %v", o.tails)
	}
}
