// Package apierror writes the proxy's own failures in the shape Firestore uses, so every
// client library surfaces them as ordinary Firestore errors with the right code:
//
//	{"error":{"code":503,"message":"...","status":"UNAVAILABLE"}}
package apierror

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/codes"
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

// statusNames are the canonical names of the gRPC codes, as Firestore's JSON errors
// spell them, with the HTTP status Google's front end maps each to.
var statusNames = [...]struct {
	http int
	name string
}{
	codes.OK:                 {200, "OK"},
	codes.Canceled:           {499, "CANCELLED"},
	codes.Unknown:            {500, "UNKNOWN"},
	codes.InvalidArgument:    {400, "INVALID_ARGUMENT"},
	codes.DeadlineExceeded:   {504, "DEADLINE_EXCEEDED"},
	codes.NotFound:           {404, "NOT_FOUND"},
	codes.AlreadyExists:      {409, "ALREADY_EXISTS"},
	codes.PermissionDenied:   {403, "PERMISSION_DENIED"},
	codes.ResourceExhausted:  {429, "RESOURCE_EXHAUSTED"},
	codes.FailedPrecondition: {400, "FAILED_PRECONDITION"},
	codes.Aborted:            {409, "ABORTED"},
	codes.OutOfRange:         {400, "OUT_OF_RANGE"},
	codes.Unimplemented:      {501, "UNIMPLEMENTED"},
	codes.Internal:           {500, "INTERNAL"},
	codes.Unavailable:        {503, "UNAVAILABLE"},
	codes.DataLoss:           {500, "DATA_LOSS"},
	codes.Unauthenticated:    {401, "UNAUTHENTICATED"},
}

// FromGRPC is the HTTP status and status name of a gRPC code (500 UNKNOWN for a code
// outside the canonical ones).
func FromGRPC(c codes.Code) (httpStatus int, status string) {
	if int(c) < len(statusNames) {
		s := statusNames[c]
		return s.http, s.name
	}
	return 500, "UNKNOWN"
}
