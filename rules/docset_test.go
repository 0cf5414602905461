package rules

import (
	"strings"
	"testing"
)

func ruleNames(rs []*Rule) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Match)
	}
	return strings.Join(out, " ")
}

// Every rule that governs some document a group query or a collection read may
// return is named, recursive wildcards of any depth and earlier rules for one id
// included; a document no rule governs makes the answer incomplete.
func TestCollectionGroupRulesWeighEveryGoverningRule(t *testing.T) {
	const commentsAndCatchAll = `
rules:
  - match: /public/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /users/{u}/comments/{c}
    ttl: 1m
  - match: /products/{id}
    ttl: 30m
    scope: shared
  - match: /{document=**}
    ttl: 0
`
	const recursive = `
rules:
  - match: /posts/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /private/{u}/{rest=**}
    ttl: 1m
  - match: /{a}/{b}/{c}/{d}/comments/{e}
    ttl: 5m
    scope: shared
  - match: /{document=**}
    ttl: 1m
`
	const sharedOnly = `
rules:
  - match: /posts/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /{x}/{y}/comments/{c}
    ttl: 10m
    scope: shared
`
	const leadingShadow = `
rules:
  - match: /products/secret
    ttl: 1m
  - match: /products/{id}
    ttl: 10m
    scope: shared
`
	cases := []struct {
		yaml, kind, parent, id string
		want                   string
		complete               bool
	}{
		// The catch-all governs comments under any other parent, so the root group is
		// incomplete whatever the named rules say.
		{commentsAndCatchAll, "group", "", "comments", "/public/{p}/comments/{c} /users/{u}/comments/{c} /{document=**}", true},
		{commentsAndCatchAll, "group", "users/u1", "comments", "/users/{u}/comments/{c} /{document=**}", true},
		{commentsAndCatchAll, "group", "", "orders", "/{document=**}", true},
		// {rest=**} under private/ governs comments at every depth there.
		{recursive, "group", "", "comments", "/posts/{p}/comments/{c} /private/{u}/{rest=**} /{a}/{b}/{c}/{d}/comments/{e} /{document=**}", true},
		{recursive, "group", "private/u1", "comments", "/private/{u}/{rest=**}", true},
		{recursive, "group", "posts/p1", "comments", "/posts/{p}/comments/{c} /{a}/{b}/{c}/{d}/comments/{e} /{document=**}", true},
		// comments at the root, and deeper than two, match no rule.
		{sharedOnly, "group", "", "comments", "/posts/{p}/comments/{c} /{x}/{y}/comments/{c}", false},
		{sharedOnly, "group", "posts/p1/x/y", "comments", "", false},
		{sharedOnly, "coll", "posts/p1", "comments", "/posts/{p}/comments/{c}", true},
		{sharedOnly, "coll", "other/o1", "comments", "/{x}/{y}/comments/{c}", true},
		{sharedOnly, "coll", "", "comments", "", false},
		// An earlier rule for one document id governs that document of the collection.
		{leadingShadow, "coll", "", "products", "/products/secret /products/{id}", true},
	}
	for _, c := range cases {
		cfg := mustParse(t, c.yaml)
		for _, cfg := range []*Config{cfg, {Rules: cfg.Rules}} {
			var rs []*Rule
			var complete bool
			if c.kind == "group" {
				rs, complete = cfg.CollectionGroupRules(c.parent, c.id)
			} else {
				rs, complete = cfg.CollectionRules(strings.TrimPrefix(c.parent+"/"+c.id, "/"))
			}
			if got := ruleNames(rs); got != c.want || complete != c.complete {
				t.Errorf("%s %q %q:\n got  %q complete=%v\n want %q complete=%v", c.kind, c.parent, c.id, got, complete, c.want, c.complete)
			}
		}
	}
}

// firstMatches agrees with ForDocument on every document of a bounded enumeration:
// a rule is named exactly when it is the first match of some enumerated document, and
// the answer is complete exactly when every enumerated document has a rule.
func TestFirstMatchesAgreesWithForDocument(t *testing.T) {
	cfg := mustParse(t, matchRules)
	segs := []string{"products", "farmers", "users", "a", "likes", "reviews", "featured", "zz"}
	for _, parent := range []string{"", "users/u1", "products/featured", "a/b"} {
		for _, id := range segs {
			rs, complete := cfg.CollectionGroupRules(parent, id)
			want := map[*Rule]bool{}
			wantComplete := true
			// Documents parent/(s s)^k/id/x for k <= 2 over the segment alphabet.
			var walk func(prefix string, pairs int)
			walk = func(prefix string, pairs int) {
				for _, x := range segs {
					doc := strings.TrimPrefix(prefix+"/"+id+"/"+x, "/")
					if r := cfg.ForDocument(doc); r != nil {
						want[r] = true
					} else {
						wantComplete = false
					}
				}
				if pairs == 2 {
					return
				}
				for _, a := range segs {
					for _, b := range segs {
						walk(prefix+"/"+a+"/"+b, pairs+1)
					}
				}
			}
			walk(strings.TrimPrefix("/"+parent, "/"), 0)
			var wantNames []string
			for i := range cfg.Rules {
				if want[&cfg.Rules[i]] {
					wantNames = append(wantNames, cfg.Rules[i].Match)
				}
			}
			if got := ruleNames(rs); got != strings.Join(wantNames, " ") || complete != wantComplete {
				t.Errorf("group %q under %q: got %q complete=%v, enumeration says %q complete=%v",
					id, parent, got, complete, strings.Join(wantNames, " "), wantComplete)
			}
		}
	}
}

func BenchmarkCollectionGroupRules(b *testing.B) {
	cfg := mustParse(b, benchRules(300))
	b.ReportAllocs()
	for b.Loop() {
		if _, complete := cfg.CollectionGroupRules("", "sub"); complete {
			b.Fatal("complete without a catch-all")
		}
	}
}
