package nginx

import (
	"net"
	"strconv"
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy/conformance/browser"
)

// TestBrowserThroughNginx runs the browser suite (proxy/conformance/browser: the
// Firebase web SDK, full, full long-polling and lite, in headless Chromium on a page of
// its own origin) through the shipped nginx configuration in front of harvest-proxy,
// and directly against the emulator: identical results, and a clean page through the
// edge (no failed request, which includes every CORS refusal, no 5xx, no console
// error). It proves that the edge carries the WebChannel requests, the preflights and
// the REST calls of a browser page unchanged, with the edge's CORS only (one
// Access-Control-Allow-Origin: a doubled header is a CORS failure in the browser).
func TestBrowserThroughNginx(t *testing.T) {
	emu := testbed.Emulator(t)
	hp := startProxy(t)
	pagePort := browser.FreePort(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startNginx(t, map[string]string{
		"NGINX_MODE":                 "http",
		"NGINX_HTTP_LISTEN":          httpAddr,
		"NGINX_PROXY_UPSTREAM":       hp.addr,
		"NGINX_PROXY_ADMIN_UPSTREAM": hp.admin,
		"NGINX_APP_UPSTREAM":         startApp(t).addr,
		"NGINX_CORS_ORIGINS":         "http://127.0.0.1:" + strconv.Itoa(pagePort),
		// Three pages from one address in a few seconds: the per-client limit is for
		// production traffic, not for this test's single client.
		"NGINX_API_RATE": "1000r/s",
	}, httpAddr)

	eh, ep, _ := net.SplitHostPort(emu.Addr)
	emuPort, _ := strconv.Atoi(ep)
	nginxPort, _ := strconv.Atoi(httpAddr[len("127.0.0.1:"):])
	var runs []browser.Run
	for _, sdk := range browser.SDKs {
		runs = append(runs,
			browser.Run{Name: sdk + "/direct", SDK: sdk, Host: eh, Port: emuPort, ProjectID: emu.NewProject(t)},
			browser.Run{Name: sdk + "/nginx", SDK: sdk, Host: "127.0.0.1", Port: nginxPort, ProjectID: emu.NewProject(t)})
	}
	results := browser.Execute(t, pagePort, runs)
	browser.RetryFailedDirect(t, pagePort, runs, results, emu.NewProject)
	for i := 0; i < len(runs); i += 2 {
		d, n := runs[i], runs[i+1]
		browser.CheckClean(t, d.Name, results[d.Name])
		browser.CheckClean(t, n.Name, results[n.Name])
		browser.Compare(t, d.Name, results[d.Name], n.Name, results[n.Name], d.ProjectID, n.ProjectID)
	}
}
