package rules

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	sample, _ := os.ReadFile("../rules.yaml")
	f.Add(string(sample))
	f.Add(matchRules)
	f.Add("rules:\n  - match: /a/{b}\n    events: [created, written]\n    ttl: ${T:-1m}\n")
	f.Add("cache: &c {l1_max_bytes: 1KiB}\nserver: *c\n")
	f.Add("worker:\n  handlers:\n    - {name: a, on: '#.x.*', action: webhook, url: 'http://h'}\n")
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse("fuzz.yaml", []byte(src), func(string) (string, bool) { return "", false })
		if err != nil {
			list, ok := err.(ErrorList)
			if !ok || len(list) == 0 {
				t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
			}
			return
		}
		for _, r := range cfg.Rules {
			if msg := checkPattern(r.Match); msg != "" {
				t.Fatalf("accepted a bad pattern: %s", msg)
			}
		}
		linear := &Config{Rules: cfg.Rules}
		for _, p := range []string{"a/b", "products/p1", "farmers/f1/products/p1", "a", "users/u1/orders"} {
			if matched(cfg.ForDocument(p)) != matched(linear.ForDocument(p)) ||
				matched(cfg.ForCollection(p)) != matched(linear.ForCollection(p)) ||
				matched(cfg.ForCollectionGroup(p)) != matched(linear.ForCollectionGroup(p)) {
				t.Fatalf("index and scan disagree on %q", p)
			}
			_ = Explain(cfg, p)
		}
	})
}

// refMatchDocument is the obvious matcher, by splitting: the oracle for matchDocument.
func refMatchDocument(pattern, path string) bool {
	ps := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	var xs []string
	if path != "" {
		xs = strings.Split(path, "/")
	}
	for i, p := range ps {
		if isMultiWildcard(p) {
			return true
		}
		if i >= len(xs) || (!isWildcard(p) && p != xs[i]) {
			return false
		}
	}
	return len(ps) == len(xs)
}

func FuzzMatch(f *testing.F) {
	f.Add("/products/{id}", "/{document=**}", "products/p1")
	f.Add("/farmers/{f}/products/{p}", "/farmers/{f}/{rest=**}", "farmers/f1/products")
	f.Add("/users/{u}/{rest=**}", "/{c}/{d}", "users/u1")
	f.Add("/a/{x=**}", "/a/b/c/{d=**}", "a")
	f.Add("{", "/}/{=**}", "//")
	f.Add("/private/{u}/{rest=**}", "/posts/{p}/comments/{c}", "private/u1/x/y/comments/c1")
	f.Add("/products/secret", "/products/{id}", "products/secret")
	f.Fuzz(func(t *testing.T, pattern, other, path string) {
		rs := []Rule{{Match: pattern}, {Match: other}, {Match: "/{document=**}"}}
		linear := &Config{Rules: rs}
		indexed := &Config{Rules: rs, index: buildIndex(rs)}
		lastSeg := path[strings.LastIndexByte(path, '/')+1:]
		parent, _, _ := strings.Cut(path, "|")
		for _, c := range []*Config{linear, indexed} {
			_ = Explain(c, path)
		}
		if matched(linear.ForDocument(path)) != matched(indexed.ForDocument(path)) ||
			matched(linear.ForCollection(path)) != matched(indexed.ForCollection(path)) ||
			matched(linear.ForCollectionGroup(lastSeg)) != matched(indexed.ForCollectionGroup(lastSeg)) ||
			matched(linear.ForCollectionGroupUnder(parent, lastSeg)) != matched(indexed.ForCollectionGroupUnder(parent, lastSeg)) {
			t.Fatalf("index and scan disagree")
		}
		// Against the oracle, for valid patterns and well-formed paths.
		if checkPattern(pattern) != "" || path == "" || strings.Contains(path, "//") ||
			strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
			return
		}
		if got, want := matchDocument(pattern, path), refMatchDocument(pattern, path); got != want {
			t.Fatalf("matchDocument(%q, %q) = %v, oracle %v", pattern, path, got, want)
		}
		// A collection matches when a document of it with an id no literal names does.
		const unseen = "\x00unseen-id"
		if !strings.Contains(pattern, unseen) {
			if got, want := matchCollection(pattern, path), refMatchDocument(pattern, path+"/"+unseen); got != want {
				t.Fatalf("matchCollection(%q, %q) = %v, oracle %v", pattern, path, got, want)
			}
		}
		// Group and collection answers are sound: the document's own rule is among
		// them, and a document with no rule makes them incomplete.
		if segs := strings.Split(path, "/"); len(segs)%2 == 0 {
			coll := strings.Join(segs[:len(segs)-1], "/")
			own := linear.ForDocument(path)
			groupRules, groupComplete := linear.CollectionGroupRules("", segs[len(segs)-2])
			collRules, collComplete := linear.CollectionRules(coll)
			for _, a := range []struct {
				rs       []*Rule
				complete bool
			}{{groupRules, groupComplete}, {collRules, collComplete}} {
				if own == nil && a.complete {
					t.Fatalf("%q matches no rule, yet its group or collection is complete", path)
				}
				if own != nil && a.complete && !slices.Contains(a.rs, own) {
					t.Fatalf("%q is governed by %s, missing from %v", path, own.Match, a.rs)
				}
			}
		}
		// covers is sound: whatever the covered pattern matches, the cover matches.
		if checkPattern(other) == "" && covers(pattern, other) && refMatchDocument(other, path) && !refMatchDocument(pattern, path) {
			t.Fatalf("covers(%q, %q) but only the second matches %q", pattern, other, path)
		}
	})
}
