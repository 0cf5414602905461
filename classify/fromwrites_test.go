package classify

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// verifyWrite is a Write as the Firebase SDKs send a transaction's verify over gRPC: no
// operation the Go types know, field 5 (verify) among the unknown fields.
func verifyWrite(t testing.TB, name string) *firestorepb.Write {
	t.Helper()
	raw := protowire.AppendTag(nil, verifyField, protowire.BytesType)
	raw = protowire.AppendString(raw, name)
	w := &firestorepb.Write{}
	if err := proto.Unmarshal(raw, w); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestFromWritesAgreesWithClassify: writes arriving as protobuf (gRPC, the Write
// stream) are classified exactly as the same writes in a REST commit body, verify
// writes included, so every front invalidates and emits the same.
func TestFromWritesAgreesWithClassify(t *testing.T) {
	writes := []*firestorepb.Write{
		{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: root + "/farmers/f1/products/p2"}},
			CurrentDocument: exists(false)},
		verifyWrite(t, root+"/farmers/f9"),
		{Operation: &firestorepb.Write_Delete{Delete: root + "/products/p1"}},
	}
	got, err := FromWrites(Commit, db, writes, true)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"transaction":"dHg=","writes":[{"update":{"name":"` + root + `/farmers/f1/products/p2"},"currentDocument":{"exists":false}},` +
		`{"verify":"` + root + `/farmers/f9"},{"delete":"` + root + `/products/p1"}]}`
	want, err := Classify("POST", rawPath+":commit", "", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != Write || got.Op != Commit || !got.Transactional || got.Database != db {
		t.Errorf("FromWrites = kind %v op %v transactional %v database %q", got.Kind, got.Op, got.Transactional, got.Database)
	}
	if !slices.Equal(got.Targets, want.Targets) || !slices.Equal(got.Tags, want.Tags) {
		t.Errorf("FromWrites targets/tags\n got %v %v\nwant %v %v", got.Targets, got.Tags, want.Targets, want.Tags)
	}
	if len(got.Writes) != 2 || got.Writes[0].Index != 0 || got.Writes[1].Index != 2 ||
		got.Writes[1].Name != root+"/products/p1" {
		t.Errorf("FromWrites writes = %+v, want indexes 0 and 2 (the verify at 1 writes nothing)", got.Writes)
	}
}

// TestFromWritesRefuses: a write the proxy could not account for is an *Error.
func TestFromWritesRefuses(t *testing.T) {
	other := "projects/q/databases/(default)/documents/products/p1"
	for name, writes := range map[string][]*firestorepb.Write{
		"no operation":               {{}},
		"another database":           {{Operation: &firestorepb.Write_Delete{Delete: other}}},
		"a collection":               {{Operation: &firestorepb.Write_Delete{Delete: root + "/products"}}},
		"a malformed name":           {{Operation: &firestorepb.Write_Delete{Delete: root + "//x"}}},
		"a transform of no document": {{Operation: &firestorepb.Write_Transform{Transform: &firestorepb.DocumentTransform{Document: "x"}}}},
	} {
		_, err := FromWrites(Commit, db, writes, false)
		var ce *Error
		if !errors.As(err, &ce) || ce.HTTPStatus != 400 {
			t.Errorf("%s: err = %v, want a 400 *Error", name, err)
		}
	}
	if _, err := FromWrites(Commit, "projects/p", nil, false); err == nil {
		t.Error("a malformed database was accepted")
	}
}

// BenchmarkCommitVerifies shows classification linear in the number of verify writes
// (the body used to be parsed again for each one: 8k verifies cost minutes of CPU).
func BenchmarkCommitVerifies(b *testing.B) {
	for _, n := range []int{100, 1000, 8000} {
		var sb strings.Builder
		sb.WriteString(`{"transaction":"dHg=","writes":[`)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"verify":"%s/products/p%d"}`, root, i)
		}
		sb.WriteString(`]}`)
		body := []byte(sb.String())
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Classify("POST", rawPath+":commit", "", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
