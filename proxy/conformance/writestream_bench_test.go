package conformance

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/proxy/proxytest"
	"github.com/harvest-hub/edge/rules"
)

// brokerURL is the shared RabbitMQ of the test machine; the benchmark publishes to an
// exchange of its own.
const brokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// writeStreamInFlight is how many writes the benchmark keeps unacknowledged on the
// stream, as the Firebase SDK does (it pipelines up to 10).
const writeStreamInFlight = 10

// BenchmarkWriteStreamEvents is `make bench`'s "events per second from the Write
// stream": the full SDK's way of writing (the bidirectional Write stream, writes
// pipelined) through the proxy with events on (the real broker, confirms), counted when
// the broker delivers them to a subscriber. Beside it, in the same run, the same stream
// of writes straight to the emulator: the rate the upstream allows, the ceiling.
func BenchmarkWriteStreamEvents(b *testing.B) {
	emu := testbed.Emulator(b)
	exchange := testbed.UniqueName("bench.writestream")
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - match: /items/{i}\n    events: true\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	em, err := emitter.New(rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: b.TempDir()}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := em.WaitConnected(ctx); err != nil {
		b.Fatalf("RabbitMQ at %s: %v", brokerURL, err)
	}
	b.Cleanup(func() { em.Close() })
	deliveries := testbed.Subscribe(b, brokerURL, exchange)
	p := proxytest.Start(b, proxy.Options{Upstream: emu.URL, Rules: store, Emitter: em, Registry: prometheus.NewRegistry()})

	direct := writeStream(b, emu.Addr, emu.NewProject(b))
	proxied := writeStream(b, p.Addr, emu.NewProject(b))
	direct(10) // warm both: connections, the emulator's project
	proxied(10)
	drain(b, deliveries, 10)

	// Rounds alternate between the two, so both see the same machine load.
	const round = 25
	var directTime, proxiedTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		start := time.Now()
		direct(n)
		directTime += time.Since(start)
		start = time.Now()
		proxied(n)
		drain(b, deliveries, n)
		proxiedTime += time.Since(start)
	}
	directSecs, proxiedSecs := directTime.Seconds(), proxiedTime.Seconds()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/proxiedSecs, "events/s")
	b.ReportMetric(float64(b.N)/directSecs, "direct-writes/s")
	b.ReportMetric((float64(b.N)/proxiedSecs)/(float64(b.N)/directSecs), "ratio")
}

// drain waits for n events from the broker.
func drain(b *testing.B, deliveries <-chan amqp.Delivery, n int) {
	b.Helper()
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-deliveries:
		case <-timeout.C:
			b.Fatalf("only %d of %d events arrived within a minute", i, n)
		}
	}
}

// writeStream opens a Write stream to addr for project (the handshake done) and
// returns a function that writes n documents on it, writeStreamInFlight at a time, and
// returns once every write is acknowledged.
func writeStream(b *testing.B, addr, project string) func(n int) {
	b.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	db := "projects/" + project + "/databases/(default)"
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "google-cloud-resource-prefix", db))
	b.Cleanup(cancel)
	stream, err := firestorepb.NewFirestoreClient(conn).Write(ctx)
	if err != nil {
		b.Fatalf("Write stream to %s: %v", addr, err)
	}
	if err := stream.Send(&firestorepb.WriteRequest{Database: db}); err != nil {
		b.Fatal(err)
	}
	hs, err := stream.Recv()
	if err != nil {
		b.Fatalf("Write handshake with %s: %v", addr, err)
	}
	var mu sync.Mutex
	token := hs.GetStreamToken()
	seq := 0
	return func(n int) {
		slots := make(chan struct{}, writeStreamInFlight)
		recvErr := make(chan error, 1)
		go func() {
			for range n {
				resp, err := stream.Recv()
				if err != nil {
					recvErr <- err
					return
				}
				mu.Lock()
				token = resp.GetStreamToken()
				mu.Unlock()
				<-slots
			}
			recvErr <- nil
		}()
		for range n {
			slots <- struct{}{}
			seq++
			mu.Lock()
			t := token
			mu.Unlock()
			err := stream.Send(&firestorepb.WriteRequest{StreamToken: t, Writes: []*firestorepb.Write{{
				Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{
					Name:   fmt.Sprintf("%s/documents/items/w%d", db, seq%64),
					Fields: map[string]*firestorepb.Value{"n": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: int64(seq)}}},
				}},
			}}})
			if err != nil {
				b.Fatalf("Write to %s: send: %v", addr, err)
			}
		}
		if err := <-recvErr; err != nil {
			b.Fatalf("Write to %s: %v", addr, err)
		}
	}
}
