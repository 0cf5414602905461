package emitter

// The transactional half of the outbox: a write's intent is fsynced before the write is
// forwarded (Begin), its events are recorded as landed before they are published and
// the intent is finished once they are kept (Pending.Succeeded). An intent a crash, or
// an unknown outcome, left open is resolved later against the upstream (ResolveOpen)
// by a Resolver the proxy supplies. See package intent.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/emitter/intent"
)

// ErrNoSpace: the outbox's file system has not room for this write's intent and
// events; the proxy answers 503 without forwarding.
var ErrNoSpace = errors.New("emitter: not enough free disk space to keep this write's events")

// Steps of the write path, in order, as passed to a step hook (crash-injection tests).
const (
	StepBegin    = "begin"           // admitted, before the intent is recorded
	StepIntent   = "intent-recorded" // intent fsynced, before the write is forwarded
	StepAnswered = "answered"        // the upstream confirmed the write, nothing recorded yet
	StepLanded   = "landed-recorded" // events recorded as landed, not yet published or outboxed
	StepKept     = "events-kept"     // events confirmed or in the outbox, intent not finished
	StepDone     = "done"            // intent finished, the client not yet answered
)

// spaceReserve is free space Begin keeps beyond a write's own estimate, so that the
// events of writes already admitted (and the journal's bookkeeping) still fit.
const spaceReserve = 64 << 10

// eventsPerIntentByte estimates a write's events and journal records from its intent's
// size: CloudEvents JSON of the same documents is larger than their protobuf, and a
// landed record repeats them.
const eventsPerIntentByte = 8

// Resolver decides an open intent against the upstream: the events of what landed
// (none if nothing did), or an error when it cannot tell yet (the upstream is
// unreachable): the intent then stays open and is tried again.
type Resolver func(ctx context.Context, in *intent.Intent) ([]event.Event, error)

// Pending is a write whose intent is recorded; settle it exactly once.
type Pending struct {
	e  *Emitter
	in *intent.Intent
}

// openIntent is an intent waiting for ResolveOpen.
type openIntent struct {
	in     *intent.Intent
	landed [][]byte
	since  time.Time // eligible for resolution once it is older than ResolveOpen's minAge
}

type intents struct {
	journal *intent.Journal
	hook    atomic.Pointer[func(step string)]
	// freeSpace reports the bytes available on the outbox's file system (a test seam).
	freeSpace func() (uint64, error)

	resolving sync.Mutex // one ResolveOpen at a time: an intent is resolved once

	mu   sync.Mutex
	open map[uint64]*openIntent
}

func statfsFree(dir string) func() (uint64, error) {
	return func() (uint64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return 0, err
		}
		return st.Bavail * uint64(st.Bsize), nil
	}
}

// SetStepHook installs f, called at each Step* of every write (crash-injection tests
// kill the process there). Set it before the first write.
func (e *Emitter) SetStepHook(f func(step string)) { e.in.hook.Store(&f) }

// SetFreeSpaceFunc replaces how Begin measures free space (tests simulate a nearly
// full disk with it).
func (e *Emitter) SetFreeSpaceFunc(f func() (uint64, error)) { e.in.freeSpace = f }

func (e *Emitter) step(s string) {
	if f := e.in.hook.Load(); f != nil {
		(*f)(s)
	}
}

// Begin admits a write and records its intent durably: ErrOutboxFull at the outbox's
// cap, ErrNoSpace when the file system has not room for its events, or the disk's
// own error; on any error nothing was recorded and the write must not be forwarded.
func (e *Emitter) Begin(in *intent.Intent) (*Pending, error) {
	e.step(StepBegin)
	if err := e.Admit(); err != nil {
		return nil, err
	}
	if in.At.IsZero() {
		in.At = time.Now()
	}
	need := uint64(intent.Size(in))*eventsPerIntentByte + spaceReserve
	free, err := e.in.freeSpace()
	if err != nil {
		e.metrics.refused.Inc()
		return nil, fmt.Errorf("emitter: measuring free space: %w", err)
	}
	if free < need {
		e.metrics.refused.Inc()
		e.log.Warn("write refused: the outbox's disk is nearly full", "free_bytes", free, "needed_bytes", need)
		return nil, ErrNoSpace
	}
	e.closeMu.RLock()
	defer e.closeMu.RUnlock()
	if e.closed {
		return nil, ErrClosed
	}
	if err := e.in.journal.Begin(in); err != nil {
		e.metrics.refused.Inc()
		e.log.Warn("write refused: its intent could not be recorded", "err", err)
		return nil, err
	}
	e.step(StepIntent)
	return &Pending{e: e, in: in}, nil
}

// Succeeded keeps the events of a write the upstream confirmed: recorded as landed,
// then Emitted (confirmed or in the outbox), then the intent is finished. It returns
// once the client may be answered. If the events cannot be kept now (the disk failed),
// the intent stays open with its landed events and ResolveOpen retries them (or the
// next process does): the error says they are not kept yet.
func (p *Pending) Succeeded(evs []event.Event) error {
	e := p.e
	e.step(StepAnswered)
	recs := make([][]byte, len(evs))
	for i := range evs {
		recs[i] = encode(evs[i])
	}
	landedErr := e.in.journal.Landed(p.in.ID, recs)
	e.step(StepLanded)
	if err := e.Emit(context.Background(), evs); err != nil {
		if landedErr != nil {
			return errors.Join(landedErr, err)
		}
		// Retried by ResolveOpen from the landed record (and by the next process).
		e.in.mu.Lock()
		e.in.open[p.in.ID] = &openIntent{in: p.in, landed: recs, since: time.Now()}
		e.in.mu.Unlock()
		return fmt.Errorf("%w (kept as landed in the intent journal: retried later)", err)
	}
	e.step(StepKept)
	if err := e.in.journal.Done(p.in.ID); err != nil {
		e.log.Warn("intent journal: finishing an intent failed; its events may be published twice (same ids)", "err", err)
	}
	e.step(StepDone)
	return nil
}

// Failed finishes the intent of a write the upstream refused: no events.
func (p *Pending) Failed() {
	if err := p.e.in.journal.Done(p.in.ID); err != nil {
		p.e.log.Warn("intent journal: finishing a failed write's intent", "err", err)
	}
}

// Unknown leaves the intent open: ResolveOpen decides it once it is older than its
// minAge (the write may still be applied upstream after the proxy stopped waiting).
func (p *Pending) Unknown() {
	p.e.in.mu.Lock()
	p.e.in.open[p.in.ID] = &openIntent{in: p.in, since: time.Now()}
	p.e.in.mu.Unlock()
}

// OpenIntents is the number of intents waiting for ResolveOpen.
func (e *Emitter) OpenIntents() int {
	e.in.mu.Lock()
	defer e.in.mu.Unlock()
	return len(e.in.open)
}

// ResolveOpen settles the open intents older than minAge, oldest first: those
// recorded as landed are emitted from their recorded events (the same ids as any
// copy already published); the others are decided by r. It returns how many remain
// open (r failed, or they are too young).
func (e *Emitter) ResolveOpen(ctx context.Context, r Resolver, minAge time.Duration) (left int) {
	e.in.resolving.Lock()
	defer e.in.resolving.Unlock()
	e.in.mu.Lock()
	var due []*openIntent
	for _, o := range e.in.open {
		if time.Since(o.since) >= minAge {
			due = append(due, o)
		}
	}
	left = len(e.in.open) - len(due)
	e.in.mu.Unlock()
	slices.SortFunc(due, func(a, b *openIntent) int { return cmp.Compare(a.in.ID, b.in.ID) })
	for _, o := range due {
		if ctx.Err() != nil {
			left++
			continue
		}
		if err := e.resolveOne(ctx, r, o); err != nil {
			e.log.Warn("an open write intent could not be resolved yet; will retry",
				"intent", o.in.ID, "op", o.in.Op.String(), "err", err)
			left++
			continue
		}
		e.in.mu.Lock()
		delete(e.in.open, o.in.ID)
		e.in.mu.Unlock()
	}
	return left
}

func (e *Emitter) resolveOne(ctx context.Context, r Resolver, o *openIntent) error {
	var evs []event.Event
	if o.landed != nil {
		for _, rec := range o.landed {
			ev, err := decode(rec)
			if err != nil {
				return fmt.Errorf("landed event does not decode: %w", err)
			}
			evs = append(evs, ev)
		}
	} else {
		var err error
		if evs, err = r(ctx, o.in); err != nil {
			return err
		}
	}
	if err := e.Emit(ctx, evs); err != nil {
		return err
	}
	if len(evs) > 0 {
		e.metrics.recovered.Add(float64(len(evs)))
		e.log.Info("events of a write whose outcome was open are kept", "intent", o.in.ID,
			"op", o.in.Op.String(), "events", len(evs), "from_landed_record", o.landed != nil)
	}
	return e.in.journal.Done(o.in.ID)
}
