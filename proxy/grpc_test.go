package proxy

// Tests of the gRPC front: the same harness (replicas, meter, emulator), clients that
// speak gRPC with the generated firestorepb stubs, so metadata, deadlines and statuses
// are what a gRPC client sees.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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
	unary := func(m proto.Message, md, tr metadata.MD, err error) (string, string, error) {
		xc := first(append(md.Get("x-cache"), tr.Get("x-cache")...))
		if status.Code(err) == codes.NotFound { // an answer like any other (and cacheable)
			return "NOT_FOUND " + status.Convert(err).Message(), xc, nil
		}
		if err != nil {
			return "", "", err
		}
		return text(m), xc, nil
	}
	return []grpcRead{
		{"GetDocument", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			var md, tr metadata.MD
			d, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: parent + "/products/a"}, grpc.Header(&md), grpc.Trailer(&tr))
			return unary(d, md, tr, err)
		}},
		{"ListDocuments", func(ctx context.Context, c firestorepb.FirestoreClient) (string, string, error) {
			var md metadata.MD
			r, err := c.ListDocuments(ctx, &firestorepb.ListDocumentsRequest{Parent: parent, CollectionId: "products"}, grpc.Header(&md))
			return unary(r, md, nil, err)
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
			return unary(r, md, nil, err)
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

// grpcWriteKind is one gRPC way to write farmers/<f>/products, the twin of writeKind.
type grpcWriteKind struct {
	name      string
	seed      map[string]string
	do        func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error
	unchanged []string // read kinds (REST names) it cannot change
}

func onFields() map[string]*firestorepb.Value {
	return map[string]*firestorepb.Value{"status": {ValueType: &firestorepb.Value_StringValue{StringValue: "on"}}}
}

// threeProtoWrites creates a and b (status on) and deletes c, which never existed.
func threeProtoWrites(h *harness, f string) []*firestorepb.Write {
	up := func(id string) *firestorepb.Write {
		return &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{
			Name: h.name("farmers/" + f + "/products/" + id), Fields: onFields()}}}
	}
	return []*firestorepb.Write{up("a"), up("b"),
		{Operation: &firestorepb.Write_Delete{Delete: h.name("farmers/" + f + "/products/c")}}}
}

func (h *harness) database() string { return "projects/" + h.project + "/databases/(default)" }

// writeStream writes over the bidirectional Write stream as the full Firebase SDK does:
// a handshake naming the database, then one request of writes with the stream token.
func writeStream(ctx context.Context, c firestorepb.FirestoreClient, database string, writes []*firestorepb.Write) (*firestorepb.WriteResponse, error) {
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", database))
	defer cancel()
	s, err := c.Write(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&firestorepb.WriteRequest{Database: database}); err != nil {
		return nil, err
	}
	hs, err := s.Recv()
	if err != nil {
		return nil, err
	}
	if err := s.Send(&firestorepb.WriteRequest{Writes: writes, StreamToken: hs.GetStreamToken()}); err != nil {
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	return resp, s.CloseSend()
}

var grpcWriteKinds = []grpcWriteKind{
	{
		name: "UpdateDocument set",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: &firestorepb.Document{
				Name: h.name("farmers/" + f + "/products/a"), Fields: onFields()}})
			return err
		},
	},
	{
		name: "UpdateDocument mask", seed: map[string]string{"products/a": off},
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{
				Document:        &firestorepb.Document{Name: h.name("farmers/" + f + "/products/a"), Fields: onFields()},
				UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"status"}},
				CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: true}},
			})
			return err
		},
		unchanged: []string{"collectionIds", "ListCollectionIds"},
	},
	{
		name: "CreateDocument with id",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.CreateDocument(ctx, &firestorepb.CreateDocumentRequest{Parent: h.name("farmers/" + f),
				CollectionId: "products", DocumentId: "a", Document: &firestorepb.Document{Fields: onFields()}})
			return err
		},
	},
	{
		name: "CreateDocument with server id",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.CreateDocument(ctx, &firestorepb.CreateDocumentRequest{Parent: h.name("farmers/" + f),
				CollectionId: "products", Document: &firestorepb.Document{Fields: onFields()}})
			return err
		},
		unchanged: []string{"get", "batchGet", "GetDocument", "BatchGetDocuments"},
	},
	{
		name: "DeleteDocument", seed: map[string]string{"products/a": on},
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.DeleteDocument(ctx, &firestorepb.DeleteDocumentRequest{Name: h.name("farmers/" + f + "/products/a")})
			return err
		},
	},
	{
		name: "Commit",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: h.database(), Writes: threeProtoWrites(h, f)})
			return err
		},
	},
	{
		name: "BatchWrite",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := c.BatchWrite(ctx, &firestorepb.BatchWriteRequest{Database: h.database(), Writes: threeProtoWrites(h, f)})
			return err
		},
	},
	{
		name: "Write stream",
		do: func(ctx context.Context, h *harness, c firestorepb.FirestoreClient, f string) error {
			_, err := writeStream(ctx, c, h.database(), threeProtoWrites(h, f))
			return err
		},
	},
}

// anyWrite is a write of either front, for the cross-protocol invalidation test.
type anyWrite struct {
	name      string
	seed      map[string]string
	do        func(h *harness, f string) error
	unchanged []string
}

// Read-your-writes across fronts and replicas: every gRPC write kind, and every REST
// write kind, invalidates every dependent REST and gRPC read kind on the replica it went
// through and on another one sharing Redis.
func TestEveryWriteOfEitherFrontInvalidatesEveryReadOfBoth(t *testing.T) {
	h := newHarness(t, setup{replicas: 2, redis: redisAddr})
	direct := h.grpcClient(h.emu.Addr)
	clients := []firestorepb.FirestoreClient{h.grpcVia(0), h.grpcVia(1)}
	var writes []anyWrite
	for _, w := range grpcWriteKinds {
		writes = append(writes, anyWrite{name: "gRPC " + w.name, seed: w.seed, unchanged: w.unchanged,
			do: func(h *harness, f string) error { return w.do(ownerCtx(), h, clients[0], f) }})
	}
	grpcTwin := map[string]string{"get": "GetDocument", "batchGet": "BatchGetDocuments", "collectionIds": "ListCollectionIds"}
	for _, w := range writeKinds {
		unchanged := slices.Clone(w.unchanged)
		for _, n := range w.unchanged {
			unchanged = append(unchanged, grpcTwin[n])
		}
		writes = append(writes, anyWrite{name: "REST " + w.name, seed: w.seed, unchanged: unchanged,
			do: func(h *harness, f string) error {
				if a := h.via(0, w.method, w.path(h, f), w.body(h, f)); a.status != 200 {
					return fmt.Errorf("%v", a)
				}
				return nil
			}})
	}
	for i, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			f := fmt.Sprintf("x%d", i)
			h.put("farmers/"+f, `{"name":{"stringValue":"farmer"}}`)
			for doc, fields := range w.seed {
				h.put("farmers/"+f+"/"+doc, fields)
			}
			rest, grpcReads := h.readsOf(f), h.grpcReadsOf(f)
			before := map[string]string{}
			for _, r := range rest {
				before[r.name] = normalized(t, h.direct(r.method, r.path, r.body).body)
				for rep := range h.replicas {
					h.via(rep, r.method, r.path, r.body)
					if a := h.via(rep, r.method, r.path, r.body); !isHit(a.cache()) {
						t.Fatalf("replica %d, %s: not cached before the write: %v", rep, r.name, a)
					}
				}
			}
			for _, r := range grpcReads {
				truth, _, err := r.do(ownerCtx(), direct)
				if err != nil {
					t.Fatalf("%s directly: %v", r.name, err)
				}
				before[r.name] = truth
				for rep, c := range clients {
					r.do(ownerCtx(), c)
					if _, xc, err := r.do(ownerCtx(), c); err != nil || !isHit(xc) {
						t.Fatalf("replica %d, %s: not cached before the write: %s %v", rep, r.name, xc, err)
					}
				}
			}

			if err := w.do(h, f); err != nil {
				t.Fatalf("write through replica 0: %v", err)
			}

			mayStay := func(name string) bool {
				n, _, _ := strings.Cut(name, "(")
				return strings.Contains(","+strings.Join(w.unchanged, ",")+",", ","+n+",")
			}
			for _, r := range rest {
				truth := normalized(t, h.direct(r.method, r.path, r.body).body)
				if truth == before[r.name] && !mayStay(r.name) {
					t.Fatalf("%s: the write did not change the emulator's answer; the test proves nothing", r.name)
				}
				for rep, who := range []string{"the writing replica", "the other replica"} {
					got := h.via(rep, r.method, r.path, r.body)
					if g := normalized(t, got.body); g != truth {
						t.Errorf("REST %s on %s: served %s\n got  %s\n want %s", r.name, who, got.cache(), g, truth)
					}
				}
			}
			for _, r := range grpcReads {
				truth, _, err := r.do(ownerCtx(), direct)
				if err != nil {
					t.Fatal(err)
				}
				if truth == before[r.name] && !mayStay(r.name) {
					t.Fatalf("%s: the write did not change the emulator's answer; the test proves nothing", r.name)
				}
				for rep, who := range []string{"the writing replica", "the other replica"} {
					got, xc, err := r.do(ownerCtx(), clients[rep])
					if err != nil || got != truth {
						t.Errorf("gRPC %s on %s: served %s (err %v), not the emulator's answer", r.name, who, xc, err)
					}
				}
			}
		})
	}
}
