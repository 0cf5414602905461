package worker_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/worker"
	"github.com/harvest-hub/edge/worker/handlers"
)

const secret = "test-secret"

// receiver is a webhook endpoint that answers the statuses it is given in turn (the
// last one repeating), verifies every signature and records each call.
type receiver struct {
	t        *testing.T
	statuses []int
	mu       sync.Mutex
	attempts []string // X-Harvest-Attempt of each call
	bodies   [][]byte
	ok       int // calls answered 2xx
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := handlers.VerifySignature(secret, req.Header.Get(handlers.HeaderTimestamp), string(body),
		req.Header.Get(handlers.HeaderSignature), time.Minute); err != nil {
		r.t.Errorf("delivery failed verification: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.attempts)
	r.attempts = append(r.attempts, req.Header.Get(handlers.HeaderAttempt))
	r.bodies = append(r.bodies, body)
	status := r.statuses[min(n, len(r.statuses)-1)]
	if status/100 == 2 {
		r.ok++
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, "status "+strconv.Itoa(status))
}

func (r *receiver) calls() (attempts []string, ok int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.attempts...), r.ok
}

func webhookRoute(t *testing.T, b *bed, short string, rcv *receiver) worker.Route {
	t.Helper()
	srv := httptest.NewServer(rcv) // loopback
	t.Cleanup(srv.Close)
	cfg := b.handlerConfig(short, "orders.*")
	cfg.Action, cfg.URL, cfg.Secret = "webhook", srv.URL, secret
	h, err := handlers.New(cfg, handlers.Deps{})
	if err != nil {
		t.Fatalf("handlers.New: %v", err)
	}
	return worker.Route{Config: cfg, Handler: h}
}

func TestWebhookFailingTwiceIsDeliveredOnceOnTheThirdAttempt(t *testing.T) {
	b := newBed(t)
	rcv := &receiver{t: t, statuses: []int{500, 502, 204}}
	route := webhookRoute(t, b, "hook", rcv)
	name := route.Config.Name
	b.start(brokerAddr, b.claims(), route)

	body := event("ev-1", "created", "orders/o1", "", time.Now())
	b.publish("orders.created", "ev-1", body)

	b.waitFor("one successful delivery", func() bool { return b.count(name, worker.OutcomeOK) == 1 })
	attempts, ok := rcv.calls()
	if got := strings.Join(attempts, ","); got != "1,2,3" || ok != 1 {
		t.Fatalf("receiver saw attempts %q with %d successes, want 1,2,3 with exactly 1", got, ok)
	}
	for i, got := range rcv.bodies {
		if string(got) != string(body) {
			t.Errorf("call %d posted %q, want the CloudEvent as published %q", i+1, got, body)
		}
	}
	// Each retry is counted once its copy is confirmed and the original acked.
	b.waitFor("two retries counted", func() bool { return b.count(name, worker.OutcomeRetried) == 2 })
	// Nothing is left anywhere to cause another call.
	for _, q := range []string{worker.WorkQueue(name), worker.DeadLetterQueue(name),
		worker.RetryQueue(name, 30*time.Millisecond), worker.RetryQueue(name, 60*time.Millisecond)} {
		if n := b.ready(q); n != 0 {
			t.Errorf("queue %s holds %d messages after success, want 0", q, n)
		}
	}
}

func TestAlwaysFailingWebhookIsDeadLetteredAfterMaxAttempts(t *testing.T) {
	b := newBed(t)
	rcv := &receiver{t: t, statuses: []int{503}}
	route := webhookRoute(t, b, "down", rcv)
	name := route.Config.Name
	b.start(brokerAddr, b.claims(), route)

	body := event("ev-dead", "updated", "orders/o2", "", time.Now())
	b.publish("orders.updated", "ev-dead", body)

	d := b.getOne(worker.DeadLetterQueue(name))
	if string(d.Body) != string(body) || d.MessageId != "ev-dead" {
		t.Errorf("dead letter is %q (id %q), want the original event and message id", d.Body, d.MessageId)
	}
	if a := d.Headers[worker.HeaderAttempt]; a != int32(3) {
		t.Errorf("%s = %v (%T), want 3 (max_attempts)", worker.HeaderAttempt, a, a)
	}
	reason, _ := d.Headers[worker.HeaderError].(string)
	if !strings.Contains(reason, "503") {
		t.Errorf("%s = %q, want the last failure (status 503)", worker.HeaderError, reason)
	}
	if rk := d.Headers[worker.HeaderRoutingKey]; rk != "orders.updated" {
		t.Errorf("%s = %v, want the original routing key", worker.HeaderRoutingKey, rk)
	}
	b.waitFor("dead-letter outcome counted", func() bool { return b.count(name, worker.OutcomeDeadLettered) == 1 })
	if attempts, ok := rcv.calls(); len(attempts) != 3 || ok != 0 {
		t.Errorf("receiver called %d times (%d ok), want 3 failures", len(attempts), ok)
	}
}

func TestPoisonMessageIsDeadLetteredAtOnceWithTheReason(t *testing.T) {
	b := newBed(t)
	var calls atomic.Int32
	cfg := b.handlerConfig("poison", "orders.#")
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(context.Context, worker.Event) error {
		calls.Add(1)
		return nil
	})}
	b.start(brokerAddr, b.claims(), route)

	b.publish("orders.created", "junk-1", []byte("this is not JSON"))
	d := b.getOne(worker.DeadLetterQueue(cfg.Name))
	if reason, _ := d.Headers[worker.HeaderError].(string); !strings.Contains(reason, "unparseable") {
		t.Errorf("%s = %q, want a reason saying the body is unparseable", worker.HeaderError, reason)
	}
	if a := d.Headers[worker.HeaderAttempt]; a != int32(1) {
		t.Errorf("%s = %v, want 1: poison is never retried", worker.HeaderAttempt, a)
	}

	b.publish("orders.created", "junk-2", []byte(`{"specversion":"1.0","type":"x","source":"y"}`))
	d = b.getOne(worker.DeadLetterQueue(cfg.Name))
	if reason, _ := d.Headers[worker.HeaderError].(string); !strings.Contains(reason, "id") {
		t.Errorf("%s = %q, want it to name the missing id", worker.HeaderError, reason)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler called %d times for poison, want 0", n)
	}
	// The copy is confirmed before the original is acked and counted.
	b.waitFor("both poison deliveries counted", func() bool { return b.count(cfg.Name, worker.OutcomePoison) == 2 })
}

func TestSameEventIDDeliveredAgainIsNotHandledAgain(t *testing.T) {
	b := newBed(t)
	var calls atomic.Int32
	cfg := b.handlerConfig("dup", "orders.*")
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(context.Context, worker.Event) error {
		calls.Add(1)
		return nil
	})}
	b.start(brokerAddr, b.claims(), route)

	body := event("ev-dup", "created", "orders/o3", "", time.Now())
	b.publish("orders.created", "ev-dup", body)
	b.waitFor("first delivery handled", func() bool { return b.count(cfg.Name, worker.OutcomeOK) == 1 })
	b.publish("orders.created", "ev-dup", body) // the proxy's outbox replaying, say
	b.waitFor("second delivery acked as duplicate", func() bool { return b.count(cfg.Name, worker.OutcomeDuplicate) == 1 })
	if n := calls.Load(); n != 1 {
		t.Errorf("side effect ran %d times for one event id, want 1", n)
	}
}

// A failing attempt must release its claim, or the retry would be skipped as done.
func TestFailedAttemptReleasesItsClaim(t *testing.T) {
	b := newBed(t)
	var calls atomic.Int32
	cfg := b.handlerConfig("release", "orders.*")
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(context.Context, worker.Event) error {
		if calls.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	})}
	b.start(brokerAddr, b.claims(), route)
	b.publish("orders.created", "ev-rel", event("ev-rel", "created", "orders/o4", "", time.Now()))
	b.waitFor("handled on the retry", func() bool { return b.count(cfg.Name, worker.OutcomeOK) == 1 })
	if n := calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (fail, then succeed)", n)
	}
	if v := b.rdb.Get(context.Background(), worker.NewClaims(b.rdb, b.prefix).Key(cfg.Name, "ev-rel")).Val(); v != "done" {
		t.Errorf("claim = %q after success, want done", v)
	}
}

// The connection is cut while a handler is in flight: its ack is lost, the broker
// redelivers after the reconnect, and the claim keeps the side effect from repeating.
// The consumer keeps consuming new events afterwards.
func TestConsumerSurvivesAConnectionCutWithoutRepeatingSideEffects(t *testing.T) {
	b := newBed(t)
	relay := testbed.NewRelay(t, brokerAddr)
	var mu sync.Mutex
	calls := map[string]int{}
	started := make(chan string, 10)
	release := make(chan struct{})
	cfg := b.handlerConfig("cut", "orders.*")
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(ctx context.Context, ev worker.Event) error {
		mu.Lock()
		calls[ev.ID]++
		mu.Unlock()
		started <- ev.ID
		if ev.ID == "ev-inflight" {
			<-release
		}
		return nil
	})}
	c, _ := b.start(relay.Addr(), b.claims(), route)

	b.publish("orders.created", "ev-inflight", event("ev-inflight", "created", "orders/o5", "", time.Now()))
	if id := <-started; id != "ev-inflight" {
		t.Fatalf("started %s, want ev-inflight", id)
	}
	relay.Cut()
	b.waitFor("consumer to notice the cut", func() bool { return !c.Connected() })
	if g := b.gauge("harvest_worker_connected", ""); g != 0 {
		t.Errorf("connected gauge = %v while cut, want 0", g)
	}
	relay.Restore()
	close(release) // the side effect completes, but its ack cannot reach the broker
	b.waitFor("consumer to reconnect", c.Connected)

	b.waitFor("redelivery acked as duplicate", func() bool { return b.count(cfg.Name, worker.OutcomeDuplicate) >= 1 })
	b.publish("orders.updated", "ev-after", event("ev-after", "updated", "orders/o5", "", time.Now()))
	b.waitFor("event published after the cut handled", func() bool { return b.count(cfg.Name, worker.OutcomeOK) >= 1 })

	mu.Lock()
	defer mu.Unlock()
	if calls["ev-inflight"] != 1 || calls["ev-after"] != 1 {
		t.Errorf("side effects per event = %v, want exactly 1 each", calls)
	}
}

// On stop, the in-flight handler finishes and is acked; a prefetched delivery that had
// not started goes back to the queue unhandled.
func TestGracefulStopFinishesInFlightAndAcksOnlyThat(t *testing.T) {
	b := newBed(t)
	var calls atomic.Int32
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var finished atomic.Bool
	cfg := b.handlerConfig("stop", "orders.*")
	cfg.Concurrency, cfg.Prefetch = 1, 2
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(ctx context.Context, ev worker.Event) error {
		calls.Add(1)
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err() // would mean stop cancelled the in-flight handler
		}
		finished.Store(true)
		return nil
	})}
	_, stop := b.start(brokerAddr, b.claims(), route)

	b.publish("orders.created", "ev-a", event("ev-a", "created", "orders/a", "", time.Now()))
	b.publish("orders.created", "ev-b", event("ev-b", "created", "orders/b", "", time.Now()))
	<-started
	b.waitFor("second delivery prefetched", func() bool { return b.ready(worker.WorkQueue(cfg.Name)) == 0 })

	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	// Give the stop every chance to (wrongly) return or cancel before the handler ends;
	// this sleep only makes a bug visible, it asserts no timing.
	time.Sleep(100 * time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("Run returned while a handler was still in flight")
	default:
	}
	close(release)
	<-stopped

	if !finished.Load() {
		t.Fatal("in-flight handler did not finish")
	}
	if n := b.count(cfg.Name, worker.OutcomeOK); n != 1 {
		t.Errorf("ok outcomes = %d, want 1 (the in-flight delivery, acked)", n)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler started %d times, want 1: no new deliveries after stop", n)
	}
	// ev-a was acked; ev-b is back in the queue for the next consumer.
	b.waitFor("unstarted delivery requeued", func() bool { return b.ready(worker.WorkQueue(cfg.Name)) == 1 })
	d := b.getOne(worker.WorkQueue(cfg.Name))
	if d.MessageId != "ev-b" {
		t.Errorf("queue holds %s, want ev-b (ev-a was finished and acked)", d.MessageId)
	}
}

func TestConcurrencyBoundsHandlersRunningAtOnce(t *testing.T) {
	b := newBed(t)
	var running, peak atomic.Int32
	var handled atomic.Int32
	release := make(chan struct{})
	cfg := b.handlerConfig("conc", "orders.*")
	cfg.Concurrency, cfg.Prefetch = 2, 8
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(ctx context.Context, ev worker.Event) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		running.Add(-1)
		handled.Add(1)
		return nil
	})}
	b.start(brokerAddr, b.claims(), route)
	for i := range 5 {
		id := "ev-c" + strconv.Itoa(i)
		b.publish("orders.created", id, event(id, "created", "orders/"+id, "", time.Now()))
	}
	b.waitFor("two handlers running", func() bool { return running.Load() == 2 })
	b.waitFor("all five prefetched", func() bool { return b.ready(worker.WorkQueue(cfg.Name)) == 0 })
	if g := b.gauge("harvest_worker_in_flight", cfg.Name); g != 2 {
		t.Errorf("in-flight gauge = %v with two handlers blocked, want 2", g)
	}
	close(release)
	b.waitFor("all five handled", func() bool { return handled.Load() == 5 })
	if p := peak.Load(); p != 2 {
		t.Errorf("at most %d handlers ran at once, want exactly the concurrency, 2", p)
	}
}

// With Redis unreachable the worker cannot claim, so it does not act: the event waits
// on the retry path, without using up attempts, and is handled once Redis is back.
func TestRedisOutageDelaysEventsWithoutLosingThem(t *testing.T) {
	b := newBed(t)
	relay := testbed.NewRelay(t, redisAddr)
	rdb := redis.NewClient(&redis.Options{Addr: relay.Addr(), MaxRetries: -1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	var calls atomic.Int32
	cfg := b.handlerConfig("redisdown", "orders.*")
	cfg.MaxAttempts = 2
	route := worker.Route{Config: cfg, Handler: worker.HandlerFunc(func(context.Context, worker.Event) error {
		calls.Add(1)
		return nil
	})}
	b.start(brokerAddr, worker.NewClaims(rdb, b.prefix), route)

	relay.Cut()
	b.publish("orders.created", "ev-r", event("ev-r", "created", "orders/r", "", time.Now()))
	// More deferrals than max_attempts: deferring must not count as a failed attempt.
	b.waitFor("event deferred repeatedly", func() bool { return b.count(cfg.Name, worker.OutcomeDeferred) >= 3 })
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times without a claim", n)
	}
	relay.Restore()
	b.waitFor("event handled once Redis is back", func() bool { return b.count(cfg.Name, worker.OutcomeOK) == 1 })
	if n := calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	if n := b.count(cfg.Name, worker.OutcomeDeadLettered); n != 0 {
		t.Errorf("%d dead-lettered during a Redis outage, want 0", n)
	}
}
