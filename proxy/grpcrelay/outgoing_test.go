package grpcrelay

import (
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestOutgoingDropsOnlyTheHop(t *testing.T) {
	in := metadata.Pairs(":authority", "proxy:8080", "content-type", "application/grpc", "user-agent", "ua",
		"te", "trailers", "grpc-timeout", "1S", "grpc-accept-encoding", "gzip",
		"authorization", "Bearer a", "x-goog-api-client", "gl-go", "x-goog-request-params", "database=d",
		"google-cloud-resource-prefix", "projects/p", "x-firebase-client", "fire", "custom-bin", "\x00")
	out := Outgoing(in)
	for _, k := range []string{"authorization", "x-goog-api-client", "x-goog-request-params", "google-cloud-resource-prefix", "x-firebase-client", "custom-bin"} {
		if len(out.Get(k)) != 1 {
			t.Errorf("%s was not forwarded", k)
		}
	}
	for _, k := range []string{":authority", "content-type", "user-agent", "te", "grpc-timeout", "grpc-accept-encoding"} {
		if len(out.Get(k)) != 0 {
			t.Errorf("%s (the hop's) was forwarded", k)
		}
	}
	if len(in) != 12 {
		t.Error("Outgoing modified its input")
	}
}
