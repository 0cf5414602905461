package proxy

import (
	"net/http"
	"testing"
)

// A collection-group query returns documents from every collection with its id, at
// any depth: here a shared rule names posts/{p}/comments, but private/{u}/{rest=**}
// (scope user) governs comments nested under a user's private tree. Cached as shared,
// the owner's answer (with the private comment) would be a hit for anyone; it must be
// keyed per caller, and a group no caching rule fully covers must not be cached.
func TestGroupQueryIsCachedAsStrictlyAsEveryRuleThatCouldMatch(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /posts/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /private/{u}/{rest=**}
    ttl: 10m
  - match: /{document=**}
    ttl: 10m
    scope: shared
`})
	h.put("posts/p1/comments/c1", `{"text":{"stringValue":"public"}}`)
	h.put("private/alice/notes/n1/comments/c2", `{"text":{"stringValue":"alice's secret"}}`)
	group := func(id string) string {
		return `{"structuredQuery":{"from":[{"collectionId":"` + id + `","allDescendants":true}]}}`
	}
	alice, bob := unsignedJWT(h.project, "alice"), unsignedJWT(h.project, "bob")
	path := h.docs() + ":runQuery"

	if a := h.via(0, "POST", path, group("comments"), "Authorization", alice); a.status != 200 {
		t.Fatalf("alice's group query: %v", a)
	}
	if a := h.via(0, "POST", path, group("comments"), "Authorization", alice); !isHit(a.cache()) {
		t.Fatalf("alice's repeated group query = %v, want a hit (every matching rule caches)", a)
	}
	for who, auth := range map[string]string{"bob": bob, "an anonymous caller": ""} {
		before, _ := h.counts()
		a := h.via(0, "POST", path, group("comments"), "Authorization", auth)
		if isHit(a.cache()) {
			t.Errorf("%s got alice's cached group query: %v", who, a)
		}
		if after, _ := h.counts(); after == before {
			t.Errorf("%s's group query never reached the upstream", who)
		}
	}

}

// A group query some of whose possible documents match no caching rule (comments at
// the root, or nested deeper than the rules reach) is not cached at all.
func TestGroupQueryNoRuleFullyCoversIsNotCached(t *testing.T) {
	h := newHarness(t, setup{rules: `
  - match: /posts/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /{a}/{b}/comments/{c}
    ttl: 10m
    scope: shared
`})
	h.put("posts/p1/comments/c1", `{"text":{"stringValue":"public"}}`)
	body := `{"structuredQuery":{"from":[{"collectionId":"comments","allDescendants":true}]}}`
	for range 2 {
		if a := h.via(0, "POST", h.docs()+":runQuery", body); a.status != http.StatusOK || a.cache() != "BYPASS" {
			t.Fatalf("group over an id no rule fully covers = %v, want 200 BYPASS", a)
		}
	}
}

// listCollectionIds needs admin credentials the rule cannot vouch for: even under a
// shared rule, the owner's answer is never served to another caller (the emulator,
// like Firestore, refuses anonymous callers).
func TestListCollectionIdsIsNeverShared(t *testing.T) {
	h := newHarness(t, setup{})
	h.put("farmers/f1/products/a", `{"status":{"stringValue":"on"}}`)
	path := h.docs() + "/farmers/f1:listCollectionIds"
	for range 2 {
		if a := h.via(0, "POST", path, `{}`); a.status != 200 {
			t.Fatalf("owner's listCollectionIds: %v", a)
		}
	}
	truth := h.direct("POST", path, `{}`, "Authorization", "")
	a := h.via(0, "POST", path, `{}`, "Authorization", "")
	if isHit(a.cache()) || a.status != truth.status {
		t.Fatalf("anonymous listCollectionIds = %v; the emulator answers it %d", a, truth.status)
	}
}
