package proxy

import (
	"net/http"
	"strings"
	"testing"
)

// Every spelling the upstream reads as a write is either classified as one (the
// cached read of what it wrote is invalidated on its success) or refused with a
// Firestore-shaped 400 that reaches no upstream: a write never passes unseen.
// Checked against the emulator through the meter, one spelling at a time.
func TestEverySpellingOfAWriteIsSeenOrRefused(t *testing.T) {
	h := newHarness(t, setup{})
	p := h.project
	docs := h.docs()
	write := `{"fields":{"v":{"stringValue":"new"}}}`
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		refused                  bool
	}{
		{name: "v1", method: "PATCH", path: docs + "/products/p1", body: write},
		{name: "v1beta1", method: "PATCH", path: "/v1beta1/projects/" + p + "/databases/(default)/documents/products/p1", body: write},
		{name: "v1beta1 commit", method: "POST", path: "/v1beta1/projects/" + p + "/databases/(default)/documents:commit",
			body: `{"writes":[{"update":{"name":"` + h.name("products/p1") + `","fields":{"v":{"stringValue":"new"}}}}]}`},
		{name: "emulator wipe", method: "DELETE", path: "/emulator/v1/projects/" + p + "/databases/(default)/documents"},
		{name: "encoded version", method: "PATCH", path: "/%76%31/projects/" + p + "/databases/(default)/documents/products/p1", body: write, refused: true},
		{name: "encoded keyword", method: "PATCH", path: "/v1/projects/" + p + "/databases/(default)/%64ocuments/products/p1", body: write, refused: true},
		{name: "encoded verb colon", method: "POST", path: docs + "%3Acommit",
			body: `{"writes":[{"update":{"name":"` + h.name("products/p1") + `","fields":{"v":{"stringValue":"new"}}}}]}`, refused: true},
		{name: "collection id with a trailing space", method: "PATCH", path: docs + "/products%20/p1", body: write, refused: true},
		{name: "document id with a leading tab", method: "PATCH", path: docs + "/products/%09p1", body: write, refused: true},
		{name: "document id with NBSP", method: "PATCH", path: docs + "/products/p1%C2%A0", body: write, refused: true},
		{name: "project with a space", method: "PATCH", path: "/v1/projects/" + p + "%20/databases/(default)/documents/products/p1", body: write, refused: true},
		{name: "documents keyword with a space", method: "PATCH", path: "/v1/projects/" + p + "/databases/(default)/documents%20/products/p1", body: write, refused: true},
		{name: "create with a spaced documentId", method: "POST", path: docs + "/products?documentId=p1%20", body: write, refused: true},
		{name: "method override", method: "POST", path: docs + "/products/p1", body: write, hdr: []string{"X-HTTP-Method-Override", "PATCH"}, refused: true},
		{name: "PUT", method: "PUT", path: docs + "/products/p1", body: write, refused: true},
		{name: "v1beta2", method: "PATCH", path: "/v1beta2/projects/" + p + "/databases/(default)/documents/products/p1", body: write, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.put("products/p1", `{"v":{"stringValue":"old"}}`)
			read := docs + "/products/p1"
			h.via(0, "GET", read, "")
			if a := h.via(0, "GET", read, ""); !isHit(a.cache()) {
				t.Fatalf("not cached before the write: %v", a)
			}
			before, _ := h.counts()
			a := h.via(0, tc.method, tc.path, tc.body, tc.hdr...)
			if tc.refused {
				if a.status != http.StatusBadRequest {
					t.Fatalf("%s %s = %v, want 400", tc.method, tc.path, a)
				}
				if code, status := firestoreError(t, a); code != 400 || status != "INVALID_ARGUMENT" {
					t.Errorf("error %d %s", code, status)
				}
				if strings.Contains(string(a.body), p) || strings.Contains(string(a.body), "products") {
					t.Errorf("the error echoes the request: %s", a.body)
				}
				if after, _ := h.counts(); after != before {
					t.Errorf("the refused write reached the upstream (%d -> %d requests)", before, after)
				}
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("%s %s = %v, want 200", tc.method, tc.path, a)
			}
			truth := h.direct("GET", read, "")
			if truth.status == 200 && strings.Contains(string(truth.body), `"old"`) {
				t.Fatalf("the write did not change the document; the test proves nothing")
			}
			if got := h.via(0, "GET", read, ""); got.status != truth.status || normalized(t, got.body) != normalized(t, truth.body) {
				t.Errorf("after the write the proxy serves %v\nthe emulator has %v", got, truth)
			}
		})
	}
}
