package firestorepath

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		raw                                          string
		resource, name, db, project, dbID, rel, verb string
		depth                                        int
	}{
		{
			raw:      "/v1/projects/p/databases/%28default%29/documents/products/p1",
			resource: "projects/p/databases/(default)/documents/products/p1",
			name:     "projects/p/databases/(default)/documents/products/p1",
			db:       "projects/p/databases/(default)", project: "p", dbID: "(default)",
			rel: "products/p1", depth: 2,
		},
		{
			raw:      "/v1/projects/p/databases/(default)/documents:runQuery",
			resource: "projects/p/databases/(default)/documents:runQuery",
			name:     "projects/p/databases/(default)/documents",
			db:       "projects/p/databases/(default)", project: "p", dbID: "(default)",
			verb: "runQuery",
		},
		{
			raw:      "/v1/projects/my-proj/databases/db2/documents/farmers/f1:listCollectionIds",
			resource: "projects/my-proj/databases/db2/documents/farmers/f1:listCollectionIds",
			name:     "projects/my-proj/databases/db2/documents/farmers/f1",
			db:       "projects/my-proj/databases/db2", project: "my-proj", dbID: "db2",
			rel: "farmers/f1", verb: "listCollectionIds", depth: 2,
		},
		{ // an encoded colon inside the path belongs to the id; '+' is literal in a path; spaces decode
			raw:      "/v1/projects/p/databases/d/documents/a%3Ab+c%20d/x",
			resource: "projects/p/databases/d/documents/a:b+c d/x",
			name:     "projects/p/databases/d/documents/a:b+c d/x",
			db:       "projects/p/databases/d", project: "p", dbID: "d",
			rel: "a:b+c d/x", depth: 2,
		},
		{
			raw:      "/v1beta1/projects/p/databases/d/documents:commit",
			resource: "projects/p/databases/d/documents:commit",
			name:     "projects/p/databases/d/documents",
			db:       "projects/p/databases/d", project: "p", dbID: "d",
			verb: "commit",
		},
		{ // a colon in a middle segment is part of the id
			raw:      "/v1/projects/p/databases/d/documents/c/a:b/sub",
			resource: "projects/p/databases/d/documents/c/a:b/sub",
			name:     "projects/p/databases/d/documents/c/a:b/sub",
			db:       "projects/p/databases/d", project: "p", dbID: "d",
			rel: "c/a:b/sub", depth: 3,
		},
	}
	for _, tt := range tests {
		p, err := Parse(tt.raw)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.raw, err)
			continue
		}
		got := []any{p.Resource(), p.Name(), p.Database(), p.Project(), p.DatabaseID(), p.Relative(), p.Verb(), p.Depth()}
		want := []any{tt.resource, tt.name, tt.db, tt.project, tt.dbID, tt.rel, tt.verb, tt.depth}
		if !slices.Equal(got, want) {
			t.Errorf("Parse(%q)\n got %q\nwant %q", tt.raw, got, want)
		}
		if p.Root() != tt.db+"/documents" {
			t.Errorf("Root() = %q", p.Root())
		}
	}
}

func TestParseRejects(t *testing.T) {
	malformed := []string{
		"/v1/projects/p/databases/d/documents//x",
		"/v1/projects/p/databases/d/documents/c/",
		"/v1/projects/p/databases/d/documents/c/..",
		"/v1/projects/p/databases/d/documents/c/./x",
		"/v1/projects/p/databases/d/documents/c/%2e%2E",
		"/v1/projects/p/databases/d/documents/c/a%2Fb",
		"/v1/projects/p/databases/d/documents/c/a%2fb",
		"/v1/projects/p/databases/d/documents/c/a%zz",
		"/v1/projects/p/databases/d/documents/c/a%2",
		"/v1/projects/p/databases/d/documents:",
		"/v1/projects/p/databases/d/documents:run%51uery",
		"/v1/projects/p/databases/d/documents:run-query",
		"/v1/projects/p/databases/../documents/c/x",
		"/v1/",
		"/v1//projects/p/databases/d/documents/c",
		// The emulator reads these as another resource than their bytes say.
		"/v1/projects/p/databases/d/documents%3Acommit",
		"/v1/projects/p/databases/d/documents/c/x%3arunQuery",
		"/v1/projects/p/databases/d/documents/orders%20/x",
		"/v1/projects/p/databases/d/documents/%20orders/x",
		"/v1/projects/p/databases/d/documents/orders/x%09",
		"/v1/projects/p/databases/d/documents/orders/x%0A",
		"/v1/projects/p/databases/d/documents/orders/x%C2%A0",
		"/v1/projects/p/databases/d/documents/orders/x%FF",
		"/v1/projects/p%20/databases/d/documents/orders/x",
		"/v1/projects/p/databases/(default)%20/documents/orders/x",
		"/v1/projects/p/databases/d/documents%20/orders/x",
		"/v1%20/projects/p/databases/d/documents/orders/x",
		"/%76%31/projects/p/databases/d/documents/c/x",
		"/v1beta%31/projects/p/databases/d/documents/c/x",
		"/v1/%70rojects/p/databases/d/documents/c/x",
		"/v1/projects/p/databases/d/%64ocuments/c/x",
	}
	for _, raw := range malformed {
		if _, err := Parse(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", raw, err)
		}
	}
	outside := []string{
		"",
		"/",
		"/v1",
		"/v1beta2/projects/p/databases/d/documents/c/x",
		"/v1alpha1/projects/p/databases/d/documents/c/x",
		"//v1/projects/p/databases/d/documents/c/x",
		"/emulator/v1/projects/p/databases/(default)/documents",
		"/v1/projects/p/databases/d",
		"/v1/projects/p/databases/d:exportDocuments",
		"/v1/projects/p/databases/d/collectionGroups/c/indexes",
		"/v1/projects/p/locations",
		"/v1/projects/p/databases/d/documentz/c",
		"/V1/projects/p/databases/d/documents/c",
	}
	for _, raw := range outside {
		if _, err := Parse(raw); !errors.Is(err, ErrNotDocumentPath) {
			t.Errorf("Parse(%q) = %v, want ErrNotDocumentPath", raw, err)
		}
	}
}

func TestParseDoesNotShareInput(t *testing.T) {
	raw := []byte("/v1/projects/p/databases/d/documents/c/x")
	p, err := Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a caller whose buffer is reused (fasthttp) after Parse returned.
	name := p.Name()
	for i := range raw {
		raw[i] = 'z'
	}
	if name != "projects/p/databases/d/documents/c/x" {
		t.Fatalf("Name changed with the input: %q", name)
	}
}

func TestHierarchy(t *testing.T) {
	const root = "projects/p/databases/d/documents"
	tests := []struct {
		name                                    string
		id, collection, collectionID, parentDoc string
		ancestors                               []string
	}{
		{root + "/products/p1", "p1", root + "/products", "products", root, []string{root}},
		{root + "/products", "products", root + "/products", "products", root, []string{root}},
		{root + "/farmers/f1/products/p1", "p1", root + "/farmers/f1/products", "products", root + "/farmers/f1",
			[]string{root + "/farmers/f1", root}},
		{root + "/a/1/b/2/c", "c", root + "/a/1/b/2/c", "c", root + "/a/1/b/2",
			[]string{root + "/a/1/b/2", root + "/a/1", root}},
		{root, "", "", "", "", nil},
	}
	for _, tt := range tests {
		p, err := ParseName(tt.name)
		if err != nil {
			t.Fatalf("ParseName(%q): %v", tt.name, err)
		}
		got := []string{p.ID(), p.Collection(), p.CollectionID(), p.ParentDocument()}
		want := []string{tt.id, tt.collection, tt.collectionID, tt.parentDoc}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, want)
		}
		if anc := slices.Collect(p.AncestorDocuments); !slices.Equal(anc, tt.ancestors) {
			t.Errorf("%s: AncestorDocuments = %q, want %q", tt.name, anc, tt.ancestors)
		}
	}
}

func TestParseNameDoesNotDecode(t *testing.T) {
	p, err := ParseName("projects/p/databases/(default)/documents/c/a%2Fb")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID() != "a%2Fb" {
		t.Fatalf("ID = %q, want the literal a%%2Fb", p.ID())
	}
	for _, bad := range []string{"projects/p/databases/d/documents/c//x", "projects/p/databases/d/documents/..", "/projects/p/databases/d/documents",
		"projects/p/databases/d/documents/c /x", "projects/p/databases/d/documents/c/x\t", "projects/p/databases/d/documents/c/\xffx", "projects/p /databases/d/documents/c/x"} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

// FuzzParse checks that Parse never panics, and that what it accepts is consistent:
// the name re-parses as the same path, and every segment is a valid id.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"/v1/projects/p/databases/%28default%29/documents/products/p1",
		"/v1/projects/p/databases/d/documents:batchGet",
		"/v1/projects/p/databases/d/documents/a/b/c:runQuery",
		"/v1/projects/p/databases/d/documents/c/%2e",
		"/v1/projects/p/databases/d/documents/c/a%3Ab",
		"/%76%31/projects/p/databases/d/documents/c/x",
		"/v1beta1/projects/p/databases/d/documents:commit",
		"/v1/projects/p/databases/d/documents/orders%20/x",
		"/v1/projects/p/databases/d/documents/c/x%FF",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := Parse(raw)
		if err != nil {
			return
		}
		q, err := ParseName(p.Name())
		if err != nil {
			t.Fatalf("Parse(%q) gave name %q that ParseName rejects: %v", raw, p.Name(), err)
		}
		if q.Depth() != p.Depth() || q.Relative() != p.Relative() || q.Database() != p.Database() {
			t.Fatalf("Parse(%q) and ParseName(%q) disagree", raw, p.Name())
		}
		for _, seg := range strings.Split(p.Name(), "/") {
			if !Valid(seg) {
				t.Fatalf("Parse(%q) accepted segment %q", raw, seg)
			}
		}
		if v := p.Verb(); v != "" && !strings.HasSuffix(p.Resource(), ":"+v) {
			t.Fatalf("verb %q not at the end of %q", v, p.Resource())
		}
	})
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("/v1/projects/p/databases/%28default%29/documents/farmers/f1/products/p1"); err != nil {
			b.Fatal(err)
		}
	}
}
