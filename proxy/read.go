package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/rules"
)

// fetched is one upstream answer to a read, shared by the callers coalesced on it.
type fetched struct {
	status      int
	body        []byte
	contentType string
	cached      bool // stored as an entry: safe to share with every coalesced caller
}

// readPlan is what a cacheable read resolves to before any cache is consulted: its
// rule, cache key and tags under one Config. It is immutable once made, and shared by
// every later identical request through the plan index (Proxy.plans).
type readPlan struct {
	cfg  *rules.Config // the Config the plan was made under: valid only while current
	rule *rules.Rule
	key  cache.Key
	tags []string // the request's tags and its database tag
	op   classify.Op
	view *viewRead // what a live view may answer (viewread.go); nil: none may
}

// read answers a cacheable read: it resolves the rule, key and tags, remembers them
// under ak (when aliased) for identical requests, and serves the read.
func (p *Proxy) read(ctx *fasthttp.RequestCtx, req *classify.Request, ak aliasKey, aliased bool) {
	cfg := p.rules.Current()
	rule := ruleFor(cfg, req)
	if rule == nil || rule.TTL <= 0 {
		p.bypass(ctx, req)
		return
	}
	tags := make([]string, 0, len(req.Tags)+1)
	tags = append(append(tags, req.Tags...), classify.DatabaseTag(req.Database))
	plan := &readPlan{cfg: cfg, rule: rule, key: cacheKey(ctx, req, rule.Scope), tags: tags, op: req.Op,
		view: restViewRead(ctx, req, rule)}
	if aliased {
		p.remember(ak, plan)
	}
	p.serveRead(ctx, plan)
}

// serveRead answers a planned read: a fresh entry from L1 or L2, else the upstream
// (one call per key and generation stamp however many callers wait), storing what the
// rule allows. Stale entries are served under the rule's stale_while_revalidate (and
// refreshed in the background) or stale_if_error (when the upstream fails).
func (p *Proxy) serveRead(ctx *fasthttp.RequestCtx, plan *readPlan) {
	if plan.view != nil && p.serveFromView(ctx, plan) {
		return
	}
	rule, key, tags, op := plan.rule, plan.key, plan.tags, plan.op
	now := time.Now()
	e, src, stamp, err := p.tiers.LookupStamped(context.Background(), key, tags, rule.Consistency, now)
	if err != nil {
		p.log.Debug("cache lookup failed; serving from upstream", "err", err)
	}
	if e != nil {
		if e.Fresh(now) {
			r := resultHitL1
			if src == cache.HitL2 {
				r = resultHitL2
			}
			p.serveEntry(ctx, op, e, r, now)
			return
		}
		if rule.StaleWhileRevalidate > 0 && now.Before(e.FreshUntil.Add(rule.StaleWhileRevalidate)) {
			p.serveEntry(ctx, op, e, resultStale, now)
			p.revalidate(ctx, op, rule, key, tags)
			return
		}
	}

	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	p.up.Prepare(ctx, out, true)
	// A lookup that reached L2 began the read (its stamp was taken there, before the
	// upstream is asked), so the miss costs no second round trip to Redis.
	var st *cache.Stamp
	if stamp.Gens != nil {
		st = &stamp
	}
	res, err := p.fill(out, op, rule, key, tags, st)
	if err != nil || res.status >= 500 {
		if e != nil && rule.StaleIfError > 0 && now.Before(e.FreshUntil.Add(rule.StaleIfError)) {
			p.serveEntry(ctx, op, e, resultStale, now)
			return
		}
		if err != nil {
			p.m.requestOp(op, resultError)
			p.upstreamFailed(ctx, op, err)
			return
		}
	}
	p.m.requestOp(op, resultMiss)
	ctx.SetStatusCode(res.status)
	if res.contentType != "" {
		ctx.SetContentType(res.contentType)
	}
	ctx.Response.SetBodyRaw(res.body) // never modified after the fetch
	ctx.Response.Header.SetCanonical(hdrXCache, xCacheValues[resultMiss])
}

// fill asks the upstream for a read and stores the answer when the rule allows. The
// read is stamped by begun when given (taken by the cache lookup just before), else
// by Begin here. Callers with the same key and the same generation stamp share one
// upstream call: the stamp is part of the flight key, so a read that begins after a
// write's bump never joins a call that began before it (and could return what the
// write replaced).
// A shared answer the cache refused (an error, a 403 for one caller's credentials) is
// not trusted for the others: each of them asks on its own.
func (p *Proxy) fill(out *fasthttp.Request, op classify.Op, rule *rules.Rule, key cache.Key, tags []string, begun *cache.Stamp) (*fetched, error) {
	var stamp cache.Stamp
	if begun != nil {
		stamp = *begun
	} else {
		var stampErr error
		if stamp, stampErr = p.tiers.Begin(context.Background(), tags); stampErr != nil {
			// Without a stamp nothing can be stored safely, so there is nothing to share.
			return p.fetch(out, op, rule, key, tags, nil)
		}
	}
	v, err, shared := p.flight.Do(flightKey(key, stamp), func() (any, error) {
		return p.fetch(out, op, rule, key, tags, &stamp)
	})
	if shared && (err != nil || !v.(*fetched).cached) {
		return p.fetch(out, op, rule, key, tags, nil)
	}
	if err != nil {
		return nil, err
	}
	return v.(*fetched), nil
}

// fetch sends one read upstream and, when stamp is given and the answer is cacheable
// under rule, fills the tiers with it.
func (p *Proxy) fetch(out *fasthttp.Request, op classify.Op, rule *rules.Rule, key cache.Key, tags []string, stamp *cache.Stamp) (*fetched, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	start := time.Now()
	if err := p.up.Do(out, resp); err != nil {
		return nil, err
	}
	p.m.upstream.WithLabelValues(op.String()).Observe(time.Since(start).Seconds())
	res := &fetched{
		status:      resp.StatusCode(),
		body:        append([]byte(nil), resp.Body()...),
		contentType: string(resp.Header.ContentType()),
	}
	if res.status >= 500 {
		p.m.upstreamErrors.WithLabelValues(op.String(), "status_"+strconv.Itoa(res.status)).Inc()
		p.log.Warn("upstream error answer", "op", op.String(), "status", res.status)
	}
	ttl := rule.TTL
	switch {
	case res.status == fasthttp.StatusOK:
	case res.status == fasthttp.StatusNotFound && op == classify.GetDocument && rule.NegativeTTL > 0:
		ttl = rule.NegativeTTL
	default:
		return res, nil
	}
	docs, ok := billedDocs(op, res.status, res.body)
	if !ok || stamp == nil {
		return res, nil // an answer that does not parse (an error inside a stream) is not stored
	}
	now := time.Now()
	e := &cache.Entry{
		Status:      res.status,
		Body:        res.body,
		ContentType: res.contentType,
		StoredAt:    now,
		FreshUntil:  now.Add(ttl),
		StaleUntil:  now.Add(ttl + max(rule.StaleWhileRevalidate, rule.StaleIfError)),
		Docs:        docs,
		Tags:        tags,
	}
	stamp.Apply(e)
	// The L2 write (a compare-and-set against the stamp, so it can never store a read
	// that a bump after the stamp outdated) runs after the client is answered.
	if err := p.tiers.FillBehind(key, e); err != nil {
		p.log.Debug("cache fill incomplete", "err", err)
	}
	res.cached = true
	return res, nil
}

// revalidate refreshes an entry served stale, in the background, once per key and
// stamp however many callers see it stale.
func (p *Proxy) revalidate(ctx *fasthttp.RequestCtx, op classify.Op, rule *rules.Rule, key cache.Key, tags []string) {
	out := fasthttp.AcquireRequest() // the client's request dies with the handler: copy it
	p.up.Prepare(ctx, out, true)
	go func() {
		defer fasthttp.ReleaseRequest(out)
		if _, err := p.fill(out, op, rule, key, tags, nil); err != nil {
			p.log.Warn("background revalidation failed", "op", op.String(), "err", err)
		}
	}()
}

// Header names and X-Cache values as bytes, so answering a hit converts nothing.
var (
	hdrXCache    = []byte("X-Cache")
	hdrAge       = []byte("Age")
	xCacheValues = func() (v [len(resultNames)][]byte) {
		for i, n := range resultNames {
			v[i] = []byte(n)
		}
		return v
	}()
)

// serveEntry answers from a cached entry.
func (p *Proxy) serveEntry(ctx *fasthttp.RequestCtx, op classify.Op, e *cache.Entry, r result, now time.Time) {
	p.m.requestOp(op, r)
	p.m.served(e.Docs)
	ctx.SetStatusCode(e.Status)
	if e.ContentType != "" {
		ctx.SetContentType(e.ContentType)
	}
	ctx.Response.SetBodyRaw(e.Body) // entries are immutable
	h := &ctx.Response.Header
	h.SetCanonical(hdrXCache, xCacheValues[r])
	var age [20]byte
	h.SetCanonical(hdrAge, strconv.AppendInt(age[:0], e.Age(now), 10))
}

// cacheKey hashes what shapes the answer: method, decoded resource path, the
// response-shaping query parameters, the canonical body, and the scope identity (for
// scope user, requestIdentity: a hash of exactly the credentials the upstream uses).
// Every part is length-prefixed so no two requests can run together into one key.
func cacheKey(ctx *fasthttp.RequestCtx, req *classify.Request, scope rules.Scope) cache.Key {
	var stack [512]byte
	buf := append(stack[:0], keyVersion)
	buf = appendField(buf, ctx.Method())
	buf = appendField(buf, []byte(req.ResourcePath))
	buf = appendField(buf, req.KeyParams)
	buf = appendField(buf, req.CacheBody)
	if scope == rules.ScopeShared {
		buf = append(buf, 's')
	} else {
		buf = append(buf, 'u')
		buf = appendField(buf, []byte(requestIdentity(ctx)))
	}
	sum := sha256.Sum256(buf)
	var k cache.Key
	copy(k[:], sum[:])
	return k
}

// keyVersion changes whenever the key's composition does, so old L2 entries are not
// read under a new meaning.
const keyVersion = 2

func appendField(buf, field []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(field)))
	return append(buf, field...)
}

// flightKey is the singleflight key: the cache key and the generation stamp.
func flightKey(key cache.Key, st cache.Stamp) string {
	buf := make([]byte, 0, len(key)+8+8*len(st.Gens))
	buf = append(buf, key[:]...)
	buf = binary.BigEndian.AppendUint64(buf, st.Epoch)
	for _, g := range st.Gens {
		buf = binary.BigEndian.AppendUint64(buf, g)
	}
	return string(buf)
}
