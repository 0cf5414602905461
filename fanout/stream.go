// Package fanout serves clients' Listen streams from shared upstream targets: one
// upstream Listen target per distinct target (and scope) serves every client listening
// to it, and its live view answers reads of the same target.
//
// This file is the contract between the fronts (gRPC, WebChannel) and the hub: a front
// turns a client's Listen stream into a Stream, says who the caller is with a Caller,
// and hands both to the hub. The rest of the package is the hub.
package fanout

import (
	"context"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/metadata"
)

// Stream is one client's Listen stream, whatever the front carries it:
// firestorepb.Firestore_ListenServer satisfies it, and so does a WebChannel session
// (proxy/listenchannel.go).
//
// Recv returns io.EOF when the client half-closed or the session ended normally. Send
// may be called from one goroutine at a time; Recv from another.
type Stream interface {
	Context() context.Context
	Recv() (*firestorepb.ListenRequest, error)
	Send(*firestorepb.ListenResponse) error
}

// Caller is who opened a client stream, as the front that accepted it knows.
type Caller struct {
	// Database is "projects/{p}/databases/{d}" as the stream's metadata (gRPC
	// google-cloud-resource-prefix, the WebChannel database parameter) named it.
	Database string
	// Metadata is what to present upstream when a target is listened with the caller's
	// own credentials (authorization, x-goog-api-key, x-firebase-appcheck, ...), as
	// lower-case gRPC metadata.
	Metadata metadata.MD
	// Identity is the proxy's hash of exactly the caller's credentials
	// (proxy/identity.go): targets under scope: user rules are shared only between
	// callers with the same Identity.
	Identity string
}

// Handler serves one client Listen stream until it ends; the fronts call it. It returns
// nil when the client ended the stream, else the status to end it with.
type Handler func(s Stream, c Caller) error
