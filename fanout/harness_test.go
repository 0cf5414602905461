package fanout_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/watch"
)

func TestMain(m *testing.M) {
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(testbed.Main(m))
}

// front is a minimal gRPC front: its Listen hands the stream to the hub, with the
// caller taken from the metadata as proxy/grpcfront does.
type front struct {
	firestorepb.UnimplementedFirestoreServer
	hub *fanout.Hub
}

func (f *front) Listen(st firestorepb.Firestore_ListenServer) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	c := fanout.Caller{Metadata: metadata.MD{}}
	if v := md.Get("google-cloud-resource-prefix"); len(v) > 0 {
		c.Database = v[0]
	}
	if v := md.Get("authorization"); len(v) > 0 {
		c.Metadata.Set("authorization", v...)
		sum := sha256.Sum256([]byte(v[0]))
		c.Identity = hex.EncodeToString(sum[:8])
	}
	return f.hub.Serve(st, c)
}

type bed struct {
	emu   *testbed.Emu
	meter *testbed.Meter
	hub   *fanout.Hub
	addr  string // the hub's gRPC front
	proj  string
	db    string
}

// newBed starts a hub whose upstream is the emulator behind a meter (so upstream Listen
// streams are counted), served by an in-process gRPC server.
// tokenFile, when given, replaces the proxy's own "Bearer owner" upstream.
func newBed(t *testing.T, cfg fanout.Config, tokenFile ...string) *bed {
	t.Helper()
	emu := testbed.Emulator(t)
	b := &bed{emu: emu, proj: emu.NewProject(t)}
	b.db = "projects/" + b.proj + "/databases/(default)"
	b.meter = testbed.NewMeter(t, emu.URL)
	up := b.meter.URL()
	if cfg.Conn == nil {
		o := watch.DialOptions{URL: up}
		if len(tokenFile) > 0 {
			o.TokenFile = tokenFile[0]
		}
		conn, err := watch.Dial(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		cfg.Conn = conn
	}
	if cfg.Policy == nil {
		cfg.Policy = func(string, *firestorepb.Target) fanout.Mode { return fanout.Shared }
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	hub, err := fanout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.hub = hub
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	firestorepb.RegisterFirestoreServer(srv, &front{hub: hub})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Stop(); hub.Close() })
	b.addr = ln.Addr().String()
	return b
}

func dialInsecure(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rest calls the emulator directly as an administrator.
func rest(t testing.TB, method, url, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer owner")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return string(b)
}

func (b *bed) set(t testing.TB, path, fieldsJSON string) {
	t.Helper()
	rest(t, http.MethodPatch, b.emu.DocumentsURL(b.proj)+"/"+path, `{"fields":`+fieldsJSON+`}`)
}

func (b *bed) setV(t testing.TB, path, v string) {
	t.Helper()
	b.set(t, path, `{"v":{"stringValue":"`+v+`"}}`)
}

func (b *bed) del(t testing.TB, path string) {
	t.Helper()
	rest(t, http.MethodDelete, b.emu.DocumentsURL(b.proj)+"/"+path, "")
}

func (b *bed) query(sq *firestorepb.StructuredQuery) *firestorepb.Target {
	return &firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: b.db + "/documents", QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: sq},
	}}}
}

func collection(id string) *firestorepb.StructuredQuery {
	return &firestorepb.StructuredQuery{From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: id}}}
}

func whereEq(sq *firestorepb.StructuredQuery, field, v string) *firestorepb.StructuredQuery {
	sq.Where = &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
		Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: field},
		Op:    firestorepb.StructuredQuery_FieldFilter_EQUAL,
		Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: v}},
	}}}
	return sq
}

func (b *bed) docsTarget(paths ...string) *firestorepb.Target {
	var names []string
	for _, p := range paths {
		names = append(names, b.db+"/documents/"+p)
	}
	return &firestorepb.Target{TargetType: &firestorepb.Target_Documents{Documents: &firestorepb.Target_DocumentsTarget{Documents: names}}}
}

func (b *bed) setRules(t testing.TB, rules string) { b.emu.SetSecurityRules(t, b.proj, rules) }

// listener is a raw gRPC Listen stream and the client-visible state of its targets,
// kept as the Go client keeps it: documents per target, CURRENT, and a snapshot at each
// global NO_CHANGE with a read time.
type listener struct {
	t      testing.TB
	st     firestorepb.Firestore_ListenClient
	cancel context.CancelFunc
	db     string

	mu       sync.Mutex
	docs     map[int32]map[string]string // target → doc id → its "v" (or "<no v>")
	current  map[int32]bool
	tokens   map[int32][]byte
	removed  map[int32]*firestorepb.TargetChange
	readTime time.Time
	latest   map[int32]string // the last snapshot
	log      []*firestorepb.ListenResponse
	snaps    chan map[int32]string // at each consistent snapshot: the current targets' states
	err      error
	ended    chan struct{}
}

// listen opens a Listen stream to addr (the hub, or the emulator when direct) with
// optional authorization.
func listen(t testing.TB, conn *grpc.ClientConn, db, authorization string) *listener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db)
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	st, err := firestorepb.NewFirestoreClient(conn).Listen(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &listener{t: t, st: st, cancel: cancel, db: db,
		docs: map[int32]map[string]string{}, current: map[int32]bool{}, tokens: map[int32][]byte{},
		removed: map[int32]*firestorepb.TargetChange{}, snaps: make(chan map[int32]string, 10000), ended: make(chan struct{})}
	t.Cleanup(l.close)
	go l.run()
	return l
}

func (l *listener) close() {
	l.cancel()
	<-l.ended
}

func (l *listener) add(id int32, target *firestorepb.Target) {
	l.t.Helper()
	tg := cloneTarget(target)
	tg.TargetId = id
	if err := l.st.Send(&firestorepb.ListenRequest{Database: l.db, TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: tg}}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *listener) remove(id int32) {
	l.t.Helper()
	if err := l.st.Send(&firestorepb.ListenRequest{Database: l.db, TargetChange: &firestorepb.ListenRequest_RemoveTarget{RemoveTarget: id}}); err != nil {
		l.t.Fatal(err)
	}
}

func (l *listener) run() {
	defer close(l.ended)
	defer close(l.snaps)
	for {
		resp, err := l.st.Recv()
		if err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			return
		}
		l.apply(resp)
	}
}

func id(name string) string { return name[strings.LastIndex(name, "/")+1:] }

func (l *listener) target(tid int32) map[string]string {
	if l.docs[tid] == nil {
		l.docs[tid] = map[string]string{}
	}
	return l.docs[tid]
}

func (l *listener) apply(resp *firestorepb.ListenResponse) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, resp)
	switch r := resp.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange:
		v := "<no v>"
		if f, ok := r.DocumentChange.GetDocument().GetFields()["v"]; ok {
			v = f.GetStringValue()
		}
		for _, tid := range r.DocumentChange.GetTargetIds() {
			l.target(tid)[id(r.DocumentChange.GetDocument().GetName())] = v
		}
		for _, tid := range r.DocumentChange.GetRemovedTargetIds() {
			delete(l.target(tid), id(r.DocumentChange.GetDocument().GetName()))
		}
	case *firestorepb.ListenResponse_DocumentDelete:
		for _, tid := range r.DocumentDelete.GetRemovedTargetIds() {
			delete(l.target(tid), id(r.DocumentDelete.GetDocument()))
		}
	case *firestorepb.ListenResponse_DocumentRemove:
		for _, tid := range r.DocumentRemove.GetRemovedTargetIds() {
			delete(l.target(tid), id(r.DocumentRemove.GetDocument()))
		}
	case *firestorepb.ListenResponse_TargetChange:
		tc := r.TargetChange
		ids := tc.GetTargetIds()
		if len(ids) == 0 {
			for tid := range l.docs {
				ids = append(ids, tid)
			}
		}
		for _, tid := range ids {
			switch tc.GetTargetChangeType() {
			case firestorepb.TargetChange_ADD:
				l.target(tid)
			case firestorepb.TargetChange_CURRENT:
				l.current[tid] = true
			case firestorepb.TargetChange_RESET:
				l.docs[tid] = map[string]string{}
				l.current[tid] = false
			case firestorepb.TargetChange_REMOVE:
				delete(l.docs, tid)
				delete(l.current, tid)
				l.removed[tid] = tc
			}
			if len(tc.GetResumeToken()) > 0 {
				l.tokens[tid] = tc.GetResumeToken()
			}
		}
		if tc.GetTargetChangeType() == firestorepb.TargetChange_NO_CHANGE && len(tc.GetTargetIds()) == 0 && tc.GetReadTime() != nil {
			rt := tc.GetReadTime().AsTime()
			if rt.Before(l.readTime) {
				l.t.Errorf("global read time went backwards: %v after %v", rt, l.readTime)
			}
			l.readTime = rt
			snap := map[int32]string{}
			for tid, docs := range l.docs {
				if l.current[tid] {
					snap[tid] = render(docs)
				}
			}
			l.latest = snap
			l.snaps <- snap
		}
	}
}

// render is "id=v, ..." sorted.
func render(docs map[string]string) string {
	var out []string
	for k, v := range docs {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// waitState waits for a snapshot where target tid is current with state want, and
// returns the distinct states of tid seen on the way.
func (l *listener) waitState(tid int32, want string) []string {
	l.t.Helper()
	var seen []string
	l.mu.Lock()
	got, ok := l.latest[tid]
	l.mu.Unlock()
	if ok && got == want { // reached while waiting for another target: older snapshots are moot
		for {
			select {
			case <-l.snaps:
			default:
				return []string{want}
			}
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case snap, ok := <-l.snaps:
			if !ok {
				l.t.Fatalf("stream ended (%v) before target %d reached %q; seen %q", l.errNow(), tid, want, seen)
			}
			got, ok := snap[tid]
			if !ok {
				continue
			}
			if len(seen) == 0 || seen[len(seen)-1] != got {
				seen = append(seen, got)
			}
			if got == want {
				return seen
			}
		case <-timeout:
			l.t.Fatalf("target %d did not reach %q within 20s; seen %q", tid, want, seen)
		}
	}
}

func (l *listener) errNow() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// waitEnd waits for the stream to end and returns its error.
func (l *listener) waitEnd() error {
	l.t.Helper()
	select {
	case <-l.ended:
	case <-time.After(20 * time.Second):
		l.t.Fatal("the stream did not end within 20s")
	}
	return l.errNow()
}

// waitRemoved waits for target tid's TargetChange REMOVE.
func (l *listener) waitRemoved(tid int32) *firestorepb.TargetChange {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		tc := l.removed[tid]
		l.mu.Unlock()
		if tc != nil {
			return tc
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.t.Fatalf("target %d not removed within 20s", tid)
	return nil
}

func (l *listener) messages() []*firestorepb.ListenResponse {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*firestorepb.ListenResponse(nil), l.log...)
}

func cloneTarget(t *firestorepb.Target) *firestorepb.Target {
	return protoClone(t)
}

// eventually polls cond until it holds, failing after 20s with msg.
func eventually(t testing.TB, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dialWatch(url string) (*grpc.ClientConn, error) {
	return watch.Dial(context.Background(), watch.DialOptions{URL: url})
}

// startHub serves a hub of cfg on an in-process gRPC server.
// relayedHub starts a hub of Shared views whose upstream is the emulator behind a TCP
// relay the test may cut.
func relayedHub(t *testing.T) (*fanout.Hub, string, *testbed.Relay) {
	t.Helper()
	relay := testbed.NewRelay(t, testbed.Emulator(t).Addr)
	conn, err := dialWatch("http://" + relay.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hub, addr := startHub(t, fanout.Config{Conn: conn, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Policy: func(string, *firestorepb.Target) fanout.Mode { return fanout.Shared }})
	return hub, addr, relay
}

func startHub(t *testing.T, cfg fanout.Config) (*fanout.Hub, string) {
	t.Helper()
	hub, err := fanout.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	firestorepb.RegisterFirestoreServer(srv, &front{hub: hub})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Stop(); hub.Close() })
	return hub, ln.Addr().String()
}
