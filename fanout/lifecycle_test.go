package fanout_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/internal/testbed"
)

// goSnapshots renders each snapshot of q as "id=v, ..." on a channel.
func goSnapshots(t *testing.T, c *firestore.Client, collectionID string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	it := c.Collection(collectionID).Where("status", "==", "open").Snapshots(ctx)
	out := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		for {
			snap, err := it.Next()
			if err != nil {
				return
			}
			var docs []string
			for _, d := range mustAll(snap) {
				v, _ := d.DataAt("v")
				docs = append(docs, d.Ref.ID+"="+v.(string))
			}
			sort.Strings(docs)
			out <- strings.Join(docs, ", ")
		}
	}()
	t.Cleanup(func() { cancel(); <-done; it.Stop() }) // Stop races with Next: after it
	return out
}

func mustAll(s *firestore.QuerySnapshot) []*firestore.DocumentSnapshot {
	docs, _ := s.Documents.GetAll()
	return docs
}

func nextState(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("snapshots ended before %q", want)
			}
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("no snapshot %q within 20s", want)
		}
	}
}

// The official Go client listening through the hub sees the states a direct one sees.
func TestGoClientThroughTheHub(t *testing.T) {
	b := newBed(t, fanout.Config{})
	b.set(t, "orders/a", openDoc("1"))
	ctx := context.Background()
	viaHub, err := firestore.NewClient(ctx, b.proj, option.WithGRPCConn(dialInsecure(t, b.addr)))
	if err != nil {
		t.Fatal(err)
	}
	direct, err := firestore.NewClient(ctx, b.proj, option.WithGRPCConn(dialInsecure(t, b.emu.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	h1, h2, d := goSnapshots(t, viaHub, "orders"), goSnapshots(t, viaHub, "orders"), goSnapshots(t, direct, "orders")
	for _, step := range []struct {
		write func()
		want  string
	}{
		{func() {}, "a=1"},
		{func() { b.set(t, "orders/b", openDoc("1")) }, "a=1, b=1"},
		{func() { b.set(t, "orders/a", `{"v":{"stringValue":"1"},"status":{"stringValue":"closed"}}`) }, "b=1"},
		{func() { b.del(t, "orders/b") }, ""},
	} {
		step.write()
		for _, ch := range []<-chan string{d, h1, h2} {
			nextState(t, ch, step.want)
		}
	}
	if got := b.meter.Snapshot().Requests["Listen"]; got != 1 {
		t.Errorf("upstream Listen streams: %d, want 1 for two Go clients", got)
	}
}

// A client arriving while a view lingers is served from it with no upstream read; the
// view closes once the linger ran out.
func TestLingerReusesTheView(t *testing.T) {
	b := newBed(t, fanout.Config{Linger: time.Hour})
	b.setV(t, "orders/a", "1")
	target := b.query(collection("orders"))
	conn := dialInsecure(t, b.addr)
	first := listen(t, conn, b.db, "")
	first.add(1, target)
	first.waitState(1, "a=1")
	first.close()
	eventually(t, "the first client's target was not released", func() bool { return b.hub.Stats().ClientTargets == 0 })
	received := b.hub.Stats().DocumentsReceived

	second := listen(t, conn, b.db, "")
	second.add(5, target)
	second.waitState(5, "a=1")
	if st := b.hub.Stats(); st.DocumentsReceived != received || st.UpstreamTargets != 1 {
		t.Errorf("stats %+v: a client in the linger made the view read again (received %d before)", st, received)
	}
	if got := b.meter.Snapshot().Requests["Listen"]; got != 1 {
		t.Errorf("upstream Listen streams: %d, want 1", got)
	}
	second.close()

	short := newBed(t, fanout.Config{Linger: 50 * time.Millisecond})
	short.setV(t, "orders/a", "1")
	l := listen(t, dialInsecure(t, short.addr), short.db, "")
	l.add(1, short.query(collection("orders")))
	l.waitState(1, "a=1")
	l.remove(1)
	l.waitRemoved(1)
	eventually(t, "the view outlived its linger", func() bool { return short.hub.Stats().UpstreamTargets == 0 })
}

const ownerRules = `rules_version = '2';
service cloud.firestore {
  match /databases/{db}/documents {
    match /notes/{id} { allow read: if request.auth != null && resource.data.owner == request.auth.uid; }
  }
}`

func ownedBy(owner string) string {
	return `{"owner":{"stringValue":"` + owner + `"},"v":{"stringValue":"` + owner + `"}}`
}

// PerCaller views are shared only by callers with the same identity, listened with
// their credentials: each user sees only what the security rules let them read, and a
// denied listen reaches the client as REMOVE with PERMISSION_DENIED.
func TestPerCallerViewsAreSeparatedByIdentity(t *testing.T) {
	b := newBed(t, fanout.Config{Policy: func(string, *firestorepb.Target) fanout.Mode { return fanout.PerCaller }})
	b.setRules(t, ownerRules)
	b.set(t, "notes/a1", ownedBy("alice"))
	b.set(t, "notes/b1", ownedBy("bob"))
	conn := dialInsecure(t, b.addr)
	aliceTok, bobTok := "Bearer "+testbed.IDToken(b.proj, "alice"), "Bearer "+testbed.IDToken(b.proj, "bob")
	aliceQuery := b.query(whereEq(collection("notes"), "owner", "alice"))

	alice1 := listen(t, conn, b.db, aliceTok)
	alice1.add(1, aliceQuery)
	alice2 := listen(t, conn, b.db, aliceTok)
	alice2.add(2, aliceQuery)
	bob := listen(t, conn, b.db, bobTok)
	bob.add(3, aliceQuery)
	bob.add(4, b.query(whereEq(collection("notes"), "owner", "bob")))

	alice1.waitState(1, "a1=alice")
	alice2.waitState(2, "a1=alice")
	bob.waitState(4, "b1=bob")
	rm := bob.waitRemoved(3)
	if codes.Code(rm.GetCause().GetCode()) != codes.PermissionDenied {
		t.Fatalf("bob's listen of alice's notes: REMOVE with cause %v, want PERMISSION_DENIED", rm.GetCause())
	}
	b.set(t, "notes/a2", ownedBy("alice"))
	alice1.waitState(1, "a1=alice, a2=alice")
	alice2.waitState(2, "a1=alice, a2=alice")
	for _, m := range bob.messages() {
		if dc := m.GetDocumentChange(); dc != nil && strings.Contains(dc.GetDocument().GetName(), "/a") {
			t.Fatalf("bob was sent alice's document %s", dc.GetDocument().GetName())
		}
	}
	// alice's two streams share one view; bob has his own (the denied one closed).
	if st := b.hub.Stats(); st.UpstreamTargets != 2 || st.ViewTargets != 3 {
		t.Errorf("stats %+v: want 2 upstream targets (alice's, bob's) for 3 client targets", st)
	}
}

// A Shared target the proxy's own credentials may not read (a production token
// without access) reaches every client as REMOVE with the upstream's cause, and the
// view is closed.
func TestUpstreamRefusalReachesClients(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	b := newBed(t, fanout.Config{}, tokenFile)
	if err := os.WriteFile(tokenFile, []byte(testbed.IDToken(b.proj, "mallory")), 0o600); err != nil {
		t.Fatal(err)
	}
	b.setRules(t, ownerRules)
	b.set(t, "notes/a1", ownedBy("alice"))
	conn := dialInsecure(t, b.addr)
	var ls []*listener
	for i := range 3 {
		l := listen(t, conn, b.db, "")
		l.add(int32(i+1), b.query(collection("notes")))
		ls = append(ls, l)
	}
	for i, l := range ls {
		rm := l.waitRemoved(int32(i + 1))
		if c := codes.Code(rm.GetCause().GetCode()); c != codes.PermissionDenied && c != codes.Unauthenticated {
			t.Errorf("client %d: REMOVE cause %v, want PERMISSION_DENIED or UNAUTHENTICATED", i, rm.GetCause())
		}
	}
	eventually(t, "the refused view is still held", func() bool { st := b.hub.Stats(); return st.UpstreamTargets == 0 && st.ClientTargets == 0 })
	// The streams stay usable: the client may add other targets.
	ls[0].add(9, b.docsTarget("notes/none"))
	ls[0].waitRemoved(9)
}

// Protocol errors end the stream with INVALID_ARGUMENT and never echo the client's input.
func TestInvalidRequestsEndTheStream(t *testing.T) {
	b := newBed(t, fanout.Config{})
	conn := dialInsecure(t, b.addr)
	good := b.query(collection("orders"))
	bad := b.query(collection("orders"))
	bad.GetQuery().Parent = "projects/other-secret-project/databases/(default)/documents"
	cases := map[string]func(l *listener){
		"duplicate id": func(l *listener) { l.add(1, good); l.add(1, good) },
		"other database": func(l *listener) {
			l.st.Send(&firestorepb.ListenRequest{Database: "projects/other-secret-project/databases/(default)",
				TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: good}})
		},
		"target outside the database": func(l *listener) { l.add(2, bad) },
		"no target":                   func(l *listener) { l.add(3, &firestorepb.Target{}) },
		"negative id":                 func(l *listener) { l.add(-4, good) },
	}
	for name, send := range cases {
		l := listen(t, conn, b.db, "")
		send(l)
		err := l.waitEnd()
		if status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: stream ended with %v, want INVALID_ARGUMENT without the client's input", name, err)
		}
	}
}
