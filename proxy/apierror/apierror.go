// Package apierror writes the proxy's own failures in the shape Firestore uses, so every
// client library surfaces them as ordinary Firestore errors with the right code:
//
//	{"error":{"code":503,"message":"...","status":"UNAVAILABLE"}}
package apierror

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// Canonical gRPC status names for the HTTP codes the proxy itself answers with.
const (
	InvalidArgument   = "INVALID_ARGUMENT"   // 400
	Unauthenticated   = "UNAUTHENTICATED"    // 401
	PermissionDenied  = "PERMISSION_DENIED"  // 403
	NotFound          = "NOT_FOUND"          // 404
	PayloadTooLarge   = "INVALID_ARGUMENT"   // 413: Firestore reports oversized requests as invalid
	ResourceExhausted = "RESOURCE_EXHAUSTED" // 429
	Internal          = "INTERNAL"           // 500
	Unavailable       = "UNAVAILABLE"        // 502, 503
	DeadlineExceeded  = "DEADLINE_EXCEEDED"  // 504
)

type body struct {
	Error detail `json:"error"`
}

type detail struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
}

// Marshal returns the JSON body for an error.
func Marshal(httpStatus int, status, message string) []byte {
	b, _ := json.Marshal(body{detail{Code: httpStatus, Message: message, Status: status}}) // cannot fail: plain strings and ints
	return b
}

// Write answers ctx with the error, replacing any body set so far.
func Write(ctx *fasthttp.RequestCtx, httpStatus int, status, message string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(httpStatus)
	ctx.SetContentType("application/json; charset=UTF-8")
	ctx.SetBody(Marshal(httpStatus, status, message))
}
