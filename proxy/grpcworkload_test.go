package proxy

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestRandomMixedWorkloadHasNoStaleReads is TestRandomWorkloadHasNoStaleReads over
// both fronts: each write goes through a random replica as a REST PATCH, a gRPC
// UpdateDocument, Commit or Write-stream write; each read through a random replica as a
// REST get or list, or a gRPC GetDocument, ListDocuments, BatchGetDocuments or
// RunQuery. No read may return a version older than one acknowledged before it asked,
// whichever front wrote it and whichever front reads it.
func TestRandomMixedWorkloadHasNoStaleReads(t *testing.T) {
	h := newHarness(t, setup{replicas: 2, redis: redisAddr})
	const (
		docs       = 12
		writers    = 3
		writesEach = 40
		readers    = 6
		readsEach  = 150
	)
	for d := range docs {
		h.put(docName(d), `{"v":{"integerValue":"0"}}`)
	}
	clients := []firestorepb.FirestoreClient{h.grpcVia(0), h.grpcVia(1)}
	var acked [docs]atomic.Int64
	var stale, failures, hits, reads atomic.Int64
	report := func(format string, args ...any) {
		failures.Add(1)
		t.Errorf(format, args...)
	}
	ctx := ownerCtx()
	vdoc := func(d int, v int64) *firestorepb.Document {
		return &firestorepb.Document{Name: h.name(docName(d)), Fields: map[string]*firestorepb.Value{
			"v": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: v}}}}
	}
	mask := &firestorepb.DocumentMask{FieldPaths: []string{"v"}}
	write := func(rng *rand.Rand, d int, v int64) error {
		rep := rng.IntN(2)
		c := clients[rep]
		switch rng.IntN(4) {
		case 0:
			a, err := h.send(h.replicas[rep].url, "PATCH", h.docs()+"/"+docName(d)+"?updateMask.fieldPaths=v",
				fmt.Sprintf(`{"fields":{"v":{"integerValue":"%d"}}}`, v))
			if err == nil && a.status != 200 {
				err = fmt.Errorf("%v", a)
			}
			return err
		case 1:
			_, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: vdoc(d, v), UpdateMask: mask})
			return err
		case 2:
			_, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: h.database(), Writes: []*firestorepb.Write{
				{Operation: &firestorepb.Write_Update{Update: vdoc(d, v)}, UpdateMask: mask}}})
			return err
		default:
			_, err := writeStream(ctx, c, h.database(), []*firestorepb.Write{
				{Operation: &firestorepb.Write_Update{Update: vdoc(d, v)}, UpdateMask: mask}})
			return err
		}
	}
	// read returns the versions seen by document index and the x-cache value.
	read := func(rng *rand.Rand) (map[int]int64, string, error) {
		rep := rng.IntN(2)
		c := clients[rep]
		seen := map[int]int64{}
		note := func(docs ...*firestorepb.Document) {
			for _, doc := range docs {
				if d := docIndex(doc.GetName()); d >= 0 {
					seen[d] = version(doc)
				}
			}
		}
		d := rng.IntN(docs)
		var hdr metadata.MD
		switch rng.IntN(6) {
		case 0:
			a, err := h.send(h.replicas[rep].url, "GET", h.docs()+"/"+docName(d), "")
			if err != nil || a.status != 200 {
				return nil, "", fmt.Errorf("%v %v", a, err)
			}
			var doc firestorepb.Document
			if err := protojson.Unmarshal(a.body, &doc); err != nil {
				return nil, "", err
			}
			note(&doc)
			return seen, a.cache(), nil
		case 1:
			a, err := h.send(h.replicas[rep].url, "GET", h.docs()+"/products", "")
			if err != nil || a.status != 200 {
				return nil, "", fmt.Errorf("%v %v", a, err)
			}
			var list firestorepb.ListDocumentsResponse
			if err := protojson.Unmarshal(a.body, &list); err != nil {
				return nil, "", err
			}
			note(list.Documents...)
			return seen, a.cache(), nil
		case 2:
			doc, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: h.name(docName(d))}, grpc.Header(&hdr))
			if err != nil {
				return nil, "", err
			}
			note(doc)
		case 3:
			list, err := c.ListDocuments(ctx, &firestorepb.ListDocumentsRequest{Parent: h.database() + "/documents", CollectionId: "products"}, grpc.Header(&hdr))
			if err != nil {
				return nil, "", err
			}
			note(list.Documents...)
		case 4:
			s, err := c.BatchGetDocuments(ctx, &firestorepb.BatchGetDocumentsRequest{Database: h.database(),
				Documents: []string{h.name(docName(d)), h.name(docName((d + 1) % docs))}})
			if err != nil {
				return nil, "", err
			}
			for {
				r, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, "", err
				}
				note(r.GetFound())
			}
			hdr, _ = s.Header()
		default:
			s, err := c.RunQuery(ctx, &firestorepb.RunQueryRequest{Parent: h.database() + "/documents",
				QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
					From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}}}}})
			if err != nil {
				return nil, "", err
			}
			for {
				r, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return nil, "", err
				}
				note(r.GetDocument())
			}
			hdr, _ = s.Header()
		}
		return seen, first(hdr.Get("x-cache")), nil
	}

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for range writesEach {
				d := w + writers*rng.IntN(docs/writers)
				v := acked[d].Load() + 1
				if err := write(rng, d, v); err != nil {
					report("write %s v%d: %v", docName(d), v, err)
					return
				}
				acked[d].Store(v)
			}
		}()
	}
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 4))
			for range readsEach {
				var floor [docs]int64
				for d := range docs {
					floor[d] = acked[d].Load()
				}
				seen, xc, err := read(rng)
				if err != nil {
					report("read: %v", err)
					return
				}
				for d, v := range seen {
					if v < floor[d] {
						stale.Add(1)
						t.Errorf("stale read (%s): %s at v%d, v%d was acknowledged before the read", xc, docName(d), v, floor[d])
					}
				}
				count(&reads, &hits, xc)
			}
		}()
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d requests failed", failures.Load())
	}
	t.Logf("%d reads, %d cache hits, %d stale", reads.Load(), hits.Load(), stale.Load())
	if hits.Load() == 0 {
		t.Fatal("no read was a cache hit: the workload did not exercise the cache")
	}
}
