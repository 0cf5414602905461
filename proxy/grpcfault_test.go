package proxy

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/internal/testbed"
)

// listen opens a Listen stream on one document as the SDKs do and waits for the
// target to be current (the document delivered).
func listen(ctx context.Context, t *testing.T, h *harness, c firestorepb.FirestoreClient, rel string) firestorepb.Firestore_ListenClient {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", h.database())
	s, err := c.Listen(ctx)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if err := s.Send(&firestorepb.ListenRequest{Database: h.database(), TargetChange: &firestorepb.ListenRequest_AddTarget{
		AddTarget: &firestorepb.Target{TargetId: 1, TargetType: &firestorepb.Target_Documents{
			Documents: &firestorepb.Target_DocumentsTarget{Documents: []string{h.name(rel)}}}}}}); err != nil {
		t.Fatalf("Listen send: %v", err)
	}
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("Listen before current: %v", err)
		}
		if tc := r.GetTargetChange(); tc != nil && tc.TargetChangeType == firestorepb.TargetChange_CURRENT {
			return s
		}
	}
}

// A client's deadline and cancellation end its call with DEADLINE_EXCEEDED and
// CANCELLED, on cached reads, relayed calls and writes alike, while the upstream is
// slow.
func TestGRPCDeadlineAndCancellation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	h.put("products/p", `{"v":{"stringValue":"x"}}`)
	c := h.grpcVia(0)
	h.meter.SetLatency(3 * time.Second)
	calls := map[string]func(ctx context.Context) error{
		"GetDocument (cached read)": func(ctx context.Context) error {
			_, err := c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: h.name("products/p")})
			return err
		},
		"BeginTransaction (relayed)": func(ctx context.Context) error {
			_, err := c.BeginTransaction(ctx, &firestorepb.BeginTransactionRequest{Database: h.database()})
			return err
		},
		"Commit (write)": func(ctx context.Context) error {
			_, err := c.Commit(ctx, &firestorepb.CommitRequest{Database: h.database(), Writes: []*firestorepb.Write{
				{Operation: &firestorepb.Write_Delete{Delete: h.name("products/q")}}}})
			return err
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(ownerCtx(), 300*time.Millisecond)
		err := call(ctx)
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("%s with a deadline shorter than the upstream: %v, want DEADLINE_EXCEEDED", name, err)
		}
		ctx, cancel = context.WithCancel(ownerCtx())
		time.AfterFunc(300*time.Millisecond, cancel)
		if err := call(ctx); status.Code(err) != codes.Canceled {
			t.Errorf("%s canceled by the client: %v, want CANCELED", name, err)
		}
	}
}

// An upstream that goes away mid-stream (the connection cut): a Listen target the proxy
// shares rides it out (the fan-out resumes upstream, and the client sees the next
// change once the upstream is back); a target on the caller's own upstream stream (no
// rule shares it) ends with UNAVAILABLE, as it would directly; a cached read's miss
// is UNAVAILABLE.
func TestGRPCUpstreamCutMidStream(t *testing.T) {
	t.Parallel()
	var relay *testbed.Relay
	h := newHarness(t, setup{rules: `
  - match: /products/{p}
    ttl: 10m
    scope: shared
  - match: /orders/{o}
    ttl: 0s
`, upstream: func(_ int, meterURL string) string {
		relay = testbed.NewRelay(t, strings.TrimPrefix(meterURL, "http://"))
		return "http://" + relay.Addr()
	}})
	h.put("products/p", `{"v":{"stringValue":"x"}}`)
	h.put("orders/o", `{"v":{"stringValue":"x"}}`)
	c := h.grpcVia(0)
	shared := listen(ownerCtx(), t, h, c, "products/p")
	own := listen(ownerCtx(), t, h, c, "orders/o")
	relay.Cut()
	for {
		_, err := own.Recv()
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Errorf("Listen on the caller's own stream after the upstream was cut: %v, want UNAVAILABLE", err)
			}
			break
		}
	}
	relay.Restore()
	h.put("products/p", `{"v":{"stringValue":"after the cut"}}`)
	for {
		r, err := shared.Recv()
		if err != nil {
			t.Fatalf("shared Listen across the upstream cut: %v, want it kept open", err)
		}
		if d := r.GetDocumentChange().GetDocument(); d != nil && d.GetFields()["v"].GetStringValue() == "after the cut" {
			break
		}
	}
	relay.Cut()
	_, err := c.RunQuery(ownerCtx(), &firestorepb.RunQueryRequest{Parent: h.name("")[:len(h.name(""))-1]})
	if err == nil {
		var rq firestorepb.Firestore_RunQueryClient
		rq, err = c.RunQuery(ownerCtx(), &firestorepb.RunQueryRequest{Parent: h.name("")[:len(h.name(""))-1]})
		for err == nil {
			_, err = rq.Recv()
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a read while the upstream is cut: %v, want UNAVAILABLE", err)
	}
}

// Clients that go away mid-stream (a Listen, a Write stream, a relayed call waiting on
// a slow upstream, a cached read waiting on its fill) leave no goroutine behind: the
// proxy's calls and their upstream calls end.
func TestGRPCClientDisconnectLeaksNoGoroutine(t *testing.T) {
	h := newHarness(t, setup{})
	h.put("products/p", `{"v":{"stringValue":"x"}}`)
	addr := strings.TrimPrefix(h.replicas[0].url, "http://")
	inflight := &h.replicas[0].m.inflightN
	round := func() {
		// The previous round's calls end after their client went away: counting from
		// a still-ending call would miss one of this round's.
		waitFor(t, "the previous round's calls to end", func() bool { return inflight.Load() == 0 })
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		c := firestorepb.NewFirestoreClient(cc)
		ctx := ownerCtx()
		listen(ctx, t, h, c, "products/p")
		ws, err := c.Write(metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", h.database()))
		if err != nil {
			t.Fatal(err)
		}
		if err := ws.Send(&firestorepb.WriteRequest{Database: h.database()}); err != nil {
			t.Fatal(err)
		}
		if _, err := ws.Recv(); err != nil {
			t.Fatal(err)
		}
		h.meter.SetLatency(time.Minute)
		open := inflight.Load() // the Listen and Write streams
		done := make(chan struct{}, 2)
		var finished atomic.Int64
		go func() {
			c.BeginTransaction(ctx, &firestorepb.BeginTransactionRequest{Database: h.database()})
			finished.Add(1)
			done <- struct{}{}
		}()
		go func() {
			c.GetDocument(ctx, &firestorepb.GetDocumentRequest{Name: h.name("products/p"), Mask: &firestorepb.DocumentMask{FieldPaths: []string{"v"}}})
			finished.Add(1)
			done <- struct{}{}
		}()
		// Each call is open on the proxy, or already answered (a read a previous
		// round's fill cached): either way none can be missed.
		waitFor(t, "both slow calls to be open on the proxy", func() bool {
			return inflight.Load()+finished.Load() >= open+2
		})
		cc.Close() // the client goes away with four calls open
		<-done
		<-done
		h.meter.SetLatency(0)
		h.meter.Reset()
	}
	round() // warm-up: pools, the upstream connection, the plan index
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(20 * time.Millisecond)
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	base := settle()
	for range 3 {
		round()
	}
	// A cached read's fill outlives its caller by design (others may wait on it), up to
	// the upstream timeout (20 s here): the bound is past it.
	deadline := time.Now().Add(45 * time.Second)
	for {
		n := settle()
		if n <= base+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after three rounds of disconnecting clients, %d before:\n%s", n, base, buf)
		}
	}
}
