package proxy

import (
	"context"
	"fmt"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/internal/testbed"
)

// With the outbox full, a gRPC write whose events could not be kept is refused with
// UNAVAILABLE before it is forwarded, on every write method and the Write stream; the
// upstream sees none of them.
func TestGRPCOutboxFullRefusesEventWrites(t *testing.T) {
	q := newEventQueue(t)
	relay := testbed.NewRelay(t, brokerAddr)
	relay.Cut()
	h := newHarness(t, eventSetup(q, "amqp://guest:guest@"+relay.Addr()+"/", "outbox_max_bytes: 2000"))
	filled := false
	for i := 0; i < 50 && !filled; i++ {
		a := h.via(0, "PATCH", fmt.Sprintf("%s/products/p%d", h.docs(), i), `{"fields":{"n":{"integerValue":"1"}}}`)
		switch a.status {
		case 200:
		case 503:
			filled = true
		default:
			t.Fatalf("write %d: %v", i, a)
		}
	}
	if !filled {
		t.Fatal("50 writes with the broker cut never filled a 2000-byte outbox")
	}
	c := h.grpcVia(0)
	ctx := ownerCtx()
	doc := &firestorepb.Document{Name: h.name("products/x")}
	before := h.meter.Snapshot().Total
	for name, call := range map[string]func() error{
		"UpdateDocument": func() error {
			_, err := c.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: doc})
			return err
		},
		"CreateDocument": func() error {
			_, err := c.CreateDocument(ctx, &firestorepb.CreateDocumentRequest{Parent: h.database() + "/documents", CollectionId: "products"})
			return err
		},
		"DeleteDocument": func() error {
			_, err := c.DeleteDocument(ctx, &firestorepb.DeleteDocumentRequest{Name: h.name("products/p0")})
			return err
		},
		"Commit": func() error {
			_, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: h.database(), Writes: []*firestorepb.Write{
				{Operation: &firestorepb.Write_Update{Update: doc}}}})
			return err
		},
		"BatchWrite": func() error {
			_, err := c.BatchWrite(ctx, &firestorepb.BatchWriteRequest{Database: h.database(), Writes: []*firestorepb.Write{
				{Operation: &firestorepb.Write_Update{Update: doc}}}})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unavailable {
			t.Errorf("%s with the outbox full: %v, want UNAVAILABLE", name, err)
		}
	}
	if after := h.meter.Snapshot().Total; after != before {
		t.Fatalf("the upstream saw %d of the refused writes", after-before)
	}
	// The Write stream: the handshake is forwarded, the refused write is not.
	_, err := writeStream(ctx, c, h.database(), []*firestorepb.Write{{Operation: &firestorepb.Write_Update{Update: doc}}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a Write-stream write with the outbox full: %v, want UNAVAILABLE", err)
	}
	if a := h.direct("GET", h.docs()+"/products/x", ""); a.status != 404 {
		t.Errorf("a refused write landed: %v", a)
	}
}

// Scope user over gRPC: the identity is the whole authorization metadata, so two
// callers never share an entry; a call with two authorization values is refused and
// never forwarded.
func TestGRPCScopeUserAndAmbiguousCredentials(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{rules: `
  - match: /users/{u}/orders/{o}
    ttl: 10m
`})
	h.put("users/u1/orders/o1", `{"total":{"integerValue":"5"}}`)
	c := h.grpcVia(0)
	get := func(auth ...string) (string, error) {
		ctx := context.Background()
		for _, a := range auth {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", a)
		}
		var md metadata.MD
		_, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: h.name("users/u1/orders/o1")}, grpc.Header(&md))
		return first(md.Get("x-cache")), err
	}
	alice, bob := unsignedJWT(h.project, "alice"), unsignedJWT(h.project, "bob")
	for _, step := range []struct {
		who, auth, want string
	}{{"alice", alice, "MISS"}, {"alice again", alice, "HIT-L1"}, {"bob", bob, "MISS"}, {"anonymous", "", "MISS"}, {"bob again", bob, "HIT-L1"}} {
		var xc string
		var err error
		if step.auth == "" {
			xc, err = get()
		} else {
			xc, err = get(step.auth)
		}
		if err != nil || xc != step.want {
			t.Errorf("%s: x-cache %q (%v), want %s", step.who, xc, err, step.want)
		}
	}
	before := h.meter.Snapshot().Total
	if _, err := get(alice, bob); status.Code(err) != codes.InvalidArgument {
		t.Errorf("two authorization values: %v, want INVALID_ARGUMENT", err)
	} else if m := status.Convert(err).Message(); len(m) > 0 && (contains(m, alice) || contains(m, bob)) {
		t.Errorf("the refusal echoes the credentials: %q", m)
	}
	if _, err := c.BeginTransaction(metadata.AppendToOutgoingContext(context.Background(), "authorization", alice, "authorization", bob),
		&firestorepb.BeginTransactionRequest{Database: h.database()}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a relayed call with two authorization values: %v, want INVALID_ARGUMENT", err)
	}
	if after := h.meter.Snapshot().Total; after != before {
		t.Errorf("calls with ambiguous credentials reached the upstream (%d)", after-before)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
