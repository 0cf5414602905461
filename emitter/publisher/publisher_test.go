package publisher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/internal/testbed"
)

const brokerAddr = "127.0.0.1:5672"

func unique(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + "." + hex.EncodeToString(b)
}

// admin opens a direct connection for test setup, removing exchange at the end.
func admin(t *testing.T, exchange string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial("amqp://guest:guest@" + brokerAddr + "/")
	if err != nil {
		t.Fatalf("RabbitMQ at %s is required: %v", brokerAddr, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch.ExchangeDelete(exchange, false, false)
		conn.Close()
	})
	return ch
}

func connected(t *testing.T, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitConnected(ctx); err != nil {
		t.Fatalf("not connected: %v", err)
	}
}

var ev = event.Event{ID: "id-1", Type: event.TypeCreated, RoutingKey: "orders.created", Body: []byte(`{}`), Time: time.Unix(1700000000, 0)}

// TestNackIsReported: a queue that rejects publishes when full makes the broker nack;
// Publish must report it rather than count the event as delivered.
func TestNackIsReported(t *testing.T) {
	exchange := unique("test.events")
	ch := admin(t, exchange)
	q, err := ch.QueueDeclare(unique("test.q"), false, true, true, false, amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	p := New(Config{URL: "amqp://guest:guest@" + brokerAddr + "/", Exchange: exchange}, slog.New(slog.DiscardHandler))
	defer p.Close()
	connected(t, p)
	n, err := p.Publish(context.Background(), []event.Event{ev})
	if n != 0 || !errors.Is(err, ErrNacked) {
		t.Fatalf("Publish = %d, %v; want 0 and ErrNacked", n, err)
	}
}

// TestUnroutableIsConfirmed: no queue bound is not an error.
func TestUnroutableIsConfirmed(t *testing.T) {
	exchange := unique("test.events")
	admin(t, exchange)
	p := New(Config{URL: "amqp://guest:guest@" + brokerAddr + "/", Exchange: exchange}, slog.New(slog.DiscardHandler))
	defer p.Close()
	connected(t, p)
	if n, err := p.Publish(context.Background(), []event.Event{ev, ev}); n != 2 || err != nil {
		t.Fatalf("Publish = %d, %v; want 2, nil", n, err)
	}
}

// TestReconnects: after a cut Publish fails fast with ErrNotConnected, and once the
// network is back the publisher reconnects by itself.
func TestReconnects(t *testing.T) {
	exchange := unique("test.events")
	admin(t, exchange)
	relay := testbed.NewRelay(t, brokerAddr)
	p := New(Config{URL: "amqp://guest:guest@" + relay.Addr() + "/", Exchange: exchange}, slog.New(slog.DiscardHandler))
	defer p.Close()
	connected(t, p)

	relay.Cut()
	for guard := time.Now().Add(20 * time.Second); p.Connected(); time.Sleep(time.Millisecond) {
		if time.Now().After(guard) { // NotifyClose arrives asynchronously, but it arrives
			t.Fatal("still connected after the cut")
		}
	}
	if _, err := p.Publish(context.Background(), []event.Event{ev}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Publish while cut: %v, want ErrNotConnected", err)
	}
	relay.Restore()
	connected(t, p)
	if n, err := p.Publish(context.Background(), []event.Event{ev}); n != 1 || err != nil {
		t.Fatalf("Publish after reconnect = %d, %v", n, err)
	}
}
