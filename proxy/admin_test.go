package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The admin listener: Prometheus metrics, a JSON summary, and a purge that needs the
// admin token and makes the next read of what it purged a MISS.
func TestAdminEndpoints(t *testing.T) {
	const token = "s3cret"
	h := newHarness(t, setup{redis: redisAddr, adminToken: token})
	admin := httptest.NewServer(h.replicas[0].adminHandler())
	defer admin.Close()
	h.put("products/p1", `{"v":{"integerValue":"1"}}`)
	path := h.docs() + "/products/p1"
	h.via(0, "GET", path, "")
	if a := h.via(0, "GET", path, ""); a.cache() != "HIT-L1" {
		t.Fatalf("warm-up: %v", a)
	}

	get := func(p string) (int, string) {
		resp, err := http.Get(admin.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `harvest_proxy_requests_total{cache="HIT-L1",op="get"} 1`) {
		t.Errorf("/metrics: %d, want harvest_proxy_requests_total counting the hit:\n%.2000s", code, body)
	}
	code, body := get("/_proxy/stats")
	var st Stats
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/_proxy/stats: %d %v\n%s", code, err, body)
	}
	if st.Requests["HIT-L1"] != 1 || st.Requests["MISS"] != 1 || !st.Redis || !st.Subscribed || st.L1Entries != 1 || st.ReadsSaved != 1 {
		t.Errorf("/_proxy/stats = %+v, want 1 hit, 1 miss, Redis subscribed, 1 L1 entry, 1 read saved", st)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(p); code != 200 {
			t.Errorf("%s: %d", p, code)
		}
	}

	purge := func(auth, body string) int {
		req, _ := http.NewRequest("POST", admin.URL+"/_proxy/purge", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	body = `{"project":"` + h.project + `","document":"products/p1"}`
	for _, auth := range []string{"", "Bearer wrong", token} {
		if code := purge(auth, body); code != http.StatusUnauthorized {
			t.Errorf("purge with Authorization %q: %d, want 401", auth, code)
		}
	}
	if a := h.via(0, "GET", path, ""); a.cache() != "HIT-L1" {
		t.Fatalf("a refused purge purged: %v", a)
	}
	if code := purge("Bearer "+token, `{"project":"`+h.project+`"}`); code != http.StatusBadRequest {
		t.Errorf("purge naming nothing: %d, want 400", code)
	}
	if code := purge("Bearer "+token, `{"project":"`+h.project+`","document":"products"}`); code != http.StatusBadRequest {
		t.Errorf("purge of a collection as a document: %d, want 400", code)
	}
	if code := purge("Bearer "+token, body); code != 200 {
		t.Fatalf("purge with the token: %d", code)
	}
	if a := h.via(0, "GET", path, ""); a.cache() != "MISS" {
		t.Errorf("read after purge: %v, want MISS", a)
	}
}

// Without an admin token, admin writes are refused outright.
func TestAdminPurgeOffWithoutToken(t *testing.T) {
	h := newHarness(t, setup{})
	admin := httptest.NewServer(h.replicas[0].adminHandler())
	defer admin.Close()
	req, _ := http.NewRequest("POST", admin.URL+"/_proxy/purge", strings.NewReader(`{"project":"p","all":true}`))
	req.Header.Set("Authorization", "Bearer ")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("purge with no admin token configured: %d, want 403", resp.StatusCode)
	}
}
