package proxy

import (
	"testing"
	"time"

	"github.com/harvest-hub/edge/proxy/classify"
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
	if group != one {
		t.Errorf("collection group products: %+v, want the products rule", group)
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

// A collection-group query returns documents of every collection with its id, so it
// is cached as strictly as every rule that names that id: public comments shared, a
// user's private comments per user, means the group query is per user.
func TestRuleForGroupQueryIsAsStrictAsEveryRuleForItsCollection(t *testing.T) {
	cfg := mustRules(t, `
rules:
  - match: /public/{p}/comments/{c}
    ttl: 30m
    scope: shared
  - match: /users/{u}/comments/{c}
    ttl: 5m
    scope: user
  - match: /products/{p}
    ttl: 30m
    scope: shared
  - match: /farmers/{f}/products/{p}
    ttl: 10m
    scope: shared
  - match: /drafts/{d}/notes/{n}
    ttl: 0
  - match: /notes/{n}
    ttl: 1h
  - match: /{document=**}
    ttl: 0
`)
	group := func(parent, id string) *classify.Request {
		return &classify.Request{Targets: []classify.Target{{Kind: classify.TargetGroup, Path: parent, CollectionID: id}}}
	}
	if r := ruleFor(cfg, group("", "comments")); r == nil || r.Scope != rules.ScopeUser || r.TTL != 5*time.Minute {
		t.Errorf("group over comments: %+v; want scope user, ttl 5m (the private rule's)", r)
	}
	if r := ruleFor(cfg, group("public/x", "comments")); r == nil || r.Scope != rules.ScopeShared || r.TTL != 30*time.Minute {
		t.Errorf("group over comments under public/x: %+v; want only the public rule", r)
	}
	if r := ruleFor(cfg, group("", "products")); r == nil || r.Scope != rules.ScopeShared || r.TTL != 10*time.Minute {
		t.Errorf("group over products: %+v; want shared with the shorter ttl", r)
	}
	if r := ruleFor(cfg, group("", "notes")); r != nil {
		t.Errorf("group over notes, one of whose rules never caches: %+v; want not cached", r)
	}
	if r := ruleFor(cfg, group("", "orders")); r != nil {
		t.Errorf("group over orders, which only the uncached catch-all governs: %+v; want not cached", r)
	}
}
