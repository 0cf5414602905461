// Package emitter turns successful Firestore writes into CloudEvents on RabbitMQ and
// never loses one: an event is either confirmed by the broker or fsynced in the disk
// outbox before Emit returns nil. It ties together event (building), publisher
// (AMQP with confirms and reconnects) and outbox (the disk queue).
//
// Promises:
//   - Emit returns nil only when every event it was given is confirmed by the broker
//     or durably in the outbox. It tries the broker first with a short deadline
//     (PublishTimeout, 2 s; not at all while disconnected), then the outbox. The
//     caller's context cancellation never skips the outbox: the write has happened.
//   - Per-document order: events of one document reach the broker in the order of the
//     Emit calls that carried them. Concurrent Emits touching the same document are
//     serialised (in the order they entered Emit); while the outbox holds unconfirmed
//     events, new events join the outbox behind them instead of overtaking them.
//   - A drainer replays the outbox in order while the broker is up and advances the
//     outbox cursor only after confirms. Delivery is at least once: a retried batch
//     may repeat events, which consumers drop by id.
//   - Admit says, before a write is forwarded, whether its events could be kept:
//     ErrOutboxFull once the outbox reached OutboxMaxBytes.
//   - No AMQP URL: every event goes to the outbox and stays there for a later process
//     with a broker.
//   - A record that passes its checksum but does not decode is quarantined (kept in
//     quarantine/ beside the outbox, counted, logged at error level), never retried
//     forever nor dropped silently.
//   - Close waits for Emits in flight, stops the drainer after its current batch,
//     drains what it can while the broker is connected (CloseDrainTimeout) and syncs
//     the outbox; whatever was not confirmed is published after the next start.
//
// Concurrency: all methods are safe for concurrent use; Emit is meant to be called
// from many request goroutines at once, which is what lets confirms batch.
package emitter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/emitter/intent"
	"github.com/harvest-hub/edge/emitter/outbox"
	"github.com/harvest-hub/edge/emitter/publisher"
	"github.com/harvest-hub/edge/rules"
)

// ErrOutboxFull: the outbox reached its cap; the proxy answers 503 without forwarding.
var ErrOutboxFull = outbox.ErrFull

// ErrClosed: the Emitter was closed.
var ErrClosed = errors.New("emitter: closed")

const (
	defaultExchange  = "firestore.events"
	defaultOutboxDir = "./data/outbox"
	// PublishTimeout is how long Emit waits for the broker before using the outbox.
	PublishTimeout = 2 * time.Second
	// CloseDrainTimeout bounds Close's final drain of the outbox.
	CloseDrainTimeout = 5 * time.Second
	drainBatch        = 512
	drainBatchSize    = 4 << 20
)

// Emitter is the proxy's handle on event emission.
type Emitter struct {
	log     *slog.Logger
	pub     *publisher.Publisher // nil without an AMQP URL
	box     *outbox.Outbox
	order   docOrder
	metrics *metrics
	in      intents

	dir               string // the outbox directory
	publishTimeout    time.Duration
	drainTimeout      time.Duration
	closeDrainTimeout time.Duration

	wake chan struct{} // nudges the drainer: outbox appended or broker connected

	closeMu sync.RWMutex // Emit holds it shared; Close exclusively
	closed  bool
	stop    chan struct{}
	drained sync.WaitGroup
}

// New opens the outbox in cfg.OutboxDir, starts connecting to cfg.AMQPURL (if set)
// and starts the drainer. Metrics are registered with reg (nil: not registered).
func New(cfg rules.Events, log *slog.Logger, reg prometheus.Registerer) (*Emitter, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Exchange == "" {
		cfg.Exchange = defaultExchange
	}
	if cfg.OutboxDir == "" {
		cfg.OutboxDir = defaultOutboxDir
	}
	box, err := outbox.Open(cfg.OutboxDir, cfg.OutboxMaxBytes, outbox.Options{})
	if err != nil {
		return nil, fmt.Errorf("emitter: %w", err)
	}
	journal, open, err := intent.OpenJournal(filepath.Join(cfg.OutboxDir, "intents"))
	if err != nil {
		box.Close()
		return nil, fmt.Errorf("emitter: %w", err)
	}
	e := &Emitter{
		log:               log.With("component", "emitter"),
		box:               box,
		order:             docOrder{tails: map[string]*turn{}},
		dir:               cfg.OutboxDir,
		publishTimeout:    PublishTimeout,
		drainTimeout:      10 * time.Second,
		closeDrainTimeout: CloseDrainTimeout,
		wake:              make(chan struct{}, 1),
		stop:              make(chan struct{}),
		in: intents{
			journal:   journal,
			freeSpace: statfsFree(cfg.OutboxDir),
			open:      map[uint64]*openIntent{},
		},
	}
	for _, o := range open { // left by a process that died: due at once
		e.in.open[o.Intent.ID] = &openIntent{in: o.Intent, landed: o.Landed}
	}
	if cfg.AMQPURL != "" {
		e.pub = publisher.New(publisher.Config{
			URL:       cfg.AMQPURL,
			Exchange:  cfg.Exchange,
			OnConnect: e.nudge,
		}, e.log)
	}
	e.metrics = newMetrics(e)
	if reg != nil {
		if err := e.metrics.register(reg); err != nil {
			e.Close()
			return nil, fmt.Errorf("emitter: register metrics: %w", err)
		}
	}
	if p := box.Pending(); p > 0 {
		e.log.Info("outbox has pending events from before", "events", p, "dir", cfg.OutboxDir)
	}
	if len(open) > 0 {
		e.log.Warn("write intents left open by a previous process: they are resolved against the upstream",
			"intents", len(open), "dir", cfg.OutboxDir)
	}
	e.drained.Add(1)
	go e.drain()
	return e, nil
}

// Admit reports whether a write's events could be kept: ErrOutboxFull when the outbox
// is at its cap (the broker may be fine, but nothing may overtake what is queued).
// Each refusal is counted in harvest_events_refused_writes_total.
func (e *Emitter) Admit() error {
	if e.box.Full() {
		e.metrics.refused.Inc()
		return ErrOutboxFull
	}
	return nil
}

// Connected reports whether the broker connection is up (false without a URL).
func (e *Emitter) Connected() bool { return e.pub != nil && e.pub.Connected() }

// WaitConnected returns once the broker connection is up, or with ctx's error
// (publisher.ErrClosed once closed). Without an AMQP URL it never connects: it waits for ctx.
func (e *Emitter) WaitConnected(ctx context.Context) error {
	if e.pub == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	return e.pub.WaitConnected(ctx)
}

// Lost counts n events of a successful write that could not even be built (the
// caller could not make sense of the upstream's answer) in
// harvest_events_lost_total, beside the events Emit itself failed to keep. The
// caller logs the reason at error level.
func (e *Emitter) Lost(n int) { e.metrics.lost.Add(float64(n)) }

// Pending is the number of events in the outbox not yet confirmed.
func (e *Emitter) Pending() uint64 { return e.box.Pending() }

// Emit delivers evs: confirmed by the broker or fsynced in the outbox before it
// returns nil. A non-nil error means some events may be lost (the disk failed, or
// the Emitter was closed); they are counted in harvest_events_lost_total and the
// caller should log loudly: the write itself has already happened.
func (e *Emitter) Emit(ctx context.Context, evs []event.Event) error {
	if len(evs) == 0 {
		return nil
	}
	err := e.emit(ctx, evs)
	if err != nil {
		e.metrics.lost.Add(float64(len(evs)))
	}
	return err
}

func (e *Emitter) emit(ctx context.Context, evs []event.Event) error {
	e.closeMu.RLock()
	defer e.closeMu.RUnlock()
	if e.closed {
		return ErrClosed
	}
	release := e.order.acquire(evs)
	defer release()

	if e.pub != nil && e.box.Pending() == 0 && e.pub.Connected() {
		// The write already happened: a cancelled request must not cancel its events.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.publishTimeout)
		start := time.Now()
		n, err := e.pub.Publish(pctx, evs)
		cancel()
		e.metrics.published.Add(float64(len(evs)))
		e.metrics.confirmed.Add(float64(n))
		if err == nil {
			e.metrics.latency.Observe(time.Since(start).Seconds())
			return nil
		}
		if errors.Is(err, publisher.ErrNacked) {
			e.metrics.nacked.Inc()
		}
		e.log.Warn("publish failed, using the outbox", "err", err, "confirmed", n, "events", len(evs))
		// Everything from the first unconfirmed event on goes to the outbox, even if
		// some later ones were confirmed: duplicates are allowed, reordering is not.
		evs = evs[n:]
	}
	if err := e.append(evs); err != nil {
		return err
	}
	return nil
}

func (e *Emitter) append(evs []event.Event) error {
	recs := make([][]byte, len(evs))
	for i := range evs {
		recs[i] = encode(evs[i])
	}
	if err := e.box.Append(recs); err != nil {
		return fmt.Errorf("emitter: outbox append of %d events: %w", len(evs), err)
	}
	e.metrics.outboxed.Add(float64(len(evs)))
	e.nudge()
	return nil
}

func (e *Emitter) nudge() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// drain replays the outbox in order whenever the broker is connected.
func (e *Emitter) drain() {
	defer e.drained.Done()
	if e.pub == nil {
		<-e.stop // nowhere to drain to: events wait for a process with a broker
		return
	}
	retry := 100 * time.Millisecond
	for {
		if e.box.Pending() == 0 || !e.pub.Connected() {
			select {
			case <-e.stop:
				return
			case <-e.wake:
			case <-time.After(time.Second): // belt and braces against a missed nudge
			}
			continue
		}
		select {
		case <-e.stop:
			return
		default:
		}
		if err := e.drainBatch(); err != nil {
			e.log.Warn("outbox drain failed, will retry", "err", err, "retry_in", retry)
			e.box.Rewind()
			select {
			case <-e.stop:
				return
			case <-time.After(retry):
			}
			retry = min(retry*2, 5*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
	}
}

func (e *Emitter) drainBatch() error {
	recs, err := e.box.Next(drainBatch, drainBatchSize)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		// Caught up with what is written; unconfirmed records were read earlier and
		// failed, so start over from the cursor.
		e.box.Rewind()
		return nil
	}
	evs := make([]event.Event, 0, len(recs))
	for i, r := range recs {
		ev, err := decode(r.Data)
		if err != nil {
			if i == 0 {
				return e.quarantine(r, err)
			}
			// Publish what precedes it; the next batch starts with it.
			recs = recs[:i]
			break
		}
		evs = append(evs, ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.drainTimeout)
	defer cancel()
	start := time.Now()
	n, pubErr := e.pub.Publish(ctx, evs)
	e.metrics.published.Add(float64(len(evs)))
	e.metrics.confirmed.Add(float64(n))
	if n > 0 {
		if err := e.box.Confirm(recs[n-1].Seq + 1); err != nil {
			return err
		}
		e.metrics.drained.Add(float64(n))
	}
	if pubErr != nil {
		if errors.Is(pubErr, publisher.ErrNacked) {
			e.metrics.nacked.Inc()
		}
		return pubErr
	}
	e.metrics.latency.Observe(time.Since(start).Seconds())
	return nil
}

// quarantine sets aside a record that passed its CRC but does not decode (written by
// another format version, or damaged before its checksum was taken): retrying it
// would stop the outbox forever, skipping it silently would lose it. Its bytes go to
// quarantine/<seq>.rec in the outbox directory (fsynced) for an operator, it is
// counted in harvest_events_quarantined_total and logged at error level, and the
// outbox moves past it.
func (e *Emitter) quarantine(r outbox.Record, why error) error {
	qdir := filepath.Join(e.dir, "quarantine")
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return fmt.Errorf("outbox record %d does not decode (%v) and cannot be quarantined: %w", r.Seq, why, err)
	}
	path := filepath.Join(qdir, fmt.Sprintf("%020d.rec", r.Seq))
	if err := writeFileSync(path, r.Data); err != nil {
		return fmt.Errorf("outbox record %d does not decode (%v) and cannot be quarantined: %w", r.Seq, why, err)
	}
	if err := e.box.Confirm(r.Seq + 1); err != nil {
		return err
	}
	e.metrics.quarantined.Inc()
	e.log.Error("an outbox record does not decode: quarantined, the outbox moves past it",
		"seq", r.Seq, "bytes", len(r.Data), "file", path, "err", why)
	return nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close waits for Emits in flight and stops the drainer; then, while the broker is
// connected, it drains the outbox for up to CloseDrainTimeout (5 s) so a clean
// shutdown leaves nothing behind it could have delivered; then it stops the
// publisher and closes the outbox (synced). Whatever is still unconfirmed stays on
// disk for the next start.
func (e *Emitter) Close() error {
	e.closeMu.Lock()
	if e.closed {
		e.closeMu.Unlock()
		return nil
	}
	e.closed = true
	e.closeMu.Unlock()
	close(e.stop)
	e.drained.Wait()
	e.finalDrain()
	if e.pub != nil {
		_ = e.pub.Close()
	}
	err := e.box.Close()
	if jerr := e.in.journal.Close(); err == nil {
		err = jerr
	}
	if err != nil {
		return fmt.Errorf("emitter: close: %w", err)
	}
	return nil
}

// finalDrain publishes what the outbox holds while the broker is connected, for up
// to closeDrainTimeout.
func (e *Emitter) finalDrain() {
	if e.pub == nil || e.box.Pending() == 0 || !e.pub.Connected() {
		return
	}
	deadline := time.Now().Add(e.closeDrainTimeout)
	e.box.Rewind()
	for e.box.Pending() > 0 && e.pub.Connected() && time.Now().Before(deadline) {
		if err := e.drainBatch(); err != nil {
			e.log.Warn("final outbox drain stopped; the rest is published after the next start",
				"err", err, "pending", e.box.Pending())
			return
		}
	}
	if p := e.box.Pending(); p > 0 {
		e.log.Info("outbox not empty at close; published after the next start", "pending", p)
	}
}

// docOrder serialises Emits per document: each Emit waits for the previous Emit of
// any of its documents to finish before it publishes or appends.
type docOrder struct {
	mu    sync.Mutex
	tails map[string]*turn // per document: its latest Emit
}

// turn is one Emit's place in line. done is made only when a later Emit has to wait,
// so the uncontended path allocates no channel.
type turn struct{ done chan struct{} }

func (o *docOrder) acquire(evs []event.Event) (release func()) {
	mine := &turn{}
	var waits []chan struct{}
	o.mu.Lock()
	for i := range evs {
		d := evs[i].Document
		if prev, ok := o.tails[d]; ok && prev != mine {
			if prev.done == nil {
				prev.done = make(chan struct{})
			}
			waits = append(waits, prev.done)
		}
		o.tails[d] = mine
	}
	o.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	return func() {
		o.mu.Lock()
		for i := range evs {
			if o.tails[evs[i].Document] == mine {
				delete(o.tails, evs[i].Document)
			}
		}
		if mine.done != nil {
			close(mine.done)
		}
		o.mu.Unlock()
	}
}
