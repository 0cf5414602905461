package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// The gRPC benchmarks: a GetDocument L1 hit through the proxy beside a bare grpc-go
// server answering the same message from a map (the ceiling), both on loopback under
// the same Go load generator; and the median latency a miss adds over calling the
// emulator directly. make bench prints them with the micro-benchmarks.

// mapServer is the bare grpc-go Firestore server: GetDocument from a map.
type mapServer struct {
	firestorepb.UnimplementedFirestoreServer
	docs map[string]*firestorepb.Document
}

func (s *mapServer) GetDocument(_ context.Context, r *firestorepb.GetDocumentRequest) (*firestorepb.Document, error) {
	if d, ok := s.docs[r.GetName()]; ok {
		return d, nil
	}
	return nil, status.Error(codes.NotFound, "no such document")
}

const benchDocName = "projects/p/databases/(default)/documents/products/p1"

func benchDoc() *firestorepb.Document {
	return &firestorepb.Document{Name: benchDocName, Fields: map[string]*firestorepb.Value{
		"name":    {ValueType: &firestorepb.Value_StringValue{StringValue: "Carrots"}},
		"price":   {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 3}},
		"version": {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 1}},
	}}
}

// startMapServer serves a mapServer on loopback and returns its address.
func startMapServer(b testing.TB) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	firestorepb.RegisterFirestoreServer(srv, &mapServer{docs: map[string]*firestorepb.Document{benchDocName: benchDoc()}})
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// startBenchProxy serves a proxy (rules: yaml) in front of upstream on loopback.
func startBenchProxy(b testing.TB, upstream, yaml string) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{Upstream: upstream, Rules: store, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// benchClients are a few connections to addr, as a pool of app servers would hold.
func benchClients(b testing.TB, addr string) []firestorepb.FirestoreClient {
	b.Helper()
	var cs []firestorepb.FirestoreClient
	for range 4 {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		cs = append(cs, firestorepb.NewFirestoreClient(cc))
	}
	return cs
}

// BenchmarkGRPCGetDocument: requests/s of GetDocument from 64 concurrent callers over
// four connections, against the bare map server and an L1 hit through the proxy.
func BenchmarkGRPCGetDocument(b *testing.B) {
	upstream := startMapServer(b)
	proxied := startBenchProxy(b, "http://"+upstream, hitRules)
	for _, row := range []struct{ name, addr string }{{"bare-grpc-go", upstream}, {"proxy-L1-hit", proxied}} {
		b.Run(row.name, func(b *testing.B) {
			clients := benchClients(b, row.addr)
			req := &firestorepb.GetDocumentRequest{Name: benchDocName}
			var md metadata.MD
			if _, err := clients[0].GetDocument(context.Background(), req, grpc.Header(&md)); err != nil {
				b.Fatal(err)
			}
			if row.addr == proxied {
				if _, err := clients[0].GetDocument(context.Background(), req, grpc.Header(&md)); err != nil || first(md.Get("x-cache")) != "HIT-L1" {
					b.Fatalf("not a hit: %v %v", md, err)
				}
			}
			var next atomic.Int64
			b.SetParallelism(max(1, 64/max(1, runtimeProcs())))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c := clients[next.Add(1)%int64(len(clients))]
				for pb.Next() {
					if _, err := c.GetDocument(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkGRPCMissAddedLatency: the median latency of a gRPC GetDocument miss through
// the proxy minus that of the same call straight to the emulator, over distinct keys
// (a different field mask each time), calls paired and alternated.
func BenchmarkGRPCMissAddedLatency(b *testing.B) {
	emu := testbed.Emulator(b)
	project := emu.NewProject(b)
	name := "projects/" + project + "/databases/(default)/documents/products/p1"
	proxied := startBenchProxy(b, emu.URL, "rules:\n  - match: /products/{p}\n    ttl: 30m\n    scope: shared\n")
	direct := benchClients(b, emu.Addr)[0]
	via := benchClients(b, proxied)[0]
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", owner)
	if _, err := direct.UpdateDocument(ctx, &firestorepb.UpdateDocumentRequest{Document: &firestorepb.Document{Name: name,
		Fields: benchDoc().Fields}}); err != nil {
		b.Fatal(err)
	}
	var dLat, pLat []float64
	timed := func(c firestorepb.FirestoreClient, i int) float64 {
		req := &firestorepb.GetDocumentRequest{Name: name, Mask: &firestorepb.DocumentMask{FieldPaths: []string{fmt.Sprintf("f%d", i)}}}
		start := time.Now()
		var md metadata.MD
		if _, err := c.GetDocument(ctx, req, grpc.Header(&md)); err != nil {
			b.Fatal(err)
		}
		if c == via && first(md.Get("x-cache")) != "MISS" {
			b.Fatalf("not a miss: %v", md)
		}
		return float64(time.Since(start)) / float64(time.Millisecond)
	}
	timed(direct, 1<<20) // warm both connections
	timed(via, 1<<20+1)
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			dLat = append(dLat, timed(direct, i))
			pLat = append(pLat, timed(via, i))
		} else {
			pLat = append(pLat, timed(via, i))
			dLat = append(dLat, timed(direct, i))
		}
	}
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	d, p := med(dLat), med(pLat)
	b.ReportMetric(d, "direct-p50-ms")
	b.ReportMetric(p, "proxy-p50-ms")
	b.ReportMetric(p-d, "added-p50-ms")
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
