// Package grpcrelay forwards gRPC calls it does not need to understand: messages as
// opaque protobuf bytes (a pass-through codec), streamed both ways, to an upstream
// *grpc.ClientConn, with the caller's metadata, deadline and cancellation, and the
// upstream's status, header and trailer metadata returned unchanged.
//
// Which metadata it touches, and why (as net/http/httputil.ReverseProxy documents its
// own headers): HTTP/2 pseudo-headers, hop-by-hop headers (connection, keep-alive,
// te, transfer-encoding, upgrade, host), content-type, user-agent and the grpc-*
// headers describe one hop and are set again by grpc-go for the next (the deadline
// travels as the context's, so grpc-timeout is recomputed, shrinking by the time
// already spent); every other key (authorization, x-goog-*, x-firebase-*,
// google-cloud-resource-prefix, x-goog-request-params, ...) passes unchanged.
//
// grpc-go does the HTTP/2 and the message framing; nothing here frames by hand.
package grpcrelay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // a client may send gzip-compressed messages
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// MaxMessageBytes bounds one message either way. Firestore accepts requests up to
// 10 MiB and returns documents up to 1 MiB each; grpc-go's default (4 MiB) would cut
// large commits and batch reads.
const MaxMessageBytes = 64 << 20

// Frame is one gRPC message as its protobuf wire bytes.
type Frame struct{ Bytes []byte }

// Codec passes Frames through as bytes, and marshals or unmarshals proto.Messages as
// the standard codec does, so one stream can relay bytes and speak messages. Its name
// is "proto": what travels is application/grpc+proto, as Firestore expects.
type Codec struct{}

// Marshal returns a Frame's bytes as they are, or a message's protobuf encoding.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *Frame:
		return m.Bytes, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("grpcrelay: cannot marshal %T", v)
}

// Unmarshal copies data into a Frame (grpc-go reuses the buffer) or parses it into a
// message.
func (Codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *Frame:
		m.Bytes = append(m.Bytes[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("grpcrelay: cannot unmarshal into %T", v)
}

// Name is the content subtype.
func (Codec) Name() string { return "proto" }

// Dial returns a client connection to the gRPC side of upstreamURL: cleartext HTTP/2
// (prior knowledge) for http://host:port (the emulator), TLS with the system's roots
// for https://host[:port] (port 443 by default; production Firestore). It connects
// lazily, on the first call.
func Dial(upstreamURL string) (*grpc.ClientConn, error) {
	u, err := url.Parse(upstreamURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("grpcrelay: upstream URL %q is not http://host:port or https://host", upstreamURL)
	}
	var creds credentials.TransportCredentials
	host := u.Host
	switch u.Scheme {
	case "http":
		creds = insecure.NewCredentials()
		if u.Port() == "" {
			host += ":80"
		}
	case "https":
		creds = credentials.NewTLS(nil)
		if u.Port() == "" {
			host += ":443"
		}
	default:
		return nil, fmt.Errorf("grpcrelay: upstream URL %q: want http or https", upstreamURL)
	}
	cc, err := grpc.NewClient("dns:///"+host,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(Codec{}),
			grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
	)
	if err != nil {
		return nil, fmt.Errorf("grpcrelay: %w", err)
	}
	return cc, nil
}

// ServerOptions are what a grpc.Server needs to relay: the pass-through codec, the
// message bounds, and a keepalive policy as lenient as Google's front end (clients
// such as the Node SDKs ping idle connections every 30 s or so; grpc-go's default
// policy would answer that with GOAWAY "too_many_pings"). handler serves every method
// (grpc.UnknownServiceHandler).
func ServerOptions(handler grpc.StreamHandler) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodec(Codec{}),
		grpc.UnknownServiceHandler(handler),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
}

// Outgoing is the metadata to send upstream for a call that arrived with in: every key
// but those describing the hop (see the package comment). in is not modified.
func Outgoing(in metadata.MD) metadata.MD {
	out := make(metadata.MD, len(in))
	for k, v := range in {
		if hopKey(k) {
			continue
		}
		out[k] = v
	}
	return out
}

func hopKey(k string) bool {
	if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") {
		return true
	}
	switch k {
	case "content-type", "user-agent", "te", "connection", "keep-alive", "proxy-connection",
		"transfer-encoding", "upgrade", "host":
		return true
	}
	return false
}

// OutgoingContext is a context for an upstream call made on behalf of the call whose
// server-side context is ctx: its deadline and cancellation, and Outgoing metadata.
func OutgoingContext(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	return metadata.NewOutgoingContext(ctx, Outgoing(in))
}

// Options adjust one Relay.
type Options struct {
	// First, when set, is the client's first message, already received: it is sent
	// upstream before anything else read from the client.
	First *Frame
	// Header is added to the header metadata sent to the client (x-cache: BYPASS).
	Header metadata.MD
	// OnResponse sees every upstream message before the client does (a meter counts).
	OnResponse func(method string, msg []byte)
}

var bidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Relay forwards the call on ss to method on cc until either side ends it, and returns
// the status to end ss with: the upstream's, unchanged (its trailer metadata set on
// ss), or the client's cancellation.
//
// Every goroutine it starts ends once the call is over: the upstream call is canceled
// when Relay returns, and the goroutine reading from the client returns when ss's
// context ends, which grpc-go does as the handler returns.
func Relay(ss grpc.ServerStream, cc grpc.ClientConnInterface, method string, o Options) error {
	ctx, cancel := context.WithCancel(OutgoingContext(ss.Context()))
	defer cancel()
	cs, err := cc.NewStream(ctx, bidi, method, grpc.ForceCodec(Codec{}))
	if err != nil {
		if len(o.Header) > 0 {
			_ = ss.SetHeader(o.Header)
		}
		return err // a status (Unavailable when the upstream cannot be reached)
	}
	go func() {
		if o.First != nil {
			if cs.SendMsg(o.First) != nil {
				return // the upstream ended the call: RecvMsg below returns its status
			}
		}
		for {
			f := new(Frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel() // the client went away or broke the stream
				}
				return
			}
			if cs.SendMsg(f) != nil {
				return
			}
		}
	}()

	hdr, herr := cs.Header()
	if herr == nil && len(hdr) > 0 {
		hdr = metadata.Join(hdr, o.Header)
	} else {
		hdr = o.Header
	}
	if len(hdr) > 0 {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	for {
		f := new(Frame)
		if err := cs.RecvMsg(f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if o.OnResponse != nil {
			o.OnResponse(method, f.Bytes)
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}
