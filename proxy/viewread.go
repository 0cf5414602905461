package proxy

// Reads answered from the Listen fan-out's live views (package fanout): a read of one
// document, or a query, whose exact target some client is listening to (or listened to
// within listen.linger) is answered from that view, which is fresher than any entry
// under a TTL, with X-Cache: HIT-VIEW and no upstream read. Under a scope: shared rule
// any caller's read may use the shared view; under scope: user only a view listened
// with the very same credentials (the same identity) answers.
//
// A view follows the upstream a moment behind, so a view answers only when it provably
// holds every write the proxy has answered for the read's tags: every bump, made here
// or applied from the bus (which a writer waits for before answering), is remembered
// with the local time it was seen (viewBarrier), and the view's read time must be past
// it by viewSkew, the bound assumed between the upstream's clock and this host's. Until
// a view's next snapshot passes a write, reads of those tags take the cache path as
// before. A replica that may have missed a bump (its bus link is not trusted) answers
// nothing from views. A view never answers a document's absence (a 404's message is
// the upstream's to give).

import (
	"bytes"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
	"github.com/harvest-hub/edge/rules"
)

// viewSkew bounds the difference between the upstream's clock, which stamps a view's
// read time, and this host's, which stamps when an invalidation was seen.
const viewSkew = time.Second

// viewBarrierWindow is how long an invalidation is remembered: a current view shows a
// write within moments, so one older than this is in every view or none.
const viewBarrierWindow = time.Minute

// viewRead is what a planned read asks the views: the key of the view of one document,
// or of a query. Fixed when the plan is made (the key costs a marshal: a hit must not
// pay it); nil for reads views cannot answer.
type viewRead struct {
	key   fanout.ViewKey
	query bool
}

// viewScope is the views a read under rule by the caller identity may use.
func viewScope(rule *rules.Rule, identity string) fanout.Scope {
	if rule.Scope == rules.ScopeShared {
		return fanout.SharedScope
	}
	return fanout.CallerScope(identity)
}

// restViewRead is the view read of a REST read, if views may answer it: a plain get of
// a document or a runQuery with only a structured query, no parameters but
// credentials.
func restViewRead(ctx *fasthttp.RequestCtx, req *classify.Request, rule *rules.Rule) *viewRead {
	if !onlyCredentialParams(ctx.QueryArgs()) {
		return nil
	}
	scope := viewScope(rule, requestIdentity(ctx))
	switch req.Op {
	case classify.GetDocument:
		return &viewRead{key: fanout.DocumentViewKey(req.Database, req.ResourcePath, scope)}
	case classify.RunQuery:
		var rq firestorepb.RunQueryRequest
		if proto.Unmarshal(req.CacheBody, &rq) != nil {
			return nil
		}
		parent, ok := bytes.CutSuffix([]byte(req.ResourcePath), []byte(":runQuery"))
		if !ok {
			return nil
		}
		rq.Parent = string(parent)
		return queryViewRead(scope, req.Database, &rq)
	}
	return nil
}

// grpcViewRead is restViewRead for a gRPC read's request message and caller identity.
func grpcViewRead(msg proto.Message, req *classify.Request, rule *rules.Rule, identity string) *viewRead {
	scope := viewScope(rule, identity)
	switch m := msg.(type) {
	case *firestorepb.GetDocumentRequest:
		if m.GetMask() == nil && m.GetConsistencySelector() == nil {
			return &viewRead{key: fanout.DocumentViewKey(req.Database, m.GetName(), scope)}
		}
	case *firestorepb.RunQueryRequest:
		return queryViewRead(scope, req.Database, m)
	}
	return nil
}

func queryViewRead(scope fanout.Scope, database string, rq *firestorepb.RunQueryRequest) *viewRead {
	if rq.GetStructuredQuery() == nil || rq.GetConsistencySelector() != nil || rq.GetExplainOptions() != nil {
		return nil
	}
	return &viewRead{key: fanout.QueryViewKey(database, rq.GetParent(), rq.GetStructuredQuery(), scope), query: true}
}

// onlyCredentialParams: the query string carries nothing that shapes the answer.
func onlyCredentialParams(args *fasthttp.Args) bool {
	for k := range args.All() {
		switch string(k) {
		case "key", "$key", "access_token", "$access_token":
		default:
			return false
		}
	}
	return true
}

// fromView answers plan from a live view: the documents (one for a document read)
// and the view's read time, when a current view holds the answer and has passed every
// write the proxy answered for the plan's tags.
func (p *Proxy) fromView(plan *readPlan) (docs []*firestorepb.Document, readTime time.Time, ok bool) {
	v := plan.view
	if v == nil || (p.tiers.L2 != nil && !p.tiers.Gens.Trusted()) {
		return nil, time.Time{}, false
	}
	if v.query {
		docs, readTime, ok = p.hub.LookupQuery(v.key)
	} else {
		var d *firestorepb.Document
		var presence fanout.Presence
		d, presence, readTime = p.hub.LookupDocumentTarget(v.key)
		docs, ok = []*firestorepb.Document{d}, presence == fanout.Found
	}
	if !ok || !p.barrier.passed(plan.tags, readTime) {
		return nil, time.Time{}, false
	}
	return docs, readTime, true
}

// serveFromView answers a REST read from a view; false when no view can.
func (p *Proxy) serveFromView(ctx *fasthttp.RequestCtx, plan *readPlan) bool {
	docs, readTime, ok := p.fromView(plan)
	if !ok {
		return false
	}
	var body []byte
	var err error
	if !plan.view.query {
		body, err = protojson.Marshal(docs[0])
	} else {
		body, err = queryJSON(docs, readTime)
	}
	if err != nil {
		return false
	}
	p.m.requestOp(plan.op, resultHitView)
	p.m.served(max(1, len(docs)))
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json; charset=UTF-8")
	ctx.Response.SetBodyRaw(body)
	ctx.Response.Header.SetCanonical(hdrXCache, xCacheValues[resultHitView])
	return true
}

// queryJSON is a runQuery answer as Firestore's REST API gives it: a JSON array of
// RunQueryResponse, one per document, or one with only the read time.
func queryJSON(docs []*firestorepb.Document, readTime time.Time) ([]byte, error) {
	out := []byte{'['}
	for i, m := range queryResponses(docs, readTime) {
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
	}
	return append(out, ']'), nil
}

func queryResponses(docs []*firestorepb.Document, readTime time.Time) []*firestorepb.RunQueryResponse {
	rt := timestamppb.New(readTime)
	if len(docs) == 0 {
		return []*firestorepb.RunQueryResponse{{ReadTime: rt}}
	}
	out := make([]*firestorepb.RunQueryResponse, len(docs))
	for i, d := range docs {
		out[i] = &firestorepb.RunQueryResponse{Document: d, ReadTime: rt}
	}
	return out
}

// grpcServeFromView answers a gRPC read from a view; false when no view can.
func (p *Proxy) grpcServeFromView(ss grpc.ServerStream, plan *readPlan) (bool, error) {
	docs, readTime, ok := p.fromView(plan)
	if !ok {
		return false, nil
	}
	var msgs []proto.Message
	if !plan.view.query {
		msgs = []proto.Message{docs[0]}
	} else {
		for _, r := range queryResponses(docs, readTime) {
			msgs = append(msgs, r)
		}
	}
	p.m.requestOp(plan.op, resultHitView)
	p.m.served(max(1, len(docs)))
	if err := ss.SetHeader(xCacheMD[resultHitView]); err != nil {
		return true, err
	}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			return true, err
		}
		if err := ss.SendMsg(&grpcrelay.Frame{Bytes: b}); err != nil {
			return true, err
		}
	}
	return true, nil
}

// viewBarrier remembers, per tag, when this replica last saw it invalidated.
type viewBarrier struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	swept time.Time
}

func newViewBarrier() *viewBarrier { return &viewBarrier{seen: map[string]time.Time{}} }

// invalidated is Generations.OnInvalidate.
func (b *viewBarrier) invalidated(tags []string) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tags {
		b.seen[t] = now
	}
	if now.Sub(b.swept) > viewBarrierWindow {
		for t, at := range b.seen {
			if now.Sub(at) > viewBarrierWindow {
				delete(b.seen, t)
			}
		}
		b.swept = now
	}
}

// passed reports whether a view read at readTime holds every invalidation of tags.
func (b *viewBarrier) passed(tags []string, readTime time.Time) bool {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tags {
		if at, ok := b.seen[t]; ok && now.Sub(at) < viewBarrierWindow && readTime.Before(at.Add(viewSkew)) {
			return false
		}
	}
	return true
}
