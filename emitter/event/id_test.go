package event

import (
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
)

// The id of a change depends on the document and the version the write made, not on
// the request that carried it: a commit, a PATCH and change capture agree.
func TestIDNamesTheVersionNotTheRequest(t *testing.T) {
	name := docName("orders/o1")
	doc := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"n": integer(1)},
		CreateTime: timestamppb.New(t1), UpdateTime: timestamppb.New(t2)}
	set := &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: doc}}

	patch := mustBuild(t, BuildInput{Writes: []classify.DocWrite{{Name: name, Write: set}}, Document: doc, SeenAt: t1})
	// The same document as the third write of a commit whose commit time is t2.
	other := docName("orders/o0")
	commit := mustBuild(t, BuildInput{
		Writes: []classify.DocWrite{
			{Name: other, Index: 0, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: other}}}},
			{Name: docName("orders/o2"), Index: 1, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: docName("orders/o2")}}}},
			{Name: name, Index: 2, Write: set},
		},
		Commit: &firestorepb.CommitResponse{CommitTime: timestamppb.New(t2), WriteResults: []*firestorepb.WriteResult{
			{UpdateTime: timestamppb.New(t2)}, {UpdateTime: timestamppb.New(t2)}, {UpdateTime: timestamppb.New(t2)}}},
		SeenAt: t1,
	})
	captured, err := FromCaptured(Captured{Name: name, Doc: doc, ReadTime: t2.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if patch[0].ID != ID(name, t2) || commit[2].ID != patch[0].ID || captured.ID != patch[0].ID {
		t.Fatalf("ids: patch %s commit %s captured %s, want all %s", patch[0].ID, commit[2].ID, captured.ID, ID(name, t2))
	}
	if captured.Type != TypeUpdated {
		t.Fatalf("captured type %s: create_time != update_time is an update", captured.Type)
	}
	if ID(name, t1) == ID(name, t2) || ID(name, t2) == ID(other, t2) {
		t.Fatal("ids of different versions or documents collide")
	}
}

// A delete whose deleted version is known (events.old_value, or an update_time
// precondition) gets the id change capture gives it.
func TestDeleteIDNamesTheDeletedVersion(t *testing.T) {
	name := docName("orders/o1")
	del := &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: name}}
	old := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"n": integer(1)}, UpdateTime: timestamppb.New(t1)}
	withOld := mustBuild(t, BuildInput{Writes: []classify.DocWrite{{Name: name, Write: del}}, Old: map[string]*firestorepb.Document{name: old}, SeenAt: t2})
	pre := &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: name},
		CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_UpdateTime{UpdateTime: timestamppb.New(t1)}}}
	withPre := mustBuild(t, BuildInput{Writes: []classify.DocWrite{{Name: name, Write: pre}}, SeenAt: t2.Add(time.Minute)})
	captured, err := FromCaptured(Captured{Name: name, Old: &firestorepb.Document{Name: name, UpdateTime: timestamppb.New(t1)}, ReadTime: t2.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := DeleteID(name, t1, time.Time{})
	if withOld[0].ID != want || withPre[0].ID != want || captured.ID != want || captured.Type != TypeDeleted {
		t.Fatalf("delete ids: old_value %s precondition %s captured %s (%s), want %s", withOld[0].ID, withPre[0].ID, captured.ID, captured.Type, want)
	}
	if DeleteID(name, time.Time{}, t2) == DeleteID(name, time.Time{}, t2.Add(time.Nanosecond)) {
		t.Fatal("deletes of unknown versions at different times share an id")
	}
}

// A document written twice in one request: the last write carries the version's id,
// the earlier one its own.
func TestDocumentWrittenTwiceInOneRequest(t *testing.T) {
	name := docName("orders/o1")
	w := &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: name}}}
	evs := mustBuild(t, BuildInput{
		Writes: []classify.DocWrite{{Name: name, Index: 0, Write: w}, {Name: name, Index: 1, Write: w}},
		Commit: &firestorepb.CommitResponse{CommitTime: timestamppb.New(t1), WriteResults: []*firestorepb.WriteResult{
			{UpdateTime: timestamppb.New(t1)}, {UpdateTime: timestamppb.New(t1)}}},
	})
	if len(evs) != 2 || evs[0].ID == evs[1].ID || evs[1].ID != ID(name, t1) {
		t.Fatalf("ids %v: want two distinct, the last %s", evs, ID(name, t1))
	}
}

func TestFromCapturedTypes(t *testing.T) {
	name := docName("orders/o1")
	created := &firestorepb.Document{Name: name, CreateTime: timestamppb.New(t1), UpdateTime: timestamppb.New(t1)}
	ev, err := FromCaptured(Captured{Name: name, Doc: created, ReadTime: t2})
	if err != nil || ev.Type != TypeCreated || ev.RoutingKey != "orders.created" || !ev.Time.Equal(t1) {
		t.Fatalf("created: %+v %v", ev, err)
	}
	old := &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{"n": integer(1)}, UpdateTime: timestamppb.New(t1)}
	ev, err = FromCaptured(Captured{Name: name, Old: old, ReadTime: t2})
	if err != nil || ev.Type != TypeDeleted || ev.RoutingKey != "orders.deleted" || !ev.Time.Equal(t2) {
		t.Fatalf("deleted: %+v %v", ev, err)
	}
	if c := parse(t, ev); c.Data.Value != nil || c.Data.OldValue == nil {
		t.Fatalf("deleted: value %s oldValue %s, want only oldValue", c.Data.Value, c.Data.OldValue)
	}
	if _, err := FromCaptured(Captured{Name: name, Doc: &firestorepb.Document{Name: name}}); err == nil {
		t.Fatal("a captured document without times built an event")
	}
}
