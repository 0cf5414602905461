package proxy

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/internal/testbed"
)

// listenTarget adds t on a new Listen stream through the proxy and waits until it is
// CURRENT; the stream stays open until the test ends.
func listenTarget(t *testing.T, h *harness, t1 *firestorepb.Target) {
	t.Helper()
	listenTargetAs(t, h, owner, t1)
}

// listenTargetAs is listenTarget with the given Authorization.
func listenTargetAs(t *testing.T, h *harness, authorization string, t1 *firestorepb.Target) {
	t.Helper()
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(),
		"authorization", authorization, "google-cloud-resource-prefix", h.database()))
	t.Cleanup(cancel)
	s, err := h.grpcVia(0).Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t1.TargetId = 2
	if err := s.Send(&firestorepb.ListenRequest{Database: h.database(), TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: t1}}); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		switch tc := r.GetTargetChange(); tc.GetTargetChangeType() {
		case firestorepb.TargetChange_CURRENT:
			return
		case firestorepb.TargetChange_REMOVE:
			t.Fatalf("listen: the target was removed: %v", tc.GetCause())
		}
	}
}

// docNames lists the document names of a REST runQuery answer, in order.
func docNames(t *testing.T, body []byte) []string {
	t.Helper()
	var rs []struct {
		Document *struct {
			Name string `json:"name"`
		} `json:"document"`
	}
	if err := json.Unmarshal(body, &rs); err != nil {
		t.Fatalf("runQuery answer %q: %v", body, err)
	}
	var names []string
	for _, r := range rs {
		if r.Document != nil {
			names = append(names, r.Document.Name)
		}
	}
	return names
}

// A document and a query some client listens to (under a shared rule) are answered
// from the live view over REST and gRPC: HIT-VIEW, the upstream not asked, the same
// documents in the same order as the upstream's own answer. A write through the proxy
// is seen by the very next read, whether a view answers it or not.
func TestReadsAreAnsweredFromLiveViews(t *testing.T) {
	h := newHarness(t, setup{})
	for _, id := range []string{"c", "a", "b"} {
		h.put("products/"+id, `{"v":{"stringValue":"`+id+`"},"n":{"integerValue":"`+map[string]string{"a": "3", "b": "1", "c": "2"}[id]+`"}}`)
	}
	query := `{"structuredQuery":{"from":[{"collectionId":"products"}],"orderBy":[{"field":{"fieldPath":"n"},"direction":"DESCENDING"}]}}`
	var sq firestorepb.RunQueryRequest
	if err := protojson.Unmarshal([]byte(query), &sq); err != nil {
		t.Fatal(err)
	}
	listenTarget(t, h, &firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: h.database() + "/documents", QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: sq.GetStructuredQuery()}}}})
	listenTarget(t, h, &firestorepb.Target{TargetType: &firestorepb.Target_Documents{
		Documents: &firestorepb.Target_DocumentsTarget{Documents: []string{h.name("products/a")}}}})

	direct := h.direct("POST", h.docs()+":runQuery", query)
	before, _ := h.counts()
	q := h.via(0, "POST", h.docs()+":runQuery", query)
	if q.status != 200 || q.cache() != "HIT-VIEW" {
		t.Fatalf("runQuery of a listened query: %v, want 200 HIT-VIEW", q)
	}
	if got, want := docNames(t, q.body), docNames(t, direct.body); len(want) != 3 || !slices.Equal(got, want) {
		t.Errorf("runQuery from the view: %v, the upstream answers %v", got, want)
	}
	d := h.via(0, "GET", h.docs()+"/products/a", "")
	if d.status != 200 || d.cache() != "HIT-VIEW" || normalized(t, d.body) != normalized(t, h.direct("GET", h.docs()+"/products/a", "").body) {
		t.Fatalf("get of a listened document: %v, want 200 HIT-VIEW with the upstream's document", d)
	}
	var hdr metadata.MD
	g, err := h.grpcVia(0).GetDocument(ownerCtx(), &firestorepb.GetDocumentRequest{Name: h.name("products/a")}, grpc.Header(&hdr))
	if err != nil || g.GetFields()["v"].GetStringValue() != "a" || len(hdr.Get("x-cache")) != 1 || hdr.Get("x-cache")[0] != "HIT-VIEW" {
		t.Fatalf("gRPC GetDocument of a listened document: %v %v (x-cache %v), want HIT-VIEW", g, err, hdr.Get("x-cache"))
	}
	if after, _ := h.counts(); after != before {
		t.Errorf("reads a view answers reached the upstream: %d requests", after-before)
	}
	if b := h.via(0, "GET", h.docs()+"/products/b", ""); b.cache() == "HIT-VIEW" {
		t.Errorf("a document nobody listens to alone was answered from a view: %v", b)
	}

	// Read-your-writes: every read after a write's answer sees it.
	for i := range 5 {
		v := string(rune('p' + i))
		if w := h.via(0, "PATCH", h.docs()+"/products/a?updateMask.fieldPaths=v", `{"fields":{"v":{"stringValue":"`+v+`"}}}`); w.status != 200 {
			t.Fatalf("write: %v", w)
		}
		var got struct {
			Fields struct {
				V struct {
					S string `json:"stringValue"`
				} `json:"v"`
			} `json:"fields"`
		}
		d := h.via(0, "GET", h.docs()+"/products/a", "")
		if err := json.Unmarshal(d.body, &got); err != nil || got.Fields.V.S != v {
			t.Fatalf("read after write %d: %v, want v=%s", i, d, v)
		}
	}
}

// A change a live view sees, even one made around the proxy, invalidates the cached
// reads of that document on every replica: a read cached for ten minutes shows the
// change as soon as the view has it.
func TestLiveViewChangesInvalidateCachedReads(t *testing.T) {
	h := newHarness(t, setup{replicas: 2, redis: redisAddr})
	h.put("products/x", `{"v":{"stringValue":"old"}}`)
	path := h.docs() + "/products/x"
	for i := range h.replicas {
		h.via(i, "GET", path, "")
		if a := h.via(i, "GET", path, ""); a.cache() != "HIT-L1" || !strings.Contains(string(a.body), `"old"`) {
			t.Fatalf("replica %d: %v, want the old document cached", i, a)
		}
	}
	listenTarget(t, h, &firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: h.database() + "/documents", QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}}}}}}})
	h.put("products/x", `{"v":{"stringValue":"new"}}`) // around the proxy
	for i := range h.replicas {
		waitFor(t, "the view's change to invalidate the cached read", func() bool {
			return strings.Contains(string(h.via(i, "GET", path, "").body), `"new"`)
		})
	}
}

// Under a scope: user rule a live view answers only reads with the very credentials it
// was listened with: another user's read of the same document takes the cache path
// (its own entry), never the view.
func TestLiveViewsOfUserScopeAnswerOnlyTheirCaller(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /orders/{o}
    ttl: 10m
`})
	h.emu.SetSecurityRules(t, h.project, "rules_version = '2';\nservice cloud.firestore {\n  match /databases/{db}/documents/{path=**} {\n    allow read: if request.auth != null;\n  }\n}\n")
	h.put("orders/a", `{"v":{"stringValue":"a"}}`)
	alice, bob := "Bearer "+testbed.IDToken(h.project, "alice"), "Bearer "+testbed.IDToken(h.project, "bob")
	listenTargetAs(t, h, alice, &firestorepb.Target{TargetType: &firestorepb.Target_Documents{
		Documents: &firestorepb.Target_DocumentsTarget{Documents: []string{h.name("orders/a")}}}})
	if a := h.via(0, "GET", h.docs()+"/orders/a", "", "Authorization", alice); a.status != 200 || a.cache() != "HIT-VIEW" {
		t.Errorf("alice's read of the document she listens to: %v, want 200 HIT-VIEW", a)
	}
	for _, auth := range []string{bob, owner} {
		if a := h.via(0, "GET", h.docs()+"/orders/a", "", "Authorization", auth); a.cache() == "HIT-VIEW" {
			t.Errorf("another caller's read was answered from alice's view: %v", a)
		}
	}
}
