package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// corsOf is the Access-Control-* headers of an answer, names lowercased, values joined.
func corsOf(h http.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			out[strings.ToLower(k)] = strings.Join(v, " | ")
		}
	}
	return out
}

// Every kind of answer to a browser carries the CORS headers of its own request's
// Origin, once; a cached entry filled for one origin is served to another with that
// other's; without an Origin there are none. Before, only passthroughs had any: every
// cached answer and every error of the proxy's own was refused by the browser.
func TestCORSOnEveryAnswer(t *testing.T) {
	h := newHarness(t, setup{rules: sharedRules, server: []string{"max_body_bytes: 4KiB"}})
	h.put("products/p1", `{"name":{"stringValue":"apple"}}`)
	doc := h.docs() + "/products/p1"
	const a, b = "http://127.0.0.1:5173", "https://shop.example"
	want := func(what string, ans answer, origin string) {
		t.Helper()
		got := corsOf(ans.header)
		exp := map[string]string{
			"access-control-allow-origin":      origin,
			"access-control-allow-methods":     "DELETE,GET,HEAD,PATCH,POST,PUT",
			"access-control-allow-credentials": "true",
		}
		for k, v := range exp {
			if got[k] != v {
				t.Errorf("%s (%v): %s = %q, want %q", what, ans, k, got[k], v)
			}
		}
		if v := ans.header.Values("Vary"); len(v) == 0 || !strings.Contains(strings.Join(v, ","), "Origin") {
			t.Errorf("%s: Vary %q, want Origin named", what, v)
		}
	}
	if m := h.via(0, "GET", doc, "", "Origin", a); m.cache() != "MISS" {
		t.Fatalf("first GET: %v, want MISS", m)
	} else {
		want("miss", m, a)
	}
	hit := h.via(0, "GET", doc, "", "Origin", b)
	if !isHit(hit.cache()) {
		t.Fatalf("second GET: %v, want a hit", hit)
	}
	want("hit for another origin", hit, b)
	if plain := h.via(0, "GET", doc, ""); len(corsOf(plain.header)) != 0 {
		t.Errorf("hit without Origin carries CORS headers: %v", plain.header)
	}
	want("write", h.via(0, "PATCH", doc, `{"fields":{"name":{"stringValue":"pear"}}}`, "Origin", a), a)
	want("passthrough", h.via(0, "POST", h.docs()+":beginTransaction", `{}`, "Origin", a), a)
	want("proxy's 400", h.via(0, "POST", h.docs()+":runQuery", `{not json`, "Origin", a), a)
	want("proxy's 413", h.via(0, "POST", h.docs()+":runQuery", strings.Repeat("x", 8<<10), "Origin", a), a)
	h.meter.Refuse()
	down := h.via(0, "GET", h.docs()+"/products/other", "", "Origin", b)
	h.meter.Accept()
	if down.status != http.StatusServiceUnavailable {
		t.Fatalf("upstream refused: %v, want the proxy's 503", down)
	}
	want("proxy's 503", down, b)
}

// The proxy's CORS answers are the upstream's: the same Access-Control-* headers as
// the emulator gives for the same request, preflights included. Preflights are
// answered without asking the upstream.
func TestCORSAsTheUpstream(t *testing.T) {
	h := newHarness(t, setup{rules: sharedRules})
	const origin = "http://localhost:3000"
	missing := h.docs() + "/products/none"
	for _, c := range []struct {
		what, method, path string
		hdr                []string
	}{
		{"404 answer", "GET", missing, []string{"Origin", origin}},
		{"preflight", "OPTIONS", h.docs() + ":runQuery", []string{"Origin", origin, "Access-Control-Request-Method", "POST",
			"Access-Control-Request-Headers", "x-goog-api-client,content-type,x-firebase-gmpid"}},
		{"preflight without request headers", "OPTIONS", missing, []string{"Origin", origin, "Access-Control-Request-Method", "PATCH"}},
		{"preflight of a channel", "OPTIONS", "/google.firestore.v1.Firestore/Listen/channel?VER=8", []string{"Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"}},
	} {
		before, _ := h.counts()
		got := h.via(0, c.method, c.path, "", c.hdr...)
		after, _ := h.counts()
		up := h.direct(c.method, c.path, "", c.hdr...)
		if got.status != up.status {
			t.Errorf("%s: status %d through the proxy, %d from the emulator", c.what, got.status, up.status)
		}
		g, u := corsOf(got.header), corsOf(up.header)
		if len(u) == 0 {
			t.Fatalf("%s: the emulator sent no CORS headers: the test compares nothing", c.what)
		}
		for k, v := range u {
			if g[k] != v {
				t.Errorf("%s: %s = %q through the proxy, %q from the emulator", c.what, k, g[k], v)
			}
		}
		for k := range g {
			if _, ok := u[k]; !ok {
				t.Errorf("%s: %s only through the proxy", c.what, k)
			}
		}
		if c.method == "OPTIONS" && after != before {
			t.Errorf("%s reached the upstream", c.what)
		}
	}
}

// addCORS must not make the hit path allocate.
func TestAddCORSAllocatesNothing(t *testing.T) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Origin", "https://shop.example")
	addCORS(&ctx) // warm the header buffers
	if n := testing.AllocsPerRun(100, func() {
		ctx.Response.Header.Reset()
		addCORS(&ctx)
	}); n != 0 {
		t.Errorf("addCORS: %v allocations per answer, want 0", n)
	}
}

func TestVaryNames(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "Origin": true, "origin": true, "Accept-Encoding, Origin": true, " X-Origin ,Referer": false, "*": true,
	} {
		if got := varyNames([]byte(v), []byte("Origin")); got != want {
			t.Errorf("varyNames(%q) = %v, want %v", v, got, want)
		}
	}
}
