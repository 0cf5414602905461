package conformance

// `make bench`'s Listen fan-out rows (issue 11), each beside its baseline from the same
// run, reported as figures and ratios (nothing here asserts a time or a size):
//
//   - BenchmarkListenFanOutReads: documents streamed upstream for N listeners on one
//     query, each directly against the emulator and through the proxy.
//   - BenchmarkListenFanOutLatency: from a write's commit to the 100th listener's copy
//     of the change, 100 direct listeners vs 100 through the proxy.
//   - BenchmarkListenFanOutMemory: what the proxy holds per client target and per
//     shared target (a view with its documents).
//
// The listeners are raw gRPC Listen streams (firestorepb) presenting the emulator's
// "Bearer owner", a listener's snapshot taken where the SDKs raise one (a global
// NO_CHANGE with a read time); the query matches fanoutDocs small documents under the
// sample rules' scope: shared /products rule.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/proxy/proxytest"
	"github.com/harvest-hub/edge/rules"
)

const (
	// fanoutDocs is how many documents the listened query matches.
	fanoutDocs = 20
	// fanoutLatencyListeners is the latency benchmark's listeners each way, and
	// fanoutLatencyWrites its measured writes each way per b.N.
	fanoutLatencyListeners, fanoutLatencyWrites = 100, 9
	// fanoutMemoryClients is K in the memory benchmark: client targets on one view, and
	// views with one client each.
	fanoutMemoryClients = 500
	// fanoutMemoryTargets is M in the memory benchmark: targets on one client stream
	// (their initial snapshots, about 23 messages each, must fit the hub's default
	// client queue of 4,096 messages, or the stream is ended as too slow), on each of
	// fanoutMemoryStreams streams.
	fanoutMemoryTargets, fanoutMemoryStreams = 100, 10
	// fanoutPerConn is how many listeners share one client connection in the reads
	// and latency benchmarks (the memory benchmark gives each client its own).
	fanoutPerConn = 10
	// fanoutWait bounds every wait for listeners (current, a change).
	fanoutWait = 2 * time.Minute
)

// fanoutRules shares /products like the sample rules.yaml, with no linger, so each
// measurement's views close with its listeners and the next starts from none.
const fanoutRules = `listen:
  linger: 0s
rules:
  - match: /products/{productId}
    ttl: 30m
    scope: shared
`

// endpoint is where listeners connect: the emulator (through a meter or not) or a
// proxy.
type endpoint struct {
	addr  string
	proxy *proxytest.Server // nil for the emulator
}

// startFanoutProxy starts a proxy (L1 only, fanoutRules) in front of upstreamURL.
func startFanoutProxy(b *testing.B, upstreamURL string) endpoint {
	b.Helper()
	path := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(fanoutRules), 0o600); err != nil {
		b.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := proxytest.Start(b, proxy.Options{Upstream: upstreamURL, Rules: store})
	return endpoint{addr: p.Addr, proxy: p}
}

// idle waits until the proxy serves no client stream and listens to no view (at once
// for the emulator), so that what comes next starts from none.
func (e endpoint) idle(b *testing.B) {
	b.Helper()
	if e.proxy == nil {
		return
	}
	deadline := time.Now().Add(fanoutWait)
	for st := e.proxy.Stats().Listen; st.ClientStreams > 0 || st.UpstreamTargets > 0; st = e.proxy.Stats().Listen {
		if time.Now().After(deadline) {
			b.Fatalf("the proxy still serves %d client streams and %d views %v after its listeners left", st.ClientStreams, st.UpstreamTargets, fanoutWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchProject is a project of the benchmark's own, wiped when it ends. Not
// emu.NewProject, whose wipe fails the benchmark at the first refusal: the emulator
// drops a cancelled Listen call asynchronously, and a wipe racing that fails ("call
// already cancelled"), so this one tries again.
func benchProject(b *testing.B, emu *testbed.Emu) string {
	b.Helper()
	p := "b-fanout-" + testbed.RandomHex(6)
	b.Cleanup(func() {
		var err error
		for range 10 {
			if err = emu.Wipe(p); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.Errorf("%v", err)
	})
	return p
}

// BenchmarkListenFanOutReads: N = 1, 10, 100, 1,000 listeners on one query of
// fanoutDocs documents, then one change once all are current; the documents streamed
// upstream (the testbed meter: what Firestore bills a listener for) with the listeners
// directly on the emulator (through a meter) and through the proxy (whose upstream is a
// meter).
func BenchmarkListenFanOutReads(b *testing.B) {
	emu := testbed.Emulator(b)
	directMeter := testbed.NewMeter(b, emu.URL)
	proxyMeter := testbed.NewMeter(b, emu.URL)
	direct, proxied := endpoint{addr: directMeter.Addr()}, startFanoutProxy(b, proxyMeter.URL())
	commit := newCommitter(b, emu.Addr)

	// run opens n listeners to at on a fresh project, waits until all are current,
	// changes one document, waits until all have it, and returns what meter counted.
	run := func(b *testing.B, meter *testbed.Meter, at endpoint, n int) testbed.Counts {
		project := benchProject(b, emu)
		commit.seed(b, project)
		meter.Reset()
		g := openListeners(b, at.addr, project, layout{streams: n, perConn: fanoutPerConn}, queryTarget(project, false))
		g.waitCurrent(b)
		commit.change(b, project, 1)
		g.waitRev(b, 1)
		c := meter.Snapshot()
		g.close()
		at.idle(b)
		return c
	}
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			var directDocs, proxiedDocs, proxiedTargets float64
			for range b.N {
				dc, pc := run(b, directMeter, direct, n), run(b, proxyMeter, proxied, n)
				directDocs += float64(dc.ListenDocuments)
				proxiedDocs += float64(pc.ListenDocuments)
				proxiedTargets += float64(pc.ListenTargets)
			}
			if proxiedDocs == 0 {
				b.Fatal("nothing streamed upstream through the proxy's meter: the measurement is broken")
			}
			N := float64(b.N)
			b.ReportMetric(directDocs/N, "direct-docs")
			b.ReportMetric(proxiedDocs/N, "proxied-docs")
			b.ReportMetric(directDocs/proxiedDocs, "direct/proxied")
			b.ReportMetric(proxiedTargets/N, "proxied-targets")
		})
	}
}

// BenchmarkListenFanOutLatency: 100 listeners directly on the emulator (through a
// meter) and 100 through the proxy (whose upstream is a meter), each set on a project
// of its own; each iteration commits a change in each project in turn (directly on the
// emulator) and times, from sending the commit, until the last of that set's listeners
// had a snapshot with the change. Timed from the send, not the commit's answer: the emulator
// streams the change to its listeners before it answers the commit, so direct
// listeners have it "before" the answer (the commit-p50-ms figures are the answer's
// round trip with each set listening).
// The p50 of each over fanoutLatencyWrites writes (times b.N: run it with -benchtime
// 1x), and their ratio.
func BenchmarkListenFanOutLatency(b *testing.B) {
	emu := testbed.Emulator(b)
	directMeter := testbed.NewMeter(b, emu.URL)
	proxyMeter := testbed.NewMeter(b, emu.URL)
	proxied := startFanoutProxy(b, proxyMeter.URL())
	commit := newCommitter(b, emu.Addr)

	type set struct {
		project     string
		g           *listenerGroup
		lat, commit []time.Duration
	}
	open := func(at endpoint) *set {
		project := benchProject(b, emu)
		commit.seed(b, project)
		g := openListeners(b, at.addr, project, layout{streams: fanoutLatencyListeners, perConn: fanoutPerConn}, queryTarget(project, false))
		b.Cleanup(func() { g.close(); at.idle(b) })
		g.waitCurrent(b)
		return &set{project: project, g: g}
	}
	ds, ps := open(endpoint{addr: directMeter.Addr()}), open(proxied)
	// Warm both paths with one change each, unmeasured.
	for _, s := range []*set{ds, ps} {
		commit.change(b, s.project, 1)
		s.g.waitRev(b, 1)
	}
	b.ResetTimer()
	for i := range fanoutLatencyWrites * b.N {
		rev := int64(i + 2)
		order := []*set{ds, ps}
		if i%2 == 1 {
			order = []*set{ps, ds} // neither always follows the other's write
		}
		for _, s := range order {
			sent, answered := commit.change(b, s.project, rev)
			last := s.g.waitRev(b, rev)
			s.lat = append(s.lat, last.Sub(sent))
			s.commit = append(s.commit, answered.Sub(sent))
		}
	}
	b.StopTimer()
	d, p := median(ds.lat), median(ps.lat)
	b.ReportMetric(ms(d), "direct-p50-ms")
	b.ReportMetric(ms(p), "proxied-p50-ms")
	b.ReportMetric(float64(p)/float64(max(d, time.Microsecond)), "proxied/direct")
	b.ReportMetric(ms(median(ds.commit)), "direct-commit-p50-ms")
	b.ReportMetric(ms(median(ps.commit)), "proxied-commit-p50-ms")
}

// BenchmarkListenFanOutMemory: the live heap and goroutine stacks of this process
// (runtime.ReadMemStats after a collection), with the proxy's upstream the emulator
// itself, so nothing but the proxy and the clients is in the process. K clients, each
// its own connection and Listen stream:
//
//   - D: one target each, on one query, directly on the emulator: what the clients
//     alone hold here;
//   - A: the same through the proxy: K client targets on one view;
//   - B: through the proxy on K distinct queries (each matching the same fanoutDocs
//     documents): K views of one client each;
//   - E: S clients each holding M targets of the one query on its stream, through the
//     proxy.
//
// Each against the settled usage just before it. Per shared target (a view with its
// documents and upstream stream) = (B - A) / (K - 1); per client (its connection,
// stream and target in the proxy) = (A - D - one view) / K; per extra target on a
// client's stream = (E - S clients - one view - S D / K) / (S (M - 1)).
func BenchmarkListenFanOutMemory(b *testing.B) {
	emu := testbed.Emulator(b)
	direct, proxied := endpoint{addr: emu.Addr}, startFanoutProxy(b, emu.URL)
	commit := newCommitter(b, emu.Addr)
	project := benchProject(b, emu)
	commit.seed(b, project)
	const k, m, ss = fanoutMemoryClients, fanoutMemoryTargets, fanoutMemoryStreams

	// measure opens lay's streams to at and returns the heap and stacks they added
	// once all are current (then closes them and lets usage settle).
	measure := func(at endpoint, lay layout, target func(i int) *firestorepb.Target) usage {
		h0, s0 := settledMemory()
		g := openListeners(b, at.addr, project, lay, target)
		g.waitCurrent(b)
		h1, s1 := settledMemory()
		g.close()
		at.idle(b)
		return usage{float64(h1) - float64(h0), float64(s1) - float64(s0)}
	}
	clients := layout{streams: k, perConn: 1}
	same, distinct := queryTarget(project, false), queryTarget(project, true)
	measure(proxied, clients, same) // warm: the proxy's upstream connection, the client library

	var d, a, bb, e usage
	for range b.N {
		d = d.plus(measure(direct, clients, same))
		a = a.plus(measure(proxied, clients, same))
		bb = bb.plus(measure(proxied, clients, distinct))
		e = e.plus(measure(proxied, layout{streams: ss, perConn: 1, perStream: m}, same))
	}
	n := 1 / float64(b.N)
	d, a, bb, e = d.times(n), a.times(n), bb.times(n), e.times(n)
	view := bb.minus(a).times(1.0 / (k - 1))
	client := a.minus(d).minus(view).times(1.0 / k)
	target := e.minus(client.times(ss)).minus(view).minus(d.times(float64(ss) / k)).times(1.0 / (ss * (m - 1)))
	b.ReportMetric(view.heap, "heap-B/shared-target")
	b.ReportMetric(view.stack, "stack-B/shared-target")
	b.ReportMetric(client.heap, "heap-B/client")
	b.ReportMetric(client.stack, "stack-B/client")
	b.ReportMetric(target.heap, "heap-B/extra-target")
	b.ReportMetric(target.stack, "stack-B/extra-target")
	b.ReportMetric(d.heap/k, "heap-B/client-itself")
}

// usage is live heap and goroutine stack bytes.
type usage struct{ heap, stack float64 }

func (u usage) plus(v usage) usage    { return usage{u.heap + v.heap, u.stack + v.stack} }
func (u usage) minus(v usage) usage   { return usage{u.heap - v.heap, u.stack - v.stack} }
func (u usage) times(f float64) usage { return usage{u.heap * f, u.stack * f} }

// settledMemory is the live heap and the goroutine stacks in use after a collection,
// once the goroutine count has stopped falling (streams just closed wind down).
func settledMemory() (heap, stack uint64) {
	prev := -1
	for range 50 {
		n := runtime.NumGoroutine()
		if n == prev {
			break
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ownerContext is ctx with what every call here presents: the emulator's owner token
// and the database of project.
func ownerContext(ctx context.Context, project string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer owner",
		"google-cloud-resource-prefix", database(project))
}

func database(project string) string { return "projects/" + project + "/databases/(default)" }

// queryTarget returns the target of listener i: products whose category is "fanout"
// (all fanoutDocs documents), with a limit of 1000 + i when distinct is set (a distinct
// query, hence a view of its own, matching the same documents), none otherwise.
func queryTarget(project string, distinct bool) func(i int) *firestorepb.Target {
	db := database(project)
	return func(i int) *firestorepb.Target {
		q := &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
			Where: &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
				Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "category"}, Op: firestorepb.StructuredQuery_FieldFilter_EQUAL,
				Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: "fanout"}}}}},
		}
		if distinct {
			q.Limit = wrapperspb.Int32(int32(1000 + i))
		}
		return &firestorepb.Target{TargetId: 2, TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
			Parent:    db + "/documents",
			QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: q},
		}}}
	}
}

// committer commits to the emulator directly over gRPC.
type committer struct {
	client firestorepb.FirestoreClient
}

func newCommitter(b *testing.B, emuAddr string) *committer {
	b.Helper()
	cc, err := grpc.NewClient(emuAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return &committer{client: firestorepb.NewFirestoreClient(cc)}
}

// product is document p<i> of project: in the listened category, with rev.
func product(project string, i int, rev int64) *firestorepb.Write {
	return &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{
		Name: fmt.Sprintf("%s/documents/products/p%02d", database(project), i),
		Fields: map[string]*firestorepb.Value{
			"category": {ValueType: &firestorepb.Value_StringValue{StringValue: "fanout"}},
			"price":    {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: int64(100 + i)}},
			"rev":      {ValueType: &firestorepb.Value_IntegerValue{IntegerValue: rev}},
		},
	}}}
}

// seed writes the fanoutDocs products of project in one commit.
func (c *committer) seed(b *testing.B, project string) {
	b.Helper()
	var writes []*firestorepb.Write
	for i := range fanoutDocs {
		writes = append(writes, product(project, i, 0))
	}
	c.commit(b, project, writes)
}

// change sets product p00's rev, and returns when the commit was sent and when it
// was answered.
func (c *committer) change(b *testing.B, project string, rev int64) (sent, answered time.Time) {
	b.Helper()
	sent = time.Now()
	c.commit(b, project, []*firestorepb.Write{product(project, 0, rev)})
	return sent, time.Now()
}

func (c *committer) commit(b *testing.B, project string, writes []*firestorepb.Write) {
	b.Helper()
	ctx, cancel := context.WithTimeout(ownerContext(context.Background(), project), 30*time.Second)
	defer cancel()
	if _, err := c.client.Commit(ctx, &firestorepb.CommitRequest{Database: database(project), Writes: writes}); err != nil {
		b.Fatalf("commit to the emulator: %v", err)
	}
}

// listenerGroup is Listen streams read by a goroutine each.
type listenerGroup struct {
	conns     []*grpc.ClientConn
	streams   []firestorepb.Firestore_ListenClient
	listeners []*listener
	cancel    context.CancelFunc
	errs      chan error
	closing   atomic.Bool
	closeOnce sync.Once
}

// listener is one Listen stream's reader: current is closed at its first consistent
// snapshot (a global NO_CHANGE with a read time, where the SDKs raise a snapshot) once
// each of its targets was CURRENT; revs then receives, at each consistent snapshot,
// the rev of p00 it holds and when the snapshot arrived.
type listener struct {
	targets int
	done    chan struct{} // closed when its stream has ended
	current chan struct{}
	revs    chan revAt
}

type revAt struct {
	rev int64
	at  time.Time
}

// layout is how listeners are laid out: streams Listen streams, perConn of them to a
// client connection, each adding perStream targets (1 when 0).
type layout struct{ streams, perConn, perStream int }

// openListeners opens the Listen streams of lay to addr for project; the targets are
// target(0), target(1), ... in stream order, with ids 2, 4, ... on each stream.
func openListeners(b *testing.B, addr, project string, lay layout, target func(i int) *firestorepb.Target) *listenerGroup {
	b.Helper()
	ctx, cancel := context.WithCancel(ownerContext(context.Background(), project))
	g := &listenerGroup{cancel: cancel, errs: make(chan error, lay.streams)}
	perStream := max(lay.perStream, 1)
	var client firestorepb.FirestoreClient
	for i := range lay.streams {
		if i%lay.perConn == 0 {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				g.close()
				b.Fatal(err)
			}
			g.conns = append(g.conns, cc)
			client = firestorepb.NewFirestoreClient(cc)
		}
		s, err := client.Listen(ctx)
		for j := 0; err == nil && j < perStream; j++ {
			t := target(i*perStream + j)
			t.TargetId = int32(2 * (j + 1))
			err = s.Send(&firestorepb.ListenRequest{Database: database(project),
				TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: t}})
		}
		if err != nil {
			g.close()
			b.Fatalf("Listen stream %d to %s: %v", i, addr, err)
		}
		l := &listener{targets: perStream, done: make(chan struct{}), current: make(chan struct{}), revs: make(chan revAt, 64)}
		g.streams, g.listeners = append(g.streams, s), append(g.listeners, l)
		go l.read(s, g)
	}
	return g
}

func (l *listener) read(s firestorepb.Firestore_ListenClient, g *listenerGroup) {
	defer close(l.done)
	isCurrent := map[int32]bool{}
	consistent := false
	rev := int64(-1)
	for {
		resp, err := s.Recv()
		if err != nil {
			if !g.closing.Load() {
				g.errs <- err
			}
			return
		}
		switch {
		case resp.GetDocumentChange() != nil:
			doc := resp.GetDocumentChange().GetDocument()
			if filepath.Base(doc.GetName()) == "p00" {
				rev = doc.GetFields()["rev"].GetIntegerValue()
			}
		case resp.GetTargetChange() != nil:
			tc := resp.GetTargetChange()
			if tc.GetTargetChangeType() == firestorepb.TargetChange_CURRENT {
				for _, id := range tc.GetTargetIds() {
					isCurrent[id] = true
				}
			}
			snapshot := tc.GetTargetChangeType() == firestorepb.TargetChange_NO_CHANGE &&
				len(tc.GetTargetIds()) == 0 && tc.GetReadTime() != nil
			if !snapshot || len(isCurrent) < l.targets {
				continue
			}
			if !consistent {
				consistent = true
				close(l.current)
			}
			select {
			case l.revs <- revAt{rev, time.Now()}:
			default: // nobody waits for this many snapshots
			}
		}
	}
}

// waitCurrent waits until every listener has had a consistent snapshot.
func (g *listenerGroup) waitCurrent(b *testing.B) {
	b.Helper()
	deadline := time.NewTimer(fanoutWait)
	defer deadline.Stop()
	for i, l := range g.listeners {
		select {
		case <-l.current:
		case err := <-g.errs:
			b.Fatalf("a listener failed before it was current: %v", err)
		case <-deadline.C:
			b.Fatalf("only %d of %d listeners current within %v", i, len(g.listeners), fanoutWait)
		}
	}
}

// waitRev waits until every listener has had a consistent snapshot with p00 at rev,
// and returns when the last one did.
func (g *listenerGroup) waitRev(b *testing.B, rev int64) time.Time {
	b.Helper()
	deadline := time.NewTimer(fanoutWait)
	defer deadline.Stop()
	var last time.Time
	for i, l := range g.listeners {
		for got := false; !got; {
			select {
			case r := <-l.revs:
				if r.rev == rev {
					got = true
					if r.at.After(last) {
						last = r.at
					}
				}
			case err := <-g.errs:
				b.Fatalf("a listener failed waiting for a change: %v", err)
			case <-deadline.C:
				b.Fatalf("only %d of %d listeners received the change within %v", i, len(g.listeners), fanoutWait)
			}
		}
	}
	return last
}

// close ends every stream as a client leaving does (a half-close, which the server
// answers by ending the call), waits for the ends, then closes the connections.
func (g *listenerGroup) close() {
	g.closeOnce.Do(func() {
		g.closing.Store(true)
		for _, s := range g.streams {
			s.CloseSend()
		}
		deadline := time.NewTimer(fanoutWait)
		defer deadline.Stop()
	wait:
		for _, l := range g.listeners {
			select {
			case <-l.done:
			case <-deadline.C:
				break wait // cancelled below
			}
		}
		g.cancel()
		for _, cc := range g.conns {
			cc.Close()
		}
	})
}
