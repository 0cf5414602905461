package classify

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
)

// wireRequest is one request as the official Go client put it on the wire.
type wireRequest struct {
	method, path, query string
	body                []byte
}

// TestGoClientWireFormat drives the official Go client in REST mode against a loopback
// server that records its requests and answers minimally, then classifies what it sent:
// the encodings it really uses (%28default%29, %24alt=..., enums as numbers, path fields
// repeated in bodies) must classify like the documented REST methods.
func TestGoClientWireFormat(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []wireRequest
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		path, query, _ := strings.Cut(r.RequestURI, "?")
		mu.Lock()
		seen = append(seen, wireRequest{r.Method, path, query, body})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(path, ":runQuery"), strings.HasSuffix(path, ":runAggregationQuery"), strings.HasSuffix(path, ":batchGet"):
			io.WriteString(w, `[]`)
		case strings.HasSuffix(path, ":beginTransaction"):
			io.WriteString(w, `{"transaction":"dHg="}`)
		case strings.HasSuffix(path, ":commit"):
			io.WriteString(w, `{"writeResults":[{"updateTime":"2026-01-01T00:00:00Z"}],"commitTime":"2026-01-01T00:00:00Z"}`)
		case r.Method == http.MethodGet && !strings.Contains(path, ":"):
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":404,"message":"no","status":"NOT_FOUND"}}`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	defer srv.Close()

	ctx := context.Background()
	t.Setenv("FIRESTORE_EMULATOR_HOST", "")
	client, err := firestore.NewRESTClient(ctx, "p", option.WithEndpoint(srv.URL), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// Errors from the client are expected (the answers are minimal); the requests matter.
	products := client.Collection("products")
	_, _ = client.Doc("products/p1").Get(ctx)
	_, _ = products.Where("price", "<", 10).OrderBy("price", firestore.Desc).Limit(5).Documents(ctx).GetAll()
	_, _ = client.CollectionGroup("orders").Where("status", "==", "open").Documents(ctx).GetAll()
	cheap := products.Where("price", "<", 10)
	_, _ = cheap.NewAggregationQuery().WithCount("n").Get(ctx)
	_, _ = client.GetAll(ctx, []*firestore.DocumentRef{client.Doc("products/p1"), client.Doc("farmers/f1")})
	_, _ = client.Doc("farmers/f1").Collections(ctx).GetAll()
	_, _ = products.DocumentRefs(ctx).GetAll()
	_, _ = client.Doc("farmers/f1/products/p1").Set(ctx, map[string]any{"price": 3, "name": "kale"})
	_, _ = client.Doc("products/p1").Update(ctx, []firestore.Update{{Path: "price", Value: firestore.Increment(1)}})
	_, _ = client.Doc("products/p2").Delete(ctx)
	_ = client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		return tx.Set(client.Doc("products/p3"), map[string]any{"x": 1})
	}, firestore.MaxAttempts(1))

	type want struct {
		kind          Kind
		op            Op
		transactional bool
	}
	byVerb := map[string]want{
		"GET doc":              {Read, GetDocument, false},
		"GET list":             {Bypass, ListDocuments, false}, // DocumentRefs lists with showMissing
		":runQuery":            {Read, RunQuery, false},
		":runAggregationQuery": {Read, RunAggregationQuery, false},
		":batchGet":            {Read, BatchGetDocuments, false},
		":listCollectionIds":   {Read, ListCollectionIds, false},
		":commit":              {Write, Commit, false},
		":commit in a tx":      {Write, Commit, true},
		":beginTransaction":    {Bypass, BeginTransaction, false},
		":rollback":            {Bypass, Rollback, false},
	}
	covered := map[string]bool{}
	for _, r := range seen {
		t.Logf("%s %s?%s %s", r.method, r.path, r.query, r.body)
		got, err := Classify(r.method, r.path, r.query, r.body)
		if err != nil {
			t.Errorf("%s %s?%s %s: %v", r.method, r.path, r.query, r.body, err)
			continue
		}
		if !strings.Contains(r.path, "%28default%29") || !strings.Contains(r.query, "%24alt=json%3Benum-encoding%3Dint") {
			t.Errorf("not the expected Go client encoding: %s?%s", r.path, r.query)
		}
		label := r.path[strings.LastIndexByte(r.path, '/'):]
		if i := strings.LastIndexByte(label, ':'); i >= 0 {
			label = label[i:]
		} else if got.Op == ListDocuments {
			label = "GET list"
		} else {
			label = "GET doc"
		}
		if label == ":commit" && got.Transactional {
			label = ":commit in a tx"
		}
		w, ok := byVerb[label]
		if !ok {
			t.Errorf("unexpected request %s %s?%s", r.method, r.path, r.query)
			continue
		}
		covered[label] = true
		if got.Kind != w.kind || got.Op != w.op || got.Transactional != w.transactional {
			t.Errorf("%s %s?%s %s: got %v %v tx=%v, want %v %v tx=%v", r.method, r.path, r.query, r.body,
				got.Kind, got.Op, got.Transactional, w.kind, w.op, w.transactional)
		}
		if got.Kind == Write && len(got.Writes) == 0 {
			t.Errorf("%s: write without Writes: %s", label, r.body)
		}
	}
	for label := range byVerb {
		// Doc.Get goes through batchGet; rollback happens only when a transaction fails.
		if !covered[label] && label != ":rollback" && label != "GET doc" {
			t.Errorf("the Go client sent no %s request", label)
		}
	}
}
