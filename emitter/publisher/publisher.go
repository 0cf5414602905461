// Package publisher publishes events to a RabbitMQ topic exchange with publisher
// confirms, keeping one connection alive across broker restarts and network cuts.
//
// Promises:
//   - Publish returns how many of its events, counted from the first, the broker
//     confirmed (basic.ack). Only those are delivered for sure; the caller keeps the
//     rest (an unconfirmed event may still arrive: delivery is at least once).
//   - Confirms are batched across callers: every caller publishes on the same
//     confirm-mode channel with a deferred confirmation and waits only for its own,
//     while the broker acknowledges many deliveries at once (multiple=true). No one
//     waits for a confirm before the next caller may publish.
//   - Events of one Publish call are published in order on one channel, so the broker
//     keeps their order.
//   - Messages are persistent, content type application/cloudevents+json, with
//     message_id = event id, type = event type, timestamp = event time.
//   - The exchange is a durable topic exchange, declared at every connect. Messages are
//     not mandatory: an event no queue is bound for is dropped by the broker and still
//     confirmed, which is not an error (nobody subscribed to it), so basic.return never
//     happens and is not handled.
//   - After the connection or channel closes, it reconnects with exponential backoff
//     (100 ms doubling to 5 s). Connected reports the state; Publish fails at once with
//     ErrNotConnected while disconnected rather than waiting.
//   - A hung broker cannot block Publish forever: each socket write has a deadline.
//
// Concurrency: all methods are safe for concurrent use.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/emitter/event"
)

// ContentType of every message: a structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

var (
	// ErrNotConnected: the broker is unreachable at the moment; nothing was published.
	ErrNotConnected = errors.New("publisher: not connected to the broker")
	// ErrNacked: the broker refused (basic.nack) an event.
	ErrNacked = errors.New("publisher: broker nacked the event")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("publisher: closed")
)

// Config says where and how to publish.
type Config struct {
	// URL of the broker: amqp://guest:guest@127.0.0.1:5672/.
	URL string
	// Exchange is the durable topic exchange. Default "firestore.events".
	Exchange string
	// WriteTimeout bounds each socket write, so a hung broker fails publishes instead
	// of blocking them. Default 5s.
	WriteTimeout time.Duration
	// OnConnect, when set, is called after each successful (re)connect; for wake-ups.
	OnConnect func()
}

// Publisher is a long-lived, self-reconnecting confirm-mode publisher.
type Publisher struct {
	cfg Config
	log *slog.Logger

	mu        sync.RWMutex
	ch        *amqp.Channel // nil while disconnected
	connected chan struct{} // closed while connected; replaced on disconnect

	done chan struct{}
	wg   sync.WaitGroup
}

// New starts a Publisher; it connects in the background. Close stops it.
func New(cfg Config, log *slog.Logger) *Publisher {
	if cfg.Exchange == "" {
		cfg.Exchange = "firestore.events"
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	p := &Publisher{cfg: cfg, log: log, connected: make(chan struct{}), done: make(chan struct{})}
	p.wg.Add(1)
	go p.run()
	return p
}

// Connected reports whether a confirm-mode channel is open now.
func (p *Publisher) Connected() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ch != nil
}

// WaitConnected returns when connected, or with ctx's error or ErrClosed.
func (p *Publisher) WaitConnected(ctx context.Context) error {
	p.mu.RLock()
	c := p.connected
	p.mu.RUnlock()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

// Publish publishes evs in order and waits for their confirms until ctx ends. It
// returns the number of leading events the broker confirmed; n < len(evs) comes
// with an error saying why.
func (p *Publisher) Publish(ctx context.Context, evs []event.Event) (n int, err error) {
	p.mu.RLock()
	ch := p.ch
	p.mu.RUnlock()
	if ch == nil {
		return 0, ErrNotConnected
	}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(evs))
	var pubErr error
	for i := range evs {
		ev := &evs[i]
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, p.cfg.Exchange, ev.RoutingKey, false, false, amqp.Publishing{
			ContentType:  ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    ev.ID,
			Type:         ev.Type,
			Timestamp:    ev.Time,
			Body:         ev.Body,
		})
		if err != nil {
			pubErr = fmt.Errorf("publisher: publish %s: %w", ev.ID, err)
			break
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			return i, fmt.Errorf("publisher: waiting for confirm of %s: %w", evs[i].ID, err)
		}
		if !acked {
			// The library also resolves outstanding confirms as not-acked when the
			// channel closes; tell that apart from a real nack.
			if ch.IsClosed() {
				return i, fmt.Errorf("publisher: channel closed before confirm of %s: %w", evs[i].ID, ErrNotConnected)
			}
			return i, fmt.Errorf("publisher: %s: %w", evs[i].ID, ErrNacked)
		}
	}
	return len(confirms), pubErr
}

// Close stops reconnecting and closes the connection. Publishes in flight fail.
func (p *Publisher) Close() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	close(p.done)
	p.wg.Wait()
	return nil
}

func (p *Publisher) run() {
	defer p.wg.Done()
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		conn, ch, err := p.connect()
		if err != nil {
			p.log.Warn("amqp connect failed", "err", err, "retry_in", backoff)
			select {
			case <-p.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
		chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
		p.setChannel(ch)
		p.log.Info("amqp connected", "exchange", p.cfg.Exchange)
		if p.cfg.OnConnect != nil {
			p.cfg.OnConnect()
		}

		select {
		case <-p.done:
			p.setChannel(nil)
			_ = conn.Close()
			return
		case e := <-connClosed:
			p.log.Warn("amqp connection closed", "err", e)
		case e := <-chClosed:
			p.log.Warn("amqp channel closed", "err", e)
		}
		p.setChannel(nil)
		_ = conn.Close()
	}
}

func (p *Publisher) setChannel(ch *amqp.Channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ch = ch
	if ch != nil {
		close(p.connected)
	} else {
		select {
		case <-p.connected:
			p.connected = make(chan struct{})
		default:
		}
	}
}

func (p *Publisher) connect() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(p.cfg.URL, amqp.Config{
		Heartbeat: 5 * time.Second,
		Locale:    "en_US",
		Dial:      p.dial,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.ExchangeDeclare(p.cfg.Exchange, "topic", true, false, false, false, nil); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("declare exchange %q: %w", p.cfg.Exchange, err)
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("confirm mode: %w", err)
	}
	return conn, ch, nil
}

// dial connects with a handshake deadline (cleared by the library afterwards) and
// wraps the socket so every later write has its own deadline.
func (p *Publisher) dial(network, addr string) (net.Conn, error) {
	c, err := amqp.DefaultDial(30*time.Second)(network, addr)
	if err != nil {
		return nil, err
	}
	return &deadlineConn{Conn: c, timeout: p.cfg.WriteTimeout}, nil
}

// deadlineConn gives each Write a deadline: a peer that stops reading turns into a
// write error, which closes the connection and triggers a reconnect.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
