package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/apierror"
)

// write is the REST front of the write core (writecore.go): it admits the write
// (beginWrite: events admission, old values, the first invalidation), forwards it, and
// settles it by the upstream's answer: 2xx succeeded (invalidate, emit events, then
// answer), 5xx or no answer unknown (invalidated as if it landed), other statuses failed.
// The upstream's answer is passed back to the client as it came.
func (p *Proxy) write(ctx *fasthttp.RequestCtx, req *classify.Request) {
	caller := Caller{Identity: requestIdentity(ctx)}
	if req.Op == classify.Commit && req.Transactional {
		caller.Transaction = restTransaction(ctx.PostBody())
	}
	w, refusal := p.beginWrite(ctx, req, caller, p.restOldReader(ctx, req))
	if refusal != nil {
		p.m.requestOp(req.Op, resultError)
		apierror.Write(ctx, refusal.HTTPStatus, refusal.Status, refusal.Message)
		return
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	p.up.Prepare(ctx, out, true)
	if err := p.up.Do(out, resp); err != nil {
		w.unknown()
		p.upstreamFailed(ctx, req.Op, err)
		return
	}
	status := resp.StatusCode()
	switch {
	case status < 300:
		var ans WriteAnswer
		if w.needsAnswer() {
			ans = p.restAnswer(req, resp.Body())
		}
		w.succeeded(ans)
	case status >= 500:
		w.unknown()
	default:
		w.failed()
	}
	p.m.requestOp(req.Op, resultBypass)
	ctx.SetStatusCode(status)
	if ct := resp.Header.ContentType(); len(ct) > 0 {
		ctx.Response.Header.SetContentTypeBytes(ct)
	}
	ctx.SetBody(resp.Body())
	ctx.Response.Header.Set("X-Cache", "BYPASS")
}

// answerJSON parses the upstream's answers; unknown fields (a newer API) are not errors.
var answerJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// restTransaction is the transaction a REST commit body commits (nil if none or
// unparseable: old values are then read outside it).
func restTransaction(body []byte) []byte {
	cr := &firestorepb.CommitRequest{}
	if err := answerJSON.Unmarshal(body, cr); err != nil {
		return nil
	}
	return cr.GetTransaction()
}

// restAnswer parses a REST write's 2xx answer. An answer that does not parse leaves
// the WriteAnswer empty (logged): the core then builds the events from the request
// alone, values as written and the time the proxy saw success (a batchWrite's are
// lost: without the statuses nobody knows which of its writes succeeded).
func (p *Proxy) restAnswer(req *classify.Request, body []byte) WriteAnswer {
	var ans WriteAnswer
	var err error
	switch req.Op {
	case classify.PatchDocument, classify.CreateDocument:
		doc := &firestorepb.Document{}
		if err = answerJSON.Unmarshal(body, doc); err == nil {
			ans.Document = doc
		}
	case classify.Commit:
		cr := &firestorepb.CommitResponse{}
		if err = answerJSON.Unmarshal(body, cr); err == nil {
			ans.Commit = cr
		}
	case classify.BatchWrite:
		br := &firestorepb.BatchWriteResponse{}
		if err = answerJSON.Unmarshal(body, br); err == nil {
			ans.BatchWrite = br
		}
	}
	if err != nil {
		p.log.Error("cannot parse the upstream's answer to a successful write; building its events without it",
			"op", req.Op.String(), "err", err)
	}
	return ans
}

// restOldReader is the REST front's OldReader: one batchGet upstream carrying the
// caller's own headers, so it sees what the caller may see, inside the commit's
// transaction when there is one. Any failure leaves the old state unknown (nil): the
// events then say written, not created or updated, and carry no oldValue; the write
// itself goes ahead.
//
// The read and the write are two requests: a concurrent writer between them makes
// oldValue the state a moment before this write, not necessarily the one it replaced.
func (p *Proxy) restOldReader(ctx *fasthttp.RequestCtx, req *classify.Request) OldReader {
	return func(_ context.Context, names []string, transaction []byte) map[string]*firestorepb.Document {
		bg := &firestorepb.BatchGetDocumentsRequest{Documents: names}
		if len(transaction) > 0 {
			bg.ConsistencySelector = &firestorepb.BatchGetDocumentsRequest_Transaction{Transaction: transaction}
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
