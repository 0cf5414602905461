package event

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/rules"
)

const db = "projects/harvest/databases/(default)"

func docName(path string) string { return db + "/documents/" + path }

func str(s string) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: s}}
}

func integer(i int64) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: i}}
}

func exists(b bool) *firestorepb.Precondition {
	return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: b}}
}

var (
	t1 = time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	t2 = time.Date(2026, 3, 1, 10, 0, 1, 5000, time.UTC)
)

// ce is the parsed CloudEvent, to assert on what consumers see.
type ce struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Database        string `json:"database"`
	Collection      string `json:"collection"`
	Document        string `json:"document"`
	AuthHash        string `json:"authhash"`
	Data            struct {
		Value      json.RawMessage `json:"value"`
		OldValue   json.RawMessage `json:"oldValue"`
		UpdateMask *struct {
			FieldPaths []string `json:"fieldPaths"`
		} `json:"updateMask"`
	} `json:"data"`
}

func parse(t *testing.T, ev Event) ce {
	t.Helper()
	var c ce
	if err := json.Unmarshal(ev.Body, &c); err != nil {
		t.Fatalf("event body is not JSON: %v\n%s", err, ev.Body)
	}
	if c.ID != ev.ID || c.Type != ev.Type {
		t.Fatalf("body id/type %s/%s differ from Event %s/%s", c.ID, c.Type, ev.ID, ev.Type)
	}
	return c
}

func docOf(t *testing.T, raw json.RawMessage) *firestorepb.Document {
	t.Helper()
	if raw == nil {
		return nil
	}
	d := &firestorepb.Document{}
	if err := protojson.Unmarshal(raw, d); err != nil {
		t.Fatalf("data document is not REST JSON: %v\n%s", err, raw)
	}
	return d
}

func mustBuild(t *testing.T, in BuildInput) []Event {
	t.Helper()
	evs, err := Build(in)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return evs
}

func TestCreate(t *testing.T) {
	name := docName("farmers/f1/products/p1")
	written := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"title": str("Kale")}}
	answer := proto.Clone(written).(*firestorepb.Document)
	answer.CreateTime, answer.UpdateTime = timestamppb.New(t1), timestamppb.New(t1)

	evs := mustBuild(t, BuildInput{
		Writes:   []classify.DocWrite{{Name: name, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: written}, CurrentDocument: exists(false)}}},
		Document: answer,
		SeenAt:   t2,
		AuthHash: "h-abc",
	})
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	ev := evs[0]
	c := parse(t, ev)
	want := ce{SpecVersion: "1.0", ID: ID(name, t1), Source: "//firestore.googleapis.com/projects/harvest/databases/(default)",
		Type: TypeCreated, Subject: "documents/farmers/f1/products/p1", Time: "2026-03-01T10:00:00.123456789Z",
		DataContentType: "application/json", Database: "(default)", Collection: "products",
		Document: "farmers/f1/products/p1", AuthHash: "h-abc"}
	c.Data = want.Data
	if !reflect.DeepEqual(c, want) {
		t.Errorf("attributes:\n got %+v\nwant %+v", c, want)
	}
	if ev.RoutingKey != "products.created" || ev.Document != name || !ev.Time.Equal(t1) {
		t.Errorf("routing key %q, document %q, time %v", ev.RoutingKey, ev.Document, ev.Time)
	}
	if got := docOf(t, parse(t, ev).Data.Value); !proto.Equal(got, answer) {
		t.Errorf("value = %v, want the answered document %v", got, answer)
	}
	if parse(t, ev).Data.OldValue != nil || parse(t, ev).Data.UpdateMask != nil {
		t.Errorf("create has oldValue or updateMask: %s", ev.Body)
	}
}

func TestSetIsWritten(t *testing.T) {
	name := docName("products/p1")
	doc := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"price": integer(3)}, UpdateTime: timestamppb.New(t1)}
	evs := mustBuild(t, BuildInput{
		Writes:   []classify.DocWrite{{Name: name, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: doc}}}},
		Document: doc,
	})
	if len(evs) != 1 || evs[0].Type != TypeWritten || evs[0].RoutingKey != "products.written" {
		t.Fatalf("plain set: got %+v, want one %s event", evs, TypeWritten)
	}
}

func TestUpdateWithMask(t *testing.T) {
	name := docName("products/p1")
	full := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"price": integer(4), "title": str("Kale")}, UpdateTime: timestamppb.New(t1)}
	for _, pre := range []*firestorepb.Precondition{nil, exists(true)} {
		evs := mustBuild(t, BuildInput{
			Writes: []classify.DocWrite{{Name: name, Write: &firestorepb.Write{
				Operation:       &firestorepb.Write_Update{Update: &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"price": integer(4)}}},
				UpdateMask:      &firestorepb.DocumentMask{FieldPaths: []string{"price", "stock"}},
				CurrentDocument: pre,
			}}},
			Document: full,
		})
		if len(evs) != 1 || evs[0].Type != TypeUpdated || evs[0].RoutingKey != "products.updated" {
			t.Fatalf("precondition %v: got %+v, want one updated event", pre, evs)
		}
		c := parse(t, evs[0])
		if c.Data.UpdateMask == nil || !reflect.DeepEqual(c.Data.UpdateMask.FieldPaths, []string{"price", "stock"}) {
			t.Errorf("updateMask = %+v, want [price stock]", c.Data.UpdateMask)
		}
		if got := docOf(t, c.Data.Value); !proto.Equal(got, full) {
			t.Errorf("value = %v, want the full answered document", got)
		}
	}
}

func TestDeleteUsesSeenAt(t *testing.T) {
	name := docName("orders/o1")
	evs := mustBuild(t, BuildInput{
		Writes: []classify.DocWrite{{Name: name, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: name}}}},
		SeenAt: t2,
	})
	if len(evs) != 1 {
		t.Fatalf("got %d events", len(evs))
	}
	c := parse(t, evs[0])
	if c.Type != TypeDeleted || evs[0].RoutingKey != "orders.deleted" || c.Subject != "documents/orders/o1" {
		t.Errorf("got type %s key %s subject %s", c.Type, evs[0].RoutingKey, c.Subject)
	}
	if c.Time != t2.Format(time.RFC3339Nano) || c.ID != DeleteID(name, time.Time{}, t2) {
		t.Errorf("time %s id %s, want the time the proxy saw the success", c.Time, c.ID)
	}
	if c.Data.Value != nil {
		t.Errorf("delete has a value: %s", c.Data.Value)
	}
}

func TestCommitWithTransforms(t *testing.T) {
	a, b, c := docName("products/a"), docName("products/b"), docName("farmers/f1/products/c")
	inc := &firestorepb.DocumentTransform_FieldTransform{FieldPath: "stats.`sold count`", TransformType: &firestorepb.DocumentTransform_FieldTransform_Increment{Increment: integer(1)}}
	now := &firestorepb.DocumentTransform_FieldTransform{FieldPath: "updatedAt", TransformType: &firestorepb.DocumentTransform_FieldTransform_SetToServerValue{SetToServerValue: firestorepb.DocumentTransform_FieldTransform_REQUEST_TIME}}
	writes := []classify.DocWrite{
		{Name: a, Index: 0, Write: &firestorepb.Write{
			Operation:        &firestorepb.Write_Update{Update: &firestorepb.Document{Name: a, Fields: map[string]*firestorepb.Value{"title": str("A")}}},
			UpdateMask:       &firestorepb.DocumentMask{FieldPaths: []string{"title"}},
			UpdateTransforms: []*firestorepb.DocumentTransform_FieldTransform{inc, now},
			CurrentDocument:  exists(true),
		}},
		{Name: b, Index: 1, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: b}}},
		{Name: c, Index: 2, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: c}}, CurrentDocument: exists(false)}},
	}
	resp := &firestorepb.CommitResponse{
		CommitTime: timestamppb.New(t1),
		WriteResults: []*firestorepb.WriteResult{
			{UpdateTime: timestamppb.New(t1), TransformResults: []*firestorepb.Value{integer(42), {ValueType: &firestorepb.Value_TimestampValue{TimestampValue: timestamppb.New(t1)}}}},
			{},
			{UpdateTime: timestamppb.New(t1)},
		},
	}
	evs := mustBuild(t, BuildInput{Writes: writes, Commit: resp, SeenAt: t2})
	wantTypes := []string{TypeUpdated, TypeDeleted, TypeCreated}
	wantKeys := []string{"products.updated", "products.deleted", "products.created"}
	if len(evs) != 3 {
		t.Fatalf("got %d events, want 3", len(evs))
	}
	seen := map[string]bool{}
	for i, ev := range evs {
		c := parse(t, ev)
		if ev.Type != wantTypes[i] || ev.RoutingKey != wantKeys[i] || c.Time != t1.Format(time.RFC3339Nano) {
			t.Errorf("event %d: type %s key %s time %s", i, ev.Type, ev.RoutingKey, c.Time)
		}
		wantID := ID(writes[i].Name, t1)
		if ev.Type == TypeDeleted {
			wantID = DeleteID(writes[i].Name, time.Time{}, t1) // the deleted version is unknown
		}
		if ev.ID != wantID || seen[ev.ID] {
			t.Errorf("event %d: id %s not the deterministic, distinct id", i, ev.ID)
		}
		seen[ev.ID] = true
	}
	got := docOf(t, parse(t, evs[0]).Data.Value)
	sold := got.GetFields()["stats"].GetMapValue().GetFields()["sold count"].GetIntegerValue()
	if sold != 42 || got.GetFields()["updatedAt"].GetTimestampValue().AsTime() != t1 || got.GetFields()["title"].GetStringValue() != "A" {
		t.Errorf("transform results not applied: %v", got)
	}
	if !got.GetUpdateTime().AsTime().Equal(t1) {
		t.Errorf("value update time %v, want %v", got.GetUpdateTime().AsTime(), t1)
	}
	if got := parse(t, evs[2]).Document; got != "farmers/f1/products/c" {
		t.Errorf("document attribute of a subcollection doc = %q", got)
	}

	// Same write, same ids: a retried build (or the proxy on another replica) agrees.
	again := mustBuild(t, BuildInput{Writes: writes, Commit: resp, SeenAt: t2.Add(time.Hour)})
	for i := range evs {
		if again[i].ID != evs[i].ID {
			t.Errorf("event %d id changed between builds: %s vs %s", i, evs[i].ID, again[i].ID)
		}
	}
}

func TestBatchWriteSkipsFailedWrites(t *testing.T) {
	names := []string{docName("orders/o1"), docName("orders/o2"), docName("orders/o3")}
	var writes []classify.DocWrite
	for i, n := range names {
		writes = append(writes, classify.DocWrite{Name: n, Index: i, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: n}}}})
	}
	resp := &firestorepb.BatchWriteResponse{
		WriteResults: []*firestorepb.WriteResult{{UpdateTime: timestamppb.New(t1)}, {}, {UpdateTime: timestamppb.New(t2)}},
		Status:       []*status.Status{{Code: 0}, {Code: 9, Message: "FAILED_PRECONDITION"}, {}},
	}
	evs := mustBuild(t, BuildInput{Writes: writes, BatchWrite: resp, SeenAt: time.Now()})
	if len(evs) != 2 || evs[0].Document != names[0] || evs[1].Document != names[2] {
		t.Fatalf("got %+v, want events for o1 and o3 only", evs)
	}
	if !evs[0].Time.Equal(t1) || !evs[1].Time.Equal(t2) || evs[1].ID != ID(names[2], t2) {
		t.Errorf("batchWrite events must carry their own update times: %v %v", evs[0].Time, evs[1].Time)
	}
}

func TestOldValueDecidesCreatedOrUpdated(t *testing.T) {
	a, b := docName("products/a"), docName("products/b")
	oldB := &firestorepb.Document{Name: b, Fields: map[string]*firestorepb.Value{"price": integer(1)}}
	set := func(n string) classify.DocWrite {
		return classify.DocWrite{Name: n, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: n}}}}
	}
	writes := []classify.DocWrite{set(a), set(b), set(a)}
	writes[1].Index, writes[2].Index = 1, 2
	evs := mustBuild(t, BuildInput{
		Writes: writes,
		Commit: &firestorepb.CommitResponse{CommitTime: timestamppb.New(t1), WriteResults: make([]*firestorepb.WriteResult, 3)},
		Old:    map[string]*firestorepb.Document{a: nil, b: oldB},
	})
	if evs[0].Type != TypeCreated || evs[1].Type != TypeUpdated || evs[2].Type != TypeUpdated {
		t.Fatalf("types %s %s %s, want created updated updated (a's second write sees the first)", evs[0].Type, evs[1].Type, evs[2].Type)
	}
	if got := docOf(t, parse(t, evs[1]).Data.OldValue); !proto.Equal(got, oldB) {
		t.Errorf("oldValue = %v, want %v", got, oldB)
	}
	if parse(t, evs[0]).Data.OldValue != nil {
		t.Errorf("created event has an oldValue")
	}
}

func TestAllowedFilters(t *testing.T) {
	a, b := docName("products/a"), docName("secrets/b")
	writes := []classify.DocWrite{
		{Name: a, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: a}}},
		{Name: b, Index: 1, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: b}}},
		{Name: a, Index: 2, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: a}}}},
	}
	evs := mustBuild(t, BuildInput{Writes: writes, SeenAt: t1, Allowed: func(n string) rules.EventTypes {
		if n == a {
			return rules.Deleted
		}
		return 0
	}})
	if len(evs) != 1 || evs[0].Document != a || evs[0].Type != TypeDeleted {
		t.Fatalf("got %+v, want only the delete of %s", evs, a)
	}
}

// A plain set (written: created or updated, unknown which) is kept by a rule that
// emits created or updated, as rules.EventTypes.Allows says, and dropped by one that
// emits only deletes.
func TestAllowedWrittenAgreesWithRules(t *testing.T) {
	a := docName("products/a")
	set := []classify.DocWrite{{Name: a, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: a}}}}}
	for _, tc := range []struct {
		rule rules.EventTypes
		want int
	}{{rules.Created, 1}, {rules.Updated, 1}, {rules.Written, 1}, {rules.Deleted, 0}, {0, 0}} {
		evs := mustBuild(t, BuildInput{Writes: set, SeenAt: t1, Allowed: func(string) rules.EventTypes { return tc.rule }})
		if len(evs) != tc.want || tc.rule.Allows(rules.Written) != (tc.want == 1) {
			t.Errorf("rule events %v: %d events of a plain set, want %d", tc.rule, len(evs), tc.want)
		}
		if len(evs) == 1 && evs[0].Type != TypeWritten {
			t.Errorf("rule events %v: type %s, want %s", tc.rule, evs[0].Type, TypeWritten)
		}
	}
}

func TestRejectsCollectionName(t *testing.T) {
	n := docName("products")
	if _, err := Build(BuildInput{Writes: []classify.DocWrite{{Name: n, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: n}}}}}); err == nil {
		t.Fatal("Build accepted a collection name as a document")
	}
}

func TestSplitFieldPath(t *testing.T) {
	for in, want := range map[string][]string{
		"a":              {"a"},
		"a.b.c":          {"a", "b", "c"},
		"`a.b`.c":        {"a.b", "c"},
		"`x\\`y`":        {"x`y"},
		"stats.`sold n`": {"stats", "sold n"},
	} {
		got, err := splitFieldPath(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("splitFieldPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a.", ".a", "`a", "a..b"} {
		if _, err := splitFieldPath(bad); err == nil {
			t.Errorf("splitFieldPath(%q) accepted", bad)
		}
	}
}
