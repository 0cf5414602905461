package proxy

// The write core: what every front (REST, gRPC, WebChannel) does around a write, so
// that a write is treated the same whatever wire it came on. A front classifies the
// write (classify.Classify or classify.FromWrites), then
//
//	w, refusal := p.beginWrite(ctx, &req, caller, oldReader)
//	if refusal != nil { answer the refusal; forward nothing }
//	forward the write upstream, then exactly one of
//	  w.succeeded(answer)  // 2xx / OK: invalidated, events kept; then answer the client
//	  w.failed()           // 4xx / a status meaning nothing was applied
//	  w.unknown()          // no answer, 5xx, UNAVAILABLE, DEADLINE_EXCEEDED, ...
//
// beginWrite does admission (a write whose events could not be kept is refused before
// the upstream sees it), and reads the old documents for events.old_value; it bumps
// nothing (a write the upstream refuses must invalidate nothing: cache.AfterWrite
// says why no bump is needed before forwarding). succeeded and unknown bump the
// write's tags once it may have landed; succeeded waits for every replica, and emits the events (confirmed by the broker or fsynced in the outbox)
// before it returns: the client hears of the success only after that.

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/apierror"
	"github.com/harvest-hub/edge/proxy/cache"
)

// Caller is who a request acts as, whatever the front.
type Caller struct {
	// Identity is identityHash of the exact credentials forwarded upstream ("" anonymous).
	Identity string
	// Transaction is the transaction a Commit commits (nil outside one): with
	// events.old_value the old documents are read inside it, consistent with the commit.
	Transaction []byte
}

// OldReader reads the current documents before a write (events.old_value) with the
// caller's credentials, inside transaction when non-empty; a nil map means unknown.
// Each front supplies its own (REST batchGet; gRPC BatchGetDocuments).
//
// The map holds found documents by full name and missing ones as nil entries; a
// name absent from the map is unknown.
type OldReader func(ctx context.Context, names []string, transaction []byte) map[string]*firestorepb.Document

// WriteAnswer is the upstream's successful answer to a write, whatever the wire;
// exactly one field is set.
//
// None set: an answer without a body (a REST DELETE), or one the front could not
// parse (it logs why). The events are then built from the request alone, except a
// BatchWrite's: without its statuses nobody knows which writes landed, and its
// events are counted lost.
type WriteAnswer struct {
	Commit     *firestorepb.CommitResponse     // Commit; also a Write-stream WriteResponse (write_results, commit_time)
	BatchWrite *firestorepb.BatchWriteResponse // BatchWrite
	Document   *firestorepb.Document           // CreateDocument, UpdateDocument (REST create/patch)
}

// Refusal is an answer the proxy gives instead of forwarding a write.
type Refusal struct {
	HTTPStatus int    // e.g. 503
	Status     string // apierror status, e.g. apierror.Unavailable ("UNAVAILABLE")
	Message    string // never echoes client input
}

// pendingWrite is an admitted write between beginWrite and its outcome.
type pendingWrite struct {
	p       *Proxy
	req     *classify.Request
	caller  Caller
	plan    *eventPlan // nil: the write emits no events
	settled atomic.Bool
}

// refusalOutboxFull is the answer to a write whose events the outbox cannot take.
var refusalOutboxFull = Refusal{
	HTTPStatus: http.StatusServiceUnavailable,
	Status:     apierror.Unavailable,
	Message: "the proxy cannot record this write's events: its event outbox is full (the message broker " +
		"has been unreachable for a while); the write was not applied, retry later",
}

// beginWrite admits a classified write (req.Kind == classify.Write; from classify.Classify
// or classify.FromWrites) before it is forwarded. On a Refusal nothing was forwarded and
// nothing changed. Otherwise the returned *pendingWrite must be settled exactly once.
//
// old may be nil (the front cannot read): old values are then unknown.
func (p *Proxy) beginWrite(ctx context.Context, req *classify.Request, c Caller, old OldReader) (*pendingWrite, *Refusal) {
	plan, refusal := p.planEvents(ctx, req, c, old)
	if refusal != nil {
		return nil, refusal
	}
	return &pendingWrite{p: p, req: req, caller: c, plan: plan}, nil
}

// settle reports whether this is the first settlement; a second one is a bug in a
// front, logged and ignored rather than bumping or emitting twice.
func (w *pendingWrite) settle(outcome string) bool {
	if !w.settled.CompareAndSwap(false, true) {
		w.p.log.Error("a write was settled twice; ignoring the second outcome",
			"op", w.req.Op.String(), "outcome", outcome)
		return false
	}
	w.p.m.writes.WithLabelValues(w.req.Op.String(), outcome).Inc()
	return true
}

// needsAnswer reports whether succeeded uses its WriteAnswer (the write emits
// events): a front may skip decoding the upstream's answer when it does not.
func (w *pendingWrite) needsAnswer() bool { return w.plan != nil }

// succeeded: the upstream answered success. It invalidates every replica and emits the
// events (confirmed or fsynced); it returns when the client may be answered.
func (w *pendingWrite) succeeded(ans WriteAnswer) {
	if !w.settle("ok") {
		return
	}
	w.p.afterWrite(w.req)
	if w.plan != nil {
		w.p.emitEvents(w.req, w.caller, w.plan, ans)
	}
}

// failed: the upstream refused the write definitively (HTTP 4xx; a gRPC status that
// means nothing was applied).
func (w *pendingWrite) failed() {
	if !w.settle("failed") {
		return
	}
	if w.plan != nil {
		w.plan.pending.Failed()
	}
}

// unknown: no answer, 5xx, or a gRPC UNAVAILABLE/DEADLINE_EXCEEDED/INTERNAL/UNKNOWN/
// cancellation mid-call: invalidated as if it landed (a needless miss is cheap, a
// stale read is not); its intent stays open and is resolved against the upstream
// once the write must have settled (events.go, resolveIntents): events only if it
// landed.
func (w *pendingWrite) unknown() {
	if !w.settle("unknown") {
		return
	}
	w.p.afterWrite(w.req)
	if w.plan != nil {
		w.plan.pending.Unknown() // resolved against the upstream once it must have settled
	}
}

// afterWrite is the write's bump, once it may have landed. Its failure (Redis down, a replica slow to
// acknowledge) is logged; the cache package replays bumps Redis missed once it is back.
func (p *Proxy) afterWrite(req *classify.Request) {
	if err := p.tiers.AfterWrite(context.Background(), req.Tags); err != nil {
		if errors.Is(err, cache.ErrAckTimeout) {
			p.log.Warn("a replica did not acknowledge an invalidation in time", "op", req.Op.String())
			return
		}
		p.log.Warn("invalidation after write incomplete", "op", req.Op.String(), "err", err)
	}
}
