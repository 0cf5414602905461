package proxy

// The gRPC front (docs: "Fronts and core"): HTTP/2 cleartext gRPC on the client port,
// told from HTTP/1.1 by the connection preface (internal/connsplit). One
// grpc.Server with a pass-through codec serves every method (grpcrelay): the Firestore
// reads it can cache go through the same rules, keys' ingredients, tags, tiers and
// generations as REST (grpcread.go), writes through the write core (grpcwrite.go), and
// everything else is relayed to the upstream untouched, streamed both ways.

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/grpcrelay"
)

// firestoreService is the path prefix of the Firestore v1 gRPC methods.
const firestoreService = "/google.firestore.v1.Firestore/"

// grpcOps are the Firestore methods by gRPC name, as classify names their REST twins.
var grpcOps = map[string]classify.Op{
	"GetDocument":         classify.GetDocument,
	"ListDocuments":       classify.ListDocuments,
	"RunQuery":            classify.RunQuery,
	"RunAggregationQuery": classify.RunAggregationQuery,
	"BatchGetDocuments":   classify.BatchGetDocuments,
	"ListCollectionIds":   classify.ListCollectionIds,
	"CreateDocument":      classify.CreateDocument,
	"UpdateDocument":      classify.PatchDocument,
	"DeleteDocument":      classify.DeleteDocument,
	"Commit":              classify.Commit,
	"BatchWrite":          classify.BatchWrite,
	"BeginTransaction":    classify.BeginTransaction,
	"Rollback":            classify.Rollback,
	"PartitionQuery":      classify.PartitionQuery,
	"Listen":              classify.Listen,
	"Write":               classify.WriteChannel,
	"ExecutePipeline":     classify.ExecutePipeline,
}

// grpcOp is the Op of a full gRPC method name ("/google.firestore.v1.Firestore/RunQuery").
func grpcOp(method string) classify.Op {
	name, ok := strings.CutPrefix(method, firestoreService)
	if !ok {
		return classify.OpUnknown
	}
	return grpcOps[name]
}

// newGRPC builds the gRPC server and the upstream connection (which dials lazily).
func (p *Proxy) newGRPC() error {
	up, err := grpcrelay.Dial(p.opts.Upstream)
	if err != nil {
		return fmt.Errorf("proxy: gRPC upstream: %w", err)
	}
	p.grpcUp = up
	p.grpcServer = grpc.NewServer(grpcrelay.ServerOptions(p.serveGRPC)...)
	return nil
}

// bypassHeader is the header metadata of every relayed answer.
var bypassHeader = metadata.Pairs("x-cache", "BYPASS")

// serveGRPC serves one gRPC call, whatever its method.
func (p *Proxy) serveGRPC(_ any, ss grpc.ServerStream) error {
	p.m.inflightN.Add(1)
	defer p.m.inflightN.Add(-1)
	method, _ := grpc.MethodFromServerStream(ss)
	op := grpcOp(method)
	id, err := grpcIdentity(ss.Context())
	if err != nil {
		p.m.requestOp(op, resultError)
		return err
	}
	switch op {
	case classify.GetDocument, classify.ListDocuments, classify.RunQuery,
		classify.RunAggregationQuery, classify.BatchGetDocuments, classify.ListCollectionIds:
		return p.grpcRead(ss, method, op, id)
	case classify.CreateDocument, classify.PatchDocument, classify.DeleteDocument,
		classify.Commit, classify.BatchWrite:
		return p.grpcUnaryWrite(ss, method, op, id)
	case classify.WriteChannel:
		return p.grpcWriteStream(ss, method, id)
	case classify.Listen:
		return p.grpcListen(ss, id)
	}
	return p.grpcBypass(ss, method, op, nil)
}

// grpcBypass relays a call untouched (first: its first message, when already read).
func (p *Proxy) grpcBypass(ss grpc.ServerStream, method string, op classify.Op, first *grpcrelay.Frame) error {
	err := grpcrelay.Relay(ss, p.grpcUp, method, grpcrelay.Options{First: first, Header: bypassHeader})
	p.countGRPC(op, resultBypass, err)
	return err
}

// countGRPC counts one answered call; a status the upstream could not give (it was
// unreachable) counts as an upstream error too.
func (p *Proxy) countGRPC(op classify.Op, r result, err error) {
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			p.m.upstreamErrors.WithLabelValues(op.String(), strings.ToLower(status.Code(err).String())).Inc()
		}
	}
	p.m.requestOp(op, r)
}

// grpcIdentity is the caller's identity (identity.go): identityOf the credentials its
// metadata carries (authorization, x-goog-api-key, x-firebase-appcheck, ...), the same
// hash a REST request with the same headers gets. A call with ambiguous credentials
// (a credential given twice, two authorization values) is refused with
// INVALID_ARGUMENT: which one the upstream would use is not the proxy's to guess.
func grpcIdentity(ctx context.Context) (string, error) {
	var buf [8]credential
	creds := buf[:0]
	for _, name := range credentialHeaders {
		for _, v := range metadata.ValueFromIncomingContext(ctx, name) { // no copy of the whole metadata
			creds = append(creds, credential{name: name, value: []byte(v)})
		}
	}
	id, err := identityOf(creds)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	return id, nil
}
