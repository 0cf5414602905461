package proxy

import (
	"context"
	"strings"
	"testing"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	h.expect(q, want{typ: "created", doc: "products/c", index: 0, rewritten: true, auth: owner, fields: map[string]string{"name": `{"stringValue":"corn"}`}})
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

// events.old_value over gRPC: the proxy reads the document (BatchGetDocuments upstream,
// as the caller) before forwarding a unary write, a Write-stream write, and a commit
// in a transaction (read inside it).
func TestGRPCEventsOldValue(t *testing.T) {
	q := newEventQueue(t)
	h := newHarness(t, eventSetup(q, brokerURL, "old_value: true"))
	waitBroker(t, h.replicas[0])
	h.put("products/a", `{"n":{"integerValue":"1"}}`)
	c := h.grpcVia(0)
	num := func(n int64) map[string]*firestorepb.Value {
		return map[string]*firestorepb.Value{"n": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: n}}}
	}
	wantOld := func(d delivery, n string) {
		t.Helper()
		if o := d.ce.Data.OldValue; o == nil || string(o.Fields["n"]) != `{"integerValue":"`+n+`"}` {
			t.Errorf("%s: oldValue = %+v, want n=%s", d.ce.Subject, o, n)
		}
	}
	if _, err := c.UpdateDocument(ownerCtx(), &firestorepb.UpdateDocumentRequest{Document: &firestorepb.Document{Name: h.name("products/a"), Fields: num(2)}}); err != nil {
		t.Fatal(err)
	}
	wantOld(h.expect(q, want{typ: "updated", doc: "products/a", auth: owner, fields: map[string]string{"n": `{"integerValue":"2"}`}}), "1")

	if _, err := writeStream(ownerCtx(), c, h.database(), []*firestorepb.Write{
		{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: h.name("products/a"), Fields: num(3)}}},
		{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: h.name("products/new"), Fields: num(9)}}},
	}); err != nil {
		t.Fatal(err)
	}
	wantOld(h.expect(q, want{typ: "updated", doc: "products/a", auth: owner, fields: map[string]string{"n": `{"integerValue":"3"}`}}), "2")
	if d := h.expect(q, want{typ: "created", doc: "products/new", index: 1, auth: owner, fields: map[string]string{"n": ""}}); d.ce.Data.OldValue != nil {
		t.Errorf("created event has an oldValue: %v", d)
	}

	// The Go client over gRPC: RunTransaction commits with its transaction.
	gc, err := firestore.NewClient(context.Background(), h.project, option.WithEndpoint(strings.TrimPrefix(h.replicas[0].url, "http://")),
		option.WithoutAuthentication(), option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	err = gc.RunTransaction(context.Background(), func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(gc.Doc("products/a"))
		if err != nil {
			return err
		}
		return tx.Set(gc.Doc("products/a"), map[string]any{"n": snap.Data()["n"].(int64) + 1})
	})
	if err != nil {
		t.Fatalf("RunTransaction: %v", err)
	}
	wantOld(h.expect(q, want{typ: "updated", doc: "products/a", fields: map[string]string{"n": `{"integerValue":"4"}`}}), "3")
}
