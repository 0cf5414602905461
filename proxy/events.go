package proxy

// Events: every successful write through the proxy to a path whose rule enables events
// becomes its CloudEvents (docs/ARCHITECTURE.md, "Events: the contract"). The write core
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
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/valyala/fasthttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/emitter/intent"
	"github.com/harvest-hub/edge/proxy/apierror"
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
	// pending is the write's intent, recorded (fsynced) before it is forwarded.
	pending *emitter.Pending
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
	if err := em.Admit(); err != nil { // before reading old values: no upstream work for a refusal
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
	pending, err := em.Begin(&intent.Intent{
		Op: req.Op, Database: req.Database, AuthHash: c.Identity, Writes: req.Writes, Old: plan.old,
	})
	if err != nil {
		r := refusalOutboxFull
		if !errors.Is(err, emitter.ErrOutboxFull) {
			p.log.Warn("write refused: its events could not be recorded", "op", req.Op.String(), "err", err)
			r = refusalNoSpace
		}
		return nil, &r
	}
	plan.pending = pending
	return plan, nil
}

// refusalNoSpace is the answer to a write whose intent or events the outbox's disk
// cannot take (nearly full, or failing).
var refusalNoSpace = Refusal{
	HTTPStatus: http.StatusServiceUnavailable,
	Status:     apierror.Unavailable,
	Message: "the proxy cannot record this write's events: the disk of its event outbox is full or failing; " +
		"the write was not applied, retry later",
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
		// Without the statuses nobody knows which of its writes succeeded: the
		// resolver reads the documents instead.
		p.log.Error("no usable batchWrite answer: its events are resolved against the upstream later",
			"op", req.Op.String(), "documents", len(req.Writes))
		plan.pending.Unknown()
		return
	}
	evs, err := event.Build(in)
	if err != nil {
		p.log.Error("the events of a successful write could not be built from its answer: "+
			"they are resolved against the upstream later", "op", req.Op.String(), "documents", len(req.Writes), "err", err)
		plan.pending.Unknown()
		return
	}
	if err := plan.pending.Succeeded(evs); err != nil {
		// Emit counted them in harvest_events_lost_total; the intent stays open.
		ids := make([]string, len(evs))
		for i := range evs {
			ids[i] = evs[i].ID
		}
		p.log.Error("events of a successful write were neither confirmed by the broker nor kept in the outbox",
			"op", req.Op.String(), "events", len(evs), "ids", ids, "err", err)
	}
}

// intentResolveAfter is how long a write whose outcome was unknown stays unresolved:
// past the upstream's timeout, so that a write still in flight upstream has landed
// (or never will) when its documents are read.
func intentResolveAfter(cfg *rules.Config) time.Duration { return cfg.Upstream.Timeout + 5*time.Second }

// resolveIntents settles the intents a previous process left open (a crash between
// recording an intent and finishing it) before it returns, within startBound; then,
// in the background until ctx ends (the returned channel closes), every resolveEvery
// those of writes whose outcome was unknown.
func (p *Proxy) resolveIntents(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	em := p.opts.Emitter
	if em == nil {
		close(done)
		return done
	}
	const startBound, resolveEvery = 10 * time.Second, 5 * time.Second
	sctx, cancel := context.WithTimeout(ctx, startBound)
	if left := em.ResolveOpen(sctx, p.resolveIntent, intentResolveAfter(p.rules.Current())); left > 0 {
		p.log.Warn("write intents still open; resolution retried in the background", "intents", left)
	}
	cancel()
	go func() {
		defer close(done)
		t := time.NewTicker(resolveEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if em.OpenIntents() > 0 {
					em.ResolveOpen(ctx, p.resolveIntent, intentResolveAfter(p.rules.Current()))
				}
			}
		}
	}()
	return done
}

// resolveIntent is the proxy's emitter.Resolver: it reads the intent's documents with
// the proxy's own credentials and applies intent.Resolve; the events of what landed
// are built under the rules in force now.
func (p *Proxy) resolveIntent(ctx context.Context, in *intent.Intent) ([]event.Event, error) {
	names := make([]string, 0, len(in.Writes))
	for _, w := range in.Writes {
		if w.Name == "" {
			// A create with a server-assigned id: nobody knows which document to read.
			p.log.Error("events of a write whose outcome is unknown are LOST: a create with a server-assigned id "+
				"cannot be resolved", "op", in.Op.String(), "documents", len(in.Writes))
			p.opts.Emitter.Lost(len(in.Writes))
			return nil, nil
		}
		names = append(names, w.Name)
	}
	docs, err := p.readOwn(ctx, in.Database, names)
	if err != nil {
		return nil, err
	}
	out := intent.Resolve(in, docs)
	if !out.Landed {
		p.log.Info("a write whose outcome was open did not land: no events", "intent", in.ID, "op", in.Op.String())
		return nil, nil
	}
	bi := out.BuildInput(in)
	cfg := p.rules.Current()
	bi.Allowed = func(name string) rules.EventTypes {
		if r := cfg.ForDocument(relativeName(name)); r != nil {
			return r.Events
		}
		return 0
	}
	evs, err := event.Build(bi)
	if err != nil { // it would fail again: give up rather than retry forever
		p.log.Error("events of a write that landed are LOST: they could not be built",
			"intent", in.ID, "op", in.Op.String(), "documents", len(in.Writes), "err", err)
		p.opts.Emitter.Lost(len(in.Writes))
		return nil, nil
	}
	return evs, nil
}

// readOwn reads documents with the proxy's own credentials (ownAuthorization): one
// batchGet; missing documents are nil entries.
func (p *Proxy) readOwn(ctx context.Context, database string, names []string) (map[string]*firestorepb.Document, error) {
	auth, err := p.ownAuthorization(ctx)
	if err != nil {
		return nil, err
	}
	body, err := protojson.Marshal(&firestorepb.BatchGetDocumentsRequest{Documents: names})
	if err != nil {
		return nil, err
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	out.Header.SetMethod(fasthttp.MethodPost)
	out.SetRequestURI("/v1/" + database + "/documents:batchGet")
	out.URI().DisablePathNormalizing = true
	out.SetHost(p.up.Host())
	out.Header.SetContentType("application/json")
	if auth != "" {
		out.Header.Set(fasthttp.HeaderAuthorization, auth)
	}
	out.SetBody(body)
	if err := p.up.Do(out, resp); err != nil {
		return nil, fmt.Errorf("reading the documents of an open intent: %w", err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("reading the documents of an open intent: upstream answered %d", resp.StatusCode())
	}
	return parseBatchGet(resp.Body())
}

// ownCredentials are the proxy's own, made on first use.
type ownCredentials struct {
	once   sync.Once
	tokens oauth2.TokenSource
	err    error
}

// ownAuthorization is the Authorization header of the proxy's own reads (resolving
// open intents). An http:// upstream is the Firestore emulator, whose admin
// credential is "Bearer owner"; production Firestore gets a token of the Google
// application default credentials (the sidecar's service account), scope datastore.
func (p *Proxy) ownAuthorization(ctx context.Context) (string, error) {
	if strings.HasPrefix(p.opts.Upstream, "http://") {
		return "Bearer owner", nil
	}
	o := &p.own
	o.once.Do(func() {
		o.tokens, o.err = google.DefaultTokenSource(context.WithoutCancel(ctx),
			"https://www.googleapis.com/auth/datastore")
	})
	if o.err != nil {
		return "", fmt.Errorf("the proxy's own credentials (application default credentials): %w", o.err)
	}
	tok, err := o.tokens.Token()
	if err != nil {
		return "", fmt.Errorf("the proxy's own credentials: %w", err)
	}
	return "Bearer " + tok.AccessToken, nil
}
