package rules

import (
	"fmt"
	"strings"
	"testing"
)

const matchRules = `
rules:
  - match: /{c}/{d}/likes/{l}
    ttl: 1m
  - match: /products/featured
    ttl: 1m
  - match: /products/{id}
    ttl: 1m
  - match: /farmers/{f}/products/{p}
    ttl: 1m
  - match: /farmers/{f}
    ttl: 1m
  - match: /users/{u}/{rest=**}
    ttl: 1m
  - match: /a/{x=**}
    ttl: 1m
  - match: /{c}/{d}/reviews/{r}
    ttl: 1m
  - match: /{document=**}
    ttl: 0
`

func mustParse(t testing.TB, src string) *Config {
	t.Helper()
	cfg, err := Parse("test.yaml", []byte(src), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func matched(r *Rule) string {
	if r == nil {
		return "<none>"
	}
	return r.Match
}

func TestMatch(t *testing.T) {
	parsed := mustParse(t, matchRules)
	// A Config built by hand has no index and must answer the same.
	byHand := &Config{Rules: append([]Rule(nil), parsed.Rules...)}
	narrow := mustParse(t, "rules:\n  - match: /products/{id}\n    ttl: 1m\n")

	cases := []struct {
		cfg  *Config
		kind string // doc, coll, group, groupUnder
		path string // for groupUnder: "parent|collectionID"
		want string
	}{
		{parsed, "doc", "products/featured", "/products/featured"},
		{parsed, "doc", "products/p1", "/products/{id}"},
		{parsed, "doc", "/products/p1", "/products/{id}"},
		{parsed, "doc", "farmers/f1/products/p1", "/farmers/{f}/products/{p}"},
		{parsed, "doc", "farmers/f1", "/farmers/{f}"},
		{parsed, "doc", "users/u1", "/users/{u}/{rest=**}"},                    // {x=**} takes zero segments
		{parsed, "doc", "users/u1/orders/o1/items/i1", "/users/{u}/{rest=**}"}, // and many
		{parsed, "doc", "a/b", "/a/{x=**}"},
		{parsed, "doc", "products/p1/likes/l1", "/{c}/{d}/likes/{l}"}, // an earlier wildcard-first rule wins over literal ones
		{parsed, "doc", "products/p1/reviews/r1", "/{c}/{d}/reviews/{r}"},
		{parsed, "doc", "users/u1/reviews/r1", "/users/{u}/{rest=**}"}, // first match, not best match
		{parsed, "doc", "x/y", "/{document=**}"},
		{parsed, "doc", "farmers/f1/sales/s1", "/{document=**}"},
		{parsed, "coll", "products", "/products/{id}"}, // a literal last segment cannot list a collection
		{parsed, "coll", "/farmers/f1/products", "/farmers/{f}/products/{p}"},
		{parsed, "coll", "farmers", "/farmers/{f}"},
		{parsed, "coll", "users", "/users/{u}/{rest=**}"},
		{parsed, "coll", "users/u1/orders", "/users/{u}/{rest=**}"},
		{parsed, "coll", "products/p1/reviews", "/{c}/{d}/reviews/{r}"},
		{parsed, "coll", "farmers/f1/sales", "/{document=**}"},
		{parsed, "group", "products", "/products/{id}"},
		{parsed, "group", "orders", "/users/{u}/{rest=**}"},
		{parsed, "group", "likes", "/{c}/{d}/likes/{l}"},
		{parsed, "groupUnder", "farmers/f1|products", "/farmers/{f}/products/{p}"},
		{parsed, "groupUnder", "users/u1|products", "/users/{u}/{rest=**}"},
		{narrow, "doc", "farmers/f1", "<none>"},
		{narrow, "doc", "products/p1/reviews/r1", "<none>"},
		{narrow, "doc", "products", "<none>"},
		{narrow, "doc", "", "<none>"},
		{narrow, "coll", "farmers", "<none>"},
		{narrow, "coll", "products/p1/reviews", "<none>"},
		{narrow, "group", "farmers", "<none>"},
		{narrow, "group", "products", "/products/{id}"},
		{narrow, "groupUnder", "farmers/f1|products", "<none>"},
	}
	for _, tc := range cases {
		for _, cfg := range []*Config{tc.cfg, {Rules: tc.cfg.Rules}} {
			if tc.cfg == parsed && cfg != parsed {
				cfg = byHand
			}
			var got *Rule
			switch tc.kind {
			case "doc":
				got = cfg.ForDocument(tc.path)
			case "coll":
				got = cfg.ForCollection(tc.path)
			case "group":
				got = cfg.ForCollectionGroup(tc.path)
			case "groupUnder":
				parent, id, _ := strings.Cut(tc.path, "|")
				got = cfg.ForCollectionGroupUnder(parent, id)
			}
			if matched(got) != tc.want {
				t.Errorf("%s %q (indexed=%v): got %s, want %s", tc.kind, tc.path, cfg.index != nil, matched(got), tc.want)
			}
		}
	}
}

// The rule returned is the Config's own, so its settings and line are what was parsed.
func TestMatchReturnsParsedRule(t *testing.T) {
	cfg := mustParse(t, "rules:\n  - match: /products/{id}\n    ttl: 30m\n    scope: shared\n")
	r := cfg.ForDocument("products/p1")
	if r == nil || r.Line != 2 || r.Scope != ScopeShared || r.TTL.String() != "30m0s" {
		t.Fatalf("got %+v", r)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	cfg := mustParse(t, matchRules)
	allocs := testingAllocs(func() {
		cfg.ForDocument("farmers/f1/products/p1")
		cfg.ForCollection("users/u1/orders")
		cfg.ForCollectionGroup("orders")
		cfg.ForCollectionGroupUnder("farmers/f1", "products")
	})
	if allocs != 0 {
		t.Fatalf("matching allocated %v times per run", allocs)
	}
}

func testingAllocs(f func()) float64 { return testing.AllocsPerRun(100, f) }

// benchRules builds a rules file of n rules over n/3 top-level collections, three
// depths each, the shape of a large real configuration.
func benchRules(n int) string {
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i := 0; len(strings.Split(sb.String(), "- match"))-1 < n; i++ {
		fmt.Fprintf(&sb, "  - match: /c%d/{id}/sub/{s}/deep/{d}\n    ttl: 1m\n", i)
		fmt.Fprintf(&sb, "  - match: /c%d/{id}/sub/{s}\n    ttl: 1m\n", i)
		fmt.Fprintf(&sb, "  - match: /c%d/{id}\n    ttl: 1m\n", i)
	}
	return sb.String()
}

func BenchmarkMatch(b *testing.B) {
	cfg := mustParse(b, benchRules(300))
	if len(cfg.Rules) != 300 {
		b.Fatalf("%d rules", len(cfg.Rules))
	}
	linear := &Config{Rules: cfg.Rules}
	b.Run("document", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if cfg.ForDocument("c99/x1/sub/s1") == nil {
				b.Fatal("no match")
			}
		}
	})
	b.Run("collection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if cfg.ForCollection("c99/x1/sub") == nil {
				b.Fatal("no match")
			}
		}
	})
	b.Run("group", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if cfg.ForCollectionGroup("c99") == nil {
				b.Fatal("no match")
			}
		}
	})
	b.Run("document-no-index", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if linear.ForDocument("c99/x1/sub/s1") == nil {
				b.Fatal("no match")
			}
		}
	})
}
