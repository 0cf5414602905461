package proxy

import (
	"context"
	"io"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/metadata"

	"github.com/harvest-hub/edge/fanout"
)

// relayListen is the Listen handler (fanout.Handler) until the fan-out hub takes its
// place: one upstream gRPC Listen per client stream, on the proxy's upstream
// connection, with the caller's metadata (its credentials) and the database routing
// headers, every ListenRequest and ListenResponse passed on unchanged, in order. It
// returns nil when the upstream ended the stream cleanly or the client half-closed
// and the upstream then ended, else the upstream's status (or the client's, when the
// client went away).
//
// Every goroutine it starts ends with the call: the upstream call is canceled when
// relayListen returns, and the goroutine reading the client returns when the
// client's stream ends, which its front does once the handler returned.
func (p *Proxy) relayListen(s fanout.Stream, c fanout.Caller) error {
	ctx, cancel := context.WithCancel(s.Context())
	defer cancel()
	md := c.Metadata.Copy()
	md.Set("google-cloud-resource-prefix", c.Database)
	md.Set("x-goog-request-params", "database="+c.Database)
	up, err := firestorepb.NewFirestoreClient(p.grpcUp).Listen(metadata.NewOutgoingContext(ctx, md))
	if err != nil {
		return err
	}
	clientErr := make(chan error, 1)
	go func() {
		for {
			req, err := s.Recv()
			if err == io.EOF {
				up.CloseSend()
				return
			}
			if err != nil {
				clientErr <- err
				cancel() // the upstream's Recv below returns
				return
			}
			if up.Send(req) != nil {
				return // the upstream ended the call: its Recv below returns the status
			}
		}
	}()
	for {
		resp, err := up.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			select {
			case cerr := <-clientErr:
				return cerr
			default:
				return err
			}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}
