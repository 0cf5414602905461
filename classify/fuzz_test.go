package classify

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/harvest-hub/edge/firestorepath"
)

func FuzzClassify(f *testing.F) {
	seeds := []struct{ method, path, query, body string }{
		{"GET", goPath + "/products/p1", goAlt + "&mask.fieldPaths=a", ""},
		{"GET", rawPath + "/products", "pageSize=2&key=k", ""},
		{"POST", rawPath + ":runQuery", "", `{"structuredQuery":{"from":[{"collectionId":"products","allDescendants":true}],"limit":3}}`},
		{"POST", goPath + "/a/1:runAggregationQuery", goAlt, `{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"o"}]},"aggregations":[{"count":{}}]}}`},
		{"POST", rawPath + ":batchGet", "", `{"documents":["` + root + `/a/1"],"transaction":"dHg="}`},
		{"POST", rawPath + "/a/1:listCollectionIds", "", `{}`},
		{"POST", rawPath + ":commit", "", `{"writes":[{"update":{"name":"` + root + `/a/1"}},{"delete":"` + root + `/a/2"}]}`},
		{"POST", rawPath + ":batchWrite", "", `{"writes":[{"transform":{"document":"` + root + `/a/1"}}]}`},
		{"POST", rawPath + "/a", "documentId=x", `{"fields":{}}`},
		{"PATCH", rawPath + "/a/1", "updateMask.fieldPaths=f&currentDocument.exists=true", `{"fields":{"f":{"booleanValue":true}}}`},
		{"DELETE", rawPath + "/a/1", "currentDocument.updateTime=2026-01-01T00:00:00Z", ""},
		{"POST", rawPath + ":beginTransaction", "", "{}"},
		{"GET", rawPath + "/a/%2e%2e", "", ""},
		// Spellings the upstream reads as a write the proxy must not miss.
		{"PATCH", "/%76%31/projects/p/databases/(default)/documents/a/1", "", `{}`},
		{"DELETE", "/v1beta1/projects/p/databases/(default)/documents/a/1", "", ""},
		{"POST", rawPath + "%3Acommit", "", `{"writes":[]}`},
		{"PATCH", rawPath + "/orders%20/x", "", `{}`},
		{"PATCH", rawPath + "/orders/x%FF", "", `{}`},
		{"POST", rawPath + ":commit", "", `{"writes":[{"delete":"` + root + `/orders /x"}]}`},
		{"DELETE", "/emulator/v1/projects/p/databases/(default)/documents", "", ""},
		{"PUT", rawPath + "/a/1", "", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte) {
		r, err := Classify(method, path, query, body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.HTTPStatus != 400 || e.Status != "INVALID_ARGUMENT" {
				t.Fatalf("error %v (%T) is not an *Error 400", err, err)
			}
			if r.Kind != Bypass {
				t.Fatalf("error with Kind %v", r.Kind)
			}
			return
		}
		if _, perr := firestorepath.Parse(path); perr != nil && r.Kind != Bypass && r.Op != ClearDatabase {
			t.Fatalf("unparseable path %q classified %v", path, r.Kind)
		}
		// A request that may write is a classified Write or a known non-writing op;
		// nothing write-capable passes as an unclassified bypass but the WebChannel
		// and the emulator's rules endpoint.
		if r.Kind == Bypass && r.Op == OpUnknown && method != "GET" && method != "HEAD" && method != "OPTIONS" &&
			!isWebChannel(path) && !isEmulatorRules(path) {
			t.Fatalf("%s %q forwarded unclassified", method, path)
		}
		if !slices.IsSorted(r.Tags) || len(slices.Compact(slices.Clone(r.Tags))) != len(r.Tags) {
			t.Fatalf("tags not deduplicated: %q", r.Tags)
		}
		switch r.Kind {
		case Read:
			if len(r.Targets) == 0 || len(r.Tags) == 0 {
				t.Fatalf("Read without Targets or Tags: %+v", r)
			}
			if r.Transactional {
				t.Fatalf("transactional Read")
			}
			switch r.Op {
			case GetDocument, ListDocuments, RunQuery, RunAggregationQuery, BatchGetDocuments, ListCollectionIds:
			default:
				t.Fatalf("Read with Op %v", r.Op)
			}
			if method != "GET" && method != "POST" {
				t.Fatalf("Read from %s", method)
			}
			if !bytes.Equal(r.KeyParams, KeyParams(query)) {
				t.Fatalf("Request.KeyParams %q != KeyParams %q", r.KeyParams, KeyParams(query))
			}
		case Write:
			if len(r.Writes) != len(r.Targets) {
				t.Fatalf("%d writes, %d targets", len(r.Writes), len(r.Targets))
			}
			for i, w := range r.Writes {
				if w.Write == nil {
					t.Fatalf("write %d is nil", i)
				}
				if w.Name == "" && r.Op != CreateDocument {
					t.Fatalf("write %d without a name", i)
				}
			}
			if len(r.Writes) > 0 && len(r.Tags) == 0 {
				t.Fatalf("Write without Tags")
			}
		}
	})
}

func FuzzKeyParams(f *testing.F) {
	for _, q := range []string{"", goAlt, "a=1&b=2&a=0", "mask.fieldPaths=x+y&key=k", "x=%zz&y", "quotaUser=1&=&&", "%26=%3D"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		k := KeyParams(query)
		if !bytes.Equal(k, KeyParams(query)) {
			t.Fatal("not deterministic")
		}
		var buf [16]queryParam
		params := parseQuery(query, buf[:0])
		hasBad := slices.ContainsFunc(params, func(p queryParam) bool { return p.bad })
		if hasBad {
			return
		}
		// The canonical form is a query string of the same parameters: canonicalising it
		// again changes nothing.
		if again := KeyParams(string(k)); !bytes.Equal(again, k) {
			t.Fatalf("KeyParams(%q) = %q, but KeyParams of that = %q", query, k, again)
		}
		// Order of distinct keys does not matter.
		slices.Reverse(params)
		var rev []byte
		for i, p := range params {
			if i > 0 {
				rev = append(rev, '&')
			}
			rev = appendEscaped(rev, p.key)
			rev = append(rev, '=')
			rev = appendEscaped(rev, p.value)
		}
		distinctKeys := true
		seen := map[string]bool{}
		for _, p := range params {
			if seen[p.key] {
				distinctKeys = false
			}
			seen[p.key] = true
		}
		if distinctKeys && !bytes.Equal(KeyParams(string(rev)), k) {
			t.Fatalf("reordered %q gives %q, want %q", rev, KeyParams(string(rev)), k)
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	query := []byte(`{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"price"},"op":"LESS_THAN","value":{"integerValue":"10"}}},"orderBy":[{"field":{"fieldPath":"price"},"direction":"DESCENDING"}],"limit":20}}`)
	cases := []struct {
		name, method, path, query string
		body                      []byte
	}{
		{"GetDocument", "GET", goPath + "/farmers/f1/products/p1", goAlt, nil},
		{"RunQuery", "POST", goPath + ":runQuery", goAlt, query},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := Classify(c.method, c.path, c.query, c.body)
				if err != nil || r.Kind != Read {
					b.Fatal(r.Kind, err)
				}
			}
		})
	}
}
