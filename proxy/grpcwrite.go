package proxy

// Writes over gRPC are writes: Commit, BatchWrite, CreateDocument, UpdateDocument and
// DeleteDocument (unary), and the bidirectional Write stream (the full Firebase SDK's
// writes), each classified into the same classify.Request as its REST twin and settled
// through the write core (beginWrite, then succeeded, failed or unknown): refused
// before forwarding when its events could not be kept, invalidated on every replica
// and its events kept before its answer reaches the client.

import (
	"context"
	"errors"
	"io"
	"sync"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/firestorepath"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
)

// grpcWriteRequest parses a unary write's request and classifies it.
func grpcWriteRequest(op classify.Op, b []byte) (classify.Request, []byte, error) {
	var (
		req classify.Request
		err error
		tx  []byte
	)
	switch op {
	case classify.Commit:
		m := &firestorepb.CommitRequest{}
		if proto.Unmarshal(b, m) != nil {
			return req, nil, status.Error(codes.InvalidArgument, "malformed CommitRequest")
		}
		tx = m.GetTransaction()
		req, err = classify.FromWrites(classify.Commit, m.GetDatabase(), m.GetWrites(), len(tx) > 0)
	case classify.BatchWrite:
		m := &firestorepb.BatchWriteRequest{}
		if proto.Unmarshal(b, m) != nil {
			return req, nil, status.Error(codes.InvalidArgument, "malformed BatchWriteRequest")
		}
		req, err = classify.FromWrites(classify.BatchWrite, m.GetDatabase(), m.GetWrites(), false)
	default:
		var m proto.Message
		switch op {
		case classify.CreateDocument:
			m = &firestorepb.CreateDocumentRequest{}
		case classify.PatchDocument:
			m = &firestorepb.UpdateDocumentRequest{}
		default:
			m = &firestorepb.DeleteDocumentRequest{}
		}
		if proto.Unmarshal(b, m) != nil {
			return req, nil, status.Error(codes.InvalidArgument, "malformed request message")
		}
		req, err = classify.FromProtoWrite(m)
	}
	if err != nil {
		return req, nil, classifyStatus(err)
	}
	return req, tx, nil
}

// classifyStatus turns a classification error into INVALID_ARGUMENT (its message is
// the classifier's, which names positions, never client input).
func classifyStatus(err error) error {
	var ce *classify.Error
	if errors.As(err, &ce) {
		return status.Error(codes.InvalidArgument, ce.Message)
	}
	return status.Error(codes.InvalidArgument, "the write's documents cannot be determined")
}

// refusalStatus is a write-core Refusal as a gRPC status.
func refusalStatus(r *Refusal) error {
	code := codes.Unavailable
	switch {
	case r.HTTPStatus == 400:
		code = codes.InvalidArgument
	case r.HTTPStatus == 413:
		code = codes.ResourceExhausted
	case r.HTTPStatus == 503:
		code = codes.Unavailable
	case r.HTTPStatus >= 500:
		code = codes.Internal
	case r.HTTPStatus >= 400:
		code = codes.FailedPrecondition
	}
	return status.Error(code, r.Message)
}

// writeOutcomeUnknown reports whether a write that ended with err may have been
// applied: no answer, or a status that does not say it was not.
func writeOutcomeUnknown(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal, codes.Unknown, codes.DataLoss:
		return true
	}
	return false
}

// grpcUnaryWrite serves Commit, BatchWrite, CreateDocument, UpdateDocument and
// DeleteDocument.
func (p *Proxy) grpcUnaryWrite(ss grpc.ServerStream, method string, op classify.Op, id string) error {
	first := new(grpcrelay.Frame)
	if err := ss.RecvMsg(first); err != nil {
		return err
	}
	req, tx, err := grpcWriteRequest(op, first.Bytes)
	if err != nil {
		p.m.requestOp(op, resultError)
		return err
	}
	ctx := grpcrelay.OutgoingContext(ss.Context())
	w, refusal := p.beginWrite(ctx, &req, Caller{Identity: id, Transaction: tx}, p.grpcOldReader(ctx))
	if refusal != nil {
		p.m.requestOp(op, resultError)
		return refusalStatus(refusal)
	}
	msgs, hdr, err := p.grpcCall(ctx, method, first)
	if err == nil && len(msgs) != 1 {
		err = status.Error(codes.Internal, "the upstream answered a unary write with no message")
	}
	if err != nil {
		if writeOutcomeUnknown(err) {
			w.unknown()
		} else {
			w.failed()
		}
		p.countGRPC(op, resultBypass, err)
		_ = ss.SetHeader(metadata.Join(hdr, bypassHeader))
		return err
	}
	w.succeeded(writeAnswer(op, msgs[0], w.needsAnswer()))
	p.m.requestOp(op, resultBypass)
	if err := ss.SetHeader(metadata.Join(hdr, bypassHeader)); err != nil {
		return err
	}
	return ss.SendMsg(&grpcrelay.Frame{Bytes: msgs[0]})
}

// writeAnswer parses a successful write's answer for the write core (only when it
// needs it: the write emits events).
func writeAnswer(op classify.Op, b []byte, needed bool) WriteAnswer {
	if !needed {
		return WriteAnswer{}
	}
	var ans WriteAnswer
	var m proto.Message
	switch op {
	case classify.Commit:
		ans.Commit = &firestorepb.CommitResponse{}
		m = ans.Commit
	case classify.BatchWrite:
		ans.BatchWrite = &firestorepb.BatchWriteResponse{}
		m = ans.BatchWrite
	case classify.CreateDocument, classify.PatchDocument:
		ans.Document = &firestorepb.Document{}
		m = ans.Document
	default:
		return ans // DeleteDocument answers Empty
	}
	if proto.Unmarshal(b, m) != nil {
		return WriteAnswer{}
	}
	return ans
}

// grpcOldReader reads the documents a write is about to change (events.old_value) with
// BatchGetDocuments upstream, as the caller (ctx carries its outgoing metadata).
func (p *Proxy) grpcOldReader(callCtx context.Context) OldReader {
	md, _ := metadata.FromOutgoingContext(callCtx)
	return func(ctx context.Context, names []string, tx []byte) map[string]*firestorepb.Document {
		if len(names) == 0 {
			return nil
		}
		d, err := firestorepath.ParseName(names[0])
		if err != nil {
			return nil
		}
		req := &firestorepb.BatchGetDocumentsRequest{Database: d.Database(), Documents: names}
		if len(tx) > 0 {
			req.ConsistencySelector = &firestorepb.BatchGetDocumentsRequest_Transaction{Transaction: tx}
		}
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.WithoutCancel(ctx), md),
			p.rules.Current().Upstream.Timeout)
		defer cancel()
		cs, err := p.grpcUp.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, firestoreService+"BatchGetDocuments")
		if err != nil || cs.SendMsg(req) != nil || cs.CloseSend() != nil {
			return nil
		}
		old := make(map[string]*firestorepb.Document, len(names))
		for {
			var r firestorepb.BatchGetDocumentsResponse
			if err := cs.RecvMsg(&r); err != nil {
				if errors.Is(err, io.EOF) {
					return old
				}
				p.log.Warn("reading old values failed", "err", err)
				return nil
			}
			switch res := r.Result.(type) {
			case *firestorepb.BatchGetDocumentsResponse_Found:
				old[res.Found.GetName()] = res.Found
			case *firestorepb.BatchGetDocumentsResponse_Missing:
				old[res.Missing] = nil
			}
		}
	}
}

// writeQueue pairs the Write stream's requests with their responses: the upstream
// answers each request with one WriteResponse, in order. An entry is nil for a request
// that carries no writes (the handshake).
type writeQueue struct {
	mu     sync.Mutex
	q      []*pendingWrite
	closed bool // settleAll ran: the stream is over
}

// push queues w; false once the stream is over (w was not forwarded then).
func (q *writeQueue) push(w *pendingWrite) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.q = append(q.q, w)
	return true
}

// pop returns the oldest entry; ok is false when none is waiting.
func (q *writeQueue) pop() (w *pendingWrite, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.q) == 0 {
		return nil, false
	}
	w = q.q[0]
	q.q[0] = nil
	q.q = q.q[1:]
	return w, true
}

// settleAll settles every write still waiting when the stream ended with err: the
// oldest failed definitively when err says so (the upstream refused it and applied
// nothing after it), every other one unknown.
func (q *writeQueue) settleAll(err error) {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	first := true
	for {
		w, ok := q.pop()
		if !ok {
			return
		}
		if w == nil {
			continue
		}
		if first && err != nil && !writeOutcomeUnknown(err) {
			w.failed()
		} else {
			w.unknown()
		}
		first = false
	}
}

// grpcWriteStream serves the bidirectional Write stream. The first request names the
// database (its answer carries the stream token); each later request's writes are
// classified as a Commit's, admitted by beginWrite before they are forwarded, and
// settled when their WriteResponse arrives, before that response is passed on.
func (p *Proxy) grpcWriteStream(ss grpc.ServerStream, method, id string) error {
	ctx, cancel := context.WithCancel(grpcrelay.OutgoingContext(ss.Context()))
	defer cancel()
	cs, err := p.grpcUp.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		p.countGRPC(classify.WriteChannel, resultError, err)
		return err
	}
	caller := Caller{Identity: id}
	var q writeQueue
	var refused error // set by the sending goroutine before it half-closes; read after RecvMsg ends
	var refusedMu sync.Mutex
	refuse := func(err error) {
		refusedMu.Lock()
		refused = err
		refusedMu.Unlock()
		_ = cs.CloseSend() // let the upstream answer what it has; forward nothing more
	}
	go func() {
		database := ""
		for {
			f := new(grpcrelay.Frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			var m firestorepb.WriteRequest
			if proto.Unmarshal(f.Bytes, &m) != nil {
				refuse(status.Error(codes.InvalidArgument, "malformed WriteRequest"))
				return
			}
			if database == "" {
				database = m.GetDatabase()
			}
			var w *pendingWrite
			if len(m.GetWrites()) > 0 {
				req, err := classify.FromWrites(classify.Commit, database, m.GetWrites(), false)
				if err != nil {
					refuse(classifyStatus(err))
					return
				}
				var refusal *Refusal
				if w, refusal = p.beginWrite(ctx, &req, caller, p.grpcOldReader(ctx)); refusal != nil {
					refuse(refusalStatus(refusal))
					return
				}
			}
			if !q.push(w) {
				if w != nil {
					w.failed() // never forwarded: the stream ended first
				}
				return
			}
			if cs.SendMsg(f) != nil {
				return // the upstream ended the stream: its status ends ours, and settles w
			}
		}
	}()

	hdr, herr := cs.Header()
	if herr != nil {
		hdr = nil
	}
	if err := ss.SendHeader(metadata.Join(hdr, bypassHeader)); err != nil {
		cancel()
		q.settleAll(status.FromContextError(context.Canceled).Err())
		return err
	}
	for {
		f := new(grpcrelay.Frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				err = nil
			}
			q.settleAll(err)
			refusedMu.Lock()
			if refused != nil {
				err = refused
			}
			refusedMu.Unlock()
			p.countGRPC(classify.WriteChannel, resultBypass, err)
			return err
		}
		if w, ok := q.pop(); ok && w != nil {
			var ans WriteAnswer
			if w.needsAnswer() {
				var r firestorepb.WriteResponse
				if proto.Unmarshal(f.Bytes, &r) == nil {
					ans.Commit = &firestorepb.CommitResponse{WriteResults: r.GetWriteResults(), CommitTime: r.GetCommitTime()}
				}
			}
			w.succeeded(ans)
		}
		if err := ss.SendMsg(f); err != nil {
			cancel()
			q.settleAll(status.FromContextError(context.Canceled).Err())
			return err
		}
	}
}
