package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// CORS: the proxy answers a browser as Firestore would.
//
// What the upstream sends (checked against the emulator with curl; Firestore serves
// browsers of any origin, reflecting the Origin likewise): to any request with an
// Origin, on every answer, errors included,
//
//	Access-Control-Allow-Origin: <the request's Origin, reflected>
//	Access-Control-Allow-Methods: DELETE,GET,HEAD,PATCH,POST,PUT
//	Access-Control-Allow-Credentials: true
//
// and nothing to a request without one. A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) gets 200 with an empty body, those headers, and
// Access-Control-Allow-Headers echoing Access-Control-Request-Headers when it has any.
// The proxy answers preflights itself, exactly so (answerPreflight): they say nothing
// about data, and forwarding them would cost an upstream round trip (and an upstream
// request on the meter) before every cross-origin request the browser has not
// preflighted in the last few seconds. Other OPTIONS requests pass through.
//
// The proxy adds these headers per request, after the answer is made (Handle defers
// addCORS), so a cached entry never holds any: an entry filled for one origin is
// served to another with that other origin's headers. An answer the upstream made
// itself (a passthrough, a preflight, a WebChannel answer) keeps the upstream's CORS
// headers; only Vary: Origin is added where missing, because the proxy answers depend
// on Origin. Behind nginx in production the edge owns CORS instead (nginx/README.md):
// it hides these headers and sends its allow-list's.
var (
	hdrOrigin           = []byte(fasthttp.HeaderOrigin)
	hdrVary             = []byte(fasthttp.HeaderVary)
	hdrACAllowOrigin    = []byte(fasthttp.HeaderAccessControlAllowOrigin)
	hdrACAllowMethods   = []byte(fasthttp.HeaderAccessControlAllowMethods)
	hdrACAllowCreds     = []byte(fasthttp.HeaderAccessControlAllowCredentials)
	hdrACAllowHeaders   = []byte(fasthttp.HeaderAccessControlAllowHeaders)
	hdrACRequestMethod  = []byte(fasthttp.HeaderAccessControlRequestMethod)
	hdrACRequestHeaders = []byte(fasthttp.HeaderAccessControlRequestHeaders)
	corsAllowMethods    = []byte("DELETE,GET,HEAD,PATCH,POST,PUT")
	corsAllowCredsValue = []byte("true")
	varyOrigin          = []byte("Origin")
)

// addCORS adds the upstream's CORS headers for the request's Origin to the answer in
// ctx, and Vary: Origin. It allocates nothing once the context's buffers are warm.
func addCORS(ctx *fasthttp.RequestCtx) {
	origin := ctx.Request.Header.PeekBytes(hdrOrigin)
	if len(origin) == 0 {
		return
	}
	h := &ctx.Response.Header
	if len(h.PeekBytes(hdrACAllowOrigin)) == 0 {
		h.SetCanonical(hdrACAllowOrigin, origin)
		h.SetCanonical(hdrACAllowMethods, corsAllowMethods)
		h.SetCanonical(hdrACAllowCreds, corsAllowCredsValue)
	}
	switch vary := h.PeekBytes(hdrVary); {
	case len(vary) == 0:
		h.SetCanonical(hdrVary, varyOrigin)
	case !varyNames(vary, varyOrigin):
		h.AddBytesKV(hdrVary, varyOrigin)
	}
}

// varyNames reports whether a Vary value (a comma-separated list of header names, or
// "*") already covers name.
func varyNames(vary, name []byte) bool {
	for len(vary) > 0 {
		var item []byte
		if i := bytes.IndexByte(vary, ','); i >= 0 {
			item, vary = vary[:i], vary[i+1:]
		} else {
			item, vary = vary, nil
		}
		item = bytes.TrimSpace(item)
		if bytes.EqualFold(item, name) || bytes.Equal(item, []byte("*")) {
			return true
		}
	}
	return false
}

// isPreflight reports whether the request is a CORS preflight.
func isPreflight(ctx *fasthttp.RequestCtx) bool {
	return ctx.IsOptions() && len(ctx.Request.Header.PeekBytes(hdrOrigin)) > 0 &&
		len(ctx.Request.Header.PeekBytes(hdrACRequestMethod)) > 0
}

// answerPreflight answers a CORS preflight as the upstream does (see above); addCORS,
// deferred by Handle, adds the Allow-Origin, -Methods and -Credentials headers.
func answerPreflight(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentLength(0)
	ctx.Response.Header.SetNoDefaultContentType(true)
	if h := ctx.Request.Header.PeekBytes(hdrACRequestHeaders); len(h) > 0 {
		ctx.Response.Header.SetCanonical(hdrACAllowHeaders, h)
	}
}
