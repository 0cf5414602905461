package nginx

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	allowedOrigin = "https://app.example"
	otherOrigin   = "http://localhost:3000"
)

// edge is nginx in front of harvest-proxy and the stub app, as a client sees it.
type edge struct {
	t       *testing.T
	nginx   *server
	proxy   harvestProxy
	app     *stubApp
	base    string // scheme://127.0.0.1:port of the main server
	redir   string // http://127.0.0.1:port of the redirecting server (TLS mode)
	client  *http.Client
	csp     string
	tlsMode bool
}

// startEdge runs the whole chain in the given mode; extra overrides defaults.env.
func startEdge(t *testing.T, mode string, extra map[string]string) *edge {
	t.Helper()
	e := &edge{t: t, proxy: startProxy(t), app: startApp(t), tlsMode: mode == "tls"}
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	vars := map[string]string{
		"NGINX_MODE":                 mode,
		"NGINX_HTTP_LISTEN":          httpAddr,
		"NGINX_PROXY_UPSTREAM":       e.proxy.addr,
		"NGINX_PROXY_ADMIN_UPSTREAM": e.proxy.admin,
		"NGINX_APP_UPSTREAM":         e.app.addr,
		"NGINX_CORS_ORIGINS":         allowedOrigin + " " + otherOrigin,
		"NGINX_REAL_IP_FROM":         "127.0.0.1/32",
	}
	for k, v := range extra {
		vars[k] = v
	}
	defaults, err := Defaults(".")
	if err != nil {
		t.Fatal(err)
	}
	e.csp = defaults["NGINX_CSP"]
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 100, ForceAttemptHTTP2: true}
	addrs := []string{httpAddr}
	e.base = "http://" + httpAddr
	if e.tlsMode {
		certs := makeCerts(t)
		httpsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		vars["NGINX_HTTPS_LISTEN"] = httpsAddr
		vars["NGINX_TLS_CERT"] = filepath.Join(certs, "tls.crt")
		vars["NGINX_TLS_KEY"] = filepath.Join(certs, "tls.key")
		addrs = append(addrs, httpsAddr)
		e.base, e.redir = "https://"+httpsAddr, "http://"+httpAddr
		tr.TLSClientConfig = &tls.Config{RootCAs: certPool(t, filepath.Join(certs, "tls.crt"))}
	}
	e.nginx = startNginx(t, vars, addrs...)
	e.client = &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// Redirects are answers under test, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(tr.CloseIdleConnections)
	return e
}

func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", path)
	}
	return pool
}

// answer is one exchange as the client saw it.
type answer struct {
	*http.Response
	body []byte
}

func (e *edge) do(method, url, body string, hdr ...string) answer {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return answer{resp, b}
}

func (a answer) String() string {
	return fmt.Sprintf("%s %s X-Cache=%q %s", a.Proto, a.Status, a.Header.Get("X-Cache"), bytes.TrimSpace(a.body))
}

// createProduct creates products/{id} through nginx with a description long enough
// for gzip, and returns the document's path.
func (e *edge) createProduct(id string) string {
	e.t.Helper()
	doc := map[string]any{"fields": map[string]any{
		"name":        map[string]string{"stringValue": "Heirloom tomatoes " + id},
		"description": map[string]string{"stringValue": strings.Repeat("Grown without pesticides in the valley. ", 100)},
	}}
	body, _ := json.Marshal(doc)
	a := e.do("POST", e.base+e.proxy.docs()+"/products?documentId="+id, string(body), "Content-Type", "application/json")
	if a.StatusCode != 200 {
		e.t.Fatalf("create products/%s through nginx: %v", id, a)
	}
	return e.proxy.docs() + "/products/" + id
}

// securityHeaders checks every security header, each sent once; HSTS only over TLS.
func (e *edge) securityHeaders(what string, a answer) {
	e.t.Helper()
	want := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "SAMEORIGIN",
		"Referrer-Policy":         "strict-origin-when-cross-origin",
		"Permissions-Policy":      "camera=(), microphone=(), geolocation=(), payment=(), usb=(), browsing-topics=()",
		"Content-Security-Policy": e.csp,
	}
	if e.tlsMode && a.TLS != nil {
		want["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
	} else if v := a.Header.Values("Strict-Transport-Security"); len(v) > 0 {
		e.t.Errorf("%s: Strict-Transport-Security %q on a plain HTTP answer", what, v)
	}
	for h, v := range want {
		if got := a.Header.Values(h); len(got) != 1 || got[0] != v {
			e.t.Errorf("%s (%s): %s = %q, want exactly [%q]", what, a.Status, h, got, v)
		}
	}
}

// accessLogEntry waits until the JSON access log has an entry matching keep and
// returns it; every line must be one JSON object. (nginx writes the entry just after
// it answered, so the entry may trail the answer.)
func (e *edge) accessLogEntry(keep func(map[string]any) bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(e.nginx.accessLog)
		if err != nil && !os.IsNotExist(err) {
			e.t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var entry map[string]any
			if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
				e.t.Fatalf("access log line is not JSON: %v\n%s", err, sc.Text())
			}
			if keep(entry) {
				return entry
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no matching access log entry after 10s; the log:\n%s", data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TLS mode: HTTPS with HTTP/2 in front of the proxy and the app; port 80 redirects.
func TestTLSMode(t *testing.T) {
	e := startEdge(t, "tls", nil)
	doc := e.createProduct("p1")

	t.Run("X-Cache passes through: MISS, then HIT-L1, logged", func(t *testing.T) {
		first := e.do("GET", e.base+doc, "")
		if first.StatusCode != 200 || first.Header.Get("X-Cache") != "MISS" {
			t.Fatalf("first GET through nginx: %v, want 200 X-Cache MISS from the proxy", first)
		}
		second := e.do("GET", e.base+doc, "")
		if second.StatusCode != 200 || second.Header.Get("X-Cache") != "HIT-L1" {
			t.Fatalf("second GET through nginx: %v, want 200 X-Cache HIT-L1", second)
		}
		if !bytes.Equal(first.body, second.body) {
			t.Errorf("the hit's body differs from the miss's:\n%s\n%s", first.body, second.body)
		}
		entry := e.accessLogEntry(func(m map[string]any) bool {
			return m["upstream_cache"] == "HIT-L1" && strings.HasSuffix(fmt.Sprint(m["uri"]), "/products/p1")
		})
		if entry["status"] != float64(200) || entry["upstream_response_time"] == "" || entry["method"] != "GET" {
			t.Errorf("access log entry of the hit: %v", entry)
		}
		e.securityHeaders("API answer", second)
	})

	t.Run("gzip for a JSON answer when accepted", func(t *testing.T) {
		plain := e.do("GET", e.base+doc, "")
		zipped := e.do("GET", e.base+doc, "", "Accept-Encoding", "gzip")
		if plain.Header.Get("Content-Encoding") != "" || len(plain.body) < 1024 {
			t.Fatalf("without Accept-Encoding: Content-Encoding %q, %d bytes; want identity above gzip_min_length",
				plain.Header.Get("Content-Encoding"), len(plain.body))
		}
		if mt, _, _ := mime.ParseMediaType(zipped.Header.Get("Content-Type")); mt != "application/json" {
			t.Fatalf("Content-Type %q, want application/json", zipped.Header.Get("Content-Type"))
		}
		if zipped.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("with Accept-Encoding gzip: Content-Encoding %q, want gzip (%v)", zipped.Header.Get("Content-Encoding"), zipped)
		}
		zr, err := gzip.NewReader(bytes.NewReader(zipped.body))
		if err != nil {
			t.Fatal(err)
		}
		unzipped, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(unzipped, plain.body) {
			t.Errorf("gunzipped body differs from the identity one")
		}
		if len(zipped.body) >= len(plain.body) {
			t.Errorf("gzip did not shrink the body: %d >= %d", len(zipped.body), len(plain.body))
		}
	})

	t.Run("TLS 1.2+ with the make-certs certificate, HTTP/2 via ALPN", func(t *testing.T) {
		a := e.do("GET", e.base+"/healthz", "")
		if a.StatusCode != 200 || a.ProtoMajor != 2 || a.TLS == nil || a.TLS.NegotiatedProtocol != "h2" {
			t.Fatalf("GET /healthz over TLS: %v (ALPN %q), want 200 over h2", a, a.TLS.NegotiatedProtocol)
		}
		host := strings.TrimPrefix(e.base, "https://")
		pool := e.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
		// The certificate names localhost too, and TLS 1.2 is accepted.
		c, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("TLS 1.2 handshake as localhost: %v", err)
		}
		c.Close()
		// TLS 1.1 and older are refused.
		if c, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			c.Close()
			t.Errorf("a TLS 1.1 handshake succeeded")
		}
	})

	t.Run("plain HTTP redirects to HTTPS", func(t *testing.T) {
		a := e.do("GET", e.redir+"/products/p1?ref=mail", "")
		if a.StatusCode != 301 || a.Header.Get("Location") != "https://127.0.0.1/products/p1?ref=mail" {
			t.Fatalf("GET on the HTTP port: %v Location %q, want 301 to https://127.0.0.1/products/p1?ref=mail",
				a, a.Header.Get("Location"))
		}
		e.securityHeaders("redirect", a)
		if h := e.do("GET", e.redir+"/healthz", ""); h.StatusCode != 200 {
			t.Errorf("GET /healthz on the HTTP port: %v, want 200 (load balancers probe it)", h)
		}
	})

	t.Run("CORS preflight: allowed origins pass, others do not", func(t *testing.T) {
		reqHeaders := []string{"authorization", "content-type", "x-goog-api-client", "x-goog-request-params",
			"google-cloud-resource-prefix", "x-firebase-gmpid", "x-firebase-appcheck"}
		for _, origin := range []string{allowedOrigin, otherOrigin} {
			a := e.do("OPTIONS", e.base+doc, "", "Origin", origin, "Access-Control-Request-Method", "PATCH",
				"Access-Control-Request-Headers", strings.Join(reqHeaders, ","))
			if a.StatusCode != 204 || a.Header.Get("Access-Control-Allow-Origin") != origin {
				t.Fatalf("preflight from %s: %v, Allow-Origin %q; want 204 echoing the origin",
					origin, a, a.Header.Get("Access-Control-Allow-Origin"))
			}
			methods := strings.ToLower(a.Header.Get("Access-Control-Allow-Methods"))
			for _, m := range []string{"get", "post", "patch", "delete"} {
				if !strings.Contains(methods, m) {
					t.Errorf("Allow-Methods %q lacks %s", methods, m)
				}
			}
			allowed := map[string]bool{}
			for _, h := range strings.Split(a.Header.Get("Access-Control-Allow-Headers"), ",") {
				allowed[strings.ToLower(strings.TrimSpace(h))] = true
			}
			for _, h := range reqHeaders {
				if !allowed[h] {
					t.Errorf("Allow-Headers %q lacks %s", a.Header.Get("Access-Control-Allow-Headers"), h)
				}
			}
			e.securityHeaders("preflight", a)
		}
		for _, origin := range []string{"https://evil.example", "https://app.example.evil.example",
			"https://app", "null", "https://app.example " + otherOrigin} {
			a := e.do("OPTIONS", e.base+doc, "", "Origin", origin, "Access-Control-Request-Method", "PATCH")
			if a.StatusCode != 403 {
				t.Errorf("preflight from %q: %v, want 403", origin, a)
			}
			for h := range a.Header {
				if strings.HasPrefix(h, "Access-Control-") {
					t.Errorf("preflight from %q: answered with %s", origin, h)
				}
			}
		}
		// A real request from an allowed origin may read the answer and X-Cache.
		a := e.do("GET", e.base+doc, "", "Origin", allowedOrigin)
		if a.StatusCode != 200 || a.Header.Get("Access-Control-Allow-Origin") != allowedOrigin ||
			!strings.Contains(a.Header.Get("Access-Control-Expose-Headers"), "X-Cache") {
			t.Errorf("GET with Origin %s: %v, CORS headers %v", allowedOrigin, a, a.Header)
		}
		// The proxy answers CORS for any origin (as Firestore does); behind nginx only
		// nginx's headers count: one of each, and none for an origin off the list.
		for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"} {
			if v := a.Header.Values(h); len(v) != 1 {
				t.Errorf("GET with Origin %s: %s sent %d times: %q", allowedOrigin, h, len(v), v)
			}
		}
		if v := a.Header.Values("Vary"); strings.Count(strings.Join(v, ","), "Origin") != 1 {
			t.Errorf("GET with Origin %s: Vary %q, want Origin named once", allowedOrigin, v)
		}
		off := e.do("GET", e.base+doc, "", "Origin", "https://evil.example")
		for h := range off.Header {
			if strings.HasPrefix(h, "Access-Control-") {
				t.Errorf("GET from an origin off the list: answered with %s: %q", h, off.Header.Values(h))
			}
		}
	})

	t.Run("health checks", func(t *testing.T) {
		own := e.do("GET", e.base+"/healthz", "")
		if own.StatusCode != 200 || string(own.body) != "nginx: ok\n" {
			t.Errorf("GET /healthz: %v, want 200 \"nginx: ok\" from nginx itself", own)
		}
		e.securityHeaders("/healthz", own)
		viaProxy := e.do("GET", e.base+"/healthz/proxy", "")
		if viaProxy.StatusCode != 200 || string(viaProxy.body) != "ok\n" {
			t.Errorf("GET /healthz/proxy: %v, want 200 \"ok\" from the proxy's admin /healthz", viaProxy)
		}
	})

	t.Run("Next.js static files cached for a year, the rest proxied with client headers", func(t *testing.T) {
		js := e.do("GET", e.base+"/_next/static/chunks/app.js", "")
		if js.StatusCode != 200 || string(js.body) != stubJS {
			t.Fatalf("GET /_next/static/chunks/app.js: %v, want the stub app's file", js)
		}
		if got := js.Header.Values("Cache-Control"); len(got) != 1 || got[0] != "public, max-age=31536000, immutable" {
			t.Errorf("Cache-Control %q, want exactly [public, max-age=31536000, immutable]", got)
		}
		e.securityHeaders("static file", js)
		missing := e.do("GET", e.base+"/_next/static/chunks/gone.js", "")
		if got := missing.Header.Values("Cache-Control"); missing.StatusCode != 404 || len(got) != 1 || got[0] != "no-store" {
			t.Errorf("missing static file: %v Cache-Control %q, want 404 keeping the app's [no-store]", missing, got)
		}

		page := e.do("GET", e.base+"/farmers/f1", "", "X-Forwarded-For", "203.0.113.9")
		if page.StatusCode != 200 || !strings.Contains(string(page.body), "Harvest Hub") {
			t.Fatalf("GET /farmers/f1: %v, want the app's page", page)
		}
		if v := page.Header.Get("X-Powered-By"); v != "" {
			t.Errorf("X-Powered-By %q leaks through", v)
		}
		e.securityHeaders("app page", page)
		got := e.app.lastHeaders()
		want := map[string]string{
			"X-Real-Ip":         "203.0.113.9", // 127.0.0.1 is trusted to name the client
			"X-Forwarded-For":   "203.0.113.9, 127.0.0.1",
			"X-Forwarded-Proto": "https",
			"Host":              "127.0.0.1",
		}
		for h, v := range want {
			if got.Get(h) != v {
				t.Errorf("the app saw %s %q, want %q", h, got.Get(h), v)
			}
		}
	})
}

// Plain-HTTP mode (local use): no TLS, no HSTS; untrusted X-Forwarded-For is ignored;
// body limits match the proxy's; the API's rate limit answers Firestore-shaped 429s.
func TestHTTPMode(t *testing.T) {
	// Nothing on loopback is trusted to name clients here.
	e := startEdge(t, "http", map[string]string{"NGINX_REAL_IP_FROM": "192.0.2.0/24"})
	doc := e.createProduct("p2")

	t.Run("API and app over plain HTTP, security headers without HSTS", func(t *testing.T) {
		a := e.do("GET", e.base+doc, "")
		if a.StatusCode != 200 || a.ProtoMajor != 1 || a.Header.Get("X-Cache") == "" {
			t.Fatalf("GET through nginx: %v, want 200 over HTTP/1.1 from the proxy", a)
		}
		e.securityHeaders("API answer", a)
		page := e.do("GET", e.base+"/", "", "X-Forwarded-For", "203.0.113.9")
		e.securityHeaders("app page", page)
		got := e.app.lastHeaders()
		if got.Get("X-Real-Ip") != "127.0.0.1" || got.Get("X-Forwarded-For") != "203.0.113.9, 127.0.0.1" ||
			got.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("the app saw X-Real-IP %q, X-Forwarded-For %q, X-Forwarded-Proto %q; want the untrusted "+
				"client's claim ignored: 127.0.0.1, \"203.0.113.9, 127.0.0.1\", http",
				got.Get("X-Real-Ip"), got.Get("X-Forwarded-For"), got.Get("X-Forwarded-Proto"))
		}
	})

	t.Run("request bodies up to the proxy's 10 MiB pass, larger get a JSON 413", func(t *testing.T) {
		commit := e.base + e.proxy.docs() + ":commit"
		// Exactly 10 MiB reaches the proxy, which judges the (malformed) body itself.
		a := e.do("POST", commit, strings.Repeat(" ", 10<<20), "Content-Type", "application/json")
		if a.StatusCode == 413 || a.StatusCode == 429 || a.StatusCode/100 != 4 {
			t.Errorf("POST of 10 MiB: %v, want the proxy's 4xx verdict on the body, not nginx's refusal", a)
		}
		// One byte more is refused by nginx before any body is sent.
		c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			e.proxy.docs()+":commit", 10<<20+1)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 {
			t.Fatalf("POST of 10 MiB + 1: %s %s, want 413", resp.Status, body)
		}
		firestoreError(t, resp.Header, body, 413, "INVALID_ARGUMENT")
	})

	t.Run("a burst above the API's rate limit gets Firestore-shaped 429s", func(t *testing.T) {
		const n = 60 // far above the burst of 20
		var wg sync.WaitGroup
		answers := make([]answer, n)
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := e.client.Get(e.base + doc)
				if err != nil {
					errs[i] = err
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				answers[i], errs[i] = answer{resp, b}, err
			}()
		}
		wg.Wait()
		var ok, limited int
		for i, a := range answers {
			if errs[i] != nil {
				t.Fatalf("request %d: %v", i, errs[i])
			}
			switch a.StatusCode {
			case 200:
				ok++
			case 429:
				limited++
				if limited == 1 {
					firestoreError(t, a.Header, a.body, 429, "RESOURCE_EXHAUSTED")
					e.securityHeaders("429", a)
				}
			default:
				t.Errorf("request %d: %v, want 200 or 429", i, a)
			}
		}
		if ok == 0 || limited == 0 {
			t.Fatalf("%d requests at once: %d answered, %d limited; want both", n, ok, limited)
		}
		// The app has its own, larger budget: it is not limited by the API's.
		if a := e.do("GET", e.base+"/", ""); a.StatusCode != 200 {
			t.Errorf("the app after the API burst: %v, want 200", a)
		}
	})
}

// firestoreError checks an nginx-made error: Content-Type application/json and the
// exact shape {"error":{"code":N,"message":"...","status":"..."}}.
func firestoreError(t *testing.T, h http.Header, body []byte, code int, status string) {
	t.Helper()
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("Content-Type %q, want application/json", h.Get("Content-Type"))
	}
	var got struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil || got.Error == nil {
		t.Fatalf("body %q is not {\"error\":{\"code\",\"message\",\"status\"}}: %v", body, err)
	}
	if got.Error.Code != code || got.Error.Status != status || got.Error.Message == "" {
		t.Errorf("error %+v, want code %d, status %s and a message", *got.Error, code, status)
	}
}

// With harvest-proxy down, nginx still answers its own /healthz, /healthz/proxy reports
// the proxy's absence, and API clients get a Firestore-shaped 503 they retry.
func TestProxyDown(t *testing.T) {
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	dead := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens here
	startNginx(t, map[string]string{
		"NGINX_MODE":                 "http",
		"NGINX_HTTP_LISTEN":          httpAddr,
		"NGINX_PROXY_UPSTREAM":       dead,
		"NGINX_PROXY_ADMIN_UPSTREAM": dead,
		"NGINX_APP_UPSTREAM":         dead,
	}, httpAddr)
	e := &edge{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	base := "http://" + httpAddr
	if a := e.do("GET", base+"/healthz", ""); a.StatusCode != 200 {
		t.Errorf("GET /healthz with the proxy down: %v, want 200 from nginx alone", a)
	}
	if a := e.do("GET", base+"/healthz/proxy", ""); a.StatusCode != 502 {
		t.Errorf("GET /healthz/proxy with the proxy down: %v, want 502", a)
	}
	a := e.do("GET", base+"/v1/projects/p/databases/(default)/documents/products/p1", "")
	if a.StatusCode != 503 {
		t.Fatalf("API GET with the proxy down: %v, want 503", a)
	}
	firestoreError(t, a.Header, a.body, 503, "UNAVAILABLE")
}
