package fanout_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/harvest-hub/edge/fanout"
)

func ref(p string) *firestorepb.StructuredQuery_FieldReference {
	return &firestorepb.StructuredQuery_FieldReference{FieldPath: p}
}

func orderBy(sq *firestorepb.StructuredQuery, field string, desc bool) *firestorepb.StructuredQuery {
	d := firestorepb.StructuredQuery_ASCENDING
	if desc {
		d = firestorepb.StructuredQuery_DESCENDING
	}
	sq.OrderBy = append(sq.OrderBy, &firestorepb.StructuredQuery_Order{Field: ref(field), Direction: d})
	return sq
}

// runQuery asks the emulator directly; the answer's document ids in order.
func (b *bed) runQuery(t *testing.T, sq *firestorepb.StructuredQuery) []string {
	t.Helper()
	conn, err := dialWatch(b.emu.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "google-cloud-resource-prefix", b.db)
	st, err := firestorepb.NewFirestoreClient(conn).RunQuery(ctx, &firestorepb.RunQueryRequest{Parent: b.db + "/documents",
		QueryType: &firestorepb.RunQueryRequest_StructuredQuery{StructuredQuery: sq}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for {
		r, err := st.Recv()
		if err != nil {
			break
		}
		if r.GetDocument() != nil {
			ids = append(ids, id(r.GetDocument().GetName()))
		}
	}
	return ids
}

// A query answered from a current view lists its documents in the order the emulator
// answers the same query: values of every type, both directions, implicit orders.
func TestLookupQueryOrdersAsFirestore(t *testing.T) {
	b := newBed(t, fanout.Config{})
	values := map[string]string{
		"null": `{"nullValue":null}`, "false": `{"booleanValue":false}`, "true": `{"booleanValue":true}`,
		"nan": `{"doubleValue":"NaN"}`, "neg": `{"doubleValue":-2.5}`, "int1": `{"integerValue":"1"}`, "dbl1": `{"doubleValue":1.0}`,
		"big": `{"integerValue":"9007199254740993"}`, "time": `{"timestampValue":"2024-01-01T00:00:00Z"}`,
		"str": `{"stringValue":"b"}`, "strA": `{"stringValue":"B"}`, "uni": `{"stringValue":"é"}`, "bytes": `{"bytesValue":"AAE="}`,
		"ref1": `{"referenceValue":"projects/` + b.proj + `/databases/(default)/documents/a/b"}`,
		"ref2": `{"referenceValue":"projects/` + b.proj + `/databases/(default)/documents/a-x/b"}`,
		"geo":  `{"geoPointValue":{"latitude":1,"longitude":2}}`, "arr": `{"arrayValue":{"values":[{"integerValue":"1"}]}}`,
		"arr2": `{"arrayValue":{"values":[{"integerValue":"1"},{"nullValue":null}]}}`,
		"map":  `{"mapValue":{"fields":{"a":{"integerValue":"1"}}}}`, "map2": `{"mapValue":{"fields":{"a":{"integerValue":"0"},"b":{"integerValue":"0"}}}}`,
	}
	i := 0
	for name, v := range values {
		i++
		b.set(t, "mixed/"+name, fmt.Sprintf(`{"v":%s,"n":{"integerValue":"%d"},"g":{"integerValue":"%d"}}`, v, i, i%3))
	}
	b.set(t, "mixed/a-b", `{"v":{"stringValue":"b"},"n":{"integerValue":"0"},"g":{"integerValue":"1"}}`)

	queries := map[string]func() *firestorepb.StructuredQuery{
		"order by v":      func() *firestorepb.StructuredQuery { return orderBy(collection("mixed"), "v", false) },
		"order by v desc": func() *firestorepb.StructuredQuery { return orderBy(collection("mixed"), "v", true) },
		"by name":         func() *firestorepb.StructuredQuery { return collection("mixed") },
		"order by g desc, limit": func() *firestorepb.StructuredQuery {
			q := orderBy(collection("mixed"), "g", true)
			q.Limit = wrapperspb.Int32(7)
			return q
		},
		"inequality, implicit order": func() *firestorepb.StructuredQuery {
			q := collection("mixed")
			q.Where = &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
				Field: ref("n"), Op: firestorepb.StructuredQuery_FieldFilter_GREATER_THAN, Value: &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: 3}}}}}
			return orderBy(q, "g", true)
		},
	}
	conn := dialInsecure(t, b.addr)
	tid := int32(0)
	for name, mk := range queries {
		tid++
		l := listen(t, conn, b.db, "")
		l.add(tid, b.query(mk()))
		want := b.runQuery(t, mk())
		if len(want) < 7 {
			t.Fatalf("%s: the emulator answered %q: too few documents to tell orders apart", name, want)
		}
		eventually(t, name+": the view did not become current", func() bool {
			_, _, ok := b.hub.LookupQuery(fanout.QueryViewKey(b.db, b.db+"/documents", mk(), fanout.SharedScope))
			return ok
		})
		docs, rt, ok := b.hub.LookupQuery(fanout.QueryViewKey(b.db, b.db+"/documents", mk(), fanout.SharedScope))
		if !ok || rt.IsZero() {
			t.Fatalf("%s: no answer from the view", name)
		}
		var got []string
		for _, d := range docs {
			got = append(got, id(d.GetName()))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n view     %q\n emulator %q", name, got, want)
		}
		if _, _, ok := b.hub.LookupQuery(fanout.QueryViewKey(b.db, b.db+"/documents", mk(), fanout.CallerScope("someone"))); ok {
			t.Errorf("%s: a shared view answered another scope", name)
		}
	}
}

// Documents targets answer found and missing; query views only found; writes the views
// see are reported through OnChange.
func TestLookupDocumentAndOnChange(t *testing.T) {
	var mu sync.Mutex
	changed := map[string]bool{}
	b := newBed(t, fanout.Config{OnChange: func(db string, names []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range names {
			changed[id(n)] = true
		}
	}})
	b.setV(t, "orders/a", "1")
	b.setV(t, "products/p", "1")
	conn := dialInsecure(t, b.addr)
	l := listen(t, conn, b.db, "")
	l.add(1, b.docsTarget("products/p", "products/gone"))
	l.add(2, b.query(collection("orders")))
	l.waitState(1, "p=1")
	l.waitState(2, "a=1")
	name := func(p string) string { return b.db + "/documents/" + p }

	if d, p, rt := b.hub.LookupDocument(b.db, name("products/p"), fanout.SharedScope); p != fanout.Found || d.GetFields()["v"].GetStringValue() != "1" || rt.IsZero() {
		t.Errorf("products/p: %v %v at %v, want found", p, d, rt)
	}
	if _, p, _ := b.hub.LookupDocument(b.db, name("products/gone"), fanout.SharedScope); p != fanout.Missing {
		t.Errorf("products/gone: %v, want missing (a documents target covers it)", p)
	}
	if _, p, _ := b.hub.LookupDocument(b.db, name("orders/a"), fanout.SharedScope); p != fanout.Found {
		t.Errorf("orders/a: %v, want found in the query view", p)
	}
	if _, p, _ := b.hub.LookupDocument(b.db, name("orders/zz"), fanout.SharedScope); p != fanout.Unknown {
		t.Errorf("orders/zz: %v, want unknown (a query view cannot say missing)", p)
	}
	if _, p, _ := b.hub.LookupDocument(b.db, name("products/p"), fanout.CallerScope("x")); p != fanout.Unknown {
		t.Errorf("another scope: %v, want unknown", p)
	}

	b.setV(t, "orders/a", "2")
	b.setV(t, "products/p", "2")
	l.waitState(2, "a=2")
	l.waitState(1, "p=2")
	mu.Lock()
	got := fmt.Sprint(changed)
	mu.Unlock()
	if got != "map[a:true p:true]" {
		t.Errorf("OnChange saw %s, want a and p (and not the views' initial documents)", got)
	}
	if d, _, _ := b.hub.LookupDocument(b.db, name("orders/a"), fanout.SharedScope); d.GetFields()["v"].GetStringValue() != "2" {
		t.Errorf("orders/a after the write: %v", d)
	}
}

// Passthrough targets are listened on a private upstream stream with the caller's
// credentials and relayed with the client's ids, beside shared targets on the same
// client stream.
func TestPassthroughBesideSharedTargets(t *testing.T) {
	b := newBed(t, fanout.Config{Policy: func(_ string, tg *firestorepb.Target) fanout.Mode {
		if strings.HasSuffix(tg.GetQuery().GetStructuredQuery().GetFrom()[0].GetCollectionId(), "private") {
			return fanout.Passthrough
		}
		return fanout.Shared
	}})
	b.setV(t, "orders/a", "1")
	b.setV(t, "private/s", "1")
	l := listen(t, dialInsecure(t, b.addr), b.db, "Bearer owner")
	l.add(1, b.query(collection("orders")))
	l.add(2, b.query(collection("private")))
	l.waitState(1, "a=1")
	l.waitState(2, "s=1")
	b.setV(t, "private/s", "2")
	l.waitState(2, "s=2")
	l.remove(2)
	l.waitRemoved(2)
	b.setV(t, "orders/a", "2")
	l.waitState(1, "a=2")
	if st := b.hub.Stats(); st.ClientTargets != 1 || st.UpstreamTargets != 1 {
		t.Errorf("stats %+v: want the shared target only", st)
	}
	if got := b.meter.Snapshot().Requests["Listen"]; got != 2 {
		t.Errorf("upstream Listen streams: %d, want 2 (the view's, the private one)", got)
	}
}

// A view cut off from the upstream answers no lookup (it may be missing changes made
// meanwhile) until its stream is back and consistent again; its clients stay.
func TestLookupsStopWhileTheUpstreamIsAway(t *testing.T) {
	b := newBed(t, fanout.Config{})
	hub, addr, relay := relayedHub(t)
	b.setV(t, "orders/a", "1")
	l := listen(t, dialInsecure(t, addr), b.db, "")
	l.add(1, b.docsTarget("orders/a"))
	l.waitState(1, "a=1")
	name := b.db + "/documents/orders/a"
	found := func() bool {
		_, p, _ := hub.LookupDocumentTarget(fanout.DocumentViewKey(b.db, name, fanout.SharedScope))
		return p == fanout.Found
	}
	eventually(t, "the view to answer", found)
	relay.Cut()
	eventually(t, "the cut-off view to stop answering", func() bool { return !found() })
	b.setV(t, "orders/a", "2") // a change the view cannot see yet
	if d, p, _ := hub.LookupDocumentTarget(fanout.DocumentViewKey(b.db, name, fanout.SharedScope)); p != fanout.Unknown {
		t.Errorf("while the upstream is away: %v %v, want unknown", p, d)
	}
	relay.Restore()
	l.waitState(1, "a=2")
	eventually(t, "the view to answer again, with the change", func() bool {
		d, p, _ := hub.LookupDocumentTarget(fanout.DocumentViewKey(b.db, name, fanout.SharedScope))
		return p == fanout.Found && d.GetFields()["v"].GetStringValue() == "2"
	})
}
