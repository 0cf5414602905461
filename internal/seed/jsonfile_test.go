package seed_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/harvest-hub/edge/internal/seed"
)

const typedFile = `{
  "farmers/f1": {"name": "Green Acres"},
  "products/p1": {
    "name": "Apples", "price": 2.5, "round": 3.0, "big": 1e3, "stock": 40, "neg": -7,
    "organic": true, "note": null, "tags": ["fruit", 1, {"k": "v"}],
    "dims": {"w": 1, "h": 2.25},
    "createdAt": {"__time__": "2026-05-01T08:00:00.123456Z"},
    "farmer": {"__ref__": "farmers/f1"}
  },
  "users/u1/orders/o1": {"items": [{"productId": "p1", "qty": 3}], "total": 7.5}
}`

func TestParseJSONMapsTypes(t *testing.T) {
	docs, err := seed.ParseJSON([]byte(typedFile))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"name": "Apples", "price": 2.5, "round": 3.0, "big": 1000.0, "stock": int64(40), "neg": int64(-7),
		"organic": true, "note": nil, "tags": []any{"fruit", int64(1), map[string]any{"k": "v"}},
		"dims":      map[string]any{"w": int64(1), "h": 2.25},
		"createdAt": time.Date(2026, 5, 1, 8, 0, 0, 123456000, time.UTC),
		"farmer":    seed.Ref("farmers/f1"),
	}
	if got := docs["products/p1"]; !reflect.DeepEqual(got, want) {
		t.Errorf("products/p1 =\n%#v\nwant\n%#v", got, want)
	}
	if len(docs) != 3 {
		t.Errorf("%d documents, want 3", len(docs))
	}
}

func TestLoadJSONFileKeepsTypes(t *testing.T) {
	client, _ := restClient(t)
	ctx := context.Background()
	docs, err := seed.ParseJSON([]byte(typedFile))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := seed.Load(ctx, client, docs); err != nil || n != 3 {
		t.Fatalf("Load: %d, %v; want 3 documents", n, err)
	}
	s, err := client.Doc("products/p1").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := s.Data()
	for field, want := range map[string]any{"price": 2.5, "round": 3.0, "stock": int64(40), "organic": true, "note": nil} {
		if got := d[field]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v (%T), want %#v (%T)", field, got, got, want, want)
		}
	}
	if got, ok := d["createdAt"].(time.Time); !ok || !got.Equal(time.Date(2026, 5, 1, 8, 0, 0, 123456000, time.UTC)) {
		t.Errorf("createdAt = %#v, want the timestamp", d["createdAt"])
	}
	if ref, ok := d["farmer"].(*firestore.DocumentRef); !ok || ref.Path != client.Doc("farmers/f1").Path {
		t.Errorf("farmer = %#v, want a reference to farmers/f1", d["farmer"])
	}
	order, err := client.Doc("users/u1/orders/o1").Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := order.Data()["items"]; !reflect.DeepEqual(got, []any{map[string]any{"productId": "p1", "qty": int64(3)}}) {
		t.Errorf("order items = %#v", got)
	}
}

func TestParseJSONRejectsBadFiles(t *testing.T) {
	for _, tc := range []struct{ name, file, wantInErr string }{
		{"empty", ``, "empty"},
		{"syntax error names the line", "{\n\"products/p1\": {\"a\": 1,}\n}", "line 2"},
		{"truncated", "{\n\"products/p1\": {\"a\": 1}", "ends too early"},
		{"top-level array", `[{"a": 1}]`, "one JSON object"},
		{"trailing data", `{"products/p1": {}} {}`, "after the top-level object"},
		{"collection path", `{"products": {"a": 1}}`, `"products" is not a document path`},
		{"empty segment", `{"products//p1/x": {"a": 1}}`, "empty or reserved"},
		{"document not an object", `{"products/p1": 3}`, "document products/p1: its value must be a JSON object"},
		{"bad time", `{"products/p1": {"at": {"__time__": "yesterday"}}}`, "field at: timestamp \"yesterday\" is not RFC 3339"},
		{"time with extra keys", `{"products/p1": {"at": {"__time__": "2026-05-01T08:00:00Z", "x": 1}}}`, "field at: a timestamp is written"},
		{"ref to a collection", `{"products/p1": {"f": {"__ref__": "farmers"}}}`, "field f: reference"},
		{"array in array", `{"products/p1": {"m": [[1]]}}`, "field m[0]: Firestore does not allow an array directly inside an array"},
		{"integer too big", `{"products/p1": {"n": 99999999999999999999}}`, "field n: integer 99999999999999999999 does not fit"},
		{"nested field named", `{"products/p1": {"dims": {"at": {"__time__": 5}}}}`, "field dims.at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := seed.ParseJSON([]byte(tc.file))
			if err == nil {
				t.Fatalf("accepted: %#v", docs)
			}
			if !strings.Contains(err.Error(), tc.wantInErr) {
				t.Errorf("error %q does not say %q", err, tc.wantInErr)
			}
		})
	}
}
