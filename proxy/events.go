package proxy

// Events: every successful write through the proxy to a path whose rule enables events
// becomes its CloudEvents (ARCHITECTURE.md, "Events: the contract"). The write path
// (write.go) calls, in this order:
//
//  1. planEvents, before anything else: does any written document's rule emit events?
//     If so and the outbox is full, the write is refused with 503 UNAVAILABLE and the
//     upstream never sees it (its events could not be kept). With events.old_value the
//     current documents are read here, before the write is forwarded.
//  2. the write is forwarded; on a 2xx answer the tags are invalidated (AfterWrite);
//  3. emitEvents parses the answer, builds the events and Emits them: each confirmed by
//     the broker or fsynced in the outbox before the client hears of the success.
//
// A write whose outcome is unknown (no answer, a 5xx) or that failed emits nothing: an
// event says a change happened, and the proxy does not know that it did.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/proxy/apierror"
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

// answerJSON parses the upstream's answers; unknown fields (a newer API) are not errors.
var answerJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// planEvents returns nil when the write emits no events (no emitter, or no written
// document's rule has events). It answers the client itself, and returns ok=false,
// when the write must not be forwarded: the outbox is full.
func (p *Proxy) planEvents(ctx *fasthttp.RequestCtx, req *classify.Request) (plan *eventPlan, ok bool) {
	em := p.opts.Emitter
	if em == nil {
		return nil, true
	}
	cfg := p.rules.Current()
	if !emitsEvents(cfg, req) {
		return nil, true
	}
	if err := em.Admit(); err != nil {
		p.m.requestOp(req.Op, resultError)
		p.log.Warn("write refused: the event outbox is full", "op", req.Op.String(), "err", err)
		apierror.Write(ctx, fasthttp.StatusServiceUnavailable, apierror.Unavailable,
			"the proxy cannot record this write's events: its event outbox is full (the message broker "+
				"has been unreachable for a while); the write was not applied, retry later")
		return nil, false
	}
	plan = &eventPlan{em: em, cfg: cfg}
	if cfg.Events.OldValue {
		plan.old = p.readOld(ctx, req)
	}
	return plan, true
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

// emitEvents builds the events of a write the upstream answered with success (body is
// its answer) and emits them; it returns once each is confirmed by the broker or
// fsynced in the outbox.
//
// If the events cannot be kept (the outbox's disk failed) or built (an answer the
// proxy cannot parse), the write has nevertheless happened upstream and the client is
// still answered with its success: refusing it now would make the client retry a write
// that was applied. The loss is logged at error level and counted in
// harvest_events_lost_total, for an operator to act on.
func (p *Proxy) emitEvents(ctx *fasthttp.RequestCtx, req *classify.Request, plan *eventPlan, body []byte) {
	in := event.BuildInput{
		Writes:   req.Writes,
		SeenAt:   time.Now(),
		AuthHash: requestIdentity(ctx),
		Old:      plan.old,
		Allowed:  plan.allowed,
	}
	var perr error
	switch req.Op {
	case classify.PatchDocument, classify.CreateDocument:
		doc := &firestorepb.Document{}
		if perr = answerJSON.Unmarshal(body, doc); perr == nil {
			in.Document = doc
		}
	case classify.Commit:
		cr := &firestorepb.CommitResponse{}
		if perr = answerJSON.Unmarshal(body, cr); perr == nil {
			in.Commit = cr
		}
	case classify.BatchWrite:
		br := &firestorepb.BatchWriteResponse{}
		if perr = answerJSON.Unmarshal(body, br); perr == nil {
			in.BatchWrite = br
		}
	}
	if perr != nil && req.Op == classify.BatchWrite {
		// Without the statuses nobody knows which of its writes succeeded.
		p.log.Error("events of a successful write are LOST: cannot parse the upstream's batchWrite answer",
			"op", req.Op.String(), "documents", len(req.Writes), "err", perr)
		plan.em.Lost(len(req.Writes))
		return
	}
	if perr != nil {
		// Build without the answer: values as written, the time the proxy saw success
		// (a create with a server-assigned id then fails below: its name is unknown).
		p.log.Error("cannot parse the upstream's answer to a successful write; building its events without it",
			"op", req.Op.String(), "err", perr)
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

// readOld reads the documents a write is about to change (events.old_value), with one
// batchGet upstream carrying the caller's own headers, so it sees what the caller may
// see. Inside a transaction it reads in that transaction, consistent with the commit.
// Any failure leaves the old state unknown (nil): the events then say written, not
// created or updated, and carry no oldValue; the write itself goes ahead.
//
// The read and the write are two requests: a concurrent writer between them makes
// oldValue the state a moment before this write, not necessarily the one it replaced.
func (p *Proxy) readOld(ctx *fasthttp.RequestCtx, req *classify.Request) map[string]*firestorepb.Document {
	var names []string
	seen := map[string]bool{}
	for _, w := range req.Writes {
		if w.Name != "" && !seen[w.Name] {
			seen[w.Name] = true
			names = append(names, w.Name)
		}
	}
	if len(names) == 0 {
		return nil // a create with a server-assigned id: nothing was there
	}
	bg := &firestorepb.BatchGetDocumentsRequest{Documents: names}
	if req.Op == classify.Commit && req.Transactional {
		cr := &firestorepb.CommitRequest{}
		if err := answerJSON.Unmarshal(ctx.PostBody(), cr); err == nil && len(cr.GetTransaction()) > 0 {
			bg.ConsistencySelector = &firestorepb.BatchGetDocumentsRequest_Transaction{Transaction: cr.GetTransaction()}
		}
	}
	body, err := protojson.Marshal(bg)
	if err != nil {
		p.log.Warn("old_value: cannot encode batchGet", "err", err)
		return nil
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	p.up.Prepare(ctx, out, true)
	uri := "/v1/" + req.Database + "/documents:batchGet"
	if key := ctx.QueryArgs().Peek("key"); len(key) > 0 { // the Firebase JS SDK's API key
		uri += "?key=" + string(fasthttp.AppendQuotedArg(nil, key))
	}
	out.Header.SetMethod(fasthttp.MethodPost)
	out.SetRequestURI(uri)
	out.URI().DisablePathNormalizing = true
	out.Header.Del("Content-Encoding")
	out.Header.SetContentType("application/json")
	out.SetBody(body)
	if err := p.up.Do(out, resp); err != nil {
		p.log.Warn("old_value: reading the documents before the write failed; old state unknown", "err", err)
		return nil
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		p.log.Warn("old_value: reading the documents before the write failed; old state unknown",
			"status", resp.StatusCode(), "body", string(bytes.TrimSpace(resp.Body())))
		return nil
	}
	old, err := parseBatchGet(resp.Body())
	if err != nil {
		p.log.Warn("old_value: cannot parse batchGet answer; old state unknown", "err", err)
		return nil
	}
	return old
}

// parseBatchGet reads a batchGet answer (a JSON array of BatchGetDocumentsResponse):
// found documents by name, missing ones as nil.
func parseBatchGet(body []byte) (map[string]*firestorepb.Document, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, fmt.Errorf("batchGet answer: %w", err)
	}
	old := make(map[string]*firestorepb.Document, len(items))
	for i, raw := range items {
		r := &firestorepb.BatchGetDocumentsResponse{}
		if err := answerJSON.Unmarshal(raw, r); err != nil {
			return nil, fmt.Errorf("batchGet answer [%d]: %w", i, err)
		}
		switch {
		case r.GetFound() != nil:
			old[r.GetFound().GetName()] = r.GetFound()
		case r.GetMissing() != "":
			old[r.GetMissing()] = nil
		}
	}
	return old, nil
}
