package conformance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestFanOutListenClientsThatVanishLeakNothing: 1,000 gRPC Listen streams to one shared
// query through the proxy, each abandoned once it has its first answer: half by
// cancelling the call without closing it, half by the client's TCP connection
// vanishing under them. Afterwards the process's goroutines and live heap settle back
// near where they started (polled with a deadline: how fast is not the question).
//
// Not parallel: it counts every goroutine of the test binary.
func TestFanOutListenClientsThatVanishLeakNothing(t *testing.T) {
	st := newStack(t)
	project := st.emu.NewProject(t)
	for i := range 20 {
		body := fmt.Sprintf(`{"fields":{"category":{"stringValue":"fanout"},"price":{"integerValue":"%d"}}}`, i)
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/products?documentId=p%02d", st.emu.DocumentsURL(project), i), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("seeding: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	db := "projects/" + project + "/databases/(default)"
	add := &firestorepb.ListenRequest{Database: db, TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: &firestorepb.Target{
		TargetId: 2, TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
			Parent: db + "/documents",
			QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
				From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
				Where: &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
					Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "category"}, Op: firestorepb.StructuredQuery_FieldFilter_EQUAL,
					Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: "fanout"}}}}},
			}}}}}}}

	// client is one client connection whose TCP connection the test can drop.
	type client struct {
		cc   *grpc.ClientConn
		mu   sync.Mutex
		conn []net.Conn
	}
	dial := func() *client {
		c := &client{}
		cc, err := grpc.NewClient("passthrough:///"+st.addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err == nil {
					c.mu.Lock()
					c.conn = append(c.conn, conn)
					c.mu.Unlock()
				}
				return conn, err
			}))
		if err != nil {
			t.Fatal(err)
		}
		c.cc = cc
		return c
	}
	// open starts a Listen stream on c and waits for its first answer; the stream's
	// cancel is returned, never called before the stream is abandoned.
	open := func(c *client) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "google-cloud-resource-prefix", db))
		s, err := firestorepb.NewFirestoreClient(c.cc).Listen(ctx)
		if err == nil {
			err = s.Send(add)
		}
		if err == nil {
			_, err = s.Recv()
		}
		if err != nil {
			cancel()
			return nil, err
		}
		return cancel, nil
	}

	// Warm up: the proxy's upstream connections, the client library's first use.
	warm := dial()
	cancel, err := open(warm)
	if err != nil {
		t.Fatalf("a Listen stream through the proxy: %v", err)
	}
	cancel()
	warm.cc.Close()
	goroutines0, heap0 := settledUsage()

	const rounds, perRound = 10, 100
	var kept []*client // cancelled rounds' connections stay open: only the calls end
	for round := range rounds {
		c := dial()
		cancels := make([]context.CancelFunc, perRound)
		errs := make(chan error, perRound)
		var wg sync.WaitGroup
		for i := range perRound {
			wg.Go(func() {
				var err error
				if cancels[i], err = open(c); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: a Listen stream through the proxy: %v", round, err)
		}
		if round%2 == 0 {
			for _, cancel := range cancels {
				cancel() // RST_STREAM; the client never half-closes
			}
			kept = append(kept, c)
			continue
		}
		// The client vanishes: its TCP connection is gone, no GOAWAY, no RST_STREAM.
		c.mu.Lock()
		for _, conn := range c.conn {
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			conn.Close()
		}
		c.mu.Unlock()
		for _, cancel := range cancels {
			cancel() // the client library's own state; the proxy heard nothing
		}
		c.cc.Close()
	}

	// Slack: the kept client connections' own goroutines (a few each), and what a
	// lingering shared upstream target holds; one leaked stream costs two or more
	// goroutines and tens of KiB, so 1,000 leaked are far outside either bound.
	goroutineSlack := 10*len(kept) + 40
	const heapSlack = 8 << 20
	deadline := time.Now().Add(45 * time.Second)
	var goroutines int
	var heap uint64
	for {
		goroutines, heap = settledUsage()
		if goroutines <= goroutines0+goroutineSlack && heap <= heap0+heapSlack {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("after %d abandoned Listen streams: goroutines %d -> %d, live heap %.1f -> %.1f MiB",
		rounds*perRound, goroutines0, goroutines, mib(heap0), mib(heap))
	if goroutines > goroutines0+goroutineSlack {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("goroutines did not settle: %d at the start, %d after (slack %d); a sample:\n%s",
			goroutines0, goroutines, goroutineSlack, clip(string(buf[:n]), 6000))
	}
	if heap > heap0+heapSlack {
		t.Errorf("live heap did not settle: %.1f MiB at the start, %.1f MiB after (slack %.0f MiB)", mib(heap0), mib(heap), mib(heapSlack))
	}
	for _, c := range kept {
		c.cc.Close()
	}
}

// settledUsage is the goroutine count and the live heap after a collection.
func settledUsage() (int, uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
