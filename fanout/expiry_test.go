package fanout_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/fanout"
)

// refusingUpstream is a Firestore whose Listen refuses every stream with code.
type refusingUpstream struct {
	firestorepb.UnimplementedFirestoreServer
	code codes.Code
}

func (u refusingUpstream) Listen(s firestorepb.Firestore_ListenServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	return status.Error(u.code, "refused by the test upstream")
}

// memStream is a client Listen stream in memory.
type memStream struct {
	ctx  context.Context
	in   chan *firestorepb.ListenRequest
	sent chan *firestorepb.ListenResponse
}

func (m *memStream) Context() context.Context { return m.ctx }
func (m *memStream) Recv() (*firestorepb.ListenRequest, error) {
	select {
	case r := <-m.in:
		return r, nil
	case <-m.ctx.Done():
		return nil, io.EOF
	}
}
func (m *memStream) Send(r *firestorepb.ListenResponse) error {
	select {
	case m.sent <- r:
		return nil
	case <-m.ctx.Done():
		return m.ctx.Err()
	}
}

// A PerCaller view whose caller's token the upstream refuses as UNAUTHENTICATED (a
// Firebase ID token lasts an hour) ends its client streams with UNAUTHENTICATED, as
// Firestore does, so the SDKs refresh the token and listen again; a Shared view's
// refusal (the proxy's own credentials) is a target removal with the cause.
func TestExpiredCallerTokenEndsTheStream(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	firestorepb.RegisterFirestoreServer(srv, refusingUpstream{code: codes.Unauthenticated})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	const db = "projects/p/databases/(default)"
	target := &firestorepb.Target{TargetId: 2, TargetType: &firestorepb.Target_Documents{
		Documents: &firestorepb.Target_DocumentsTarget{Documents: []string{db + "/documents/orders/a"}}}}
	for _, mode := range []fanout.Mode{fanout.PerCaller, fanout.Shared} {
		hub, err := fanout.New(fanout.Config{Conn: conn, Policy: func(string, *firestorepb.Target) fanout.Mode { return mode },
			MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &memStream{ctx: ctx, in: make(chan *firestorepb.ListenRequest, 1), sent: make(chan *firestorepb.ListenResponse, 64)}
		s.in <- &firestorepb.ListenRequest{Database: db, TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: target}}
		served := make(chan error, 1)
		go func() { served <- hub.Serve(s, fanout.Caller{Database: db, Identity: "alice"}) }()
		switch mode {
		case fanout.PerCaller:
			select {
			case err := <-served:
				if status.Code(err) != codes.Unauthenticated {
					t.Errorf("PerCaller: the stream ended with %v, want UNAUTHENTICATED", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("PerCaller: the stream was not ended")
			}
		case fanout.Shared:
			for removed := false; !removed; {
				select {
				case r := <-s.sent:
					if tc := r.GetTargetChange(); tc.GetTargetChangeType() == firestorepb.TargetChange_REMOVE {
						removed = true
						if codes.Code(tc.GetCause().GetCode()) != codes.Unauthenticated {
							t.Errorf("Shared: REMOVE with cause %v, want UNAUTHENTICATED", tc.GetCause())
						}
					}
				case err := <-served:
					t.Fatalf("Shared: the stream ended (%v), want a REMOVE and the stream kept", err)
				case <-time.After(30 * time.Second):
					t.Fatal("Shared: no REMOVE")
				}
			}
		}
		cancel()
		hub.Close()
	}
}
