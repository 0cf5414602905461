package proxy

import (
	"testing"
	"time"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/rules"
)

func mustRules(t *testing.T, yaml string) *rules.Config {
	t.Helper()
	cfg, err := rules.Parse("rules.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A read of several documents obeys the strictest of their rules; one uncached target
// makes the whole read uncached.
func TestRuleForMergesTargetsStrictly(t *testing.T) {
	cfg := mustRules(t, `
rules:
  - match: /products/{p}
    ttl: 30m
    scope: shared
    consistency: eventual
    stale_while_revalidate: 1m
    stale_if_error: 1h
    negative_ttl: 10m
  - match: /sessions/{s}
    ttl: 5m
    stale_if_error: 2h
    negative_ttl: 0s
  - match: /logs/{l}
    ttl: 0
`)
	doc := func(p string) classify.Target { return classify.Target{Kind: classify.TargetDocument, Path: p} }
	read := func(targets ...classify.Target) *classify.Request { return &classify.Request{Targets: targets} }

	one := ruleFor(cfg, read(doc("products/a")))
	if one == nil || one.TTL != 30*time.Minute || one.Scope != rules.ScopeShared {
		t.Fatalf("single target: %+v", one)
	}
	same := ruleFor(cfg, read(doc("products/a"), doc("products/b")))
	if same != one {
		t.Errorf("targets of one rule: got a merged copy %+v, want the rule itself", same)
	}

	m := ruleFor(cfg, read(doc("products/a"), doc("sessions/s")))
	want := rules.Rule{TTL: 5 * time.Minute, Scope: rules.ScopeUser, Consistency: rules.Strong,
		StaleWhileRevalidate: 0, StaleIfError: time.Hour, NegativeTTL: 0}
	if m == nil || m.TTL != want.TTL || m.Scope != want.Scope || m.Consistency != want.Consistency ||
		m.StaleWhileRevalidate != want.StaleWhileRevalidate || m.StaleIfError != want.StaleIfError || m.NegativeTTL != want.NegativeTTL {
		t.Errorf("merged rule = %+v, want %+v", m, want)
	}
	if cfg.Rules[0].TTL != 30*time.Minute || cfg.Rules[0].Scope != rules.ScopeShared {
		t.Errorf("merging modified the configured rule: %+v", cfg.Rules[0])
	}
	if r := ruleFor(cfg, read(doc("sessions/s"), doc("products/a"))); r == nil || r.Scope != rules.ScopeUser || r.TTL != 5*time.Minute {
		t.Errorf("merge depends on order: %+v", r)
	}

	for name, req := range map[string]*classify.Request{
		"a ttl 0 target":    read(doc("products/a"), doc("logs/l")),
		"an unruled target": read(doc("products/a"), doc("other/x")),
		"no targets":        read(),
	} {
		if r := ruleFor(cfg, req); r != nil {
			t.Errorf("%s: got %+v, want nil (not cached)", name, r)
		}
	}

	group := ruleFor(cfg, read(classify.Target{Kind: classify.TargetGroup, CollectionID: "products"}))
	if group != nil {
		t.Errorf("collection group products: %+v, want not cached (products deeper than the root have no rule)", group)
	}
	coll := ruleFor(cfg, read(classify.Target{Kind: classify.TargetCollection, Path: "sessions", CollectionID: "sessions"}))
	if coll == nil || coll.TTL != 5*time.Minute {
		t.Errorf("collection sessions: %+v", coll)
	}
}

// billedDocs counts what Firestore bills for an answer, and refuses (ok false) the
// answers that must not be cached.
func TestBilledDocs(t *testing.T) {
	doc := `{"name":"projects/p/databases/(default)/documents/c/d","fields":{}}`
	for _, tc := range []struct {
		name   string
		op     classify.Op
		status int
		body   string
		n      int
		ok     bool
	}{
		{"get", classify.GetDocument, 200, doc, 1, true},
		{"get 404", classify.GetDocument, 404, `{"error":{"code":404}}`, 1, true},
		{"list of 2", classify.ListDocuments, 200, `{"documents":[` + doc + `,` + doc + `]}`, 2, true},
		{"empty list", classify.ListDocuments, 200, `{}`, 1, true},
		{"list, not JSON", classify.ListDocuments, 200, `<html>`, 0, false},
		{"query of 2", classify.RunQuery, 200, `[{"document":` + doc + `,"readTime":"2024-01-01T00:00:00Z"},{"document":` + doc + `},{"done":true}]`, 2, true},
		{"empty query", classify.RunQuery, 200, `[{"readTime":"2024-01-01T00:00:00Z","done":true}]`, 1, true},
		{"query with an error element", classify.RunQuery, 200, `[{"document":` + doc + `},{"error":{"code":500,"message":"x","status":"INTERNAL"}}]`, 0, false},
		{"query, not an array", classify.RunQuery, 200, `{"document":` + doc + `}`, 0, false},
		{"batchGet found+missing", classify.BatchGetDocuments, 200, `[{"found":` + doc + `},{"missing":"projects/p/databases/(default)/documents/c/x"}]`, 2, true},
		{"count (emulator adds done)", classify.RunAggregationQuery, 200,
			`[{"result":{"aggregateFields":{"n":{"integerValue":"3"}}},"readTime":"2024-01-01T00:00:00Z","done":true}]`, 1, true},
		{"count with an error element", classify.RunAggregationQuery, 200, `[{"error":{"code":503}}]`, 0, false},
		{"a field newer than the types", classify.RunQuery, 200, `[{"document":` + doc + `,"someFutureField":1}]`, 1, true},
		{"listCollectionIds", classify.ListCollectionIds, 200, `{"collectionIds":["a","b"]}`, 1, true},
	} {
		n, ok := billedDocs(tc.op, tc.status, []byte(tc.body))
		if n != tc.n || ok != tc.ok {
			t.Errorf("%s: billedDocs = %d, %v; want %d, %v", tc.name, n, ok, tc.n, tc.ok)
		}
	}
}

// A collection-group query returns documents of every collection with its id, at any
// depth under its parent, so it is cached only as strictly as every rule that governs
// one of them (recursive wildcards included), and not at all when one of them has no
// caching rule. The same holds for a collection read and the rules of single ids.
func TestRuleForGroupQueryIsAsStrictAsEveryRuleForItsCollection(t *testing.T) {
	cfg := mustRules(t, `
rules:
  - match: /public/{p}/comments/{c}
    ttl: 30m
    scope: shared
  - match: /users/{u}/comments/{c}
    ttl: 5m
    scope: user
  - match: /products/secret
    ttl: 1m
  - match: /products/{p}
    ttl: 30m
    scope: shared
  - match: /farmers/{f}/products/{p}
    ttl: 10m
    scope: shared
  - match: /drafts/{d}/notes/{n}
    ttl: 0
  - match: /vault/{u}/{rest=**}
    ttl: 2m
  - match: /{a}/{b}/reviews/{r}
    ttl: 30m
    scope: shared
  - match: /{document=**}
    ttl: 20m
    scope: shared
`)
	uncovered := mustRules(t, `
rules:
  - match: /{a}/{b}/reviews/{r}
    ttl: 30m
    scope: shared
  - match: /hidden/{h}/{rest=**}
    ttl: 0
`)
	group := func(parent, id string) *classify.Request {
		return &classify.Request{Targets: []classify.Target{{Kind: classify.TargetGroup, Path: parent, CollectionID: id}}}
	}
	coll := func(path string) *classify.Request {
		return &classify.Request{Targets: []classify.Target{{Kind: classify.TargetCollection, Path: path}}}
	}
	for _, tc := range []struct {
		name  string
		cfg   *rules.Config
		req   *classify.Request
		scope rules.Scope
		ttl   time.Duration // 0: not cached
	}{
		{"group comments", cfg, group("", "comments"), rules.ScopeUser, 2 * time.Minute},
		{"group comments under public/x", cfg, group("public/x", "comments"), rules.ScopeShared, 20 * time.Minute},
		{"group comments under users/u1", cfg, group("users/u1", "comments"), rules.ScopeUser, 5 * time.Minute},
		// vault/{u}/{rest=**} governs reviews at every depth below vault/u1.
		{"group reviews", cfg, group("", "reviews"), rules.ScopeUser, 2 * time.Minute},
		{"group reviews under vault/u1", cfg, group("vault/u1", "reviews"), rules.ScopeUser, 2 * time.Minute},
		{"group notes (drafts never cached)", cfg, group("", "notes"), "", 0},
		{"group notes under x/y", cfg, group("x/y", "notes"), rules.ScopeShared, 20 * time.Minute},
		// products/secret is the first match of one document of products.
		{"list products", cfg, coll("products"), rules.ScopeUser, time.Minute},
		{"list farmers/f1/products", cfg, coll("farmers/f1/products"), rules.ScopeShared, 10 * time.Minute},
		// reviews deeper than two segments, or under hidden/, match no caching rule.
		{"uncovered group reviews", uncovered, group("", "reviews"), "", 0},
		{"uncovered group reviews under hidden/h", uncovered, group("hidden/h", "reviews"), "", 0},
		{"uncovered list x/y/reviews", uncovered, coll("x/y/reviews"), rules.ScopeShared, 30 * time.Minute},
		{"uncovered list hidden/h/reviews", uncovered, coll("hidden/h/reviews"), rules.ScopeShared, 30 * time.Minute},
		{"uncovered list reviews", uncovered, coll("reviews"), "", 0},
	} {
		r := ruleFor(tc.cfg, tc.req)
		switch {
		case tc.ttl == 0 && r != nil:
			t.Errorf("%s: %+v; want not cached", tc.name, r)
		case tc.ttl != 0 && (r == nil || r.Scope != tc.scope || r.TTL != tc.ttl):
			t.Errorf("%s: %+v; want scope %v ttl %v", tc.name, r, tc.scope, tc.ttl)
		}
	}
}
