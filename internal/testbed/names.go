package testbed

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// UniqueName is prefix + "." + 12 random hex digits: an exchange, queue or key prefix no
// other test (nor another run sharing the servers) uses.
func UniqueName(prefix string) string {
	return prefix + "." + RandomHex(6)
}

// RandomHex is n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b)
}

// Subscribe declares exchange as the publisher does (a durable topic exchange) and an
// exclusive, auto-deleted queue bound to it with "#", on brokerURL directly (not through
// a relay), and returns its deliveries (auto-acked). The exchange and queue are deleted
// when the test ends.
func Subscribe(t testing.TB, brokerURL, exchange string) <-chan amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		t.Fatalf("RabbitMQ at %s is required (deploy/dev-services.sh starts it): %v", brokerURL, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare(UniqueName("test.q"), false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch.QueueDelete(q.Name, false, false, false)
		ch.ExchangeDelete(exchange, false, false)
		conn.Close()
	})
	return d
}
