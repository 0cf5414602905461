package proxy

// Cached reads over gRPC: GetDocument, ListDocuments, ListCollectionIds (unary) and
// BatchGetDocuments, RunQuery, RunAggregationQuery (server-streaming) are classified by
// classify.FromProtoRead into the same Targets and Tags as their REST twins, matched by
// the same rules (ruleFor), stamped and invalidated by the same generations, and kept
// in the same tiers. An entry holds the whole answer: every response message of the
// call, each as its protobuf bytes, in order (encodeMessages), replayed as they came.
// Entries are keyed apart from REST's (the method's gRPC name is part of the key);
// invalidation is shared through the tags.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"io"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
	"github.com/harvest-hub/edge/rules"
)

// grpcContentType marks an entry filled from the gRPC front: its Body is a sequence of
// messages (encodeMessages), or for a cached NOT_FOUND the google.rpc.Status.
const grpcContentType = "application/grpc+proto"

// xCacheMD is the x-cache header metadata per result, made once (grpc-go copies what
// it is given).
var xCacheMD = func() (v [len(resultNames)]metadata.MD) {
	for i, n := range resultNames {
		v[i] = metadata.Pairs("x-cache", n)
	}
	return v
}()

// newReadRequest returns an empty request message of a cacheable read op.
func newReadRequest(op classify.Op) proto.Message {
	switch op {
	case classify.GetDocument:
		return &firestorepb.GetDocumentRequest{}
	case classify.ListDocuments:
		return &firestorepb.ListDocumentsRequest{}
	case classify.RunQuery:
		return &firestorepb.RunQueryRequest{}
	case classify.RunAggregationQuery:
		return &firestorepb.RunAggregationQueryRequest{}
	case classify.BatchGetDocuments:
		return &firestorepb.BatchGetDocumentsRequest{}
	case classify.ListCollectionIds:
		return &firestorepb.ListCollectionIdsRequest{}
	}
	return nil
}

// grpcRead serves a read method's call: its one request message decides the plan.
func (p *Proxy) grpcRead(ss grpc.ServerStream, method string, op classify.Op, id string) error {
	first := new(grpcrelay.Frame)
	if err := ss.RecvMsg(first); err != nil {
		return err
	}
	ak := p.grpcAlias(method, id, first.Bytes)
	if v, ok := p.plans.Load(ak); ok {
		if plan := v.(*readPlan); plan.cfg == p.rules.Current() {
			return p.grpcServeRead(ss, method, plan, first)
		}
	}
	msg := newReadRequest(op)
	if proto.Unmarshal(first.Bytes, msg) != nil {
		return p.grpcBypass(ss, method, op, first) // the upstream's to refuse
	}
	req := classify.FromProtoRead(msg)
	if req.Kind != classify.Read {
		return p.grpcBypass(ss, method, op, first)
	}
	cfg := p.rules.Current()
	rule := ruleFor(cfg, &req)
	if rule == nil || rule.TTL <= 0 {
		return p.grpcBypass(ss, method, op, first)
	}
	tags := make([]string, 0, len(req.Tags)+1)
	tags = append(append(tags, req.Tags...), classify.DatabaseTag(req.Database))
	plan := &readPlan{cfg: cfg, rule: rule, key: grpcCacheKey(method, &req, rule.Scope, id), tags: tags, op: op,
		view: grpcViewRead(msg, &req, rule, id)}
	p.remember(ak, plan)
	return p.grpcServeRead(ss, method, plan, first)
}

// grpcAlias is the plan index key of a gRPC call: the full method name (which starts
// with "/", so it never equals an HTTP method), the caller's identity (a hash of every
// credential it sent) and the request message's bytes, length-prefixed and hashed as
// aliasOf hashes a REST request.
func (p *Proxy) grpcAlias(method, id string, body []byte) aliasKey {
	var stack [1024]byte
	buf := stack[:0]
	if n := 16 + len(method) + len(id) + len(body); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	buf = binary.AppendUvarint(buf, uint64(len(method)))
	buf = binary.AppendUvarint(buf, 0) // no URI
	buf = binary.AppendUvarint(buf, uint64(len(id)))
	buf = append(buf, method...)
	buf = append(buf, id...)
	buf = append(buf, body...)
	return aliasKey{maphash.Bytes(p.planSeeds[0], buf), maphash.Bytes(p.planSeeds[1], buf)}
}

// grpcCacheKey is cacheKey for a gRPC read: the method's full gRPC name in the place
// of the HTTP method (so no gRPC entry is ever a REST one), the resource name, no query
// parameters, the canonical request (classify.FromProtoRead's CacheBody) and the scope
// identity: for scope user, grpcIdentity (a hash of exactly the credentials the
// upstream uses, the whole authorization metadata among them).
func grpcCacheKey(method string, req *classify.Request, scope rules.Scope, id string) cache.Key {
	var stack [512]byte
	buf := append(stack[:0], keyVersion)
	buf = appendField(buf, []byte(method))
	buf = appendField(buf, []byte(req.ResourcePath))
	buf = appendField(buf, nil)
	buf = appendField(buf, req.CacheBody)
	if scope == rules.ScopeShared {
		buf = append(buf, 's')
	} else {
		buf = append(buf, 'u')
		buf = appendField(buf, []byte(id))
	}
	sum := sha256.Sum256(buf)
	var k cache.Key
	copy(k[:], sum[:])
	return k
}

// grpcFetched is one upstream answer to a gRPC read.
type grpcFetched struct {
	msgs   [][]byte
	header metadata.MD
	err    error // the upstream's status, when it failed
	cached bool  // stored as an entry: safe to share with every coalesced caller
}

// grpcServeRead answers a planned read as serveRead does for REST: a fresh entry from
// L1 or L2, else the upstream (one call per key and stamp), with the rule's stale
// windows.
func (p *Proxy) grpcServeRead(ss grpc.ServerStream, method string, plan *readPlan, first *grpcrelay.Frame) error {
	if plan.view != nil {
		if served, err := p.grpcServeFromView(ss, plan); served {
			return err
		}
	}
	rule, key, tags, op := plan.rule, plan.key, plan.tags, plan.op
	now := time.Now()
	e, src, stamp, err := p.tiers.LookupStamped(context.Background(), key, tags, rule.Consistency, now)
	if err != nil {
		p.log.Debug("cache lookup failed; serving from upstream", "err", err)
	}
	if e != nil && e.ContentType == grpcContentType {
		if e.Fresh(now) {
			r := resultHitL1
			if src == cache.HitL2 {
				r = resultHitL2
			}
			return p.grpcServeEntry(ss, op, e, r)
		}
		if rule.StaleWhileRevalidate > 0 && now.Before(e.FreshUntil.Add(rule.StaleWhileRevalidate)) {
			err := p.grpcServeEntry(ss, op, e, resultStale)
			p.grpcRevalidate(ss.Context(), method, plan, first)
			return err
		}
	}
	var st *cache.Stamp
	if stamp.Gens != nil {
		st = &stamp
	}
	ctx := ss.Context()
	res, err := p.grpcFill(ctx, grpcrelay.OutgoingContext(ctx), method, first, plan, st)
	if err == nil && res.err != nil {
		err = res.err
	}
	if err != nil {
		if e != nil && e.ContentType == grpcContentType && rule.StaleIfError > 0 &&
			now.Before(e.FreshUntil.Add(rule.StaleIfError)) && upstreamFault(err) {
			return p.grpcServeEntry(ss, op, e, resultStale)
		}
		p.countGRPC(op, resultError, err)
		_ = ss.SetHeader(xCacheMD[resultMiss])
		return err
	}
	p.m.requestOp(op, resultMiss)
	// SetHeader, not SendHeader: the header goes out with the first message, one write.
	if err := ss.SetHeader(metadata.Join(res.header, xCacheMD[resultMiss])); err != nil {
		return err
	}
	for _, m := range res.msgs {
		if err := ss.SendMsg(&grpcrelay.Frame{Bytes: m}); err != nil {
			return err
		}
	}
	return nil
}

// upstreamFault reports whether err means the upstream could not answer (rather than
// answered with an error of the request).
func upstreamFault(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.ResourceExhausted:
		return true
	}
	return false
}

// grpcServeEntry replays a cached answer.
func (p *Proxy) grpcServeEntry(ss grpc.ServerStream, op classify.Op, e *cache.Entry, r result) error {
	p.m.requestOp(op, r)
	p.m.served(e.Docs)
	if err := ss.SetHeader(xCacheMD[r]); err != nil {
		return err
	}
	if e.Status == 404 {
		return notFoundStatus(e.Body)
	}
	for b := e.Body; len(b) > 0; {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return status.Error(codes.Internal, "the proxy's cache entry is corrupt")
		}
		if err := ss.SendMsg(&grpcrelay.Frame{Bytes: b[w : w+int(n)]}); err != nil {
			return err
		}
		b = b[w+int(n):]
	}
	return nil
}

// grpcFill asks the upstream, sharing the call with every caller of the same key and
// stamp (as fill does for REST). The caller waits at most as long as its own context
// allows; the upstream call itself runs to the configured upstream timeout, so an
// impatient caller does not cancel the fill others wait for.
func (p *Proxy) grpcFill(ctx, outCtx context.Context, method string, first *grpcrelay.Frame, plan *readPlan, begun *cache.Stamp) (*grpcFetched, error) {
	var stamp cache.Stamp
	if begun != nil {
		stamp = *begun
	} else {
		var stampErr error
		if stamp, stampErr = p.tiers.Begin(context.Background(), plan.tags); stampErr != nil {
			return p.grpcFetch(outCtx, method, first, plan, nil), nil
		}
	}
	fctx := context.WithoutCancel(outCtx)
	ch := p.flight.DoChan(flightKey(plan.key, stamp), func() (any, error) {
		return p.grpcFetch(fctx, method, first, plan, &stamp), nil
	})
	select {
	case r := <-ch:
		res := r.Val.(*grpcFetched)
		if r.Shared && !res.cached {
			return p.grpcFetch(outCtx, method, first, plan, nil), nil
		}
		return res, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// grpcFetch makes one upstream call and, when stamp is given and the answer is
// cacheable under the plan's rule, fills the tiers with it.
func (p *Proxy) grpcFetch(ctx context.Context, method string, first *grpcrelay.Frame, plan *readPlan, stamp *cache.Stamp) *grpcFetched {
	op, rule := plan.op, plan.rule
	ctx, cancel := context.WithTimeout(ctx, p.rules.Current().Upstream.Timeout)
	defer cancel()
	start := time.Now()
	res := &grpcFetched{}
	res.msgs, res.header, res.err = p.grpcCall(ctx, method, first)
	p.m.upstream.WithLabelValues(op.String()).Observe(time.Since(start).Seconds())
	ttl, code := rule.TTL, 200
	switch {
	case res.err == nil:
	case status.Code(res.err) == codes.NotFound && op == classify.GetDocument && rule.NegativeTTL > 0:
		ttl, code = rule.NegativeTTL, 404
	default:
		if upstreamFault(res.err) {
			p.m.upstreamErrors.WithLabelValues(op.String(), "status_"+status.Code(res.err).String()).Inc()
			p.log.Warn("upstream error answer", "op", op.String(), "code", status.Code(res.err).String())
		}
		return res
	}
	if stamp == nil {
		return res
	}
	var body []byte
	docs := 1
	if code == 404 {
		b, err := proto.Marshal(status.Convert(res.err).Proto())
		if err != nil {
			return res
		}
		body = b
	} else {
		n, ok := grpcBilledDocs(op, res.msgs)
		if !ok {
			return res
		}
		docs, body = n, encodeMessages(res.msgs)
	}
	now := time.Now()
	e := &cache.Entry{
		Status:      code,
		Body:        body,
		ContentType: grpcContentType,
		StoredAt:    now,
		FreshUntil:  now.Add(ttl),
		StaleUntil:  now.Add(ttl + max(rule.StaleWhileRevalidate, rule.StaleIfError)),
		Docs:        docs,
		Tags:        plan.tags,
	}
	stamp.Apply(e)
	if err := p.tiers.FillBehind(plan.key, e); err != nil {
		p.log.Debug("cache fill incomplete", "err", err)
	}
	res.cached = true
	return res
}

// grpcCall sends one request to method upstream and collects every response message.
func (p *Proxy) grpcCall(ctx context.Context, method string, req *grpcrelay.Frame) ([][]byte, metadata.MD, error) {
	cs, err := p.grpcUp.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return nil, nil, err
	}
	if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	_ = cs.CloseSend()
	hdr, _ := cs.Header()
	var msgs [][]byte
	for {
		f := new(grpcrelay.Frame)
		if err := cs.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, hdr, nil
			}
			return nil, hdr, err
		}
		msgs = append(msgs, f.Bytes)
	}
}

// grpcRevalidate refreshes an entry served stale, in the background.
func (p *Proxy) grpcRevalidate(ctx context.Context, method string, plan *readPlan, first *grpcrelay.Frame) {
	outCtx := context.WithoutCancel(grpcrelay.OutgoingContext(ctx))
	req := &grpcrelay.Frame{Bytes: append([]byte(nil), first.Bytes...)}
	go func() {
		if _, err := p.grpcFill(outCtx, outCtx, method, req, plan, nil); err != nil {
			p.log.Warn("background revalidation failed", "op", plan.op.String(), "err", err)
		}
	}()
}

// encodeMessages joins messages into one entry body: each as its length (uvarint) and
// its bytes. Hand-written: it is the cache's storage format, not a wire format.
func encodeMessages(msgs [][]byte) []byte {
	n := 0
	for _, m := range msgs {
		n += binary.MaxVarintLen64 + len(m)
	}
	b := make([]byte, 0, n)
	for _, m := range msgs {
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

// notFoundStatus is the cached NOT_FOUND of a GetDocument, as the upstream gave it.
func notFoundStatus(b []byte) error {
	var st spb.Status
	if proto.Unmarshal(b, &st) != nil {
		return status.Error(codes.NotFound, "document not found")
	}
	return status.FromProto(&st).Err()
}

// grpcBilledDocs is billedDocs for a gRPC answer's messages. ok is false when a
// message does not parse as the method's response: such an answer is not cached.
func grpcBilledDocs(op classify.Op, msgs [][]byte) (n int, ok bool) {
	each := func(newMsg func() proto.Message, docs func(proto.Message) int) (int, bool) {
		for _, b := range msgs {
			m := newMsg()
			if proto.Unmarshal(b, m) != nil {
				return 0, false
			}
			n += docs(m)
		}
		return max(1, n), true
	}
	switch op {
	case classify.ListDocuments:
		return each(func() proto.Message { return &firestorepb.ListDocumentsResponse{} },
			func(m proto.Message) int { return len(m.(*firestorepb.ListDocumentsResponse).Documents) })
	case classify.RunQuery:
		return each(func() proto.Message { return &firestorepb.RunQueryResponse{} },
			func(m proto.Message) int {
				if m.(*firestorepb.RunQueryResponse).Document != nil {
					return 1
				}
				return 0
			})
	case classify.BatchGetDocuments:
		return each(func() proto.Message { return &firestorepb.BatchGetDocumentsResponse{} },
			func(m proto.Message) int {
				r := m.(*firestorepb.BatchGetDocumentsResponse)
				if r.GetFound() != nil || r.GetMissing() != "" {
					return 1
				}
				return 0
			})
	case classify.RunAggregationQuery:
		return each(func() proto.Message { return &firestorepb.RunAggregationQueryResponse{} },
			func(proto.Message) int { return 0 })
	case classify.GetDocument:
		return each(func() proto.Message { return &firestorepb.Document{} }, func(proto.Message) int { return 1 })
	case classify.ListCollectionIds:
		return each(func() proto.Message { return &firestorepb.ListCollectionIdsResponse{} }, func(proto.Message) int { return 0 })
	}
	return 1, true
}
