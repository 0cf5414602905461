package proxy

// The Listen fan-out in the proxy: every client Listen stream, gRPC (grpcListen) or
// WebChannel (listenchannel.go), is served by the hub of package fanout. The rules
// decide each target's mode (listenMode): a target under rules that cache it is shared,
// under scope: shared with the proxy's credentials and by everyone, under scope: user
// per caller identity with the caller's credentials; any other target rides the
// caller's own upstream stream, as if the proxy were not there.

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/watch"
)

// newHub makes the fan-out hub on an upstream connection dialled at first use, so a
// proxy nobody listens through never looks for credentials.
func (p *Proxy) newHub() (*fanout.Hub, error) {
	co := p.opts.Capture // the proxy's own upstream credentials, shared with capture
	url := co.Upstream
	if url == "" {
		url = p.opts.Upstream
	}
	lc := p.rules.Current().Listen
	linger := lc.Linger
	if linger == 0 {
		linger = -1 // the hub's "close at once"
	}
	p.listenConn = &lazyConn{dial: func() (*grpc.ClientConn, error) {
		cc, err := watch.Dial(context.Background(), watch.DialOptions{URL: url, TokenFile: co.TokenFile})
		if err != nil {
			p.log.Error("fan-out: cannot reach the upstream's Listen with the proxy's credentials", "err", err)
		}
		return cc, err
	}}
	return fanout.New(fanout.Config{
		Conn:             p.listenConn,
		Policy:           p.listenMode,
		Linger:           linger,
		ClientQueue:      lc.ClientQueue,
		MaxClientTargets: lc.MaxClientTargets,
		OnChange:         p.viewChanged,
		Log:              p.log,
		Registerer:       p.opts.Registry,
	})
}

// listenMode is the hub's Policy: a listen target is shared as its read would be
// cached (ruleFor: a documents target is the batchGet of its documents, a query target
// the runQuery of its query).
func (p *Proxy) listenMode(database string, t *firestorepb.Target) fanout.Mode {
	var read proto.Message
	switch {
	case t.GetDocuments() != nil:
		read = &firestorepb.BatchGetDocumentsRequest{Database: database, Documents: t.GetDocuments().GetDocuments()}
	case t.GetQuery() != nil:
		q := t.GetQuery()
		read = &firestorepb.RunQueryRequest{Parent: q.GetParent(),
			QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: q.GetStructuredQuery()}}
	default:
		return fanout.Passthrough
	}
	req := classify.FromProtoRead(read)
	if req.Kind != classify.Read || req.Database != database {
		return fanout.Passthrough
	}
	rule := ruleFor(p.rules.Current(), &req)
	switch {
	case rule == nil:
		return fanout.Passthrough
	case rule.Scope == rules.ScopeShared:
		return fanout.Shared
	default:
		return fanout.PerCaller
	}
}

// viewChanged is the hub's OnChange: documents a view saw change were written around
// or through the proxy; cached reads of them are invalidated on every replica, as
// change capture does.
// The bump does not wait for the replicas' acknowledgements (nobody is waiting for an
// answer) and runs off the view's goroutine, which must not stall.
func (p *Proxy) viewChanged(database string, names []string) {
	var tags []string
	for _, n := range names {
		tags = append(tags, classify.WriteTags(database, n)...)
	}
	if len(tags) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.tiers.Gens.Bump(ctx, tags, cache.NoWait); err != nil {
			p.log.Warn("fan-out: invalidating documents a live view saw change", "documents", len(names), "err", err)
		}
	}()
}

// grpcListen serves a gRPC Listen call with the Listen handler.
func (p *Proxy) grpcListen(ss grpc.ServerStream, id string) error {
	ctx := ss.Context()
	caller := fanout.Caller{Identity: id, Metadata: callerMetadata(ctx)}
	if v := metadata.ValueFromIncomingContext(ctx, "google-cloud-resource-prefix"); len(v) == 1 {
		caller.Database = v[0]
	}
	err := p.serveListen(grpcListenStream{ss}, caller)
	p.countGRPC(classify.Listen, resultBypass, err)
	return err
}

// serveListen serves one client Listen stream with the hub until it ends or the proxy
// drains: a draining proxy ends its Listen streams with UNAVAILABLE at once (the SDKs
// reconnect, to another replica) instead of holding the shutdown for its whole grace.
func (p *Proxy) serveListen(s fanout.Stream, c fanout.Caller) error {
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel()
	stop := context.AfterFunc(p.listenCtx, cancel)
	defer stop()
	err := p.listenHandler(drainable{s, ctx}, c)
	if p.listenCtx.Err() != nil {
		return status.Error(codes.Unavailable, "the proxy is shutting down")
	}
	return err
}

// drainable is a Stream whose context also ends when the proxy drains.
type drainable struct {
	fanout.Stream
	ctx context.Context
}

func (d drainable) Context() context.Context { return d.ctx }

// callerMetadata is the credential metadata of a call (credentialHeaders): what an
// upstream call made on the caller's behalf presents.
func callerMetadata(ctx context.Context) metadata.MD {
	md := metadata.MD{}
	for _, name := range credentialHeaders {
		if v := metadata.ValueFromIncomingContext(ctx, name); len(v) > 0 {
			md[name] = append([]string(nil), v...)
		}
	}
	return md
}

// grpcListenStream is a gRPC Listen call as a fanout.Stream: the front's raw codec
// carries each message's protobuf bytes, decoded and encoded here.
type grpcListenStream struct{ ss grpc.ServerStream }

func (s grpcListenStream) Context() context.Context { return s.ss.Context() }

func (s grpcListenStream) Recv() (*firestorepb.ListenRequest, error) {
	var f grpcrelay.Frame
	if err := s.ss.RecvMsg(&f); err != nil {
		return nil, err
	}
	req := new(firestorepb.ListenRequest)
	if err := proto.Unmarshal(f.Bytes, req); err != nil {
		return nil, status.Error(codes.InvalidArgument, "malformed ListenRequest")
	}
	return req, nil
}

func (s grpcListenStream) Send(r *firestorepb.ListenResponse) error {
	b, err := proto.Marshal(r)
	if err != nil {
		return status.Error(codes.Internal, "cannot encode a ListenResponse")
	}
	return s.ss.SendMsg(&grpcrelay.Frame{Bytes: b})
}

// upstreamListenConns is how many HTTP/2 connections the views' upstream Listen
// streams are spread over. Each view is a stream of its own, and Google's front end
// allows about 100 concurrent streams on one connection (grpc-go queues the rest, so a
// view beyond them would wait for another to end): eight connections carry 800.
const upstreamListenConns = 8

// lazyConn is a set of upstream gRPC connections, dialled at the first call; calls
// take them in turn.
type lazyConn struct {
	dial func() (*grpc.ClientConn, error)
	once sync.Once
	ccs  []*grpc.ClientConn
	err  error
	next atomic.Uint64
}

func (l *lazyConn) get() (*grpc.ClientConn, error) {
	l.once.Do(func() {
		for range upstreamListenConns {
			cc, err := l.dial()
			if err != nil {
				for _, c := range l.ccs {
					c.Close()
				}
				l.ccs, l.err = nil, err
				return
			}
			l.ccs = append(l.ccs, cc)
		}
	})
	if l.err != nil {
		return nil, l.err
	}
	return l.ccs[l.next.Add(1)%uint64(len(l.ccs))], nil
}

func (l *lazyConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc, err := l.get()
	if err != nil {
		return status.Error(codes.Unavailable, "the proxy cannot reach the upstream's Listen")
	}
	return cc.Invoke(ctx, method, args, reply, opts...)
}

func (l *lazyConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, err := l.get()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the proxy cannot reach the upstream's Listen")
	}
	return cc.NewStream(ctx, desc, method, opts...)
}

// Close closes the connections that were dialled.
func (l *lazyConn) Close() {
	l.once.Do(func() {}) // no dial after Close
	for _, cc := range l.ccs {
		cc.Close()
	}
}
