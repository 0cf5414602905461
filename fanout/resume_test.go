package fanout_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/fanout"
)

func withToken(t *firestorepb.Target, token []byte) *firestorepb.Target {
	c := protoClone(t)
	c.ResumeType = &firestorepb.Target_ResumeToken{ResumeToken: token}
	return c
}

func kinds(msgs []*firestorepb.ListenResponse) string {
	var out []string
	for _, m := range msgs {
		switch r := m.GetResponseType().(type) {
		case *firestorepb.ListenResponse_TargetChange:
			if len(r.TargetChange.GetTargetIds()) == 0 {
				out = append(out, "GLOBAL")
			} else {
				out = append(out, r.TargetChange.GetTargetChangeType().String())
			}
		case *firestorepb.ListenResponse_DocumentChange:
			out = append(out, "change "+id(r.DocumentChange.GetDocument().GetName()))
		case *firestorepb.ListenResponse_DocumentDelete:
			out = append(out, "delete "+id(r.DocumentDelete.GetDocument()))
		case *firestorepb.ListenResponse_DocumentRemove:
			out = append(out, "remove "+id(r.DocumentRemove.GetDocument()))
		}
	}
	return strings.Join(out, ", ")
}

// A client resuming with the hub's token is sent exactly what changed since (nothing,
// or the changes and deletions); one resuming with any other token, or a read time,
// gets a RESET then the full set, so documents deleted meanwhile disappear.
func TestResume(t *testing.T) {
	b := newBed(t, fanout.Config{Linger: time.Hour})
	b.setV(t, "orders/a", "1")
	b.setV(t, "orders/b", "1")
	target := b.query(collection("orders"))
	conn := dialInsecure(t, b.addr)

	first := listen(t, conn, b.db, "")
	first.add(1, target)
	first.waitState(1, "a=1, b=1")
	first.mu.Lock()
	token := first.tokens[1]
	first.mu.Unlock()
	first.close()

	same := listen(t, conn, b.db, "")
	same.add(1, withToken(target, token))
	same.waitState(1, "")
	if got := kinds(same.messages()); got != "ADD, CURRENT, GLOBAL" {
		t.Errorf("resumed with nothing changed: %q, want ADD, CURRENT, GLOBAL", got)
	}
	same.close()

	b.setV(t, "orders/a", "2")
	b.del(t, "orders/b")
	b.setV(t, "orders/c", "1")
	watcher := listen(t, conn, b.db, "") // waits for the view to see the writes
	watcher.add(1, target)
	watcher.waitState(1, "a=2, c=1")

	changed := listen(t, conn, b.db, "")
	changed.add(1, withToken(target, token))
	changed.waitState(1, "a=2, c=1") // applied over nothing: the client had a=1, b=1
	// b leaves as a remove: the emulator answers every change with RESET and the full
	// set, from which a view cannot tell a deletion from a document that stopped matching.
	if got := kinds(changed.messages()); got != "ADD, change a, change c, remove b, CURRENT, GLOBAL" {
		t.Errorf("resumed after changes: %q, want ADD, change a, change c, remove b, CURRENT, GLOBAL", got)
	}

	for name, tg := range map[string]*firestorepb.Target{
		"foreign token": withToken(target, []byte("an upstream token")),
		"read time": func() *firestorepb.Target {
			c := protoClone(target)
			c.ResumeType = &firestorepb.Target_ReadTime{ReadTime: first.messages()[len(first.messages())-1].GetTargetChange().GetReadTime()}
			return c
		}(),
	} {
		l := listen(t, conn, b.db, "")
		l.add(3, tg)
		l.waitState(3, "a=2, c=1")
		if got := kinds(l.messages()); got != "ADD, RESET, change a, change c, CURRENT, GLOBAL" {
			t.Errorf("%s: %q, want ADD, RESET, the full set, CURRENT, GLOBAL", name, got)
		}
	}
}

// A once target gets its current set, then is removed.
func TestOnceTargetIsRemovedAfterItsFirstSnapshot(t *testing.T) {
	b := newBed(t, fanout.Config{})
	b.setV(t, "orders/a", "1")
	l := listen(t, dialInsecure(t, b.addr), b.db, "")
	tg := b.query(collection("orders"))
	tg.Once = true
	l.add(1, tg)
	l.waitRemoved(1)
	if got := kinds(l.messages()); got != "ADD, change a, CURRENT, GLOBAL, REMOVE" {
		t.Errorf("once: %q, want ADD, change a, CURRENT, GLOBAL, REMOVE", got)
	}
}

// Clients that vanish free everything: no goroutine is left after 1,000 connects and
// disconnects, and the hub holds no client target.
func TestVanishingClientsLeakNothing(t *testing.T) {
	b := newBed(t, fanout.Config{})
	b.setV(t, "orders/a", "1")
	target := b.query(collection("orders"))
	conn := dialInsecure(t, b.addr)
	warm := listen(t, conn, b.db, "")
	warm.add(1, target)
	warm.waitState(1, "a=1")
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 200 { // settled: the same count over 50ms
			time.Sleep(50 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m == n {
				return n
			}
			n = m
		}
		return n
	}
	before := settle()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "google-cloud-resource-prefix", b.db))
			defer cancel()
			st, err := firestorepb.NewFirestoreClient(conn).Listen(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			tg := protoClone(target)
			tg.TargetId = 1
			st.Send(&firestorepb.ListenRequest{Database: b.db, TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: tg}})
			if i%2 == 0 { // half read their first message, half vanish at once
				st.Recv()
			}
		}()
	}
	wg.Wait()
	eventually(t, "client streams still held", func() bool { st := b.hub.Stats(); return st.ClientStreams == 1 && st.ClientTargets == 1 })
	if after := settle(); after > before+5 {
		t.Fatalf("goroutines: %d before, %d after 1,000 connects and disconnects", before, after)
	}
}

// slowStream is a client stream that never reads: Send blocks until the stream ends.
type slowStream struct {
	ctx  context.Context
	reqs chan *firestorepb.ListenRequest
}

func (s *slowStream) Context() context.Context { return s.ctx }
func (s *slowStream) Recv() (*firestorepb.ListenRequest, error) {
	select {
	case r := <-s.reqs:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}
func (s *slowStream) Send(*firestorepb.ListenResponse) error {
	<-s.ctx.Done()
	return s.ctx.Err()
}

// A client too slow to follow is ended with RESOURCE_EXHAUSTED; the other clients of
// the view carry on.
func TestSlowClientIsEndedAndOthersContinue(t *testing.T) {
	b := newBed(t, fanout.Config{ClientQueue: 8})
	b.setV(t, "orders/a", "0")
	target := b.query(collection("orders"))
	fast := listen(t, dialInsecure(t, b.addr), b.db, "")
	fast.add(1, target)
	fast.waitState(1, "a=0")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := &slowStream{ctx: ctx, reqs: make(chan *firestorepb.ListenRequest, 1)}
	tg := protoClone(target)
	tg.TargetId = 1
	slow.reqs <- &firestorepb.ListenRequest{Database: b.db, TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: tg}}
	served := make(chan error, 1)
	go func() { served <- b.hub.Serve(slow, fanout.Caller{Database: b.db}) }()
	for i := 1; ; i++ {
		v := strings.Repeat("x", i)
		b.setV(t, "orders/a", v)
		fast.waitState(1, "a="+v)
		select {
		case err := <-served:
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("the slow client ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			if st := b.hub.Stats(); st.SlowClients != 1 {
				t.Errorf("stats %+v: want 1 slow client", st)
			}
			b.setV(t, "orders/a", "after")
			fast.waitState(1, "a=after")
			return
		default:
		}
		if i > 100 {
			t.Fatal("the slow client was not ended after 100 snapshots")
		}
	}
}

// The upstream connection cut mid-flight: the view resumes and clients see every
// change, never a wrong snapshot.
func TestUpstreamCutRecovers(t *testing.T) {
	b := newBed(t, fanout.Config{})
	_, addr, relay := relayedHub(t)
	b.setV(t, "orders/a", "1")
	b.setV(t, "orders/b", "1")
	l := listen(t, dialInsecure(t, addr), b.db, "")
	l.add(1, b.query(collection("orders")))
	l.waitState(1, "a=1, b=1")
	relay.Cut()
	b.setV(t, "orders/a", "2")
	b.del(t, "orders/b")
	b.setV(t, "orders/c", "1")
	relay.Restore()
	seen := l.waitState(1, "a=2, c=1")
	for _, s := range seen[:len(seen)-1] {
		if s != "a=1, b=1" && s != "a=2, b=1" && s != "a=2" && s != "a=2, c=1" {
			t.Errorf("a snapshot no sequence of the writes produced: %q (seen %q)", s, seen)
		}
	}
}
