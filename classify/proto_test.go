package classify

import (
	"reflect"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const protoDB = "projects/p/databases/(default)"

// Every protobuf read classifies as its REST twin does: same Kind, Op, Database,
// Targets, Tags and Transactional, so the same rules match and the same writes
// invalidate it.
func TestFromProtoReadMatchesREST(t *testing.T) {
	root := protoDB + "/documents"
	q := &firestorepb.StructuredQuery{From: []*firestorepb.StructuredQuery_CollectionSelector{
		{CollectionId: "products"}, {CollectionId: "orders", AllDescendants: true}}}
	agg := &firestorepb.StructuredAggregationQuery{
		QueryType: &firestorepb.StructuredAggregationQuery_StructuredQuery{StructuredQuery: q},
		Aggregations: []*firestorepb.StructuredAggregationQuery_Aggregation{{Alias: "n",
			Operator: &firestorepb.StructuredAggregationQuery_Aggregation_Count_{Count: &firestorepb.StructuredAggregationQuery_Aggregation_Count{}}}}}
	json := func(m proto.Message) []byte { b, _ := protojson.Marshal(m); return b }
	tx := []byte("tx")
	cases := []struct {
		name             string
		msg              proto.Message
		method, path     string
		body             []byte
		wantTransactions bool
	}{
		{"get", &firestorepb.GetDocumentRequest{Name: root + "/farmers/f1/products/p1"},
			"GET", "/v1/" + root + "/farmers/f1/products/p1", nil, false},
		{"get in a transaction", &firestorepb.GetDocumentRequest{Name: root + "/products/p1",
			ConsistencySelector: &firestorepb.GetDocumentRequest_Transaction{Transaction: tx}},
			"GET", "/v1/" + root + "/products/p1?transaction=dHg", nil, true},
		{"list", &firestorepb.ListDocumentsRequest{Parent: root + "/farmers/f1", CollectionId: "products", PageSize: 5},
			"GET", "/v1/" + root + "/farmers/f1/products?pageSize=5", nil, false},
		{"list at the root", &firestorepb.ListDocumentsRequest{Parent: root, CollectionId: "products"},
			"GET", "/v1/" + root + "/products", nil, false},
		{"runQuery", &firestorepb.RunQueryRequest{Parent: root + "/farmers/f1",
			QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: q}},
			"POST", "/v1/" + root + "/farmers/f1:runQuery",
			json(&firestorepb.RunQueryRequest{QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: q}}), false},
		{"runQuery at a read time", &firestorepb.RunQueryRequest{Parent: root,
			QueryType:           &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: q},
			ConsistencySelector: &firestorepb.RunQueryRequest_ReadTime{ReadTime: timestamppb.New(timestamppb.Now().AsTime())}},
			"POST", "/v1/" + root + ":runQuery",
			json(&firestorepb.RunQueryRequest{QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: q},
				ConsistencySelector: &firestorepb.RunQueryRequest_ReadTime{ReadTime: timestamppb.Now()}}), true},
		{"runAggregationQuery", &firestorepb.RunAggregationQueryRequest{Parent: root,
			QueryType: &firestorepb.RunAggregationQueryRequest_StructuredAggregationQuery{StructuredAggregationQuery: agg}},
			"POST", "/v1/" + root + ":runAggregationQuery",
			json(&firestorepb.RunAggregationQueryRequest{QueryType: &firestorepb.RunAggregationQueryRequest_StructuredAggregationQuery{StructuredAggregationQuery: agg}}), false},
		{"batchGet", &firestorepb.BatchGetDocumentsRequest{Database: protoDB, Documents: []string{root + "/a/1", root + "/b/2/c/3"}},
			"POST", "/v1/" + root + ":batchGet", json(&firestorepb.BatchGetDocumentsRequest{Documents: []string{root + "/a/1", root + "/b/2/c/3"}}), false},
		{"batchGet with a new transaction", &firestorepb.BatchGetDocumentsRequest{Database: protoDB, Documents: []string{root + "/a/1"},
			ConsistencySelector: &firestorepb.BatchGetDocumentsRequest_NewTransaction{NewTransaction: &firestorepb.TransactionOptions{}}},
			"POST", "/v1/" + root + ":batchGet", json(&firestorepb.BatchGetDocumentsRequest{Documents: []string{root + "/a/1"},
				ConsistencySelector: &firestorepb.BatchGetDocumentsRequest_NewTransaction{NewTransaction: &firestorepb.TransactionOptions{}}}), true},
		{"listCollectionIds", &firestorepb.ListCollectionIdsRequest{Parent: root + "/farmers/f1"},
			"POST", "/v1/" + root + "/farmers/f1:listCollectionIds", []byte(`{}`), false},
	}
	for _, c := range cases {
		got := FromProtoRead(c.msg)
		var query string
		path := c.path
		if i := indexByte(path, '?'); i >= 0 {
			path, query = path[:i], path[i+1:]
		}
		want, err := Classify(c.method, path, query, c.body)
		if err != nil {
			t.Fatalf("%s: REST twin: %v", c.name, err)
		}
		if got.Kind != want.Kind || got.Op != want.Op || got.Database != want.Database ||
			!reflect.DeepEqual(got.Targets, want.Targets) || !reflect.DeepEqual(got.Tags, want.Tags) ||
			got.Transactional != want.Transactional || got.Transactional != c.wantTransactions ||
			got.Privileged != want.Privileged {
			t.Errorf("%s:\n proto %+v\n REST  %+v", c.name, got, want)
		}
	}
}

// The key body is the request without its resource name: every other field (mask,
// page token, the query) is in it, and equal requests have equal bytes.
func TestFromProtoReadKeysWhatShapesTheAnswer(t *testing.T) {
	name := protoDB + "/documents/products/p1"
	a := FromProtoRead(&firestorepb.GetDocumentRequest{Name: name})
	b := FromProtoRead(&firestorepb.GetDocumentRequest{Name: name, Mask: &firestorepb.DocumentMask{FieldPaths: []string{"x"}}})
	c := FromProtoRead(&firestorepb.GetDocumentRequest{Name: name, Mask: &firestorepb.DocumentMask{FieldPaths: []string{"x"}}})
	if string(a.CacheBody) == string(b.CacheBody) || string(b.CacheBody) != string(c.CacheBody) || a.ResourcePath != name {
		t.Errorf("key bodies: no mask %x, mask %x, same mask %x; resource %q", a.CacheBody, b.CacheBody, c.CacheBody, a.ResourcePath)
	}
	l1 := FromProtoRead(&firestorepb.ListDocumentsRequest{Parent: protoDB + "/documents", CollectionId: "products", PageToken: "t1"})
	l2 := FromProtoRead(&firestorepb.ListDocumentsRequest{Parent: protoDB + "/documents", CollectionId: "products", PageToken: "t2"})
	if string(l1.CacheBody) == string(l2.CacheBody) {
		t.Error("two page tokens share a key body")
	}
}

// What the proxy cannot describe is a Bypass, never a Read: foreign or malformed names,
// unknown fields, show_missing, kindless queries, documents of another database.
func TestFromProtoReadBypasses(t *testing.T) {
	root := protoDB + "/documents"
	unknown := &firestorepb.GetDocumentRequest{Name: root + "/products/p1"}
	unknown.ProtoReflect().SetUnknown([]byte{0xf8, 0x07, 0x01}) // field 127, varint 1
	for name, m := range map[string]proto.Message{
		"malformed name":   &firestorepb.GetDocumentRequest{Name: "projects/p/databases"},
		"a collection":     &firestorepb.GetDocumentRequest{Name: root + "/products"},
		"unknown field":    unknown,
		"show missing":     &firestorepb.ListDocumentsRequest{Parent: root, CollectionId: "products", ShowMissing: true},
		"no collection id": &firestorepb.ListDocumentsRequest{Parent: root},
		"kindless query":   &firestorepb.RunQueryRequest{Parent: root, QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{}}},
		"another database": &firestorepb.BatchGetDocumentsRequest{Database: protoDB, Documents: []string{"projects/q/databases/(default)/documents/a/1"}},
		"not a read":       &firestorepb.CommitRequest{Database: protoDB},
		"query under a collection": &firestorepb.RunQueryRequest{Parent: root + "/products",
			QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
				From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "x"}}}}},
	} {
		if got := FromProtoRead(m); got.Kind != Bypass {
			t.Errorf("%s: %v, want bypass", name, got.Kind)
		}
	}
}

// Single-document writes classify as the REST create, patch and delete of the same
// document: same Targets, Tags and the equivalent Write.
func TestFromProtoWriteMatchesREST(t *testing.T) {
	root := protoDB + "/documents"
	fields := map[string]*firestorepb.Value{"a": {ValueType: &firestorepb.Value_StringValue{StringValue: "x"}}}
	cases := []struct {
		name               string
		msg                proto.Message
		method, path, body string
	}{
		{"create with id", &firestorepb.CreateDocumentRequest{Parent: root + "/farmers/f1", CollectionId: "products", DocumentId: "p1",
			Document: &firestorepb.Document{Fields: fields}}, "POST", "/v1/" + root + "/farmers/f1/products?documentId=p1", `{"fields":{"a":{"stringValue":"x"}}}`},
		{"create with a server id", &firestorepb.CreateDocumentRequest{Parent: root, CollectionId: "products",
			Document: &firestorepb.Document{Fields: fields}}, "POST", "/v1/" + root + "/products", `{"fields":{"a":{"stringValue":"x"}}}`},
		{"update with mask and precondition", &firestorepb.UpdateDocumentRequest{Document: &firestorepb.Document{Name: root + "/products/p1", Fields: fields},
			UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"a"}},
			CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: true}}},
			"PATCH", "/v1/" + root + "/products/p1?updateMask.fieldPaths=a&currentDocument.exists=true", `{"fields":{"a":{"stringValue":"x"}}}`},
		{"delete", &firestorepb.DeleteDocumentRequest{Name: root + "/farmers/f1"}, "DELETE", "/v1/" + root + "/farmers/f1", ""},
	}
	for _, c := range cases {
		got, err := FromProtoWrite(c.msg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		path, query := c.path, ""
		if i := indexByte(path, '?'); i >= 0 {
			path, query = path[:i], path[i+1:]
		}
		want, err := Classify(c.method, path, query, []byte(c.body))
		if err != nil {
			t.Fatalf("%s: REST twin: %v", c.name, err)
		}
		if got.Kind != Write || got.Op != want.Op || !reflect.DeepEqual(got.Targets, want.Targets) ||
			!reflect.DeepEqual(got.Tags, want.Tags) || len(got.Writes) != 1 ||
			!proto.Equal(got.Writes[0].Write, want.Writes[0].Write) || got.Writes[0].Name != want.Writes[0].Name {
			t.Errorf("%s:\n proto %+v\n REST  %+v", c.name, got, want)
		}
	}
	for name, m := range map[string]proto.Message{
		"create, bad collection": &firestorepb.CreateDocumentRequest{Parent: root, CollectionId: "a/b"},
		"update, no document":    &firestorepb.UpdateDocumentRequest{},
		"delete, a collection":   &firestorepb.DeleteDocumentRequest{Name: root + "/products"},
	} {
		if _, err := FromProtoWrite(m); err == nil {
			t.Errorf("%s: classified; a write whose document is unknown must be refused", name)
		}
	}
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// FromProtoRead never panics on any request bytes a client can send, and a Read it
// returns always has tags and targets (a read the proxy cannot invalidate is never
// cached).
func FuzzFromProtoRead(f *testing.F) {
	root := protoDB + "/documents"
	for _, m := range []proto.Message{
		&firestorepb.GetDocumentRequest{Name: root + "/a/1"},
		&firestorepb.ListDocumentsRequest{Parent: root, CollectionId: "a"},
		&firestorepb.RunQueryRequest{Parent: root, QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "a", AllDescendants: true}}}}},
		&firestorepb.BatchGetDocumentsRequest{Database: protoDB, Documents: []string{root + "/a/1"}},
		&firestorepb.ListCollectionIdsRequest{Parent: root + "/a/1"},
	} {
		b, _ := proto.Marshal(m)
		for op := range uint8(6) {
			f.Add(op, b)
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, b []byte) {
		var m proto.Message
		switch op % 6 {
		case 0:
			m = &firestorepb.GetDocumentRequest{}
		case 1:
			m = &firestorepb.ListDocumentsRequest{}
		case 2:
			m = &firestorepb.RunQueryRequest{}
		case 3:
			m = &firestorepb.RunAggregationQueryRequest{}
		case 4:
			m = &firestorepb.BatchGetDocumentsRequest{}
		default:
			m = &firestorepb.ListCollectionIdsRequest{}
		}
		if proto.Unmarshal(b, m) != nil {
			return
		}
		req := FromProtoRead(m)
		if req.Kind == Read && (len(req.Tags) == 0 || len(req.Targets) == 0 || req.Database == "") {
			t.Fatalf("a read without tags or targets: %+v", req)
		}
		if req.Kind == Write {
			t.Fatalf("a read classified as a write: %+v", req)
		}
	})
}
