package classify

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	db      = "projects/p/databases/(default)"
	root    = db + "/documents"
	goPath  = "/v1/projects/p/databases/%28default%29/documents" // Go client, REST mode
	rawPath = "/v1/projects/p/databases/(default)/documents"     // curl, JS SDK
	goAlt   = "%24alt=json%3Benum-encoding%3Dint"
)

// goJSON encodes a request the way the Go client's REST transport does: protojson with
// enums as numbers, the whole request (path fields included) in the body.
func goJSON(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := protojson.MarshalOptions{UseEnumNumbers: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exists(b bool) *firestorepb.Precondition {
	return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: b}}
}

func doc(rel string) Target { return Target{Kind: TargetDocument, Path: rel} }
func coll(rel, id string) Target {
	return Target{Kind: TargetCollection, Path: rel, CollectionID: id}
}

// writeTagsOf lists, unsorted, the tags WriteTags is expected to return.
func writeTagsOf(rel, collRel, id string, ancestors ...string) []string {
	tags := []string{"coll:" + root + "/" + collRel, "group:" + db + "/" + id}
	if rel != "" {
		tags = append(tags, "doc:"+root+"/"+rel)
	}
	for _, a := range ancestors {
		tags = append(tags, "colls:"+a)
	}
	return tags
}

func TestClassify(t *testing.T) {
	goQuery := goJSON(t, &firestorepb.RunQueryRequest{
		Parent: root,
		QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From:  []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
			Where: fieldFilter("price", firestorepb.StructuredQuery_FieldFilter_LESS_THAN, 10),
			Limit: wrapperspb.Int32(5),
		}},
	})
	patchTime := timestamppb.New(mustTime(t, "2026-01-02T03:04:05.123456Z"))
	commitBody := []byte(`{
		"writes": [
			{"update": {"name": "` + root + `/products/p1", "fields": {"n": {"integerValue": "1"}}},
			 "updateMask": {"fieldPaths": ["n"]}, "currentDocument": {"exists": true}},
			{"delete": "` + root + `/farmers/f1/products/p2"},
			{"transform": {"document": "` + root + `/products/p1",
			 "fieldTransforms": [{"fieldPath": "n", "increment": {"integerValue": "1"}}]}}
		]}`)
	commitWrites := []DocWrite{
		{Name: root + "/products/p1", Index: 0, Write: &firestorepb.Write{
			Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{
				Name: root + "/products/p1", Fields: map[string]*firestorepb.Value{"n": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 1}}}}},
			UpdateMask: &firestorepb.DocumentMask{FieldPaths: []string{"n"}}, CurrentDocument: exists(true)}},
		{Name: root + "/farmers/f1/products/p2", Index: 1, Write: &firestorepb.Write{
			Operation: &firestorepb.Write_Delete{Delete: root + "/farmers/f1/products/p2"}}},
		{Name: root + "/products/p1", Index: 2, Write: &firestorepb.Write{
			Operation: &firestorepb.Write_Transform{Transform: &firestorepb.DocumentTransform{
				Document: root + "/products/p1",
				FieldTransforms: []*firestorepb.DocumentTransform_FieldTransform{{FieldPath: "n",
					TransformType: &firestorepb.DocumentTransform_FieldTransform_Increment{Increment: &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 1}}}}}}}}},
	}
	commitTags := append(writeTagsOf("products/p1", "products", "products", root),
		writeTagsOf("farmers/f1/products/p2", "farmers/f1/products", "products", root+"/farmers/f1", root)...)

	tests := []struct {
		name          string
		method, path  string
		query         string
		body          string
		kind          Kind
		op            Op
		transactional bool
		targets       []Target
		tags          []string
		writes        []DocWrite
	}{
		// Reads.
		{name: "get, Go client", method: "GET", path: goPath + "/products/p1", query: goAlt + "&mask.fieldPaths=name&mask.fieldPaths=price",
			kind: Read, op: GetDocument, targets: []Target{doc("products/p1")}, tags: []string{"doc:" + root + "/products/p1"}},
		{name: "get, JS SDK key", method: "GET", path: rawPath + "/farmers/f1/products/p1", query: "key=AIzaFake",
			kind: Read, op: GetDocument, targets: []Target{doc("farmers/f1/products/p1")}, tags: []string{"doc:" + root + "/farmers/f1/products/p1"}},
		{name: "get, curl, encoded id", method: "GET", path: rawPath + "/products/caf%C3%A9%20au%20lait",
			kind: Read, op: GetDocument, targets: []Target{doc("products/café au lait")}, tags: []string{"doc:" + root + "/products/café au lait"}},
		{name: "list top-level", method: "GET", path: goPath + "/products", query: goAlt + "&pageSize=10&orderBy=price",
			kind: Read, op: ListDocuments, targets: []Target{coll("products", "products")}, tags: []string{"coll:" + root + "/products"}},
		{name: "list subcollection", method: "GET", path: rawPath + "/farmers/f1/products", query: "pageToken=abc",
			kind: Read, op: ListDocuments, targets: []Target{coll("farmers/f1/products", "products")}, tags: []string{"coll:" + root + "/farmers/f1/products"}},
		{name: "runQuery, Go client", method: "POST", path: goPath + ":runQuery", query: goAlt, body: string(goQuery),
			kind: Read, op: RunQuery, targets: []Target{coll("products", "products")}, tags: []string{"coll:" + root + "/products"}},
		{name: "runQuery, JS SDK under a document", method: "POST", path: rawPath + "/farmers/f1:runQuery", query: "key=AIzaFake",
			body: `{"structuredQuery":{"from":[{"collectionId":"products"}],"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}]}}`,
			kind: Read, op: RunQuery, targets: []Target{coll("farmers/f1/products", "products")}, tags: []string{"coll:" + root + "/farmers/f1/products"}},
		{name: "runQuery, collection group", method: "POST", path: rawPath + ":runQuery",
			body: `{"structuredQuery":{"from":[{"collectionId":"products","allDescendants":true}]}}`,
			kind: Read, op: RunQuery, targets: []Target{{Kind: TargetGroup, Path: "", CollectionID: "products"}}, tags: []string{"group:" + db + "/products"}},
		{name: "runAggregationQuery, group under a document", method: "POST", path: goPath + "/farmers/f1:runAggregationQuery", query: goAlt,
			body: `{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"orders","allDescendants":true}]},"aggregations":[{"alias":"n","count":{}}]}}`,
			kind: Read, op: RunAggregationQuery, targets: []Target{{Kind: TargetGroup, Path: "farmers/f1", CollectionID: "orders"}}, tags: []string{"group:" + db + "/orders"}},
		{name: "runAggregationQuery", method: "POST", path: rawPath + ":runAggregationQuery",
			body: `{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"orders"}]},"aggregations":[{"alias":"s","sum":{"field":{"fieldPath":"total"}}}]}}`,
			kind: Read, op: RunAggregationQuery, targets: []Target{coll("orders", "orders")}, tags: []string{"coll:" + root + "/orders"}},
		{name: "batchGet", method: "POST", path: goPath + ":batchGet", query: goAlt,
			body: `{"database":"` + db + `","documents":["` + root + `/products/p2","` + root + `/products/p1","` + root + `/products/p2"]}`,
			kind: Read, op: BatchGetDocuments, targets: []Target{doc("products/p2"), doc("products/p1"), doc("products/p2")},
			tags: []string{"doc:" + root + "/products/p1", "doc:" + root + "/products/p2"}},
		{name: "listCollectionIds, root, empty body", method: "POST", path: rawPath + ":listCollectionIds",
			kind: Read, op: ListCollectionIds, targets: []Target{doc("")}, tags: []string{"colls:" + root}},
		{name: "listCollectionIds, document", method: "POST", path: goPath + "/farmers/f1:listCollectionIds", query: goAlt,
			body: `{"parent":"` + root + `/farmers/f1","pageSize":20}`,
			kind: Read, op: ListCollectionIds, targets: []Target{doc("farmers/f1")}, tags: []string{"colls:" + root + "/farmers/f1"}},

		// Transactional reads bypass, but still say what they read.
		{name: "get in a transaction", method: "GET", path: goPath + "/products/p1", query: goAlt + "&transaction=dHg%3D",
			kind: Bypass, op: GetDocument, transactional: true, targets: []Target{doc("products/p1")}, tags: []string{"doc:" + root + "/products/p1"}},
		{name: "get at readTime (snake_case)", method: "GET", path: rawPath + "/products/p1", query: "read_time=2026-01-01T00:00:00Z",
			kind: Bypass, op: GetDocument, transactional: true, targets: []Target{doc("products/p1")}, tags: []string{"doc:" + root + "/products/p1"}},
		{name: "list at readTime", method: "GET", path: rawPath + "/products", query: "readTime=2026-01-01T00:00:00Z",
			kind: Bypass, op: ListDocuments, transactional: true, targets: []Target{coll("products", "products")}, tags: []string{"coll:" + root + "/products"}},
		{name: "runQuery newTransaction", method: "POST", path: rawPath + ":runQuery",
			body: `{"structuredQuery":{"from":[{"collectionId":"products"}]},"newTransaction":{"readOnly":{}}}`,
			kind: Bypass, op: RunQuery, transactional: true, targets: []Target{coll("products", "products")}, tags: []string{"coll:" + root + "/products"}},
		{name: "runQuery readTime", method: "POST", path: rawPath + ":runQuery",
			body: `{"structuredQuery":{"from":[{"collectionId":"products"}]},"readTime":"2026-01-01T00:00:00Z"}`,
			kind: Bypass, op: RunQuery, transactional: true, targets: []Target{coll("products", "products")}, tags: []string{"coll:" + root + "/products"}},
		{name: "batchGet in a transaction", method: "POST", path: rawPath + ":batchGet",
			body: `{"documents":["` + root + `/products/p1"],"transaction":"dHg="}`,
			kind: Bypass, op: BatchGetDocuments, transactional: true, targets: []Target{doc("products/p1")}, tags: []string{"doc:" + root + "/products/p1"}},
		{name: "listCollectionIds readTime", method: "POST", path: rawPath + ":listCollectionIds", body: `{"readTime":"2026-01-01T00:00:00Z"}`,
			kind: Bypass, op: ListCollectionIds, transactional: true, targets: []Target{doc("")}, tags: []string{"colls:" + root}},

		// Writes.
		{name: "patch, Go client", method: "PATCH", path: goPath + "/products/p1",
			query: goAlt + "&currentDocument.exists=true&updateMask.fieldPaths=price&updateMask.fieldPaths=name&mask.fieldPaths=name",
			body:  `{"name":"` + root + `/products/p1","fields":{"price":{"doubleValue":9.5},"name":{"stringValue":"kale"}}}`,
			kind:  Write, op: PatchDocument, targets: []Target{doc("products/p1")}, tags: writeTagsOf("products/p1", "products", "products", root),
			writes: []DocWrite{{Name: root + "/products/p1", Write: &firestorepb.Write{
				Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: root + "/products/p1", Fields: map[string]*firestorepb.Value{
					"price": {ValueType: &firestorepb.Value_DoubleValue{DoubleValue: 9.5}},
					"name":  {ValueType: &firestorepb.Value_StringValue{StringValue: "kale"}}}}},
				UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"price", "name"}},
				CurrentDocument: exists(true)}}}},
		{name: "patch, curl, no body name, snake_case params", method: "PATCH", path: rawPath + "/farmers/f1",
			query: "update_mask.field_paths=a&current_document.update_time=2026-01-02T03:04:05.123456Z", body: `{"fields":{"a":{"nullValue":"NULL_VALUE"}}}`,
			kind: Write, op: PatchDocument, targets: []Target{doc("farmers/f1")}, tags: writeTagsOf("farmers/f1", "farmers", "farmers", root),
			writes: []DocWrite{{Name: root + "/farmers/f1", Write: &firestorepb.Write{
				Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: root + "/farmers/f1", Fields: map[string]*firestorepb.Value{
					"a": {ValueType: &firestorepb.Value_NullValue{}}}}},
				UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"a"}},
				CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_UpdateTime{UpdateTime: patchTime}}}}}},
		{name: "delete with precondition", method: "DELETE", path: goPath + "/farmers/f1/products/p1", query: goAlt + "&currentDocument.exists=true",
			kind: Write, op: DeleteDocument, targets: []Target{doc("farmers/f1/products/p1")},
			tags: writeTagsOf("farmers/f1/products/p1", "farmers/f1/products", "products", root+"/farmers/f1", root),
			writes: []DocWrite{{Name: root + "/farmers/f1/products/p1", Write: &firestorepb.Write{
				Operation: &firestorepb.Write_Delete{Delete: root + "/farmers/f1/products/p1"}, CurrentDocument: exists(true)}}}},
		{name: "create with documentId", method: "POST", path: goPath + "/farmers/f1/products", query: goAlt + "&documentId=p9",
			body: `{"fields":{"n":{"stringValue":"x"}}}`,
			kind: Write, op: CreateDocument, targets: []Target{doc("farmers/f1/products/p9")},
			tags: writeTagsOf("farmers/f1/products/p9", "farmers/f1/products", "products", root+"/farmers/f1", root),
			writes: []DocWrite{{Name: root + "/farmers/f1/products/p9", Write: &firestorepb.Write{
				Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: root + "/farmers/f1/products/p9", Fields: map[string]*firestorepb.Value{
					"n": {ValueType: &firestorepb.Value_StringValue{StringValue: "x"}}}}},
				CurrentDocument: exists(false)}}}},
		{name: "create, server-assigned id, JS text body", method: "POST", path: rawPath + "/orders", query: "key=AIzaFake", body: `{}`,
			kind: Write, op: CreateDocument, targets: []Target{coll("orders", "orders")}, tags: writeTagsOf("", "orders", "orders", root),
			writes: []DocWrite{{Name: "", Write: &firestorepb.Write{
				Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{}}, CurrentDocument: exists(false)}}}},
		{name: "commit: update, delete, transform", method: "POST", path: goPath + ":commit", query: goAlt, body: string(commitBody),
			kind: Write, op: Commit, targets: []Target{doc("products/p1"), doc("farmers/f1/products/p2"), doc("products/p1")},
			tags: commitTags, writes: commitWrites},
		{name: "commit in a transaction", method: "POST", path: rawPath + ":commit",
			body: `{"transaction":"dHg=","writes":[{"delete":"` + root + `/products/p1"}]}`,
			kind: Write, op: Commit, transactional: true, targets: []Target{doc("products/p1")},
			tags:   writeTagsOf("products/p1", "products", "products", root),
			writes: []DocWrite{{Name: root + "/products/p1", Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: root + "/products/p1"}}}}},
		{name: "commit of a JS SDK transaction: an update and a verify of a document it only read",
			method: "POST", path: rawPath + ":commit", query: "key=AIzaFake",
			body: `{"writes":[{"delete":"` + root + `/products/p1"},{"verify":"` + root + `/farmers/f9","currentDocument":{"exists":false}}],"transaction":"dHg="}`,
			kind: Write, op: Commit, transactional: true, targets: []Target{doc("products/p1")},
			tags:   writeTagsOf("products/p1", "products", "products", root),
			writes: []DocWrite{{Name: root + "/products/p1", Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: root + "/products/p1"}}}}},
		{name: "commit of a read-only transaction", method: "POST", path: rawPath + ":commit", body: `{"transaction":"dHg="}`,
			kind: Write, op: Commit, transactional: true},
		{name: "batchWrite", method: "POST", path: rawPath + ":batchWrite",
			body: `{"writes":[{"delete":"` + root + `/a/1"},{"update":{"name":"` + root + `/a/1/b/2"},"currentDocument":{"exists":false}}],"labels":{"k":"v"}}`,
			kind: Write, op: BatchWrite, targets: []Target{doc("a/1"), doc("a/1/b/2")},
			tags: append(writeTagsOf("a/1", "a", "a", root), writeTagsOf("a/1/b/2", "a/1/b", "b", root+"/a/1", root)...),
			writes: []DocWrite{
				{Name: root + "/a/1", Index: 0, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: root + "/a/1"}}},
				{Name: root + "/a/1/b/2", Index: 1, Write: &firestorepb.Write{
					Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: root + "/a/1/b/2"}}, CurrentDocument: exists(false)}}}},

		// Bypass.
		{name: "beginTransaction", method: "POST", path: goPath + ":beginTransaction", query: goAlt, body: `{}`, kind: Bypass, op: BeginTransaction},
		{name: "rollback", method: "POST", path: rawPath + ":rollback", body: `{"transaction":"dHg="}`, kind: Bypass, op: Rollback},
		{name: "partitionQuery", method: "POST", path: rawPath + "/a/1:partitionQuery", body: `{}`, kind: Bypass, op: PartitionQuery},
		{name: "listen channel", method: "POST", path: rawPath + ":listen", query: "VER=8&RID=1", kind: Bypass, op: Listen},
		{name: "write channel", method: "POST", path: rawPath + ":write", kind: Bypass, op: WriteChannel},
		{name: "executePipeline", method: "POST", path: rawPath + ":executePipeline", body: `{}`, kind: Bypass, op: ExecutePipeline},
		{name: "list with showMissing", method: "GET", path: rawPath + "/farmers", query: "showMissing=true", kind: Bypass, op: ListDocuments},
		{name: "runQuery without a query", method: "POST", path: rawPath + ":runQuery", body: ``, kind: Bypass, op: RunQuery},
		{name: "kindless group query", method: "POST", path: rawPath + ":runQuery", body: `{"structuredQuery":{"from":[{"allDescendants":true}]}}`, kind: Bypass, op: RunQuery},
		{name: "runQuery, body parent differs from path", method: "POST", path: rawPath + ":runQuery",
			body: `{"parent":"` + root + `/x/y","structuredQuery":{"from":[{"collectionId":"c"}]}}`, kind: Bypass, op: RunQuery},
		{name: "runQuery, unknown body field", method: "POST", path: rawPath + ":runQuery",
			body: `{"structuredQuery":{"from":[{"collectionId":"c"}]},"futureOption":1}`, kind: Bypass, op: RunQuery},
		{name: "runQuery, unknown enum name (newer than the proxy)", method: "POST", path: rawPath + ":runQuery",
			body: `{"structuredQuery":{"from":[{"collectionId":"c"}],"orderBy":[{"field":{"fieldPath":"a"},"direction":"SIDEWAYS"}]}}`, kind: Bypass, op: RunQuery},
		{name: "batchGet, empty", method: "POST", path: rawPath + ":batchGet", body: `{}`, kind: Bypass, op: BatchGetDocuments},
		{name: "batchGet, other database", method: "POST", path: rawPath + ":batchGet", body: `{"documents":["projects/p/databases/other/documents/c/x"]}`, kind: Bypass, op: BatchGetDocuments},
		{name: "GET with a verb", method: "GET", path: rawPath + "/a/1:runQuery", kind: Bypass},
		{name: "GET documents root", method: "GET", path: rawPath, kind: Bypass},
		{name: "HEAD", method: "HEAD", path: rawPath + "/a/1", kind: Bypass},
		{name: "OPTIONS", method: "OPTIONS", path: rawPath + ":runQuery", kind: Bypass},
		{name: "database", method: "GET", path: "/v1/projects/p/databases/(default)", kind: Bypass},
		{name: "admin indexes", method: "GET", path: "/v1/projects/p/databases/(default)/collectionGroups/c/indexes", kind: Bypass},
		{name: "GET dot segment", method: "GET", path: rawPath + "/a/../b/1", kind: Bypass},
		{name: "GET empty segment", method: "GET", path: rawPath + "/a//1", kind: Bypass},
		{name: "GET encoded slash", method: "GET", path: rawPath + "/a/x%2Fy", kind: Bypass},
		{name: "GET bad escape", method: "GET", path: rawPath + "/a/x%zz", kind: Bypass},
		{name: "emulator reset", method: "DELETE", path: "/emulator/v1/projects/p/databases/(default)/documents", kind: Write, op: ClearDatabase},
		{name: "emulator rules", method: "PUT", path: "/emulator/v1/projects/p:securityRules", body: `{}`, kind: Bypass},
		{name: "Listen channel", method: "POST", path: "/google.firestore.v1.Firestore/Listen/channel", query: "VER=8", body: `count=1`, kind: Bypass, op: Listen},
		{name: "v1beta1 read is not cached", method: "GET", path: "/v1beta1/projects/p/databases/(default)/documents/a/1",
			kind: Bypass, op: GetDocument, targets: []Target{doc("a/1")}, tags: []string{"doc:" + root + "/a/1"}},
		{name: "v1beta1 write is a write", method: "DELETE", path: "/v1beta1/projects/p/databases/(default)/documents/a/1",
			kind: Write, op: DeleteDocument, targets: []Target{doc("a/1")},
			tags:   []string{"doc:" + root + "/a/1", "coll:" + root + "/a", "group:" + db + "/a", "colls:" + root},
			writes: []DocWrite{{Name: root + "/a/1", Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: root + "/a/1"}}}}},
		{name: "GET id with white space", method: "GET", path: rawPath + "/orders%20/x", kind: Bypass},
		{name: "GET bad query escape", method: "GET", path: rawPath + "/a/1", query: "mask.fieldPaths=%zz",
			kind: Bypass, op: GetDocument, targets: []Target{doc("a/1")}, tags: []string{"doc:" + root + "/a/1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Classify(tt.method, tt.path, tt.query, []byte(tt.body))
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			if got.Kind != tt.kind || got.Op != tt.op || got.Transactional != tt.transactional {
				t.Errorf("Kind, Op, Transactional = %v, %v, %v; want %v, %v, %v",
					got.Kind, got.Op, got.Transactional, tt.kind, tt.op, tt.transactional)
			}
			if !slices.Equal(got.Targets, tt.targets) {
				t.Errorf("Targets\n got %+v\nwant %+v", got.Targets, tt.targets)
			}
			wantTags := slices.Clone(tt.tags)
			slices.Sort(wantTags)
			wantTags = slices.Compact(wantTags)
			if !slices.Equal(got.Tags, wantTags) {
				t.Errorf("Tags\n got %q\nwant %q", got.Tags, wantTags)
			}
			if !equalWrites(got.Writes, tt.writes) {
				t.Errorf("Writes\n got %v\nwant %v", got.Writes, tt.writes)
			}
			if got.Kind == Read || got.Kind == Write {
				if got.Database != db {
					t.Errorf("Database = %q", got.Database)
				}
			}
			if got.Kind == Read && got.Op != GetDocument && got.Op != ListDocuments && got.CacheBody == nil {
				t.Errorf("POST read without CacheBody")
			}
			if (got.Op == GetDocument || got.Op == ListDocuments) && got.CacheBody != nil {
				t.Errorf("GET with CacheBody")
			}
			if got.Kind == Write && (got.CacheBody != nil || got.KeyParams != nil) {
				t.Errorf("Write with cache key parts")
			}
		})
	}
}

func equalWrites(a, b []DocWrite) bool {
	return slices.EqualFunc(a, b, func(x, y DocWrite) bool {
		return x.Name == y.Name && x.Index == y.Index && proto.Equal(x.Write, y.Write)
	})
}

func fieldFilter(field string, op firestorepb.StructuredQuery_FieldFilter_Operator, v int64) *firestorepb.StructuredQuery_Filter {
	return &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{
		FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
			Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: field},
			Op:    op,
			Value: &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: v}},
		}}}
}

func TestClassifyErrors(t *testing.T) {
	tests := []struct {
		name, method, path, query, body string
		op                              Op
	}{
		{"runQuery not JSON", "POST", rawPath + ":runQuery", "", `{"structuredQuery":`, RunQuery},
		{"runQuery wrong type", "POST", rawPath + ":runQuery", "", `{"structuredQuery":{"limit":"many"}}`, RunQuery},
		{"aggregation not JSON", "POST", rawPath + ":runAggregationQuery", "", `[`, RunAggregationQuery},
		{"batchGet not JSON", "POST", rawPath + ":batchGet", "", `documents`, BatchGetDocuments},
		{"listCollectionIds not JSON", "POST", rawPath + ":listCollectionIds", "", `{"pageSize":}`, ListCollectionIds},
		{"commit not JSON", "POST", rawPath + ":commit", "", `{"writes":[{]}`, Commit},
		{"commit write without operation", "POST", rawPath + ":commit", "", `{"writes":[{}]}`, Commit},
		{"commit bad document name", "POST", rawPath + ":commit", "", `{"writes":[{"delete":"` + root + `/a"}]}`, Commit},
		{"commit other database", "POST", rawPath + ":commit", "", `{"writes":[{"delete":"projects/p/databases/x/documents/a/1"}]}`, Commit},
		{"commit body database differs", "POST", rawPath + ":commit", "", `{"database":"projects/q/databases/(default)"}`, Commit},
		{"batchWrite not JSON", "POST", rawPath + ":batchWrite", "", `nope`, BatchWrite},
		{"create not JSON", "POST", rawPath + "/c", "", `{"fields":`, CreateDocument},
		{"create documentId with slash", "POST", rawPath + "/c", "documentId=a%2Fb", `{}`, CreateDocument},
		{"create documentId twice", "POST", rawPath + "/c", "documentId=a&documentId=b", `{}`, CreateDocument},
		{"patch not JSON", "PATCH", rawPath + "/c/d", "", `{"fields":1}`, PatchDocument},
		{"patch bad exists", "PATCH", rawPath + "/c/d", "currentDocument.exists=maybe", `{}`, PatchDocument},
		{"patch bad updateTime", "PATCH", rawPath + "/c/d", "currentDocument.updateTime=yesterday", `{}`, PatchDocument},
		{"patch two preconditions", "PATCH", rawPath + "/c/d", "currentDocument.exists=true&currentDocument.updateTime=2026-01-01T00:00:00Z", `{}`, PatchDocument},
		{"patch undecodable query", "PATCH", rawPath + "/c/d", "documentId=%zz", `{}`, PatchDocument},
		{"delete undecodable query", "DELETE", rawPath + "/c/d", "currentDocument.exists=%", ``, DeleteDocument},
		{"patch dot segment", "PATCH", rawPath + "/c/x/../d", "", `{}`, OpUnknown},
		{"delete encoded slash", "DELETE", rawPath + "/c/a%2Fb", "", ``, OpUnknown},
		{"post empty segment", "POST", rawPath + "//c", "", `{}`, OpUnknown},
		// Write-capable requests the proxy does not understand are refused, never forwarded.
		{"batchGet on a document", "POST", rawPath + "/a/1:batchGet", "", `{}`, OpUnknown},
		{"unknown verb", "POST", rawPath + ":frobnicate", "", `{}`, OpUnknown},
		{"verb in another case", "POST", rawPath + ":Commit", "", `{}`, OpUnknown},
		{"POST to a document", "POST", rawPath + "/a/1", "", `{}`, OpUnknown},
		{"PATCH a collection", "PATCH", rawPath + "/a", "", `{}`, OpUnknown},
		{"PATCH with a verb", "PATCH", rawPath + "/a/1:x", "", `{}`, OpUnknown},
		{"DELETE a collection", "DELETE", rawPath + "/a", "", ``, OpUnknown},
		{"lower-case method", "patch", rawPath + "/a/1", "", `{}`, OpUnknown},
		{"PUT", "PUT", rawPath + "/a/1", "", `{}`, OpUnknown},
		{"database export", "POST", "/v1/projects/p/databases/(default):exportDocuments", "", `{}`, OpUnknown},
		{"other version", "PATCH", "/v1beta2/projects/p/databases/(default)/documents/a/1", "", `{}`, OpUnknown},
		{"double slash prefix", "PATCH", "//v1/projects/p/databases/(default)/documents/a/1", "", `{}`, OpUnknown},
		{"other emulator endpoint", "POST", "/emulator/v1/projects/p/databases/(default)/documents:x", "", `{}`, OpUnknown},
		{"encoded verb colon", "POST", rawPath + "%3Acommit", "", `{}`, OpUnknown},
		{"another RPC path", "POST", "/google.firestore.v1.Firestore/Commit", "", `{}`, OpUnknown},
		{"encoded version prefix", "DELETE", "/%76%31/projects/p/databases/(default)/documents/a/1", "", ``, OpUnknown},
		{"encoded keyword", "DELETE", "/v1/projects/p/databases/(default)/%64ocuments/a/1", "", ``, OpUnknown},
		// Ids the upstream normalises (trims white space, replaces invalid UTF-8).
		{"collection id with a trailing space", "PATCH", rawPath + "/orders%20/x", "", `{}`, OpUnknown},
		{"document id with a leading tab", "DELETE", rawPath + "/orders/%09x", "", ``, OpUnknown},
		{"document id with NBSP", "PATCH", rawPath + "/orders/x%C2%A0", "", `{}`, OpUnknown},
		{"invalid UTF-8 id", "PATCH", rawPath + "/orders/x%FF", "", `{}`, OpUnknown},
		{"project with a space", "PATCH", "/v1/projects/p%20/databases/(default)/documents/orders/x", "", `{}`, OpUnknown},
		{"documents keyword with a space", "PATCH", "/v1/projects/p/databases/(default)/documents%20/orders/x", "", `{}`, OpUnknown},
		{"create documentId with a space", "POST", rawPath + "/orders", "documentId=x%20", `{}`, CreateDocument},
		{"commit name with a space", "POST", rawPath + ":commit", "", `{"writes":[{"delete":"` + root + `/orders /x"}]}`, Commit},
		{"commit name with invalid UTF-8", "POST", rawPath + ":commit", "", "{\"writes\":[{\"delete\":\"" + root + "/orders/x\\udc80\"}]}", Commit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Classify(tt.method, tt.path, tt.query, []byte(tt.body))
			var e *Error
			if !errors.As(err, &e) || e.HTTPStatus != 400 || e.Status != "INVALID_ARGUMENT" || e.Message == "" {
				t.Fatalf("err = %v (%T), want *Error 400 INVALID_ARGUMENT", err, err)
			}
			if got.Op != tt.op || got.Kind != Bypass {
				t.Errorf("Request = %v %v, want bypass %v", got.Kind, got.Op, tt.op)
			}
			// Never echo input: no id, name or value of the request in the message.
			for _, part := range []string{"frobnicate", "orders", "maybe", "yesterday", "a%2Fb", "projects/q", "structuredQuery", "many"} {
				if strings.Contains(tt.path+tt.query+tt.body, part) && strings.Contains(e.Message, part) {
					t.Errorf("message echoes %q: %s", part, e.Message)
				}
			}
		})
	}
}

// The same query, written by different clients, must share one cache entry; different
// queries must not.
func TestCacheBodyCanonical(t *testing.T) {
	goClient := goJSON(t, &firestorepb.RunQueryRequest{
		Parent: root,
		QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From:    []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
			Where:   fieldFilter("price", firestorepb.StructuredQuery_FieldFilter_LESS_THAN, 10),
			OrderBy: []*firestorepb.StructuredQuery_Order{{Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "price"}, Direction: firestorepb.StructuredQuery_DESCENDING}},
			Limit:   wrapperspb.Int32(5),
		}},
	})
	equivalent := []string{
		string(goClient),
		// JS SDK: enums as names, no parent, int64 as a string.
		`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN","value":{"integerValue":"10"}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}],"limit":5}}`,
		// Reordered fields, whitespace, proto field names, int64 as a number.
		"{ \"structured_query\" : {\n \"limit\": 5, \"order_by\": [{\"direction\": 2, \"field\": {\"field_path\": \"price\"}}],\n" +
			"  \"where\": {\"field_filter\": {\"value\": {\"integer_value\": 10}, \"op\": 1, \"field\": {\"field_path\": \"price\"}}},\n" +
			"  \"from\": [{\"collection_id\": \"products\"}] } }",
	}
	var first []byte
	for i, body := range equivalent {
		r, err := Classify("POST", rawPath+":runQuery", "", []byte(body))
		if err != nil || r.Kind != Read {
			t.Fatalf("body %d: %v %v", i, r.Kind, err)
		}
		if i == 0 {
			first = r.CacheBody
			continue
		}
		if !bytes.Equal(r.CacheBody, first) {
			t.Errorf("body %d: CacheBody differs from the Go client's:\n%x\n%x", i, r.CacheBody, first)
		}
	}
	different := []string{
		`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN","value":{"integerValue":"10"}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}],"limit":6}}`,
		`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN_OR_EQUAL","value":{"integerValue":"10"}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}],"limit":5}}`,
		`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN","value":{"doubleValue":10}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}],"limit":5}}`,
		`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN","value":{"integerValue":"10"}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"ASCENDING"}],"limit":5}}`,
	}
	for i, body := range different {
		r, err := Classify("POST", rawPath+":runQuery", "", []byte(body))
		if err != nil || r.Kind != Read {
			t.Fatalf("different %d: %v %v", i, r.Kind, err)
		}
		if bytes.Equal(r.CacheBody, first) {
			t.Errorf("different query %d shares the CacheBody", i)
		}
	}
}

func TestCacheBodyBatchGetAndAggregation(t *testing.T) {
	a, _ := Classify("POST", goPath+":batchGet", goAlt, goJSON(t, &firestorepb.BatchGetDocumentsRequest{
		Database: db, Documents: []string{root + "/a/1"}, Mask: &firestorepb.DocumentMask{FieldPaths: []string{"x"}}}))
	b, _ := Classify("POST", rawPath+":batchGet", "", []byte(`{"mask":{"fieldPaths":["x"]},"documents":["`+root+`/a/1"]}`))
	c, _ := Classify("POST", rawPath+":batchGet", "", []byte(`{"documents":["`+root+`/a/1"]}`))
	if a.Kind != Read || !bytes.Equal(a.CacheBody, b.CacheBody) {
		t.Errorf("batchGet with and without database field differ: %x vs %x", a.CacheBody, b.CacheBody)
	}
	if bytes.Equal(b.CacheBody, c.CacheBody) {
		t.Errorf("batchGet with and without mask share CacheBody")
	}
	count, _ := Classify("POST", rawPath+":runAggregationQuery", "", []byte(`{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"o"}]},"aggregations":[{"alias":"n","count":{}}]}}`))
	sum, _ := Classify("POST", rawPath+":runAggregationQuery", "", []byte(`{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"o"}]},"aggregations":[{"alias":"n","sum":{"field":{"fieldPath":"t"}}}]}}`))
	if count.Kind != Read || bytes.Equal(count.CacheBody, sum.CacheBody) {
		t.Errorf("count and sum share CacheBody")
	}
}

func TestKeyParams(t *testing.T) {
	same := [][]string{
		{goAlt, "$alt=json;enum-encoding=int", "%24alt=json%3benum-encoding%3dint"},
		{"pageSize=10&orderBy=price", "orderBy=price&pageSize=10", "pageSize=10&quotaUser=u1&orderBy=price", "&orderBy=price&&pageSize=10&"},
		{"mask.fieldPaths=a&key=K&mask.fieldPaths=b", "key=K&mask.fieldPaths=a&mask.fieldPaths=b"},
		{"orderBy=price+desc", "orderBy=price%20desc"},
		{"showMissing", "showMissing="},
		{"", "quotaUser=x", "requestOptions.requestTags=t1"},
	}
	for _, group := range same {
		want := KeyParams(group[0])
		for _, q := range group[1:] {
			if got := KeyParams(q); !bytes.Equal(got, want) {
				t.Errorf("KeyParams(%q) = %q, want %q as for %q", q, got, want, group[0])
			}
		}
	}
	distinct := []string{
		"", "$alt=json", "alt=json", "$alt=json;enum-encoding=int", "key=A", "key=B",
		"mask.fieldPaths=a&mask.fieldPaths=b", "mask.fieldPaths=b&mask.fieldPaths=a", "mask.fieldPaths=a",
		"pageSize=1&pageSize=2", "pageSize=2&pageSize=1", "pageToken=x", "orderBy=a", "showMissing=true",
		"fields=a", "$fields=a", "documentId=a", "a=b%26c=d", "a=b&c=d", "a%3Db=c", "a=b%3Dc", "x=%zz", "x=%zy",
		"access_token=t1", "access_token=t2", "prettyPrint=false",
	}
	seen := map[string]string{}
	for _, q := range distinct {
		k := string(KeyParams(q))
		if prev, ok := seen[k]; ok {
			t.Errorf("KeyParams(%q) = KeyParams(%q) = %q", q, prev, k)
		}
		seen[k] = q
	}
	if got, want := string(KeyParams(goAlt+"&mask.fieldPaths=name")), "%24alt=json%3Benum-encoding%3Dint&mask.fieldPaths=name"; got != want {
		t.Errorf("KeyParams = %q, want %q", got, want)
	}
	if got := KeyParams(""); got != nil {
		t.Errorf("KeyParams(\"\") = %q, want nil", got)
	}
}

// Classify promises a Request that does not alias its inputs, so the proxy may pass
// fasthttp's reused buffers without copying.
func TestClassifyDoesNotAliasInputs(t *testing.T) {
	cases := []struct{ method, path, query, body string }{
		{"GET", goPath + "/products/p1", goAlt + "&mask.fieldPaths=a", ""},
		{"POST", rawPath + "/c", "documentId=newdoc", `{"fields":{"s":{"stringValue":"v"}}}`},
		{"PATCH", rawPath + "/c/d", "updateMask.fieldPaths=s", `{"fields":{"s":{"stringValue":"v"}}}`},
		{"POST", rawPath + ":commit", "", `{"writes":[{"update":{"name":"` + root + `/c/d","fields":{"s":{"stringValue":"v"}}}}]}`},
		{"POST", rawPath + ":batchGet", "", `{"documents":["` + root + `/c/d"]}`},
	}
	for _, c := range cases {
		buf := []byte(c.method + c.path + c.query + c.body)
		s := unsafe.String(&buf[0], len(buf))
		m, rest := s[:len(c.method)], s[len(c.method):]
		p, rest := rest[:len(c.path)], rest[len(c.path):]
		q, b := rest[:len(c.query)], buf[len(buf)-len(c.body):]
		got, err := Classify(m, p, q, b)
		if err != nil {
			t.Fatal(err)
		}
		before := fmt.Sprintf("%+v", got)
		for i := range buf {
			buf[i] = '#'
		}
		if after := fmt.Sprintf("%+v", got); after != before {
			t.Errorf("%s %s: Request changed with its input buffer:\n%s\n%s", c.method, c.path, before, after)
		}
	}
}

func TestWriteTags(t *testing.T) {
	want := []string{
		"coll:" + root + "/farmers/f1/products",
		"colls:" + root,
		"colls:" + root + "/farmers/f1",
		"doc:" + root + "/farmers/f1/products/p1",
		"group:" + db + "/products",
	}
	for _, name := range []string{root + "/farmers/f1/products/p1", "farmers/f1/products/p1"} {
		if got := WriteTags(db, name); !slices.Equal(got, want) {
			t.Errorf("WriteTags(%q)\n got %q\nwant %q", name, got, want)
		}
	}
	// The tags a write touches must cover the tags of every read it affects.
	reads := []struct{ method, path, body string }{
		{"GET", rawPath + "/farmers/f1/products/p1", ""},
		{"GET", rawPath + "/farmers/f1/products", ""},
		{"POST", rawPath + "/farmers/f1:runQuery", `{"structuredQuery":{"from":[{"collectionId":"products"}]}}`},
		{"POST", rawPath + ":runQuery", `{"structuredQuery":{"from":[{"collectionId":"products","allDescendants":true}]}}`},
		{"POST", rawPath + ":runAggregationQuery", `{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"products","allDescendants":true}]}}}`},
		{"POST", rawPath + ":batchGet", `{"documents":["` + root + `/farmers/f1/products/p1"]}`},
		{"POST", rawPath + "/farmers/f1:listCollectionIds", ``},
		{"POST", rawPath + ":listCollectionIds", ``},
	}
	for _, r := range reads {
		req, err := Classify(r.method, r.path, "", []byte(r.body))
		if err != nil || req.Kind != Read {
			t.Fatalf("%s %s: %v %v", r.method, r.path, req.Kind, err)
		}
		for _, tag := range req.Tags {
			if !slices.Contains(want, tag) {
				t.Errorf("%s %s depends on %q, which a write of farmers/f1/products/p1 does not touch", r.method, r.path, tag)
			}
		}
	}
	for _, bad := range []string{"farmers", "farmers/f1/products", "", root, "projects/p/databases/other/documents/a/1", "a//b"} {
		if got := WriteTags(db, bad); got != nil {
			t.Errorf("WriteTags(%q) = %q, want nil", bad, got)
		}
	}
}

func TestMalformedPathsDoNotPanicOrRead(t *testing.T) {
	for _, p := range []string{"", "/", "/v1/", "/v1/projects", "/v1/projects/p/databases/d/documents:", "/v1/projects/p/databases/d/documents/%", rawPath + "/%2e/1"} {
		for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
			r, err := Classify(m, p, "", nil)
			if r.Kind != Bypass {
				t.Errorf("%s %q: Kind %v", m, p, r.Kind)
			}
			var e *Error
			if err != nil && !errors.As(err, &e) {
				t.Errorf("%s %q: error %T", m, p, err)
			}
		}
	}
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
