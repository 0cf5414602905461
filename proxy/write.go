package proxy

import (
	"context"
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/proxy/classify"
)

// write forwards a write and invalidates every tag it touches: once before it is
// forwarded (reads that begin from then on are stamped after it) and once after the
// upstream answered, waiting until every replica applied it, before the client hears
// of the success. A write whose outcome is unknown (no answer, or a 5xx) is invalidated
// as if it had landed: a needless miss is cheap, a stale read is not.
//
// Events (events.go): before anything is forwarded, a write whose documents' rules
// emit events is refused with 503 when the outbox is full (the upstream sees nothing),
// and with events.old_value the current documents are read. After a 2xx answer the
// order is: invalidate (AfterWrite), then emit the events (confirmed or fsynced), then
// answer the client.
func (p *Proxy) write(ctx *fasthttp.RequestCtx, req *classify.Request) {
	op := req.Op.String()
	plan, ok := p.planEvents(ctx, req)
	if !ok {
		return // refused, already answered
	}
	bg := context.Background()
	if err := p.tiers.BeforeWrite(bg, req.Tags); err != nil {
		p.log.Warn("invalidation before write incomplete", "op", op, "err", err)
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	p.up.Prepare(ctx, out, true)
	if err := p.up.Do(out, resp); err != nil {
		p.afterWrite(req)
		p.m.writes.WithLabelValues(op, "unknown").Inc()
		p.upstreamFailed(ctx, req.Op, err)
		return
	}
	status := resp.StatusCode()
	switch {
	case status < 300:
		p.afterWrite(req)
		if plan != nil {
			p.emitEvents(ctx, req, plan, resp.Body())
		}
		p.m.writes.WithLabelValues(op, "ok").Inc()
	case status >= 500:
		p.afterWrite(req)
		p.m.writes.WithLabelValues(op, "unknown").Inc()
	default:
		p.m.writes.WithLabelValues(op, "failed").Inc()
	}
	p.m.requestOp(req.Op, resultBypass)
	ctx.SetStatusCode(status)
	if ct := resp.Header.ContentType(); len(ct) > 0 {
		ctx.Response.Header.SetContentTypeBytes(ct)
	}
	ctx.SetBody(resp.Body())
	ctx.Response.Header.Set("X-Cache", "BYPASS")
}

// afterWrite is the second bump. Its failure (Redis down, a replica slow to
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
