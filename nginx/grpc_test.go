package nginx

// gRPC through nginx (snippets/grpc.conf, templates/grpc.conf.template): the official Go
// client with its default gRPC transport, and grpc-go's Firestore stubs for the Write
// stream, over TLS with HTTP/2 to nginx in NGINX_MODE=tls.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	vkit "cloud.google.com/go/firestore/apiv1"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/internal/testbed"
)

// grpcEdge is nginx in TLS mode with gRPC clients dialled to it.
type grpcEdge struct {
	*edge
	addr    string // 127.0.0.1:port of the HTTPS server
	project string
	conn    *grpc.ClientConn
}

// startGRPCEdge runs nginx in TLS mode in front of upstream ("proxy": the in-process
// harvest-proxy; "emulator": the emulator itself, to test nginx's gRPC routing alone)
// and dials it with grpc-go over TLS (ALPN h2), trusting the test certificate.
func startGRPCEdge(t *testing.T, upstream string, extra map[string]string) *grpcEdge {
	t.Helper()
	vars := map[string]string{}
	if upstream == "emulator" {
		vars["NGINX_PROXY_UPSTREAM"] = testbed.Emulator(t).Addr
	}
	for k, v := range extra {
		vars[k] = v
	}
	e := startEdge(t, "tls", vars)
	g := &grpcEdge{edge: e, addr: strings.TrimPrefix(e.base, "https://"), project: e.proxy.project}
	g.conn = g.dial(t)
	return g
}

func (g *grpcEdge) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	// The test certificate startEdge made, which its HTTPS client already trusts.
	roots := g.edge.client.Transport.(*http.Transport).TLSClientConfig.RootCAs
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", g.addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// client is the official Go client, gRPC transport, over the edge's connection.
func (g *grpcEdge) client(t *testing.T) *firestore.Client {
	t.Helper()
	c, err := firestore.NewClient(context.Background(), g.project, option.WithGRPCConn(g.conn))
	if err != nil {
		t.Fatalf("firestore.NewClient over %s: %v", g.addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGRPCThroughNginx: the Go client with its default gRPC transport, through nginx
// over TLS and HTTP/2, gets, queries, writes, runs a transaction and a count, sees
// errors with their gRPC status, and listens: first with nginx in front of the
// emulator itself (the routing alone), then in front of harvest-proxy (the chain users
// deploy).
func TestGRPCThroughNginx(t *testing.T) {
	for _, upstream := range []string{"emulator", "proxy"} {
		t.Run("to the "+upstream, func(t *testing.T) {
			g := startGRPCEdge(t, upstream, nil)
			c := g.client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			must := func(what string, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s through nginx: %v", what, err)
				}
			}
			_, err := c.Doc("products/g1").Set(ctx, map[string]any{"name": "Over gRPC", "price": 2.5, "category": "grpc"})
			must("Set", err)
			_, err = c.Collection("products").Doc("g2").Create(ctx, map[string]any{"name": "Second", "price": 1.0, "category": "grpc"})
			must("Create", err)
			s, err := c.Doc("products/g1").Get(ctx)
			must("Get", err)
			if name, _ := s.DataAt("name"); name != "Over gRPC" {
				t.Errorf("Get products/g1 through nginx: name %v, want %q", name, "Over gRPC")
			}
			_, err = c.Doc("products/missing").Get(ctx)
			if status.Code(err) != codes.NotFound {
				t.Errorf("Get of a missing document through nginx: %v, want NotFound", err)
			}
			got, err := c.Collection("products").Where("category", "==", "grpc").OrderBy("price", firestore.Asc).Documents(ctx).GetAll()
			must("RunQuery", err)
			if len(got) != 2 || got[0].Ref.ID != "g2" || got[1].Ref.ID != "g1" {
				t.Errorf("query through nginx: %d documents %v, want [g2 g1]", len(got), ids(got))
			}
			//lint:ignore SA1019 apps still write batches; it is a Commit without a transaction
			b := c.Batch()
			b.Update(c.Doc("products/g1"), []firestore.Update{{Path: "price", Value: 3.5}})
			b.Delete(c.Doc("products/g2"))
			_, err = b.Commit(ctx)
			must("Commit (batch)", err)
			err = c.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
				s, err := tx.Get(c.Doc("products/g1"))
				if err != nil {
					return err
				}
				p, _ := s.DataAt("price")
				return tx.Update(s.Ref, []firestore.Update{{Path: "price", Value: p.(float64) + 1}})
			})
			must("RunTransaction", err)
			q := c.Collection("products").Where("category", "==", "grpc")
			res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
			must("RunAggregationQuery", err)
			if n := res["n"].(*firestorepb.Value).GetIntegerValue(); n != 1 {
				t.Errorf("count through nginx: %d, want 1", n)
			}
			s, err = c.Doc("products/g1").Get(ctx)
			must("Get after the writes", err)
			if p, _ := s.DataAt("price"); p != 4.5 {
				t.Errorf("products/g1 price after batch and transaction through nginx: %v, want 4.5", p)
			}

			// Listen: a bidirectional stream that sees a write made after it opened.
			it := c.Doc("products/g3").Snapshots(ctx)
			defer it.Stop()
			first, err := it.Next()
			must("Listen (first snapshot)", err)
			if first.Exists() {
				t.Fatalf("products/g3 exists before it was written")
			}
			_, err = c.Doc("products/g3").Set(ctx, map[string]any{"name": "Heard"})
			must("Set products/g3", err)
			next, err := it.Next()
			must("Listen (snapshot after the write)", err)
			if name, _ := next.DataAt("name"); name != "Heard" {
				t.Errorf("Listen through nginx after the write: exists=%v name=%v, want Heard", next.Exists(), name)
			}

			// Request metadata reaches the upstream: listing collection ids needs the
			// emulator's admin credentials, sent as the authorization metadata.
			if _, err := c.Collections(ctx).GetAll(); status.Code(err) == codes.OK {
				t.Errorf("listing collection ids without credentials succeeded: the test cannot see whether metadata passes")
			}
			admin := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer owner")
			cols, err := c.Collections(admin).GetAll()
			must("ListCollectionIds with authorization metadata", err)
			if len(cols) != 1 || cols[0].ID != "products" {
				t.Errorf("collection ids through nginx with authorization metadata: %d, want [products]", len(cols))
			}
		})
	}
}

func ids(ss []*firestore.DocumentSnapshot) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Ref.ID
	}
	return out
}

// TestGRPCWriteStreamOutlivesBodyLimit: the Write stream (how the Firebase SDK writes)
// carries more than the REST body limit (10 MiB) in one long-lived call through nginx,
// which counts a stream's messages as one request body.
func TestGRPCWriteStreamOutlivesBodyLimit(t *testing.T) {
	for _, upstream := range []string{"emulator", "proxy"} {
		t.Run("to the "+upstream, func(t *testing.T) {
			g := startGRPCEdge(t, upstream, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			raw, err := vkit.NewClient(ctx, option.WithGRPCConn(g.conn))
			if err != nil {
				t.Fatal(err)
			}
			db := "projects/" + g.project + "/databases/(default)"
			ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db)
			stream, err := raw.Write(ctx)
			if err != nil {
				t.Fatalf("Write stream through nginx: %v", err)
			}
			if err := stream.Send(&firestorepb.WriteRequest{Database: db}); err != nil {
				t.Fatalf("Write handshake: %v", err)
			}
			hs, err := stream.Recv()
			if err != nil {
				t.Fatalf("Write handshake answer through nginx: %v", err)
			}
			token := hs.GetStreamToken()
			blob := strings.Repeat("x", 900<<10) // under the 1 MiB document limit
			const writes = 13                    // about 11.4 MiB in one stream
			for i := range writes {
				name := fmt.Sprintf("%s/documents/blobs/b%02d", db, i)
				err := stream.Send(&firestorepb.WriteRequest{StreamToken: token, Writes: []*firestorepb.Write{{
					Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: name,
						Fields: map[string]*firestorepb.Value{"blob": {ValueType: &firestorepb.Value_StringValue{StringValue: blob}}}}},
				}}})
				if err != nil {
					t.Fatalf("Write %d of %d: send: %v", i+1, writes, err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("Write %d of %d (%d KiB sent on the stream): %v", i+1, writes, (i+1)*900, err)
				}
				token = resp.GetStreamToken()
			}
			stream.CloseSend()
		})
	}
}

// TestGRPCRefusals: what nginx itself answers on the gRPC paths reaches gRPC clients as
// gRPC statuses, and what is not gRPC never reaches the upstream.
func TestGRPCRefusals(t *testing.T) {
	t.Run("proxy down: UNAVAILABLE", func(t *testing.T) {
		dead := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens here
		g := startGRPCEdge(t, "proxy", map[string]string{"NGINX_PROXY_UPSTREAM": dead})
		_, err := g.client(t).Doc("products/p1").Get(context.Background())
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() == "" {
			t.Errorf("Get with the proxy down: %v, want UNAVAILABLE with a message", err)
		}
	})
	g := startGRPCEdge(t, "emulator", nil)
	t.Run("rate limited: RESOURCE_EXHAUSTED", func(t *testing.T) {
		// grpc-go's stub, without the Go client's retries (which would retry
		// RESOURCE_EXHAUSTED with backoff until the limit lets the call through).
		raw := firestorepb.NewFirestoreClient(g.conn)
		name := "projects/" + g.project + "/databases/(default)/documents/products/p1"
		ctx := metadata.AppendToOutgoingContext(context.Background(), "google-cloud-resource-prefix", "projects/"+g.project+"/databases/(default)")
		var mu sync.Mutex
		codesSeen := map[codes.Code]int{}
		var wg sync.WaitGroup
		for range 60 { // the API's burst is 20 at 10 r/s
			wg.Go(func() {
				_, err := raw.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: name})
				st := status.Convert(err)
				mu.Lock()
				codesSeen[st.Code()]++
				mu.Unlock()
				if st.Code() == codes.ResourceExhausted && st.Message() == "" {
					t.Errorf("RESOURCE_EXHAUSTED without a message")
				}
			})
		}
		wg.Wait()
		if codesSeen[codes.ResourceExhausted] == 0 || codesSeen[codes.NotFound] == 0 || len(codesSeen) != 2 {
			t.Errorf("60 concurrent GetDocument calls through nginx: %v, want NotFound (the document is missing) and ResourceExhausted only", codesSeen)
		}
	})
	t.Run("not gRPC: 415, never forwarded", func(t *testing.T) {
		for _, proto := range []struct {
			name  string
			http2 bool
		}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
			tr := g.edge.client.Transport.(*http.Transport).Clone()
			tr.ForceAttemptHTTP2 = proto.http2
			if !proto.http2 {
				tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			}
			client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
			for _, ct := range []string{"application/json", "application/grpc-web+proto", "application/grpc"} {
				if ct == "application/grpc" && proto.http2 {
					continue // that is gRPC
				}
				req, _ := http.NewRequest("POST", g.base+"/google.firestore.v1.Firestore/GetDocument", strings.NewReader("{}"))
				req.Header.Set("Content-Type", ct)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s POST %s: %v", proto.name, ct, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 415 || resp.Proto[:6] != proto.name[:6] {
					t.Errorf("%s POST of %s to a gRPC path: %s %s, want 415", proto.name, ct, resp.Proto, resp.Status)
				}
			}
		}
	})
}
