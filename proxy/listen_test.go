package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// blockingListen is an upstream whose Listen streams stay open, counting them.
type blockingListen struct {
	firestorepb.UnimplementedFirestoreServer
	open chan struct{}
}

func (b blockingListen) Listen(s firestorepb.Firestore_ListenServer) error {
	b.open <- struct{}{}
	<-s.Context().Done()
	return nil
}

// The views' upstream streams are spread over several connections: against an
// upstream that allows one stream per connection (Google's front end allows about
// 100), as many views as connections are all listening at once, none queued behind
// another.
func TestUpstreamListenStreamsSpreadOverConnections(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := blockingListen{open: make(chan struct{}, upstreamListenConns)}
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(1))
	firestorepb.RegisterFirestoreServer(srv, up)
	go srv.Serve(lis)
	defer srv.Stop()
	conns := &lazyConn{dial: func() (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	}}
	defer conns.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range upstreamListenConns {
		go func() {
			s, err := firestorepb.NewFirestoreClient(conns).Listen(ctx)
			if err == nil {
				s.Recv()
			}
		}()
	}
	for i := range upstreamListenConns {
		select {
		case <-up.open:
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d of %d upstream Listen streams opened: the rest wait for a connection's stream quota", i, upstreamListenConns)
		}
	}
}
