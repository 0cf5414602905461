package worker

import (
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/rules"
)

// Queue names of a handler. Every queue is durable and declared at each (re)connect;
// declaring is idempotent as long as nobody declared the same name with other arguments.
//
//	harvest.<name>              work queue, bound to the exchange with each `on` pattern
//	harvest.<name>.retry.<d>    delay queue per distinct backoff d: its queue TTL expires
//	                            messages back to the work queue through the default exchange
//	harvest.<name>.dlq          dead letters, for people to inspect and replay
//
// One delay queue per delay (rather than per-message expiration on one queue) keeps
// every delay queue FIFO in expiry order: RabbitMQ only expires messages at the head of
// a queue, so mixed per-message TTLs would hold a 1s retry behind a 5m one. Names carry
// the delay, so changing backoff in rules.yaml declares new queues instead of clashing
// with the arguments of old ones (old, empty delay queues can be deleted by hand).
// Bindings removed from `on` are not unbound automatically: AMQP cannot list them.

// WorkQueue is the queue a handler consumes.
func WorkQueue(handler string) string { return "harvest." + handler }

// DeadLetterQueue holds a handler's dead letters.
func DeadLetterQueue(handler string) string { return "harvest." + handler + ".dlq" }

// RetryQueue is the delay queue holding a handler's messages for delay.
func RetryQueue(handler string, delay time.Duration) string {
	return fmt.Sprintf("harvest.%s.retry.%s", handler, delay)
}

// backoff is the delay before attempt n+1 after attempt n failed: Backoff doubled per
// attempt, capped at MaxBackoff.
func backoff(h rules.Handler, n int) time.Duration {
	d := h.Backoff
	for i := 1; i < n && d < h.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, h.MaxBackoff)
}

// retryLevels is the number of distinct attempts with a delay queue of their own.
func retryLevels(h rules.Handler) int { return max(1, h.MaxAttempts-1) }

// delayFor is the delay applied after attempt n, limited to the declared levels.
func delayFor(h rules.Handler, n int) time.Duration {
	return backoff(h, min(max(n, 1), retryLevels(h)))
}

// retryDelays lists the distinct delays a handler needs queues for.
func retryDelays(h rules.Handler) []time.Duration {
	var ds []time.Duration
	for n := 1; n <= retryLevels(h); n++ {
		d := backoff(h, n)
		if len(ds) == 0 || ds[len(ds)-1] != d {
			ds = append(ds, d)
		}
		if d >= h.MaxBackoff {
			break
		}
	}
	return ds
}

// declareTopology declares the exchange (only if missing, so that whatever arguments
// the proxy declared it with stand) and every handler's queues and bindings.
func declareTopology(conn *amqp.Connection, exchange string, handlers []rules.Handler) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel for topology: %w", err)
	}
	defer func() { ch.Close() }()

	if err := ch.ExchangeDeclarePassive(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		var aerr *amqp.Error
		if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
			return fmt.Errorf("check exchange %q: %w", exchange, err)
		}
		// A failed passive declare closes the channel: take a new one.
		if ch, err = conn.Channel(); err != nil {
			return fmt.Errorf("open channel for topology: %w", err)
		}
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q (durable topic): %w", exchange, err)
		}
	}

	for _, h := range handlers {
		work := WorkQueue(h.Name)
		if _, err := ch.QueueDeclare(work, true, false, false, false, nil); err != nil {
			return fmt.Errorf("handler %s: declare queue %q: %w", h.Name, work, err)
		}
		for _, pattern := range h.On {
			if err := ch.QueueBind(work, pattern, exchange, false, nil); err != nil {
				return fmt.Errorf("handler %s: bind %q to %q with %q: %w", h.Name, work, exchange, pattern, err)
			}
		}
		dlq := DeadLetterQueue(h.Name)
		if _, err := ch.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
			return fmt.Errorf("handler %s: declare queue %q: %w", h.Name, dlq, err)
		}
		for _, d := range retryDelays(h) {
			q := RetryQueue(h.Name, d)
			args := amqp.Table{
				"x-message-ttl":             d.Milliseconds(),
				"x-dead-letter-exchange":    "", // the default exchange routes by queue name
				"x-dead-letter-routing-key": work,
			}
			if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
				return fmt.Errorf("handler %s: declare delay queue %q: %w", h.Name, q, err)
			}
		}
	}
	return nil
}
