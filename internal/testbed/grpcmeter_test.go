package testbed_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The meter carries gRPC (h2c) on the same port and counts it by gRPC method and
// billed reads, as Firestore bills the protobuf answers.
func TestMeterCountsGRPC(t *testing.T) {
	m, p, base := meteredProject(t)
	for _, id := range []string{"apple", "pear", "leek"} {
		cat := map[string]string{"apple": "fruit", "pear": "fruit", "leek": "veg"}[id]
		mustCall(t, http.DefaultClient, "POST", base+"/products?documentId="+id, `{"fields":{"category":{"stringValue":"`+cat+`"}}}`, false)
	}
	cc, err := grpc.NewClient("passthrough:///"+m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := firestorepb.NewFirestoreClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer owner")
	db := "projects/" + p + "/databases/(default)"
	root := db + "/documents"
	drain := func(recv func() error) {
		for {
			if err := recv(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				return
			}
		}
	}
	query := func(cat string) *firestorepb.RunQueryRequest {
		return &firestorepb.RunQueryRequest{Parent: root, QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
			Where: &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
				Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "category"}, Op: firestorepb.StructuredQuery_FieldFilter_EQUAL,
				Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: cat}}}}}}}}
	}
	steps := []struct {
		name, method string
		do           func()
		wantReads    int64
	}{
		{"get one", "GetDocument", func() {
			if _, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: root + "/products/apple"}); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"get missing", "GetDocument", func() {
			if _, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: root + "/products/nope"}); status.Code(err) != codes.NotFound {
				t.Fatal(err)
			}
		}, 1},
		{"list 3", "ListDocuments", func() {
			if _, err := c.ListDocuments(ctx, &firestorepb.ListDocumentsRequest{Parent: root, CollectionId: "products"}); err != nil {
				t.Fatal(err)
			}
		}, 3},
		{"query returning 2", "RunQuery", func() {
			s, err := c.RunQuery(ctx, query("fruit"))
			if err != nil {
				t.Fatal(err)
			}
			drain(func() error { _, err := s.Recv(); return err })
		}, 2},
		{"empty query", "RunQuery", func() {
			s, err := c.RunQuery(ctx, query("meat"))
			if err != nil {
				t.Fatal(err)
			}
			drain(func() error { _, err := s.Recv(); return err })
		}, 1},
		{"batchGet 2 found 1 missing", "BatchGetDocuments", func() {
			s, err := c.BatchGetDocuments(ctx, &firestorepb.BatchGetDocumentsRequest{Database: db,
				Documents: []string{root + "/products/apple", root + "/products/leek", root + "/products/nope"}})
			if err != nil {
				t.Fatal(err)
			}
			drain(func() error { _, err := s.Recv(); return err })
		}, 3},
		{"listCollectionIds", "ListCollectionIds", func() {
			if _, err := c.ListCollectionIds(ctx, &firestorepb.ListCollectionIdsRequest{Parent: root}); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"commit", "Commit", func() {
			if _, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: db, Writes: []*firestorepb.Write{
				{Operation: &firestorepb.Write_Delete{Delete: root + "/products/leek"}}}}); err != nil {
				t.Fatal(err)
			}
		}, 0},
	}
	for _, s := range steps {
		m.Reset()
		s.do()
		got := m.Snapshot()
		if got.BilledReads != s.wantReads || got.Requests[s.method] != 1 || got.Total != 1 {
			t.Errorf("%s: counts %+v, want %s=1 total=1 billed reads=%d", s.name, got, s.method, s.wantReads)
		}
	}
	// Refuse cuts gRPC connections too.
	m.Refuse()
	if _, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: root + "/products/apple"}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetDocument while the meter refuses: %v, want UNAVAILABLE", err)
	}
	m.Accept()
}
