package proxy

import (
	"context"
	"strings"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/metadata"
)

// Every kind of gRPC write through the proxy yields exactly the events the same write
// over REST yields, in order: type, subject, deterministic id (with the write's
// position), routing key, the document as written, the caller's identity hash.
func TestEventsFromEveryGRPCWriteKind(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL))
	waitBroker(t, h.replicas[0])
	c := h.grpcVia(0)
	ctx := ownerCtx()
	str := func(s string) *firestorepb.Value {
		return &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: s}}
	}
	num := func(n int64) *firestorepb.Value {
		return &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: n}}
	}
	docOf := func(rel string, fields map[string]*firestorepb.Value) *firestorepb.Document {
		return &firestorepb.Document{Name: h.name(rel), Fields: fields}
	}

	if _, err := c.CreateDocument(ctx, &firestorepb.CreateDocumentRequest{Parent: h.name("")[:len(h.name(""))-1],
		CollectionId: "products", DocumentId: "a", Document: &firestorepb.Document{Fields: map[string]*firestorepb.Value{"name": str("apple"), "n": num(1)}}}); err != nil {
		t.Fatalf("CreateDocument: %v", err)
	}
	h.expect(q, want{typ: "created", doc: "products/a", auth: owner, fields: map[string]string{"name": `{"stringValue":"apple"}`, "n": `{"integerValue":"1"}`}})

	if _, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: docOf("products/b", map[string]*firestorepb.Value{"name": str("bean")})}); err != nil {
		t.Fatalf("UpdateDocument: %v", err)
	}
	h.expect(q, want{typ: "written", doc: "products/b", auth: owner, fields: map[string]string{"name": `{"stringValue":"bean"}`}})

	if _, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: docOf("products/a", map[string]*firestorepb.Value{"n": num(2)}),
		UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"n"}},
		CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: true}}}); err != nil {
		t.Fatalf("UpdateDocument with a mask: %v", err)
	}
	d := h.expect(q, want{typ: "updated", doc: "products/a", auth: owner, fields: map[string]string{"n": `{"integerValue":"2"}`}})
	if m := d.ce.Data.UpdateMask; m == nil || strings.Join(m.FieldPaths, ",") != "n" {
		t.Errorf("UpdateDocument with a mask: updateMask %+v, want [n]", m)
	}

	if _, err := c.DeleteDocument(ctx, &firestorepb.DeleteDocumentRequest{Name: h.name("products/b")}); err != nil {
		t.Fatalf("DeleteDocument: %v", err)
	}
	h.expect(q, want{typ: "deleted", doc: "products/b", auth: owner})

	// A commit of three writes: the events carry their positions.
	exists := func(b bool) *firestorepb.Precondition {
		return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: b}}
	}
	if _, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: h.database(), Writes: []*firestorepb.Write{
		{Operation: &firestorepb.Write_Update{Update: docOf("products/c", map[string]*firestorepb.Value{"name": str("corn")})}, CurrentDocument: exists(false)},
		{Operation: &firestorepb.Write_Update{Update: docOf("products/d", map[string]*firestorepb.Value{"name": str("date")})}},
		{Operation: &firestorepb.Write_Delete{Delete: h.name("products/c")}},
	}}); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	h.expect(q, want{typ: "created", doc: "products/c", index: 0, auth: owner, fields: map[string]string{"name": `{"stringValue":"corn"}`}})
	h.expect(q, want{typ: "written", doc: "products/d", index: 1, auth: owner, fields: map[string]string{"name": `{"stringValue":"date"}`}})
	h.expect(q, want{typ: "deleted", doc: "products/c", index: 2, auth: owner})

	// BatchWrite with one failing write: only the successes emit.
	if _, err := c.BatchWrite(ctx, &firestorepb.BatchWriteRequest{Database: h.database(), Writes: []*firestorepb.Write{
		{Operation: &firestorepb.Write_Update{Update: docOf("products/e", map[string]*firestorepb.Value{"name": str("egg")})}},
		{Operation: &firestorepb.Write_Update{Update: docOf("products/missing", nil)}, CurrentDocument: exists(true)},
		{Operation: &firestorepb.Write_Delete{Delete: h.name("products/d")}},
	}}); err != nil {
		t.Fatalf("BatchWrite: %v", err)
	}
	h.expect(q, want{typ: "written", doc: "products/e", index: 0, auth: owner, fields: map[string]string{"name": `{"stringValue":"egg"}`}})
	h.expect(q, want{typ: "deleted", doc: "products/d", index: 2, auth: owner})

	// The Write stream, as the full Firebase SDK writes, with a user's token.
	jwt := unsignedJWT(h.project, "u1")
	userCtx := metadata.AppendToOutgoingContext(context.Background(), "authorization", jwt)
	if _, err := writeStream(userCtx, c, h.database(), []*firestorepb.Write{
		{Operation: &firestorepb.Write_Update{Update: docOf("orders/o1", map[string]*firestorepb.Value{"total": num(5)})}, CurrentDocument: exists(false)},
		{Operation: &firestorepb.Write_Update{Update: docOf("products/f", map[string]*firestorepb.Value{"name": str("fig")})}},
	}); err != nil {
		t.Fatalf("Write stream: %v", err)
	}
	h.expect(q, want{typ: "created", doc: "orders/o1", index: 0, auth: jwt, fields: map[string]string{"total": `{"integerValue":"5"}`}})
	h.expect(q, want{typ: "written", doc: "products/f", index: 1, auth: jwt, fields: map[string]string{"name": `{"stringValue":"fig"}`}})

	// A create with a server-assigned id: the event names the new document.
	created, err := c.CreateDocument(userCtx, &firestorepb.CreateDocumentRequest{Parent: h.name("")[:len(h.name(""))-1],
		CollectionId: "orders", Document: &firestorepb.Document{Fields: map[string]*firestorepb.Value{"total": num(8)}}})
	if err != nil {
		t.Fatalf("CreateDocument with a server id: %v", err)
	}
	newID := created.Name[strings.LastIndexByte(created.Name, '/')+1:]
	h.expect(q, want{typ: "created", doc: "orders/" + newID, auth: jwt, fields: map[string]string{"total": `{"integerValue":"8"}`}})

	// quiet/ has no events: the marker written after it is the next event.
	if _, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: docOf("quiet/q1", nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: docOf("products/marker", nil)}); err != nil {
		t.Fatal(err)
	}
	h.expect(q, want{typ: "written", doc: "products/marker", auth: owner})
}
