package watch_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/watch"
)

func TestMain(m *testing.M) {
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(testbed.Main(m))
}

// rest calls the emulator directly, as an administrator (no security rules).
func rest(t *testing.T, method, url, body string) string {
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

func setDoc(t *testing.T, emu *testbed.Emu, project, path, v string) {
	t.Helper()
	rest(t, http.MethodPatch, emu.DocumentsURL(project)+"/"+path, `{"fields":{"v":{"stringValue":"`+v+`"}}}`)
}

func deleteDoc(t *testing.T, emu *testbed.Emu, project, path string) {
	t.Helper()
	rest(t, http.MethodDelete, emu.DocumentsURL(project)+"/"+path, "")
}

func collectionTarget(project, collectionID string) *firestorepb.Target {
	return &firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: "projects/" + project + "/databases/(default)/documents",
		QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: collectionID, AllDescendants: true}},
		}},
	}}}
}

// started is a running Watch whose snapshots arrive on snaps.
type started struct {
	w     *watch.Watch
	snaps chan *watch.Snapshot
	stop  func()
}

func start(t *testing.T, url, project string, resume watch.Position, known []*firestorepb.Document) *started {
	t.Helper()
	conn, err := watch.Dial(context.Background(), watch.DialOptions{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &started{snaps: make(chan *watch.Snapshot, 100)}
	s.w, err = watch.New(watch.Config{
		Conn: conn, Database: "projects/" + project + "/databases/(default)",
		Target: collectionTarget(project, "orders"), Resume: resume, Known: known,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnSnapshot: func(_ context.Context, snap *watch.Snapshot) error {
			c := *snap
			c.View = nil
			if snap.Reset {
				c.View = map[string]*firestorepb.Document{}
				for k, v := range snap.View {
					c.View[k] = v
				}
			}
			s.snaps <- &c
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.w.Run(ctx); close(done) }()
	s.stop = func() { cancel(); <-done }
	t.Cleanup(s.stop)
	return s
}

// next waits for the next snapshot with changes (heartbeat snapshots are skipped).
func (s *started) next(t *testing.T) *watch.Snapshot {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case snap := <-s.snaps:
			if len(snap.Changes) > 0 {
				return snap
			}
		case <-timeout:
			t.Fatal("no snapshot with changes within 20s")
		}
	}
}

// summary is "kind id" per change, sorted.
func summary(snap *watch.Snapshot) string {
	var out []string
	for _, c := range snap.Changes {
		out = append(out, c.Kind.String()+" "+c.Name[strings.LastIndex(c.Name, "/")+1:])
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// waitFor reads snapshots until the accumulated changes equal want ("kind id, ...").
func (s *started) waitFor(t *testing.T, want string) []*watch.Snapshot {
	t.Helper()
	var got []string
	var snaps []*watch.Snapshot
	for strings.Join(got, ", ") != want {
		snap := s.next(t)
		snaps = append(snaps, snap)
		got = append(got, strings.Split(summary(snap), ", ")...)
		sort.Strings(got)
		if len(got) > strings.Count(want, ",")+1 {
			t.Fatalf("changes %q, want %q", strings.Join(got, ", "), want)
		}
	}
	return snaps
}

func TestWatchReportsEachKindOfChangeAtConsistentSnapshots(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	setDoc(t, emu, project, "orders/a", "1")
	setDoc(t, emu, project, "farmers/f1/orders/b", "1") // a collection group: any parent
	setDoc(t, emu, project, "products/p", "1")          // another collection: not watched

	s := start(t, emu.URL, project, watch.Position{}, nil)
	first := s.next(t)
	if !first.Reset || summary(first) != "changed a, changed b" || len(first.View) != 2 {
		t.Fatalf("first snapshot: reset=%v changes %q view %d, want a reset with a and b", first.Reset, summary(first), len(first.View))
	}
	if first.ReadTime.IsZero() || len(first.ResumeToken) == 0 {
		t.Fatalf("first snapshot lacks read time or resume token: %v %q", first.ReadTime, first.ResumeToken)
	}

	setDoc(t, emu, project, "orders/c", "1")
	snaps := s.waitFor(t, "changed c")
	if c := snaps[0].Changes[0]; c.Old != nil || c.Doc.GetFields()["v"].GetStringValue() != "1" {
		t.Fatalf("create: old %v doc %v", c.Old, c.Doc)
	}
	setDoc(t, emu, project, "orders/a", "2")
	snaps = s.waitFor(t, "changed a")
	if c := snaps[0].Changes[0]; c.Old.GetFields()["v"].GetStringValue() != "1" || c.Doc.GetFields()["v"].GetStringValue() != "2" {
		t.Fatalf("update: old %v doc %v", c.Old, c.Doc)
	}
	if !snaps[0].ReadTime.After(first.ReadTime) {
		t.Fatalf("read time did not advance: %v then %v", first.ReadTime, snaps[0].ReadTime)
	}
	deleteDoc(t, emu, project, "farmers/f1/orders/b")
	snaps = s.waitFor(t, "deleted b")
	if c := snaps[0].Changes[0]; c.Old == nil || c.Doc != nil {
		t.Fatalf("delete: old %v doc %v", c.Old, c.Doc)
	}
	if st := s.w.Stats(); st.Documents < 5 || !st.ReadTime.Equal(snaps[0].ReadTime) {
		t.Fatalf("stats %+v: want at least 5 documents streamed, read time %v", st, snaps[0].ReadTime)
	}
}

// A Watch resumed from a snapshot's token and view reports only what changed after it,
// deletions included, and nothing it had already reported.
func TestWatchResumesAfterAnAcceptedSnapshot(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	setDoc(t, emu, project, "orders/a", "1")
	setDoc(t, emu, project, "orders/b", "1")
	setDoc(t, emu, project, "orders/c", "1")
	s := start(t, emu.URL, project, watch.Position{}, nil)
	first := s.next(t)
	s.stop()

	setDoc(t, emu, project, "orders/a", "2")
	deleteDoc(t, emu, project, "orders/b")
	setDoc(t, emu, project, "orders/d", "1")

	var known []*firestorepb.Document
	for _, d := range first.View {
		known = append(known, &firestorepb.Document{Name: d.Name, UpdateTime: d.UpdateTime})
	}
	r := start(t, emu.URL, project, watch.Position{ResumeToken: first.ResumeToken, ReadTime: first.ReadTime}, known)
	r.waitFor(t, "changed a, changed d, deleted b")
}

// A token the upstream refuses makes the Watch listen from scratch and report the
// difference with the view it had: a document gone since is a deletion.
func TestWatchResetReportsTheDifferenceWithTheKnownView(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	setDoc(t, emu, project, "orders/a", "1")
	setDoc(t, emu, project, "orders/b", "1")
	s := start(t, emu.URL, project, watch.Position{}, nil)
	first := s.next(t)
	s.stop()
	deleteDoc(t, emu, project, "orders/b")
	setDoc(t, emu, project, "orders/c", "1")

	var known []*firestorepb.Document
	for _, d := range first.View {
		known = append(known, &firestorepb.Document{Name: d.Name, UpdateTime: d.UpdateTime})
	}
	r := start(t, emu.URL, project, watch.Position{ResumeToken: []byte("not a token"), ReadTime: first.ReadTime}, known)
	snaps := r.waitFor(t, "changed c, deleted b")
	if !snaps[len(snaps)-1].Reset {
		t.Fatal("the snapshot after a refused token is not marked Reset")
	}
	if st := r.w.Stats(); st.Resets == 0 {
		t.Fatalf("stats %+v: want the reset counted", st)
	}
}

// A cut connection is resumed: what changed while it was down is reported once.
func TestWatchReconnectsAndLosesNothing(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	setDoc(t, emu, project, "orders/a", "1")
	relay := testbed.NewRelay(t, emu.Addr)
	s := start(t, "http://"+relay.Addr(), project, watch.Position{}, nil)
	s.next(t)
	relay.Cut()
	setDoc(t, emu, project, "orders/a", "2")
	setDoc(t, emu, project, "orders/b", "1")
	relay.Restore()
	s.waitFor(t, "changed a, changed b")
	if st := s.w.Stats(); st.Reconnects == 0 {
		t.Fatalf("stats %+v: want a reconnect", st)
	}
}
