package proxy

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// benchProxy starts one proxy in front of the emulator for a benchmark (the harness
// is for tests): with events, its emitter publishes to a fresh exchange on the real
// broker. It returns the proxy's base URL and the documents path of a fresh project.
func benchProxy(b *testing.B, events bool) (url, docs string) {
	b.Helper()
	emu := testbed.Emulator(b)
	project := emu.NewProject(b)
	yaml := "server:\n  shutdown_grace: 2s\nrules:\n  - match: /items/{i}\n"
	if events {
		yaml += "    events: true\n"
	}
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	o := Options{Upstream: emu.URL, Rules: store, Registry: prometheus.NewRegistry()}
	var em *emitter.Emitter
	exchange := testbed.UniqueName("bench.events")
	if events {
		em, err = emitter.New(rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: b.TempDir()}, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := em.WaitConnected(ctx); err != nil {
			b.Fatalf("RabbitMQ at %s: %v", brokerAddr, err)
		}
		o.Emitter = em
	}
	p, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		<-done
		if em != nil {
			if em.Pending() > 0 {
				b.Logf("%d events went to the outbox", em.Pending())
			}
			em.Close()
			deleteExchange(b, exchange)
		}
	})
	return "http://" + ln.Addr().String(), "/v1/projects/" + project + "/databases/(default)/documents"
}

// deleteExchange removes an exchange the publisher declared.
func deleteExchange(tb testing.TB, name string) {
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		tb.Errorf("deleting exchange %s: %v", name, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		tb.Errorf("deleting exchange %s: %v", name, err)
		return
	}
	if err := ch.ExchangeDelete(name, false, false); err != nil {
		tb.Errorf("deleting exchange %s: %v", name, err)
	}
}
