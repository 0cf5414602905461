package testbed

import (
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/proxy/grpcrelay"
)

// startGRPC builds the meter's gRPC side: every call relayed to the upstream's gRPC
// side (h2c for http://, TLS for https://), counted by method and billed reads.
func (m *Meter) startGRPC() error {
	up, err := grpcrelay.Dial(m.upstream.String())
	if err != nil {
		return err
	}
	m.grpcUp = up
	m.grpcSrv = grpc.NewServer(grpcrelay.ServerOptions(m.serveGRPC)...)
	return nil
}

// grpcMethod is the short name of a full gRPC method ("/google.firestore.v1.Firestore/
// RunQuery" → "RunQuery"); other services' methods keep their full name.
func grpcMethod(full string) string {
	if name, ok := strings.CutPrefix(full, "/google.firestore.v1.Firestore/"); ok {
		return name
	}
	return full
}

// grpcCodes maps the HTTP status FailWith was given to the gRPC code Firestore uses.
var grpcCodes = map[int]codes.Code{
	400: codes.InvalidArgument, 401: codes.Unauthenticated, 403: codes.PermissionDenied,
	404: codes.NotFound, 409: codes.Aborted, 412: codes.FailedPrecondition, 429: codes.ResourceExhausted,
	499: codes.Canceled, 500: codes.Internal, 501: codes.Unimplemented, 502: codes.Unavailable,
	503: codes.Unavailable, 504: codes.DeadlineExceeded,
}

func (m *Meter) serveGRPC(_ any, ss grpc.ServerStream) error {
	full, _ := grpc.MethodFromServerStream(ss)
	method := grpcMethod(full)
	m.mu.Lock()
	latency, failStatus := m.latency, m.failStatus
	m.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-ss.Context().Done():
			return status.FromContextError(ss.Context().Err()).Err()
		}
	}
	if failStatus != 0 {
		m.mu.Lock()
		m.injected++
		m.mu.Unlock()
		code, ok := grpcCodes[failStatus]
		if !ok {
			code = codes.Unknown
		}
		return status.Errorf(code, "testbed meter: injected %d", failStatus)
	}

	o := grpcrelay.Options{}
	bill := &grpcBill{method: method}
	if method == "RunAggregationQuery" {
		// The count() aliases decide the billing: read the request first.
		first := new(grpcrelay.Frame)
		if err := ss.RecvMsg(first); err != nil {
			return err
		}
		var req firestorepb.RunAggregationQueryRequest
		if proto.Unmarshal(first.Bytes, &req) == nil {
			bill.countAliases = aggregationCountAliases(&req)
		}
		o.First = first
	}
	m.mu.Lock()
	m.requests[method]++
	m.mu.Unlock()
	if isMeteredGRPCRead(method) {
		o.OnResponse = func(_ string, msg []byte) { bill.add(msg) }
	}
	if method == "Listen" {
		o.OnResponse = m.countListenResponse
		ss = listenStream{ServerStream: ss, m: m} // listenmeter.go
	}
	err := grpcrelay.Relay(ss, m.grpcUp, full, o)
	// Counted before the status reaches the client: a client that has its answer may
	// trust Snapshot.
	if isMeteredGRPCRead(method) {
		n := bill.total(status.Code(err))
		m.mu.Lock()
		m.billed += n
		m.mu.Unlock()
	}
	return err
}

func isMeteredGRPCRead(method string) bool {
	switch method {
	case "GetDocument", "ListDocuments", "RunQuery", "BatchGetDocuments", "RunAggregationQuery", "ListCollectionIds":
		return true
	}
	return false
}

// grpcBill counts one call's billed reads as its messages pass, the rules of
// billedReads applied to protobuf answers.
type grpcBill struct {
	method       string
	countAliases map[string]bool
	docs         int64
	counted      int64 // RunAggregationQuery: the largest count() result
	msgs         int
}

func (b *grpcBill) add(msg []byte) {
	b.msgs++
	switch b.method {
	case "ListDocuments":
		var r firestorepb.ListDocumentsResponse
		if proto.Unmarshal(msg, &r) == nil {
			b.docs += int64(len(r.GetDocuments()))
		}
	case "RunQuery":
		var r firestorepb.RunQueryResponse
		if proto.Unmarshal(msg, &r) == nil && r.GetDocument() != nil {
			b.docs++
		}
	case "BatchGetDocuments":
		var r firestorepb.BatchGetDocumentsResponse
		if proto.Unmarshal(msg, &r) == nil && (r.GetFound() != nil || r.GetMissing() != "") {
			b.docs++
		}
	case "RunAggregationQuery":
		var r firestorepb.RunAggregationQueryResponse
		if proto.Unmarshal(msg, &r) == nil {
			for alias, v := range r.GetResult().GetAggregateFields() {
				if b.countAliases[alias] {
					b.counted = max(b.counted, v.GetIntegerValue())
				}
			}
		}
	}
}

// total is the call's billed reads once it ended with code.
func (b *grpcBill) total(code codes.Code) int64 {
	if b.method == "GetDocument" && (code == codes.OK || code == codes.NotFound) {
		return 1
	}
	if code != codes.OK {
		return 0
	}
	switch b.method {
	case "ListCollectionIds":
		return 1
	case "ListDocuments", "RunQuery":
		return atLeastOne(b.docs)
	case "BatchGetDocuments":
		return b.docs
	case "RunAggregationQuery":
		return atLeastOne((b.counted + 999) / 1000)
	}
	return 0
}

// aggregationCountAliases is countAliases for a parsed request.
func aggregationCountAliases(req *firestorepb.RunAggregationQueryRequest) map[string]bool {
	aliases := map[string]bool{}
	for i, a := range req.GetStructuredAggregationQuery().GetAggregations() {
		if a.GetCount() == nil {
			continue
		}
		alias := a.GetAlias()
		if alias == "" {
			alias = fmt.Sprintf("field_%d", i+1) // Firestore names unaliased aggregations by position
		}
		aliases[alias] = true
	}
	return aliases
}
