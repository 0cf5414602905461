package emitter

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/rules"
)

// Both benchmarks publish the same events to a fresh exchange with no queue bound
// (the broker still confirms every message), so their msgs/s compare the publishing
// side alone, without a consumer competing for the CPU. make bench prints the ratio;
// the target is >= 0.7.

const benchInFlight = 256

// BenchmarkEmitConfirms: benchInFlight concurrent callers, one event per Emit, each
// waiting for its own confirm, as concurrent proxy requests do.
func BenchmarkEmitConfirms(b *testing.B) {
	exchange := testbed.UniqueName("bench.events")
	declareExchange(b, exchange)
	e, _ := newEmitter(b, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: b.TempDir()})
	waitConnected(b, e)
	evs := make([]event.Event, 1024)
	for i := range evs {
		evs[i] = docEvent(b, fmt.Sprintf("doc%d", i), i)
	}
	var n atomic.Int64
	b.SetParallelism(benchInFlight / max(1, testingProcs()))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := e.Emit(context.Background(), evs[i%int64(len(evs)):i%int64(len(evs))+1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if o := counterValue(b, e.metrics.outboxed); o > 0 {
		b.Logf("%v events went to the outbox (broker too slow or down)", o)
	}
}

// BenchmarkBareAmqpConfirms: the ceiling, a bare amqp091-go publisher on one
// confirm-mode channel keeping benchInFlight messages unconfirmed.
func BenchmarkBareAmqpConfirms(b *testing.B) {
	exchange := testbed.UniqueName("bench.events")
	declareExchange(b, exchange)
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	ev := docEvent(b, "bare", 1)
	ctx := context.Background()
	window := make(chan *amqp.DeferredConfirmation, benchInFlight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for dc := range window {
			if !dc.Wait() {
				b.Error("nacked")
			}
		}
	}()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, ev.RoutingKey, false, false, amqp.Publishing{
			ContentType: "application/cloudevents+json", DeliveryMode: amqp.Persistent,
			MessageId: ev.ID, Type: ev.Type, Timestamp: ev.Time, Body: ev.Body,
		})
		if err != nil {
			b.Fatal(err)
		}
		window <- dc // blocks while benchInFlight are unconfirmed
	}
	close(window)
	<-done
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }

// declareExchange declares exchange as the publisher does and deletes it afterwards.
func declareExchange(b *testing.B, exchange string) {
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		b.Fatalf("RabbitMQ at %s is required: %v", brokerAddr, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ch.ExchangeDelete(exchange, false, false)
		conn.Close()
	})
}

// BenchmarkIntentOverhead is what the intent journal adds to a write's events, from
// many concurrent writers (group commit): Begin (fsynced intent) and Succeeded (landed
// record, Emit to the outbox, done record) against Emit to the outbox alone.
func BenchmarkIntentOverhead(b *testing.B) {
	for _, withIntent := range []bool{false, true} {
		name := "emit-only"
		if withIntent {
			name = "begin+succeeded"
		}
		b.Run(name, func(b *testing.B) {
			e, _ := newEmitter(b, rules.Events{OutboxDir: b.TempDir()})
			in := bigIntent(100)
			var seq atomic.Int64
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ev := docEvent(b, fmt.Sprint("bench", seq.Add(1)), 1) // one document per writer: no order waits
				for pb.Next() {
					if !withIntent {
						if err := e.Emit(context.Background(), []event.Event{ev}); err != nil {
							b.Error(err)
						}
						continue
					}
					c := *in
					p, err := e.Begin(&c)
					if err != nil {
						b.Error(err)
						continue
					}
					if err := p.Succeeded([]event.Event{ev}); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}
