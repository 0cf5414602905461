package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/worker"
)

// The shared services the tests run against (see docs/ARCHITECTURE.md, "Tests").
const (
	brokerAddr = "127.0.0.1:5672"
	redisAddr  = "127.0.0.1:6379"
)

func amqpURL(addr string) string { return "amqp://guest:guest@" + addr + "/" }

// waitLimit bounds every wait for something to happen; reaching it fails the test.
const waitLimit = 20 * time.Second

// bed is one test's private slice of the shared broker and Redis: a unique exchange,
// handler names and key prefix, all deleted when the test ends.
type bed struct {
	t        *testing.T
	id       string
	exchange string
	prefix   string
	conn     *amqp.Connection
	ch       *amqp.Channel // confirm mode
	rdb      *redis.Client
	reg      *prometheus.Registry
	queues   []string
}

func newBed(t *testing.T) *bed {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	conn, err := amqp.Dial(amqpURL(brokerAddr))
	if err != nil {
		t.Fatalf("RabbitMQ must be running at %s (guest/guest): %v", brokerAddr, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis must be running at %s: %v", redisAddr, err)
	}
	tb := &bed{t: t, id: id, exchange: "test.worker." + id, prefix: "test:worker:" + id + ":",
		conn: conn, ch: ch, rdb: rdb, reg: prometheus.NewRegistry()}
	t.Cleanup(tb.cleanup)
	return tb
}

func (b *bed) cleanup() {
	ctx := context.Background()
	ch, err := b.conn.Channel()
	if err == nil {
		for _, q := range b.queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(b.exchange, false, false)
	}
	b.conn.Close()
	var keys []string
	iter := b.rdb.Scan(ctx, 0, b.prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		b.rdb.Del(ctx, keys...)
	}
	b.rdb.Close()
}

// handlerConfig is a fast-retrying handler named uniquely for this test.
func (b *bed) handlerConfig(short string, on ...string) rules.Handler {
	h := rules.Handler{
		Name: "t" + b.id + "-" + short, On: on, Action: "test",
		Timeout: 5 * time.Second, MaxAttempts: 3,
		Backoff: 30 * time.Millisecond, MaxBackoff: 120 * time.Millisecond,
		Prefetch: 8, Concurrency: 2, IdempotencyTTL: time.Hour,
	}
	b.queues = append(b.queues, worker.WorkQueue(h.Name), worker.DeadLetterQueue(h.Name))
	for _, d := range []time.Duration{30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		b.queues = append(b.queues, worker.RetryQueue(h.Name, d))
	}
	return h
}

// claims keeps this test's claims in the shared Redis.
func (b *bed) claims() *worker.Claims { return worker.NewClaims(b.rdb, b.prefix) }

// start runs a consumer until the test ends (or stop is called) and waits until it
// consumes. stop cancels it and waits for Run to return.
func (b *bed) start(addr string, claims *worker.Claims, routes ...worker.Route) (c *worker.Consumer, stop func()) {
	b.t.Helper()
	opts := worker.Options{
		AMQPURL: amqpURL(addr), Exchange: b.exchange, Routes: routes,
		Logger:       slog.New(slog.NewTextHandler(b.t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:   b.reg,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		ClaimMargin: time.Second,
		Claims:      claims,
	}
	c, err := worker.New(opts)
	if err != nil {
		b.t.Fatalf("worker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			b.t.Errorf("Run: %v", err)
		}
	}
	b.t.Cleanup(stop)
	b.waitFor("consumer connected", c.Connected)
	return c, stop
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func (b *bed) waitFor(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("gave up waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// event returns a structured CloudEvent body like the proxy's.
func event(id, typ, docPath, authhash string, at time.Time) []byte {
	m := map[string]any{
		"specversion": "1.0", "id": id, "type": "google.cloud.firestore.document.v1." + typ,
		"source":          "//firestore.googleapis.com/projects/demo/databases/(default)",
		"subject":         "documents/" + docPath,
		"time":            at.UTC().Format(time.RFC3339Nano),
		"datacontenttype": "application/json",
		"data":            map[string]any{"value": map[string]any{"name": "projects/demo/databases/(default)/documents/" + docPath}},
		"database":        "(default)",
	}
	if authhash != "" {
		m["authhash"] = authhash
	}
	body, _ := json.Marshal(m)
	return body
}

// publish sends body to the test exchange as the proxy does, and waits for the confirm.
func (b *bed) publish(routingKey, messageID string, body []byte) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	dc, err := b.ch.PublishWithDeferredConfirmWithContext(ctx, b.exchange, routingKey, false, false, amqp.Publishing{
		ContentType: "application/cloudevents+json", DeliveryMode: amqp.Persistent,
		MessageId: messageID, Body: body,
	})
	if err != nil {
		b.t.Fatalf("publish: %v", err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		b.t.Fatalf("publish not confirmed: ack=%v err=%v", ok, err)
	}
}

// ready is the number of messages ready in queue.
func (b *bed) ready(queue string) int {
	b.t.Helper()
	ch, err := b.conn.Channel()
	if err != nil {
		b.t.Fatalf("open channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		b.t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}

// getOne waits for a message on queue and takes it (acked).
func (b *bed) getOne(queue string) amqp.Delivery {
	b.t.Helper()
	var got amqp.Delivery
	b.waitFor("a message on "+queue, func() bool {
		d, ok, err := b.ch.Get(queue, true)
		if err != nil {
			b.t.Fatalf("get from %s: %v", queue, err)
		}
		got = d
		return ok
	})
	return got
}

// count is the value of the deliveries counter for handler and outcome.
func (b *bed) count(handler, outcome string) int {
	b.t.Helper()
	fams, err := b.reg.Gather()
	if err != nil {
		b.t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != "harvest_worker_deliveries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["handler"] == handler && labels["outcome"] == outcome {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

// gauge is the value of an unlabelled-or-handler-labelled gauge.
func (b *bed) gauge(name, handler string) float64 {
	b.t.Helper()
	fams, err := b.reg.Gather()
	if err != nil {
		b.t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if handler == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == handler) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
