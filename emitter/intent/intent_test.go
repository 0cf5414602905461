package intent

import (
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
)

const db = "projects/p/databases/(default)"

func name(rel string) string { return db + "/documents/" + rel }

func intVal(n int64) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: n}}
}

func set(rel string, n int64) classify.DocWrite {
	return classify.DocWrite{Name: name(rel), Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{
		Update: &firestorepb.Document{Name: name(rel), Fields: map[string]*firestorepb.Value{"n": intVal(n)}}}}}
}

func del(rel string, index int) classify.DocWrite {
	return classify.DocWrite{Name: name(rel), Index: index, Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: name(rel)}}}
}

func doc(rel string, n int64, updated time.Time) *firestorepb.Document {
	return &firestorepb.Document{Name: name(rel), Fields: map[string]*firestorepb.Value{"n": intVal(n)},
		CreateTime: timestamppb.New(updated), UpdateTime: timestamppb.New(updated)}
}

// Resolve's rule, case by case: what shows a write landed, and what does not.
func TestResolve(t *testing.T) {
	at := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	after, before := at.Add(40*time.Millisecond), at.Add(-time.Minute)
	for _, tc := range []struct {
		what   string
		in     Intent
		now    map[string]*firestorepb.Document
		landed bool
	}{
		{"set, document written after the intent with its values", Intent{Op: classify.PatchDocument, Writes: []classify.DocWrite{set("c/a", 1)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, after)}, true},
		{"set, never forwarded: the document is older than the intent", Intent{Op: classify.PatchDocument, Writes: []classify.DocWrite{set("c/a", 1)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, before)}, false},
		{"set, the document has other values (overwritten, or never written)", Intent{Op: classify.PatchDocument, Writes: []classify.DocWrite{set("c/a", 1)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 2, after)}, false},
		{"set, the document is missing", Intent{Op: classify.PatchDocument, Writes: []classify.DocWrite{set("c/a", 1)}},
			nil, false},
		{"set, old document known and unchanged", Intent{Op: classify.PatchDocument, Writes: []classify.DocWrite{set("c/a", 1)},
			Old: map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, before)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, before)}, false},
		{"delete, the document is gone", Intent{Op: classify.DeleteDocument, Writes: []classify.DocWrite{del("c/a", 0)}},
			nil, true},
		{"delete, the document is still there", Intent{Op: classify.DeleteDocument, Writes: []classify.DocWrite{del("c/a", 0)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, before)}, false},
		{"commit: the set shows, so the delete landed with it", Intent{Op: classify.Commit, Writes: []classify.DocWrite{set("c/a", 1), del("c/b", 1)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, after)}, true},
		{"commit: the set does not show, so neither does the delete", Intent{Op: classify.Commit, Writes: []classify.DocWrite{set("c/a", 1), del("c/b", 1)}},
			map[string]*firestorepb.Document{name("c/a"): doc("c/a", 1, before)}, false},
	} {
		tc.in.At = at
		out := Resolve(&tc.in, tc.now)
		if out.Landed != tc.landed {
			t.Errorf("%s: landed %v, want %v", tc.what, out.Landed, tc.landed)
		}
		if out.Landed && tc.in.Op == classify.Commit && !out.Commit.GetCommitTime().AsTime().Equal(after) {
			t.Errorf("%s: commit time %v, want the document's update time %v", tc.what, out.Commit.GetCommitTime(), after)
		}
	}
}

// A journal reopened after a crash returns exactly the intents not done, with their
// landed events, decoded as they were recorded.
func TestJournalReopen(t *testing.T) {
	dir := t.TempDir()
	j, open, err := OpenJournal(dir)
	if err != nil || len(open) != 0 {
		t.Fatalf("OpenJournal: %v, %d open", err, len(open))
	}
	at := time.Now().UTC()
	a := &Intent{At: at, Op: classify.Commit, Database: db, AuthHash: "h", Writes: []classify.DocWrite{set("c/a", 1), del("c/b", 1)},
		Old: map[string]*firestorepb.Document{name("c/a"): nil, name("c/b"): doc("c/b", 3, at)}}
	b := &Intent{At: at, Op: classify.PatchDocument, Database: db, Writes: []classify.DocWrite{set("c/x", 2)}}
	c := &Intent{At: at, Op: classify.PatchDocument, Database: db, Writes: []classify.DocWrite{set("c/y", 3)}}
	for _, in := range []*Intent{a, b, c} {
		if err := j.Begin(in); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Landed(b.ID, [][]byte{[]byte("event-1"), []byte("event-2")}); err != nil {
		t.Fatal(err)
	}
	if err := j.Done(c.ID); err != nil {
		t.Fatal(err)
	}
	j.box.CloseWithoutSync() // the process dies
	j, open, err = OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if len(open) != 2 || open[0].Intent.ID != a.ID || open[1].Intent.ID != b.ID {
		t.Fatalf("open after reopen: %+v, want intents %d and %d", open, a.ID, b.ID)
	}
	got := open[0].Intent
	if got.Op != a.Op || got.Database != db || got.AuthHash != "h" || !got.At.Equal(at) || len(got.Writes) != 2 ||
		got.Writes[1].Index != 1 || !proto.Equal(got.Writes[0].Write, a.Writes[0].Write) ||
		len(got.Old) != 2 || got.Old[name("c/a")] != nil || !proto.Equal(got.Old[name("c/b")], a.Old[name("c/b")]) {
		t.Errorf("intent decoded as %+v, want %+v", got, a)
	}
	if open[0].Landed != nil || len(open[1].Landed) != 2 || string(open[1].Landed[1]) != "event-2" {
		t.Errorf("landed records: %q, %q", open[0].Landed, open[1].Landed)
	}
}
