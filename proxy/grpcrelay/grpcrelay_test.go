package grpcrelay

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func serve(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// A relayed call carries the caller's metadata (minus the hop's), both directions'
// messages byte for byte, and comes back with the upstream's header, trailer and
// status (details included) unchanged.
func TestRelayIsTransparent(t *testing.T) {
	upstream := serve(t, grpc.NewServer(ServerOptions(func(_ any, ss grpc.ServerStream) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		hdr := metadata.Pairs("x-upstream", "h")
		for _, k := range []string{"authorization", "x-goog-request-params", "google-cloud-resource-prefix", "x-firebase-gmpid"} {
			if v := md.Get(k); len(v) > 0 {
				hdr.Append("echo-"+k, v...)
			}
		}
		if _, ok := ss.Context().Deadline(); ok {
			hdr.Append("echo-deadline", "yes")
		}
		ss.SendHeader(hdr)
		for {
			f := new(Frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
			if err := ss.SendMsg(&Frame{Bytes: append([]byte("re:"), f.Bytes...)}); err != nil {
				return err
			}
		}
		ss.SetTrailer(metadata.Pairs("x-trailer", "t"))
		st, _ := status.New(codes.FailedPrecondition, "upstream says no").WithDetails(&errdetails.ErrorInfo{Reason: "R"})
		return st.Err()
	})...))
	cc, err := Dial("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	relay := serve(t, grpc.NewServer(ServerOptions(func(_ any, ss grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(ss)
		return Relay(ss, cc, m, Options{Header: metadata.Pairs("x-cache", "BYPASS")})
	})...))

	client, err := grpc.NewClient("passthrough:///"+relay, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "Bearer x", "x-goog-request-params", "database=d", "google-cloud-resource-prefix", "projects/p",
		"x-firebase-gmpid", "app"), 30e9)
	defer cancel()
	cs, err := client.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/any.Service/Method", grpc.ForceCodec(Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "\x00\xff two"} {
		if err := cs.SendMsg(&Frame{Bytes: []byte(m)}); err != nil {
			t.Fatal(err)
		}
	}
	cs.CloseSend()
	var got []string
	for {
		f := new(Frame)
		if err := cs.RecvMsg(f); err != nil {
			st := status.Convert(err)
			if st.Code() != codes.FailedPrecondition || st.Message() != "upstream says no" || len(st.Details()) != 1 {
				t.Errorf("status %v %q details %v, want the upstream's", st.Code(), st.Message(), st.Details())
			}
			break
		}
		got = append(got, string(f.Bytes))
	}
	if len(got) != 2 || got[0] != "re:one" || got[1] != "re:\x00\xff two" {
		t.Errorf("messages %q", got)
	}
	hdr, _ := cs.Header()
	for k, want := range map[string]string{"x-upstream": "h", "x-cache": "BYPASS", "echo-authorization": "Bearer x",
		"echo-x-goog-request-params": "database=d", "echo-google-cloud-resource-prefix": "projects/p",
		"echo-x-firebase-gmpid": "app", "echo-deadline": "yes"} {
		if v := hdr.Get(k); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if v := cs.Trailer().Get("x-trailer"); len(v) != 1 || v[0] != "t" {
		t.Errorf("trailer %v", cs.Trailer())
	}
}
