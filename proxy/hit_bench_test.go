package proxy

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/rules"
)

// The hit-path benchmarks call Handle directly on a reused RequestCtx, with the entry
// already in L1 (filled once from a fake upstream on loopback): what a cached GET of
// one document costs the proxy itself, without the network. make bench prints them;
// the whole-server figures (wrk against the binary) are in deploy/BENCHMARKS.md.

const hitDoc = `{"name":"projects/p/databases/(default)/documents/products/p1","fields":{"name":{"stringValue":"Carrots"},"price":{"integerValue":"3"},"version":{"integerValue":"1"}},"createTime":"2024-01-01T00:00:00Z","updateTime":"2024-01-01T00:00:00Z"}`

const hitRules = "rules:\n" +
	"  - match: /products/{p}\n    ttl: 30m\n    scope: shared\n    stale_while_revalidate: 1m\n    stale_if_error: 1h\n" +
	"  - match: /farmers/{f}/products/{p}\n    ttl: 30m\n    scope: shared\n" +
	"  - match: /users/{u}/orders/{o}\n    ttl: 5m\n    scope: user\n"

// hitProxy is a proxy in front of a fake upstream that answers every request with
// hitDoc, under rules like the sample's (products shared, orders per user).
func hitProxy(b testing.TB) *Proxy {
	p, _ := hitProxyRules(b, hitRules)
	return p
}

// hitProxyRules is hitProxy under rules yaml; it also returns the rules file.
func hitProxyRules(b testing.TB, yaml string) (*Proxy, string) {
	b.Helper()
	return hitProxyRedis(b, yaml, "")
}

// hitProxyRedis is hitProxyRules with the shared tier at redisURL ("" for none).
func hitProxyRedis(b testing.TB, yaml, redisURL string) (*Proxy, string) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json; charset=UTF-8")
		ctx.SetBodyString(hitDoc)
	}}
	go up.Serve(ln)
	b.Cleanup(func() { up.Shutdown() })
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{Upstream: "http://" + ln.Addr().String(), Rules: store, Registry: prometheus.NewRegistry(),
		RedisURL: redisURL})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.tiers.Close() })
	return p, path
}

// hitRequest makes a RequestCtx for method and uri, as the Go client sends them.
func hitRequest(method, uri, auth string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost("proxy")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	// A real connection (one end of a pipe), for the paths that stream an answer and
	// set deadlines on it.
	conn, _ := net.Pipe()
	ctx := &fasthttp.RequestCtx{}
	ctx.Init2(conn, nil, false)
	req.CopyTo(&ctx.Request)
	return ctx
}

func hitBench(b *testing.B, method, uri, auth string) {
	p := hitProxy(b)
	ctx := hitRequest(method, uri, auth)
	p.Handle(ctx)
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("X-Cache")) != "MISS" {
		b.Fatalf("fill: %d %s %s", ctx.Response.StatusCode(), ctx.Response.Header.Peek("X-Cache"), ctx.Response.Body())
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		p.Handle(ctx)
		if string(ctx.Response.Header.Peek("X-Cache")) != "HIT-L1" {
			b.Fatalf("not a hit: %s", ctx.Response.Header.Peek("X-Cache"))
		}
	}
}

// BenchmarkHitL1 is an L1 hit on a shared document, as the Go client asks for it.
func BenchmarkHitL1(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		hitBench(b, "GET", "/v1/projects/p/databases/%28default%29/documents/products/p1?%24alt=json%3Benum-encoding%3Dint", "")
	})
	b.Run("user", func(b *testing.B) {
		hitBench(b, "GET", "/v1/projects/p/databases/%28default%29/documents/users/u1/orders/o1?%24alt=json%3Benum-encoding%3Dint", "Bearer some-user-token-0123456789")
	})
}

// The plan index must never answer differently from the full path: the tests below
// fail if a remembered plan outlives the rules it was made under, or is shared
// between callers of different identities.

const (
	hitProductURI = "/v1/projects/p/databases/%28default%29/documents/products/p1?%24alt=json%3Benum-encoding%3Dint"
	hitOrderURI   = "/v1/projects/p/databases/%28default%29/documents/users/u1/orders/o1"
)

func hitXCache(t *testing.T, p *Proxy, method, uri, auth string) string {
	t.Helper()
	ctx := hitRequest(method, uri, auth)
	p.Handle(ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("%s %s: status %d %s", method, uri, ctx.Response.StatusCode(), ctx.Response.Body())
	}
	return string(ctx.Response.Header.Peek("X-Cache"))
}

func wantXCache(t *testing.T, got, want, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: X-Cache %q, want %q", what, got, want)
	}
}

func TestPlansFollowRuleReloads(t *testing.T) {
	p, path := hitProxyRules(t, hitRules)
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, ""), "MISS", "first read")
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, ""), "HIT-L1", "second read")

	// products no longer cached: the remembered plan must not serve the entry.
	noProducts := "rules:\n  - match: /users/{u}/orders/{o}\n    ttl: 5m\n    scope: user\n"
	if err := os.WriteFile(path, []byte(noProducts), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.rules.Reload(); err != nil {
		t.Fatal(err)
	}
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, ""), "BYPASS", "after the rule was removed")

	// products per user now: another caller's entry (shared) is not this one's.
	perUser := "rules:\n  - match: /products/{p}\n    ttl: 30m\n    scope: user\n"
	if err := os.WriteFile(path, []byte(perUser), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.rules.Reload(); err != nil {
		t.Fatal(err)
	}
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, "Bearer a"), "MISS", "scope user, caller a")
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, "Bearer a"), "HIT-L1", "scope user, caller a again")
	wantXCache(t, hitXCache(t, p, "GET", hitProductURI, "Bearer b"), "MISS", "scope user, caller b")
}

func TestPlansKeepIdentitiesApart(t *testing.T) {
	p := hitProxy(t)
	wantXCache(t, hitXCache(t, p, "GET", hitOrderURI, "Bearer alice"), "MISS", "alice")
	wantXCache(t, hitXCache(t, p, "GET", hitOrderURI, "Bearer alice"), "HIT-L1", "alice again")
	wantXCache(t, hitXCache(t, p, "GET", hitOrderURI, "Bearer bob"), "MISS", "bob")
	wantXCache(t, hitXCache(t, p, "GET", hitOrderURI, ""), "MISS", "anonymous")
	wantXCache(t, hitXCache(t, p, "GET", hitOrderURI, "Bearer bob"), "HIT-L1", "bob again")
}

func TestPlansAreBounded(t *testing.T) {
	p := hitProxy(t)
	p.maxPlans = 8
	for i := range 50 {
		uri := "/v1/projects/p/databases/(default)/documents/products/p" + strconv.Itoa(i)
		wantXCache(t, hitXCache(t, p, "GET", uri, ""), "MISS", uri)
		if n := p.planCount.Load(); n > p.maxPlans {
			t.Fatalf("%d plans remembered, bound %d", n, p.maxPlans)
		}
	}
	// Plans dropped for room are made again: the entries are still hits.
	wantXCache(t, hitXCache(t, p, "GET", "/v1/projects/p/databases/(default)/documents/products/p0", ""), "HIT-L1", "p0 again")
}
