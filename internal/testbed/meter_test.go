package testbed_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"

	"github.com/harvest-hub/edge/internal/testbed"
)

// meteredProject returns a meter in front of the emulator, a fresh project and the REST
// base of its documents through the meter.
func meteredProject(t *testing.T) (*testbed.Meter, string, string) {
	t.Helper()
	emu := testbed.Emulator(t)
	m := testbed.NewMeter(t, emu.URL)
	p := emu.NewProject(t)
	return m, p, m.URL() + "/v1/projects/" + p + "/databases/(default)/documents"
}

func doc(project, path string) string {
	return "projects/" + project + "/databases/(default)/documents/" + path
}

func TestMeterCountsBilledReads(t *testing.T) {
	m, p, base := meteredProject(t)
	c := http.DefaultClient
	for i, cat := range []string{"fruit", "fruit", "veg"} {
		id := []string{"apple", "pear", "leek"}[i]
		mustCall(t, c, "POST", base+"/products?documentId="+id, `{"fields":{"category":{"stringValue":"`+cat+`"}}}`, false)
	}
	query := func(cat string) string {
		return `{"structuredQuery":{"from":[{"collectionId":"products"}],"where":{"fieldFilter":{"field":{"fieldPath":"category"},"op":"EQUAL","value":{"stringValue":"` + cat + `"}}}}}`
	}

	steps := []struct {
		name         string
		do           func()
		method       string
		wantReads    int64
		wantRequests int64
	}{
		{"get one", func() { mustCall(t, c, "GET", base+"/products/apple", "", false) }, "get", 1, 1},
		{"get missing (404)", func() {
			if s, b := call(t, c, "GET", base+"/products/nope", "", false); s != 404 {
				t.Fatalf("want 404, got %d %s", s, b)
			}
		}, "get", 1, 1},
		{"list 3", func() { mustCall(t, c, "GET", base+"/products", "", true) }, "list", 3, 1},
		{"list empty", func() { mustCall(t, c, "GET", base+"/nothing", "", true) }, "list", 1, 1},
		{"query returning 2", func() { mustCall(t, c, "POST", base+":runQuery", query("fruit"), false) }, "runQuery", 2, 1},
		{"empty query", func() { mustCall(t, c, "POST", base+":runQuery", query("meat"), false) }, "runQuery", 1, 1},
		{"batchGet 2 found 1 missing", func() {
			body, _ := json.Marshal(map[string]any{"documents": []string{doc(p, "products/apple"), doc(p, "products/leek"), doc(p, "products/nope")}})
			mustCall(t, c, "POST", base+":batchGet", string(body), false)
		}, "batchGet", 3, 1},
		{"count aggregation", func() {
			mustCall(t, c, "POST", base+":runAggregationQuery",
				`{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"products"}]},"aggregations":[{"alias":"n","count":{}}]}}`, false)
		}, "runAggregationQuery", 1, 1},
		{"listCollectionIds", func() { mustCall(t, c, "POST", base+":listCollectionIds", `{}`, true) }, "listCollectionIds", 1, 1},
		{"commit", func() {
			body, _ := json.Marshal(map[string]any{"writes": []any{map[string]any{"delete": doc(p, "products/leek")}}})
			mustCall(t, c, "POST", base+":commit", string(body), false)
		}, "commit", 0, 1},
		{"patch", func() { mustCall(t, c, "PATCH", base+"/products/pear", `{"fields":{}}`, false) }, "patch", 0, 1},
		{"delete", func() { mustCall(t, c, "DELETE", base+"/products/pear", "", false) }, "delete", 0, 1},
	}
	if got := m.Snapshot(); got.Requests["create"] != 3 || got.Total != 3 || got.BilledReads != 0 {
		t.Fatalf("after 3 creates: %+v, want create=3 total=3 reads=0", got)
	}
	for _, s := range steps {
		m.Reset()
		s.do()
		got := m.Snapshot()
		if got.BilledReads != s.wantReads || got.Requests[s.method] != s.wantRequests || got.Total != s.wantRequests {
			t.Errorf("%s: counts %+v, want %s=%d total=%d billed reads=%d",
				s.name, got, s.method, s.wantRequests, s.wantRequests, s.wantReads)
		}
	}
}

// TestMeterWithGoRESTClient proves the official Go client in REST mode works through the
// meter, and that its percent-encoded paths are counted right.
func TestMeterWithGoRESTClient(t *testing.T) {
	m, p, _ := meteredProject(t)
	ctx := context.Background()
	client, err := firestore.NewRESTClient(ctx, p, option.WithEndpoint(m.URL()), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := client.Collection("users").Doc(id).Set(ctx, map[string]any{"city": "Lyon"}); err != nil {
			t.Fatal(err)
		}
	}
	m.Reset()
	if _, err := client.Doc("users/a").Get(ctx); err != nil {
		t.Fatal(err)
	}
	docs, err := client.Collection("users").Where("city", "==", "Lyon").Limit(2).Documents(ctx).GetAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("query found %d documents, want 2", len(docs))
	}
	got := m.Snapshot()
	// The Go client reads single documents with batchGet.
	if got.BilledReads != 3 || got.Requests["runQuery"] != 1 || got.Requests["get"]+got.Requests["batchGet"] != 1 {
		t.Errorf("counts %+v, want 3 billed reads, 1 runQuery, 1 get or batchGet", got)
	}
}

func TestMeterLatencyDelaysRequests(t *testing.T) {
	m, _, base := meteredProject(t)
	const latency = 200 * time.Millisecond
	m.SetLatency(latency)
	start := time.Now()
	call(t, http.DefaultClient, "GET", base+"/products/x", "", false)
	if took := time.Since(start); took < latency {
		t.Errorf("request with %v injected latency took only %v", latency, took)
	}
	if got := m.Snapshot(); got.Requests["get"] != 1 {
		t.Errorf("delayed request was not forwarded: %+v", got)
	}
}

func TestMeterFailWithAnswersFirestoreErrors(t *testing.T) {
	m, _, base := meteredProject(t)
	for _, tc := range []struct {
		status int
		name   string
	}{{503, "UNAVAILABLE"}, {500, "INTERNAL"}} {
		m.FailWith(tc.status)
		before := m.Snapshot()
		status, body := call(t, http.DefaultClient, "GET", base+"/products/x", "", false)
		if status != tc.status {
			t.Errorf("FailWith(%d): status %d", tc.status, status)
		}
		var e struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
				Status  string `json:"status"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("FailWith(%d): body is not JSON: %v: %q", tc.status, err, body)
		}
		if e.Error.Code != tc.status || e.Error.Status != tc.name || e.Error.Message == "" {
			t.Errorf("FailWith(%d): error %+v, want code %d status %s and a message", tc.status, e.Error, tc.status, tc.name)
		}
		after := m.Snapshot()
		if after.Total != before.Total || after.Injected != before.Injected+1 {
			t.Errorf("FailWith(%d): forwarded %d -> %d, injected %d -> %d; want the upstream untouched",
				tc.status, before.Total, after.Total, before.Injected, after.Injected)
		}
	}
	m.Heal()
	if status, _ := call(t, http.DefaultClient, "GET", base+"/products/x", "", false); status != http.StatusNotFound {
		t.Errorf("after Heal: status %d, want the emulator's 404", status)
	}
	if got := m.Snapshot(); got.Requests["get"] != 1 {
		t.Errorf("after Heal the request was not forwarded: %+v", got)
	}
}

func TestMeterRefuseAndAccept(t *testing.T) {
	m, _, base := meteredProject(t)
	client := &http.Client{Timeout: 10 * time.Second} // own pool: keep-alive connections to the meter
	if status, _ := call(t, client, "GET", base+"/products/x", "", false); status != http.StatusNotFound {
		t.Fatalf("before Refuse: status %d", status)
	}
	m.Refuse()
	for i := 0; i < 3; i++ { // the pooled connection, then fresh ones
		resp, err := client.Get(base + "/products/x")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request %d while refusing got status %d, want a connection error", i, resp.StatusCode)
		}
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			t.Fatalf("request %d while refusing timed out (%v), want an immediate connection error", i, err)
		}
	}
	before := m.Snapshot().Total
	m.Accept()
	if status, _ := call(t, client, "GET", base+"/products/x", "", false); status != http.StatusNotFound {
		t.Fatalf("after Accept: status %d", status)
	}
	if got := m.Snapshot().Total; got != before+1 {
		t.Errorf("after Accept forwarded %d, want %d", got, before+1)
	}
}

func TestMeterIsSafeForConcurrentUse(t *testing.T) {
	m, _, base := meteredProject(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", base+"/products/x", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	m.SetLatency(time.Millisecond)
	m.Snapshot()
	wg.Wait()
	if got := m.Snapshot(); got.Requests["get"] != 8 || got.BilledReads != 8 {
		t.Errorf("8 concurrent gets counted as %+v", got)
	}
}

func TestMethod(t *testing.T) {
	const d = "/v1/projects/p/databases/(default)/documents"
	for _, tc := range []struct{ method, path, want string }{
		{"GET", d + "/users/u1", "get"},
		{"GET", d + "/users/u1/orders/o:1", "get"},
		{"GET", d + "/users", "list"},
		{"GET", d + "/users/u1/orders", "list"},
		{"POST", d + "/users", "create"},
		{"PATCH", d + "/users/u1", "patch"},
		{"DELETE", d + "/users/u1", "delete"},
		{"POST", d + ":runQuery", "runQuery"},
		{"POST", d + "/users/u1:runQuery", "runQuery"},
		{"POST", d + ":runAggregationQuery", "runAggregationQuery"},
		{"POST", d + ":batchGet", "batchGet"},
		{"POST", d + ":listCollectionIds", "listCollectionIds"},
		{"POST", d + "/users/u1:listCollectionIds", "listCollectionIds"},
		{"POST", d + ":commit", "commit"},
		{"POST", d + ":batchWrite", "batchWrite"},
		{"POST", d + ":beginTransaction", "beginTransaction"},
		{"POST", d + ":rollback", "rollback"},
		{"POST", d + ":listen", "listen"},
		{"POST", d + ":write", "write"},
		{"POST", d + ":partitionQuery", "other"},
		{"GET", "/google.firestore.v1.Firestore/Listen/channel", "listen"},
		{"POST", "/google.firestore.v1.Firestore/Write/channel", "write"},
		{"GET", "/", "other"},
		{"DELETE", "/emulator/v1/projects/p/databases/(default)/documents", "other"},
		{"GET", d, "other"},
		{"PUT", d + "/users/u1", "other"},
	} {
		if got := testbed.Method(tc.method, tc.path); got != tc.want {
			t.Errorf("Method(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

// BenchmarkMeterForward measures what the meter adds to a request, against a loopback
// stub upstream (not the emulator, whose own cost would drown it).
func BenchmarkMeterForward(b *testing.B) {
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"name":"projects/p/databases/(default)/documents/c/d","fields":{}}`))
	}))
	defer stub.Close()
	m := testbed.NewMeter(b, stub.URL)
	url := m.URL() + "/v1/projects/p/databases/(default)/documents/c/d"
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := http.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	if got := m.Snapshot().Requests["get"]; got < int64(b.N) {
		b.Errorf("counted %d gets, want %d", got, b.N)
	}
}
