package testbed_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy/webchannel"
)

// seedFruit writes n "fruit" products and two "veg" ones directly on the emulator.
func seedFruit(t *testing.T, emuBase string, n int) {
	t.Helper()
	for i := range n {
		mustCall(t, http.DefaultClient, "POST", fmt.Sprintf("%s/products?documentId=fruit-%d", emuBase, i),
			`{"fields":{"category":{"stringValue":"fruit"}}}`, false)
	}
	for i := range 2 {
		mustCall(t, http.DefaultClient, "POST", fmt.Sprintf("%s/products?documentId=veg-%d", emuBase, i),
			`{"fields":{"category":{"stringValue":"veg"}}}`, false)
	}
}

// fruitTarget is a Listen target for the query products where category == "fruit".
func fruitTarget(project string, id int32) *firestorepb.Target {
	return &firestorepb.Target{TargetId: id, TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: "projects/" + project + "/databases/(default)/documents",
		QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "products"}},
			Where: &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
				Field: &firestorepb.StructuredQuery_FieldReference{FieldPath: "category"}, Op: firestorepb.StructuredQuery_FieldFilter_EQUAL,
				Value: &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: "fruit"}}}}},
		}}}}}
}

// consistent reports whether r ends a consistent snapshot: a NO_CHANGE target change
// for every target with a read time (Firestore's global snapshot marker).
func consistent(r *firestorepb.ListenResponse) bool {
	tc := r.GetTargetChange()
	return tc != nil && tc.GetTargetChangeType() == firestorepb.TargetChange_NO_CHANGE &&
		len(tc.GetTargetIds()) == 0 && tc.GetReadTime() != nil
}

// The meter counts a gRPC listener's documents: an initial result of N documents is N,
// a change counts what the upstream streamed for it, and the target asked for is one.
func TestMeterCountsGRPCListen(t *testing.T) {
	emu := testbed.Emulator(t)
	m := testbed.NewMeter(t, emu.URL)
	p := emu.NewProject(t)
	const n = 7
	seedFruit(t, emu.DocumentsURL(p), n)

	cc, err := grpc.NewClient("passthrough:///"+m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := "projects/" + p + "/databases/(default)"
	ctx = metadata.AppendToOutgoingContext(ctx, "google-cloud-resource-prefix", db, "authorization", "Bearer owner")
	ls, err := firestorepb.NewFirestoreClient(cc).Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Send(&firestorepb.ListenRequest{Database: db,
		TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: fruitTarget(p, 2)}}); err != nil {
		t.Fatal(err)
	}
	// untilConsistent reads to the next consistent snapshot and returns how many
	// document messages came before it.
	untilConsistent := func() int64 {
		var docs int64
		for {
			r, err := ls.Recv()
			if err != nil {
				t.Fatalf("Listen: %v", err)
			}
			if consistent(r) {
				return docs
			}
			if r.GetDocumentChange() != nil || r.GetDocumentDelete() != nil || r.GetDocumentRemove() != nil {
				docs++
			}
		}
	}
	if seen := untilConsistent(); seen != n {
		t.Fatalf("the listener received %d documents, want %d (the test's own premise)", seen, n)
	}
	if c := m.Snapshot(); c.ListenDocuments != n || c.ListenTargets != 1 || c.ListenTargetsByAuth["Bearer owner"] != 1 {
		t.Errorf("after the initial result of %d documents: ListenDocuments %d, ListenTargets %d %v; want %d and 1 with Bearer owner",
			n, c.ListenDocuments, c.ListenTargets, c.ListenTargetsByAuth, n)
	}

	// The emulator answers a change with a RESET and the whole result again (Firestore
	// sends the one document): the meter counts what the upstream streamed, whatever it is.
	m.Reset()
	mustCall(t, http.DefaultClient, "PATCH", emu.DocumentsURL(p)+"/products/fruit-0",
		`{"fields":{"category":{"stringValue":"fruit"},"price":{"integerValue":"3"}}}`, false)
	seen := untilConsistent()
	if seen < 1 {
		t.Fatalf("the listener received no document for a change")
	}
	if c := m.Snapshot(); c.ListenDocuments != seen || c.ListenTargets != 0 {
		t.Errorf("after one change the listener received %d documents: ListenDocuments %d, ListenTargets %d; want %d and 0",
			seen, c.ListenDocuments, c.ListenTargets, seen)
	}
}

// channel is a minimal client of the WebChannel Listen channel, written for this test
// (no Go library speaks WebChannel): a session-opening POST carrying the first request,
// then backchannel GETs.
type channel struct {
	t    *testing.T
	base string // .../Listen/channel?VER=8&database=...
	sid  string
}

func openChannel(t *testing.T, meterURL, db, firstRequest string) *channel {
	t.Helper()
	c := &channel{t: t, base: meterURL + "/google.firestore.v1.Firestore/Listen/channel?VER=8&database=" + url.QueryEscape(db)}
	resp, err := http.Post(c.base+"&RID=1&CVER=22&X-HTTP-Session-Id=gsessionid&zx=a&t=1",
		"application/x-www-form-urlencoded", strings.NewReader("headers="+url.QueryEscape("Authorization:Bearer owner\r\n")+
			"&count=1&ofs=0&req0___data__="+url.QueryEscape(firstRequest)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var split webchannel.Splitter
	for _, seg := range split.Feed(body) {
		if entries, err := webchannel.ParseChunk(seg.Chunk); err == nil {
			c.sid, _ = webchannel.SessionID(entries)
		}
	}
	if resp.StatusCode != http.StatusOK || c.sid == "" {
		t.Fatalf("Listen channel handshake: %s %q", resp.Status, body)
	}
	return c
}

// messages opens a backchannel GET from aid (streaming when ci is "0", one long-poll
// answer when "1") and calls visit with each data message until visit returns false or
// the answer ends; it returns the last array id seen.
func (c *channel) messages(ctx context.Context, aid int64, ci string, visit func(*firestorepb.ListenResponse) bool) int64 {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s&SID=%s&RID=rpc&AID=%d&CI=%s&TYPE=xmlhttp&zx=b&t=1",
		c.base, url.QueryEscape(c.sid), aid, ci), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var split webchannel.Splitter
	rd := bufio.NewReader(resp.Body)
	buf := make([]byte, 4096)
	last := aid
	for {
		n, err := rd.Read(buf)
		for _, seg := range split.Feed(buf[:n]) {
			entries, perr := webchannel.ParseChunk(seg.Chunk)
			if perr != nil {
				c.t.Fatalf("backchannel chunk %q: %v", seg.Raw, perr)
			}
			for _, e := range entries {
				last = e.ArrayID
				msg, ok := e.Message()
				if !ok {
					continue
				}
				var r firestorepb.ListenResponse
				if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(msg, &r); err != nil {
					c.t.Fatalf("backchannel message %s: %v", msg, err)
				}
				if !visit(&r) {
					return last
				}
			}
		}
		if err != nil {
			return last
		}
	}
}

// The meter counts a WebChannel listener's documents (the full browser SDK's Listen):
// an initial result of N documents is N, its one target one, and a backchannel
// reopened from an earlier array id, which is sent the same arrays again, counts
// nothing twice.
func TestMeterCountsWebChannelListen(t *testing.T) {
	emu := testbed.Emulator(t)
	m := testbed.NewMeter(t, emu.URL)
	p := emu.NewProject(t)
	const n = 6
	seedFruit(t, emu.DocumentsURL(p), n)
	db := "projects/" + p + "/databases/(default)"
	add, err := protojson.Marshal(&firestorepb.ListenRequest{Database: db,
		TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: fruitTarget(p, 2)}})
	if err != nil {
		t.Fatal(err)
	}
	ch := openChannel(t, m.URL(), db, string(add))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var docs int64
	last := ch.messages(ctx, 0, "0", func(r *firestorepb.ListenResponse) bool {
		if r.GetDocumentChange() != nil {
			docs++
		}
		return !consistent(r)
	})
	if docs != n {
		t.Fatalf("the listener received %d documents, want %d (the test's own premise)", docs, n)
	}
	if c := m.Snapshot(); c.ListenDocuments != n || c.ListenTargets != 1 || c.ListenTargetsByAuth["Bearer owner"] != 1 {
		t.Errorf("after the initial result of %d documents: ListenDocuments %d, ListenTargets %d %v; want %d and 1 with Bearer owner",
			n, c.ListenDocuments, c.ListenTargets, c.ListenTargetsByAuth, n)
	}

	// A long poll from array 0 is answered with what was already sent: not new work.
	var again int64
	ch.messages(ctx, 0, "1", func(r *firestorepb.ListenResponse) bool {
		if r.GetDocumentChange() != nil {
			again++
		}
		return true
	})
	if c := m.Snapshot(); c.ListenDocuments != n {
		t.Errorf("a backchannel reopened at array 0 (re-sent %d documents) moved ListenDocuments to %d; want %d", again, c.ListenDocuments, n)
	}
	if again == 0 {
		t.Errorf("the backchannel reopened at array 0 re-sent nothing: the test no longer proves the meter counts once (last array id %d)", last)
	}
}
