// Package worker consumes the CloudEvents harvest-proxy publishes for successful
// Firestore writes and runs the configured handlers on them.
//
// Promises:
//   - Topology: per handler, a durable queue harvest.<name> bound to the exchange with
//     each `on` pattern, delay queues for retries and a dead-letter queue (see
//     WorkQueue, RetryQueue, DeadLetterQueue), declared at every (re)connect.
//   - No loss: acks are manual, and a message is acked only after its handler succeeded,
//     or after the broker confirmed its copy on the retry or dead-letter queue. A copy
//     that cannot be confirmed leaves the original unacked (it is requeued).
//   - Retries never hold a message: a failed delivery goes to a delay queue whose TTL
//     dead-letters it back to the work queue; the attempt travels in the
//     x-harvest-attempt header. After MaxAttempts (or a Permanent error) the message goes
//     to the DLQ with x-harvest-error. A body that is not a CloudEvent goes to the DLQ at
//     once.
//   - Idempotency: with Claims, a handler's side effect happens once per event id even
//     when the broker redelivers, within the limits Claims documents (at-least-once,
//     duplicates only on a crash between the side effect and marking it done).
//   - Lifecycle: Run reconnects with backoff after the connection or a channel is lost
//     and resumes consuming; when its context is cancelled it stops taking deliveries,
//     lets in-flight handlers finish (each bounded by its Timeout), acks what finished,
//     and returns. Prefetched deliveries that were not started return to the queue.
//
// Concurrency: each handler runs at most Concurrency actions at once, with at most
// Prefetch unacked deliveries. A Consumer's methods are safe for concurrent use; Run
// must be called once.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/harvest-hub/edge/rules"
)

// Headers the worker sets on messages it forwards to retry and dead-letter queues.
const (
	HeaderAttempt    = "x-harvest-attempt"     // attempt number of the next (or last, in the DLQ) handling
	HeaderError      = "x-harvest-error"       // why the last attempt failed
	HeaderHandler    = "x-harvest-handler"     // handler name
	HeaderRoutingKey = "x-harvest-routing-key" // routing key the proxy published with
)

// Route pairs a handler's configuration with the code that acts.
type Route struct {
	Config  rules.Handler
	Handler Handler
}

// Options configure a Consumer. Zero fields take the documented defaults.
type Options struct {
	// AMQPURL of the broker, e.g. amqp://guest:guest@127.0.0.1:5672/. Required.
	AMQPURL string
	// Exchange the proxy publishes to. Default "firestore.events".
	Exchange string
	// Routes: one per configured handler. Zero fields of each Config take the
	// defaults documented on rules.Handler.
	Routes []Route
	// Claims makes side effects idempotent. Nil: every delivery acts (at-least-once).
	Claims *Claims
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer for the worker's metrics; nil registers none.
	Registerer prometheus.Registerer
	// ReconnectMin and ReconnectMax bound the wait between connection attempts, which
	// doubles while the broker stays unreachable. Defaults 500ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// ClaimMargin is added to a handler's Timeout to make its claim lease. Default 15s.
	ClaimMargin time.Duration
}

// Consumer runs handlers on the events of one broker.
type Consumer struct {
	opts      Options
	log       *slog.Logger
	metrics   *metrics
	connected atomic.Bool
	// running counts goroutines still handling deliveries, including those of a lost
	// session, so that Run returns only when none is left.
	running sync.WaitGroup
}

// How long to wait for the broker to confirm a forwarded copy, and for Redis.
const (
	confirmTimeout = 30 * time.Second
	redisTimeout   = 5 * time.Second
	maxErrorHeader = 1024
)

// New checks opts and applies defaults. It does not connect: Run does.
func New(opts Options) (*Consumer, error) {
	if opts.AMQPURL == "" {
		return nil, errors.New("worker: no broker URL (AMQPURL)")
	}
	if len(opts.Routes) == 0 {
		return nil, errors.New("worker: no handlers configured")
	}
	if opts.Exchange == "" {
		opts.Exchange = "firestore.events"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReconnectMin <= 0 {
		opts.ReconnectMin = 500 * time.Millisecond
	}
	if opts.ReconnectMax < opts.ReconnectMin {
		opts.ReconnectMax = max(30*time.Second, opts.ReconnectMin)
	}
	if opts.ClaimMargin <= 0 {
		opts.ClaimMargin = 15 * time.Second
	}
	routes := make([]Route, len(opts.Routes))
	seen := map[string]bool{}
	for i, r := range opts.Routes {
		r.Config = withDefaults(r.Config)
		h := r.Config
		switch {
		case h.Name == "":
			return nil, fmt.Errorf("worker: handler %d has no name", i+1)
		case seen[h.Name]:
			return nil, fmt.Errorf("worker: handler name %q used twice", h.Name)
		case len(h.On) == 0:
			return nil, fmt.Errorf("worker: handler %s has no `on` patterns", h.Name)
		case r.Handler == nil:
			return nil, fmt.Errorf("worker: handler %s has no implementation", h.Name)
		case h.Backoff < time.Millisecond || h.MaxBackoff < h.Backoff:
			return nil, fmt.Errorf("worker: handler %s: backoff %v must be at least 1ms and at most max_backoff %v", h.Name, h.Backoff, h.MaxBackoff)
		}
		seen[h.Name] = true
		routes[i] = r
	}
	opts.Routes = routes
	return &Consumer{opts: opts, log: opts.Logger, metrics: newMetrics(opts.Registerer)}, nil
}

// withDefaults fills the zero fields of h with rules.Handler's documented defaults.
func withDefaults(h rules.Handler) rules.Handler {
	set := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&h.Timeout, 10*time.Second)
	set(&h.Backoff, time.Second)
	set(&h.MaxBackoff, max(5*time.Minute, h.Backoff))
	set(&h.IdempotencyTTL, 24*time.Hour)
	if h.MaxAttempts <= 0 {
		h.MaxAttempts = 5
	}
	if h.Prefetch <= 0 {
		h.Prefetch = 32
	}
	if h.Concurrency <= 0 {
		h.Concurrency = 8
	}
	return h
}

// Connected reports whether the consumer is connected and consuming now (for /healthz).
func (c *Consumer) Connected() bool { return c.connected.Load() }

// Run consumes until ctx is cancelled, reconnecting as needed, then stops gracefully
// (see the package comment) and returns nil. A broker that cannot be reached or a
// topology that cannot be declared is logged and retried, never returned.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.running.Wait()
	wait := c.opts.ReconnectMin
	for {
		established, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if established {
			wait = c.opts.ReconnectMin
		}
		c.log.Warn("worker: broker session ended; reconnecting", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if !established {
			wait = min(2*wait, c.opts.ReconnectMax)
		}
	}
}

// lane is one handler's state within a session.
type lane struct {
	route      Route
	tag        string
	consume    *amqp.Channel // Qos(Prefetch); acks go here
	publish    *amqp.Channel // confirm mode; retry and DLQ copies go here
	deliveries <-chan amqp.Delivery
}

// session connects, declares, consumes until the connection or a channel is lost (an
// error) or ctx is cancelled (graceful stop, nil). established tells whether it got as
// far as consuming, which resets the reconnect backoff.
func (c *Consumer) session(ctx context.Context) (established bool, err error) {
	conn, err := amqp.DialConfig(c.opts.AMQPURL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "harvest-worker"},
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return false, fmt.Errorf("connect to broker: %w", err)
	}
	defer conn.Close() // returns unstarted prefetched deliveries to their queues
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))

	handlers := make([]rules.Handler, len(c.opts.Routes))
	for i, r := range c.opts.Routes {
		handlers[i] = r.Config
	}
	if err := declareTopology(conn, c.opts.Exchange, handlers); err != nil {
		return false, err
	}

	// Any channel closing (a protocol error, a deleted queue) ends the session: a fresh
	// one re-declares everything, which is simpler than repairing one channel.
	lost := make(chan error, 3*len(c.opts.Routes))
	lanes := make([]*lane, 0, len(c.opts.Routes))
	for _, r := range c.opts.Routes {
		l, err := c.openLane(conn, r, lost)
		if err != nil {
			return false, err
		}
		lanes = append(lanes, l)
	}

	c.connected.Store(true)
	c.metrics.connected.Set(1)
	defer func() {
		c.connected.Store(false)
		c.metrics.connected.Set(0)
	}()
	c.log.Info("worker: consuming", "exchange", c.opts.Exchange, "handlers", len(lanes))

	stop := make(chan struct{})
	var workers sync.WaitGroup
	for _, l := range lanes {
		for range l.route.Config.Concurrency {
			workers.Add(1)
			go c.work(ctx, l, stop, &workers)
		}
	}
	c.running.Add(1)
	defer func() { go func() { workers.Wait(); c.running.Done() }() }()

	select {
	case <-ctx.Done():
		// Stop the broker sending first, so nothing new starts while in-flight
		// deliveries finish and are acked on the still-open channels.
		for _, l := range lanes {
			if err := l.consume.Cancel(l.tag, false); err != nil {
				c.log.Warn("worker: cancel consumer", "handler", l.route.Config.Name, "err", err)
			}
		}
		close(stop)
		workers.Wait()
		c.log.Info("worker: stopped; in-flight deliveries finished")
		return true, nil
	case e := <-connClosed:
		err = fmt.Errorf("connection closed: %v", e)
	case e := <-lost:
		err = e
	}
	// Deliveries in flight on the lost channels can no longer be acked: the broker
	// redelivers them, and Claims keeps their side effects from repeating.
	close(stop)
	return true, err
}

func (c *Consumer) openLane(conn *amqp.Connection, r Route, lost chan<- error) (*lane, error) {
	name := r.Config.Name
	l := &lane{route: r, tag: "harvest-worker." + name}
	var err error
	if l.consume, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("handler %s: open channel: %w", name, err)
	}
	if l.publish, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("handler %s: open channel: %w", name, err)
	}
	if err := l.consume.Qos(r.Config.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("handler %s: set prefetch %d: %w", name, r.Config.Prefetch, err)
	}
	if err := l.publish.Confirm(false); err != nil {
		return nil, fmt.Errorf("handler %s: enable publisher confirms: %w", name, err)
	}
	for _, ch := range []*amqp.Channel{l.consume, l.publish} {
		closed := ch.NotifyClose(make(chan *amqp.Error, 1))
		go func() {
			if e, ok := <-closed; ok {
				lost <- fmt.Errorf("handler %s: channel closed: %v", name, e)
			}
		}()
	}
	cancelled := l.consume.NotifyCancel(make(chan string, 1))
	go func() {
		if _, ok := <-cancelled; ok {
			lost <- fmt.Errorf("handler %s: broker cancelled the consumer (queue %s deleted?)", name, WorkQueue(name))
		}
	}()
	if l.deliveries, err = l.consume.Consume(WorkQueue(name), l.tag, false, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("handler %s: consume %s: %w", name, WorkQueue(name), err)
	}
	return l, nil
}

// work handles deliveries one at a time until stop or the channel ends.
func (c *Consumer) work(ctx context.Context, l *lane, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		case d, ok := <-l.deliveries:
			if !ok {
				return
			}
			select {
			case <-stop: // taken in the same instant as the stop: give it back untouched
				_ = d.Nack(false, true)
				return
			default:
			}
			c.handle(ctx, l, d)
		}
	}
}

// handle takes one delivery to an ack, with a confirmed copy on the retry or dead-letter
// queue when the handler did not succeed.
func (c *Consumer) handle(ctx context.Context, l *lane, d amqp.Delivery) {
	cfg := l.route.Config
	inFlight := c.metrics.inFlight.WithLabelValues(cfg.Name)
	inFlight.Inc()
	defer inFlight.Dec()
	// In-flight work finishes after a stop is requested: detach from ctx's cancellation.
	base := context.WithoutCancel(ctx)
	attempt := attemptOf(d.Headers)

	ev, err := ParseEvent(d.Body)
	if err != nil {
		c.log.Warn("worker: poison message to dead-letter queue", "handler", cfg.Name, "message_id", d.MessageId, "err", err)
		c.forward(base, l, d, DeadLetterQueue(cfg.Name), attempt, "unparseable: "+err.Error(), OutcomePoison)
		return
	}
	ev.Attempt = attempt
	log := c.log.With("handler", cfg.Name, "event_id", ev.ID, "attempt", attempt)

	var token string
	if c.opts.Claims != nil {
		rctx, cancel := context.WithTimeout(base, redisTimeout)
		state, tok, err := c.opts.Claims.Claim(rctx, cfg.Name, ev.ID, cfg.Timeout+c.opts.ClaimMargin)
		cancel()
		switch {
		case err != nil:
			// Acting without a claim could repeat a side effect; wait for Redis instead.
			// The attempt is not counted: the handler did not fail.
			log.Warn("worker: idempotency store unavailable; delaying event", "err", err)
			c.forward(base, l, d, RetryQueue(cfg.Name, delayFor(cfg, attempt)), attempt, "idempotency store unavailable: "+err.Error(), OutcomeDeferred)
			return
		case state == Done:
			log.Debug("worker: already handled; skipping")
			c.ack(l, d, OutcomeDuplicate)
			return
		case state == Held:
			log.Info("worker: another delivery of this event is in flight; delaying")
			c.forward(base, l, d, RetryQueue(cfg.Name, delayFor(cfg, attempt)), attempt, "claim held by another delivery", OutcomeDeferred)
			return
		}
		token = tok
	}

	start := time.Now()
	err = c.act(base, l.route, ev)
	c.metrics.duration.WithLabelValues(cfg.Name).Observe(time.Since(start).Seconds())

	if err == nil {
		if c.opts.Claims != nil {
			rctx, cancel := context.WithTimeout(base, redisTimeout)
			if err := c.opts.Claims.Complete(rctx, cfg.Name, ev.ID, cfg.IdempotencyTTL); err != nil {
				// The claim's lease expires instead; only a redelivery could repeat it.
				log.Warn("worker: could not mark event done", "err", err)
			}
			cancel()
		}
		c.ack(l, d, OutcomeOK)
		return
	}

	if c.opts.Claims != nil {
		rctx, cancel := context.WithTimeout(base, redisTimeout)
		if rerr := c.opts.Claims.Release(rctx, cfg.Name, ev.ID, token); rerr != nil {
			log.Warn("worker: could not release claim; the retry waits for its lease", "err", rerr)
		}
		cancel()
	}
	if attempt >= cfg.MaxAttempts || IsPermanent(err) {
		log.Warn("worker: handler failed; dead-lettering", "err", err, "max_attempts", cfg.MaxAttempts)
		c.forward(base, l, d, DeadLetterQueue(cfg.Name), attempt, err.Error(), OutcomeDeadLettered)
		return
	}
	delay := delayFor(cfg, attempt)
	log.Info("worker: handler failed; retrying", "err", err, "retry_in", delay)
	c.forward(base, l, d, RetryQueue(cfg.Name, delay), attempt+1, err.Error(), OutcomeRetried)
}

// act runs the handler with its timeout, turning a panic into an error so one bad event
// cannot take the worker down.
func (c *Consumer) act(ctx context.Context, r Route, ev Event) (err error) {
	ctx, cancel := context.WithTimeout(ctx, r.Config.Timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("worker: handler panicked", "handler", r.Config.Name, "event_id", ev.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return r.Handler.Handle(ctx, ev)
}

func (c *Consumer) ack(l *lane, d amqp.Delivery, outcome string) {
	if err := d.Ack(false); err != nil {
		// The channel is gone; the broker redelivers and Claims skips what was done.
		c.log.Warn("worker: ack failed", "handler", l.route.Config.Name, "message_id", d.MessageId, "err", err)
		return
	}
	c.metrics.deliveries.WithLabelValues(l.route.Config.Name, outcome).Inc()
}

// forward publishes a copy of d to queue (through the default exchange) with the
// worker's headers, waits for the broker's confirm, and only then acks d. If the copy is
// not confirmed, d is returned to its queue instead, so the message is never lost.
func (c *Consumer) forward(ctx context.Context, l *lane, d amqp.Delivery, queue string, attempt int, reason, outcome string) {
	name := l.route.Config.Name
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	// RabbitMQ's own dead-letter history grows with every pass through a delay queue;
	// the x-harvest headers say what matters.
	delete(headers, "x-death")
	if _, ok := headers[HeaderRoutingKey]; !ok {
		headers[HeaderRoutingKey] = d.RoutingKey
	}
	headers[HeaderAttempt] = int32(attempt)
	headers[HeaderHandler] = name
	if len(reason) > maxErrorHeader {
		reason = reason[:maxErrorHeader] + "..."
	}
	headers[HeaderError] = reason

	pctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	err := func() error {
		dc, err := l.publish.PublishWithDeferredConfirmWithContext(pctx, "", queue, false, false, amqp.Publishing{
			Headers:         headers,
			ContentType:     d.ContentType,
			ContentEncoding: d.ContentEncoding,
			DeliveryMode:    amqp.Persistent,
			CorrelationId:   d.CorrelationId,
			MessageId:       d.MessageId,
			Timestamp:       d.Timestamp,
			Type:            d.Type,
			AppId:           d.AppId,
			Body:            d.Body,
		})
		if err != nil {
			return fmt.Errorf("publish to %s: %w", queue, err)
		}
		acked, err := dc.WaitContext(pctx)
		if err != nil {
			return fmt.Errorf("confirm from %s: %w", queue, err)
		}
		if !acked {
			return fmt.Errorf("broker refused the copy for %s (nack)", queue)
		}
		return nil
	}()
	if err != nil {
		c.log.Warn("worker: could not forward; returning message to its queue", "handler", name, "message_id", d.MessageId, "err", err)
		if nerr := d.Nack(false, true); nerr == nil {
			c.metrics.deliveries.WithLabelValues(name, OutcomeRequeued).Inc()
		}
		return
	}
	c.ack(l, d, outcome)
}

// attemptOf reads x-harvest-attempt; a message without it is on its first attempt.
func attemptOf(h amqp.Table) int {
	var n int64
	switch v := h[HeaderAttempt].(type) {
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case int:
		n = int64(v)
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case float64:
		n = int64(v)
	case string:
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	return int(max(1, min(n, 1<<30)))
}
