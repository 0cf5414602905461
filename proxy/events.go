package proxy

// Events: every successful write through the proxy to a path whose rule enables events
// becomes its CloudEvents (ARCHITECTURE.md, "Events: the contract"). The write core
// (writecore.go) calls, in this order:
//
//  1. planEvents, before anything else: does any written document's rule emit events?
//     If so and the outbox is full, the write is refused with 503 UNAVAILABLE and the
//     upstream never sees it (its events could not be kept). With events.old_value the
//     current documents are read here (the front's OldReader), before the write is
//     forwarded.
//  2. the write is forwarded; on success the tags are invalidated (AfterWrite);
//  3. emitEvents builds the events from the answer and Emits them: each confirmed by
//     the broker or fsynced in the outbox before the client hears of the success.
//
// A write whose outcome is unknown (no answer, a 5xx) or that failed emits nothing: an
// event says a change happened, and the proxy does not know that it did.

import (
	"context"
	"strings"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/proxy/classify"
	"github.com/harvest-hub/edge/rules"
)

// eventPlan is what a write's events need, decided before it is forwarded.
type eventPlan struct {
	em *emitter.Emitter
	// cfg is the rules in force when the write arrived: the same snapshot decides
	// admission and which event types each document's rule keeps.
	cfg *rules.Config
	// old holds the documents as they were before the write (events.old_value), by full
	// name, nil for a document that did not exist; nil map: unknown.
	old map[string]*firestorepb.Document
}

// planEvents returns nil when the write emits no events (no emitter, or no written
// document's rule has events), and a Refusal when the write must not be forwarded:
// the outbox is full.
func (p *Proxy) planEvents(ctx context.Context, req *classify.Request, c Caller, old OldReader) (*eventPlan, *Refusal) {
	em := p.opts.Emitter
	if em == nil {
		return nil, nil
	}
	cfg := p.rules.Current()
	if !emitsEvents(cfg, req) {
		return nil, nil
	}
	if err := em.Admit(); err != nil {
		p.log.Warn("write refused: the event outbox is full", "op", req.Op.String(), "err", err)
		r := refusalOutboxFull
		return nil, &r
	}
	plan := &eventPlan{em: em, cfg: cfg}
	if cfg.Events.OldValue && old != nil {
		if names := writtenNames(req); len(names) > 0 {
			plan.old = old(ctx, names, c.Transaction)
		}
	}
	return plan, nil
}

// writtenNames are the documents a write names, each once; a create with a
// server-assigned id names none (nothing was there).
func writtenNames(req *classify.Request) []string {
	var names []string
	seen := map[string]bool{}
	for _, w := range req.Writes {
		if w.Name != "" && !seen[w.Name] {
			seen[w.Name] = true
			names = append(names, w.Name)
		}
	}
	return names
}

// emitsEvents reports whether any written document's rule emits events. A create with
// a server-assigned id names only its collection: the rule covering the collection's
// documents decides.
func emitsEvents(cfg *rules.Config, req *classify.Request) bool {
	for i, w := range req.Writes {
		var r *rules.Rule
		switch {
		case w.Name != "":
			r = cfg.ForDocument(relativeName(w.Name))
		case i < len(req.Targets):
			r = cfg.ForCollection(req.Targets[i].Path)
		}
		if r != nil && r.Events != 0 {
			return true
		}
	}
	return false
}

// relativeName is a full document name without "projects/p/databases/d/documents/".
func relativeName(name string) string {
	if _, rel, ok := strings.Cut(name, "/documents/"); ok {
		return rel
	}
	return name
}

// allowed is event.BuildInput.Allowed: the event types the document's rule emits.
func (pl *eventPlan) allowed(name string) rules.EventTypes {
	if r := pl.cfg.ForDocument(relativeName(name)); r != nil {
		return r.Events
	}
	return 0
}

// emitEvents builds the events of a write the upstream answered with success and
// emits them; it returns once each is confirmed by the broker or fsynced in the outbox.
//
// If the events cannot be kept (the outbox's disk failed) or built (an answer the
// proxy cannot use), the write has nevertheless happened upstream and the client is
// still answered with its success: refusing it now would make the client retry a write
// that was applied. The loss is logged at error level and counted in
// harvest_events_lost_total, for an operator to act on.
func (p *Proxy) emitEvents(req *classify.Request, c Caller, plan *eventPlan, ans WriteAnswer) {
	in := event.BuildInput{
		Writes:     req.Writes,
		SeenAt:     time.Now(),
		AuthHash:   c.Identity,
		Old:        plan.old,
		Allowed:    plan.allowed,
		Commit:     ans.Commit,
		BatchWrite: ans.BatchWrite,
		Document:   ans.Document,
	}
	if req.Op == classify.BatchWrite && ans.BatchWrite == nil {
		// Without the statuses nobody knows which of its writes succeeded.
		p.log.Error("events of a successful write are LOST: no usable batchWrite answer",
			"op", req.Op.String(), "documents", len(req.Writes))
		plan.em.Lost(len(req.Writes))
		return
	}
	evs, err := event.Build(in)
	if err != nil {
		p.log.Error("events of a successful write are LOST: they could not be built",
			"op", req.Op.String(), "documents", len(req.Writes), "err", err)
		plan.em.Lost(len(req.Writes))
		return
	}
	// Emit counts its own failures in harvest_events_lost_total.
	if err := plan.em.Emit(context.Background(), evs); err != nil {
		ids := make([]string, len(evs))
		for i := range evs {
			ids[i] = evs[i].ID
		}
		p.log.Error("events of a successful write are LOST: neither confirmed by the broker nor kept in the outbox",
			"op", req.Op.String(), "events", len(evs), "ids", ids, "err", err)
	}
}
