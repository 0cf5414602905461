package proxy

// Tests of the gRPC front: the same harness (replicas, meter, emulator), clients that
// speak gRPC with the generated firestorepb stubs, so metadata, deadlines and statuses
// are what a gRPC client sees.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// grpcClient is a gRPC Firestore client of replica i (or of addr), closed with the test.
func (h *harness) grpcClient(addr string) firestorepb.FirestoreClient {
	h.t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cc.Close() })
	return firestorepb.NewFirestoreClient(cc)
}

// grpcVia is the gRPC client of replica i.
func (h *harness) grpcVia(i int) firestorepb.FirestoreClient {
	return h.grpcClient(strings.TrimPrefix(h.replicas[i].url, "http://"))
}

// ownerCtx carries the emulator's admin credential, as the Go client sends it to an
// emulator host.
func ownerCtx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", owner)
}

// grpcRead is one cacheable gRPC read kind; do returns the answer's messages (as
// deterministic bytes, for comparison) and its x-cache header.
type grpcRead struct {
	name string
	do   func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error)
}

// collect drains a server stream into comparable text.
func collect[T proto.Message](s interface {
	Recv() (T, error)
	Header() (metadata.MD, error)
}) (string, string, error) {
	var b strings.Builder
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", "", err
		}
		b.WriteString(text(m))
	}
	md, _ := s.Header()
	return b.String(), first(md.Get("x-cache")), nil
}

// text is a message without its read times (which differ on every upstream call).
func text(m proto.Message) string {
	m = proto.Clone(m)
	switch r := m.(type) {
	case *firestorepb.RunQueryResponse:
		r.ReadTime = nil
	case *firestorepb.BatchGetDocumentsResponse:
		r.ReadTime = nil
	case *firestorepb.RunAggregationQueryResponse:
		r.ReadTime = nil
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return fmt.Sprintf("%x;", b)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// grpcReadsOf lists every cacheable gRPC read kind over farmers/f and its products,
// the twins of readsOf.
func (h *harness) grpcReadsOf(f string) []grpcRead {
	parent := h.name("farmers/" + f)
	onStatus := &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{
		FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
			Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "status"},
			Op:    firestorepb.StructuredQuery_FieldFilter_EQUAL,
			Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: "on"}},
		}}}
	query := func(group bool) *firestorepb.StructuredQuery {
		return &firestorepb.StructuredQuery{
			From:  []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products", AllDescendants: group}},
			Where: onStatus,
		}
	}
	unary := func(m proto.Message, md metadata.MD, err error) (string, string, error) {
		if err != nil {
			return "", "", err
		}
		return text(m), first(md.Get("x-cache")), nil
	}
	return []grpcRead{
		{"GetDocument", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			var md metadata.MD
			d, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: parent + "/products/a"}, grpc.Header(&md))
			return unary(d, md, err)
		}},
		{"ListDocuments", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			var md metadata.MD
			r, err := c.ListDocuments(ctx, &firestorepb.ListDocumentsRequest{Parent: parent, CollectionId: "products"}, grpc.Header(&md))
			return unary(r, md, err)
		}},
		{"RunQuery", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			s, err := c.RunQuery(ctx, &firestorepb.RunQueryRequest{Parent: parent,
				QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: query(false)}})
			if err != nil {
				return "", "", err
			}
			return collect(s)
		}},
		{"RunQuery(group)", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			s, err := c.RunQuery(ctx, &firestorepb.RunQueryRequest{Parent: h.name("")[:len(h.name(""))-1],
				QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: query(true)}})
			if err != nil {
				return "", "", err
			}
			return collect(s)
		}},
		{"BatchGetDocuments", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			s, err := c.BatchGetDocuments(ctx, &firestorepb.BatchGetDocumentsRequest{
				Database:  "projects/" + h.project + "/databases/(default)",
				Documents: []string{parent + "/products/a", parent + "/products/b"}})
			if err != nil {
				return "", "", err
			}
			return collect(s)
		}},
		{"RunAggregationQuery", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			s, err := c.RunAggregationQuery(ctx, &firestorepb.RunAggregationQueryRequest{Parent: parent,
				QueryType: &firestorepb.RunAggregationQueryRequest_StructuredAggregationQuery{
					StructuredAggregationQuery: &firestorepb.StructuredAggregationQuery{
						QueryType: &firestorepb.StructuredAggregationQuery_StructuredQuery{StructuredQuery: query(false)},
						Aggregations: []*firestorepb.StructuredAggregationQuery_Aggregation{{
							Alias: "n", Operator: &firestorepb.StructuredAggregationQuery_Aggregation_Count_{
								Count: &firestorepb.StructuredAggregationQuery_Aggregation_Count{}}}},
					}}})
			if err != nil {
				return "", "", err
			}
			return collect(s)
		}},
		{"ListCollectionIds", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			var md metadata.MD
			r, err := c.ListCollectionIds(ctx, &firestorepb.ListCollectionIdsRequest{Parent: parent}, grpc.Header(&md))
			return unary(r, md, err)
		}},
	}
}

// TestGRPCRepeatedReadsMoveMeterByNothing: every gRPC read kind is answered as the
// emulator answers it directly, then from cache: repeating it costs the upstream
// nothing.
func TestGRPCRepeatedReadsMoveMeterByNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	h.put("farmers/f", `{"name":{"stringValue":"F"}}`)
	h.put("farmers/f/products/a", `{"status":{"stringValue":"on"}}`)
	h.put("farmers/f/products/b", `{"status":{"stringValue":"on"}}`)
	direct := h.grpcClient(h.emu.Addr)
	via := h.grpcVia(0)
	for _, r := range h.grpcReadsOf("f") {
		want, _, err := r.do(ownerCtx(), direct)
		if err != nil {
			t.Fatalf("%s directly: %v", r.name, err)
		}
		missed, _ := h.counts()
		got, xc, err := r.do(ownerCtx(), via)
		if err != nil || got != want || xc != "MISS" {
			t.Fatalf("%s through the proxy: x-cache %q err %v, same answer %v", r.name, xc, err, got == want)
		}
		method, _, _ := strings.Cut(r.name, "(")
		before, billed := h.counts()
		if n := h.meter.Snapshot().Requests[method]; before != missed+1 || n == 0 {
			t.Fatalf("%s: the miss was not one gRPC call upstream (meter: %v)", r.name, h.meter.Snapshot().Requests)
		}
		for range 3 {
			got, xc, err := r.do(ownerCtx(), via)
			if err != nil || got != want || xc != "HIT-L1" {
				t.Fatalf("%s repeated: x-cache %q err %v, same answer %v", r.name, xc, err, got == want)
			}
		}
		if after, billedAfter := h.counts(); after != before || billedAfter != billed {
			t.Errorf("%s: repeated reads moved the meter: requests %d→%d, billed %d→%d", r.name, before, after, billed, billedAfter)
		}
	}
}
