package fanout_test

import (
	"fmt"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/harvest-hub/edge/fanout"
)

func isDoc(m *firestorepb.ListenResponse) bool {
	switch m.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange, *firestorepb.ListenResponse_DocumentDelete, *firestorepb.ListenResponse_DocumentRemove:
		return true
	}
	return false
}

func countDocs(l *listener) (n int) {
	for _, m := range l.messages() {
		if isDoc(m) {
			n++
		}
	}
	return n
}

func openDoc(v string) string {
	return `{"v":{"stringValue":"` + v + `"},"status":{"stringValue":"open"}}`
}

// N clients listening to one shared query through the hub see what a direct listener
// sees at each step (initial results, a change, a removal from the query, a delete),
// and the upstream does the work of one listener.
func TestClientsSeeWhatADirectListenerSees(t *testing.T) {
	b := newBed(t, fanout.Config{})
	b.set(t, "orders/a", openDoc("1"))
	b.set(t, "orders/b", openDoc("1"))
	b.setV(t, "orders/x", "not open")
	target := b.query(whereEq(collection("orders"), "status", "open"))

	direct := listen(t, dialInsecure(t, b.emu.Addr), b.db, "")
	direct.add(7, target)
	hubConn := dialInsecure(t, b.addr)
	const n = 5
	var clients []*listener
	for i := range n {
		l := listen(t, hubConn, b.db, "")
		l.add(int32(10+i), target)
		clients = append(clients, l)
	}
	steps := []struct {
		name  string
		write func()
		want  string
	}{
		{"initial", func() {}, "a=1, b=1"},
		// One write a step: two writes may reach a listener as one snapshot or two, and
		// either is what Firestore may send.
		{"change", func() { b.set(t, "orders/a", openDoc("2")) }, "a=2, b=1"},
		{"create", func() { b.set(t, "orders/c", openDoc("1")) }, "a=2, b=1, c=1"},
		{"removal from the query", func() { b.set(t, "orders/b", `{"v":{"stringValue":"1"},"status":{"stringValue":"closed"}}`) }, "a=2, c=1"},
		{"delete", func() { b.del(t, "orders/a") }, "c=1"},
	}
	for _, s := range steps {
		s.write()
		want := direct.waitState(7, s.want)
		for i, l := range clients {
			got := l.waitState(int32(10+i), s.want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: client %d saw %q, the direct listener %q", s.name, i, got, want)
			}
		}
	}
	if got := b.meter.Snapshot().Requests["Listen"]; got != 1 {
		t.Errorf("upstream Listen streams: %d, want 1 for %d clients", got, n)
	}
	st := b.hub.Stats()
	directDocs := countDocs(direct)
	if st.DocumentsReceived == 0 || float64(st.DocumentsReceived) > 1.2*float64(directDocs) {
		t.Errorf("documents received upstream: %d, want at most 1.2x a direct listener's %d", st.DocumentsReceived, directDocs)
	}
	// The emulator sends a RESET and the full set at each change of a filtered query;
	// the hub sends clients the differences, so they get at most what a direct
	// listener gets.
	clientDocs := countDocs(clients[0])
	for i, l := range clients {
		if got := countDocs(l); got != clientDocs || got > directDocs {
			t.Errorf("client %d got %d document messages, client 0 %d, the direct listener %d", i, got, clientDocs, directDocs)
		}
	}
	if st.UpstreamTargets != 1 || st.ViewTargets != n || st.FanoutRatio != n ||
		st.DocumentsSent != uint64(n*clientDocs) || st.BilledReadsAvoided != int64(st.DocumentsSent)-int64(st.DocumentsReceived) {
		t.Errorf("stats %+v: want 1 upstream target, %d client targets, %d documents sent", st, n, n*clientDocs)
	}
}
