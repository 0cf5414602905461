package watch_test

// The Listen protocol cases the emulator does not produce on demand (existence filters,
// snapshots before CURRENT, a refused snapshot), against a scripted gRPC Firestore.

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/watch"
)

// fakeFirestore serves Listen from scripts: the n-th stream runs scripts[n] with the
// target the client added.
type fakeFirestore struct {
	firestorepb.UnimplementedFirestoreServer
	streams chan func(add *firestorepb.Target, send func(*firestorepb.ListenResponse))
}

func (f *fakeFirestore) Listen(st firestorepb.Firestore_ListenServer) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	script := <-f.streams
	script(req.GetAddTarget(), func(r *firestorepb.ListenResponse) { st.Send(r) })
	<-st.Context().Done() // the client ends streams it no longer trusts
	return nil
}

func startFake(t *testing.T) (*fakeFirestore, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFirestore{streams: make(chan func(*firestorepb.Target, func(*firestorepb.ListenResponse)), 10)}
	srv := grpc.NewServer()
	firestorepb.RegisterFirestoreServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return f, "http://" + ln.Addr().String()
}

const fakeDB = "projects/p/databases/(default)"

func doc(id string, updated int64) *firestorepb.ListenResponse {
	return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_DocumentChange{DocumentChange: &firestorepb.DocumentChange{
		Document: &firestorepb.Document{Name: fakeDB + "/documents/orders/" + id,
			CreateTime: timestamppb.New(time.Unix(1, 0)), UpdateTime: timestamppb.New(time.Unix(updated, 0))},
		TargetIds: []int32{1},
	}}}
}

func targetChange(typ firestorepb.TargetChange_TargetChangeType, token string, readTime int64, ids ...int32) *firestorepb.ListenResponse {
	tc := &firestorepb.TargetChange{TargetChangeType: typ, TargetIds: ids, ResumeToken: []byte(token)}
	if readTime > 0 {
		tc.ReadTime = timestamppb.New(time.Unix(readTime, 0))
	}
	return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_TargetChange{TargetChange: tc}}
}

func snapshotAt(readTime int64, token string) *firestorepb.ListenResponse {
	return targetChange(firestorepb.TargetChange_NO_CHANGE, token, readTime)
}

func runFake(t *testing.T, url string, onSnapshot func(*watch.Snapshot) error) *watch.Watch {
	t.Helper()
	conn, err := watch.Dial(context.Background(), watch.DialOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w, err := watch.New(watch.Config{Conn: conn, Database: fakeDB, Target: collectionTarget("p", "orders"),
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnSnapshot: func(_ context.Context, s *watch.Snapshot) error { return onSnapshot(s) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func recv(t *testing.T, ch <-chan *watch.Snapshot) *watch.Snapshot {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot")
	}
	return nil
}

// An existence filter that disagrees with the view makes the Watch listen again without
// its resume token and report what the complete state lacks as deleted.
func TestExistenceFilterMismatchResets(t *testing.T) {
	f, url := startFake(t)
	secondAdd := make(chan *firestorepb.Target, 1)
	f.streams <- func(_ *firestorepb.Target, send func(*firestorepb.ListenResponse)) {
		send(targetChange(firestorepb.TargetChange_ADD, "", 0, 1))
		send(doc("a", 1))
		send(doc("b", 1))
		send(snapshotAt(5, "early")) // not CURRENT yet: no snapshot
		send(targetChange(firestorepb.TargetChange_CURRENT, "t1", 10, 1))
		send(snapshotAt(10, "t1"))
		send(&firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_Filter{Filter: &firestorepb.ExistenceFilter{TargetId: 1, Count: 1}}})
	}
	f.streams <- func(add *firestorepb.Target, send func(*firestorepb.ListenResponse)) {
		secondAdd <- add
		send(targetChange(firestorepb.TargetChange_ADD, "", 0, 1))
		send(doc("a", 1))
		send(targetChange(firestorepb.TargetChange_CURRENT, "t2", 20, 1))
		send(snapshotAt(20, "t2"))
	}
	snaps := make(chan *watch.Snapshot, 10)
	w := runFake(t, url, func(s *watch.Snapshot) error { snaps <- s; return nil })

	first := recv(t, snaps)
	if !first.Reset || summary(first) != "changed a, changed b" || first.ReadTime.Unix() != 10 || string(first.ResumeToken) != "t1" {
		t.Fatalf("first snapshot %q reset=%v at %v token %q: want a and b at the CURRENT snapshot 10, token t1",
			summary(first), first.Reset, first.ReadTime, first.ResumeToken)
	}
	if add := <-secondAdd; len(add.GetResumeToken()) != 0 {
		t.Fatalf("re-listened with resume token %q after a mismatch: want none", add.GetResumeToken())
	}
	second := recv(t, snaps)
	if !second.Reset || summary(second) != "deleted b" || second.Changes[0].Old == nil {
		t.Fatalf("after the reset: %q reset=%v, want b deleted, with its old version", summary(second), second.Reset)
	}
	if st := w.Stats(); st.Resets != 1 || st.Reconnects != 1 {
		t.Fatalf("stats %+v: want one reset, one reconnect", st)
	}
}

// A snapshot OnSnapshot refuses is not taken: the Watch resumes from the last accepted
// token and the same changes are reported again.
func TestRefusedSnapshotIsReportedAgain(t *testing.T) {
	f, url := startFake(t)
	resumedWith := make(chan string, 1)
	f.streams <- func(_ *firestorepb.Target, send func(*firestorepb.ListenResponse)) {
		send(targetChange(firestorepb.TargetChange_ADD, "", 0, 1))
		send(targetChange(firestorepb.TargetChange_CURRENT, "t1", 10, 1))
		send(snapshotAt(10, "t1"))
		send(doc("a", 11))
		send(snapshotAt(12, "t2"))
	}
	f.streams <- func(add *firestorepb.Target, send func(*firestorepb.ListenResponse)) {
		resumedWith <- string(add.GetResumeToken())
		send(targetChange(firestorepb.TargetChange_ADD, "", 0, 1))
		send(doc("a", 11))
		send(targetChange(firestorepb.TargetChange_CURRENT, "t3", 13, 1))
		send(snapshotAt(13, "t3"))
	}
	snaps := make(chan *watch.Snapshot, 10)
	refused := false
	runFake(t, url, func(s *watch.Snapshot) error {
		if len(s.Changes) > 0 && !refused {
			refused = true
			return errors.New("cannot emit now")
		}
		snaps <- s
		return nil
	})
	if s := recv(t, snaps); len(s.Changes) != 0 || s.ReadTime.Unix() != 10 {
		t.Fatalf("first snapshot %q at %v, want the empty one at 10", summary(s), s.ReadTime)
	}
	if tok := <-resumedWith; tok != "t1" {
		t.Fatalf("resumed with %q, want the accepted snapshot's token t1", tok)
	}
	if s := recv(t, snaps); summary(s) != "changed a" || string(s.ResumeToken) != "t3" {
		t.Fatalf("after the refusal: %q token %q, want a again with t3", summary(s), s.ResumeToken)
	}
}
