package proxy

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/proxy/webchannel"
	"github.com/harvest-hub/edge/rules"
)

// testSession is a session whose requests are sentinels: pair's settlements are
// inspected, not applied.
func testSession() *writeSession {
	wc := newWriteChannels(&Proxy{log: slog.New(slog.DiscardHandler)}, nil)
	return &writeSession{wc: wc, lastArray: -1}
}

func chunkEntries(t *testing.T, chunk string) []webchannel.Entry {
	t.Helper()
	es, err := webchannel.ParseChunk([]byte(chunk))
	if err != nil {
		t.Fatalf("%s: %v", chunk, err)
	}
	return es
}

const (
	handshakeAnswer = `{"streamId":"0","streamToken":"MA=="}`
	oneResult       = `{"streamToken":"MQ==","writeResults":[{"updateTime":"2026-12-05T07:40:18.878601Z"}],"commitTime":"2026-12-05T07:40:18.878601Z"}`
	twoResults      = `{"streamToken":"Mg==","writeResults":[{},{"updateTime":"2026-12-05T07:40:19Z"}],"commitTime":"2026-12-05T07:40:19Z"}`
)

func outcomes(ss []settlement, ws ...*pendingWrite) string {
	names := map[*pendingWrite]string{}
	for i, w := range ws {
		names[w] = fmt.Sprintf("w%d", i+1)
	}
	out := ""
	for _, s := range ss {
		out += fmt.Sprintf("%s:%d ", names[s.w], s.outcome)
	}
	return out
}

// Each WriteResponse settles the oldest request awaiting one, whatever the chunks: the
// handshake's answer pairs with the handshake, keep-alives and redelivered arrays (a
// reopened backchannel) settle nothing, and the answer carries the commit's results.
func TestPairSettlesInRequestOrder(t *testing.T) {
	s := testSession()
	w1, w2 := &pendingWrite{}, &pendingWrite{}
	s.queue = []*channelRequest{{}, {w: w1, writes: 1}, {w: w2, writes: 2}}
	ss := s.pair(chunkEntries(t, `[[0,["c","SID","",8,12,30000]],[1,[`+handshakeAnswer+`]],[2,["noop"]]]`))
	if len(ss) != 0 || len(s.queue) != 2 {
		t.Fatalf("handshake: settlements %v, queue %d", outcomes(ss, w1, w2), len(s.queue))
	}
	ss = s.pair(chunkEntries(t, `[[3,[`+oneResult+`]],[4,[`+twoResults+`]]]`))
	if got := outcomes(ss, w1, w2); got != "w1:0 w2:0 " {
		t.Fatalf("settlements %s, want both succeeded", got)
	}
	if ct := ss[0].ans.Commit.GetCommitTime().AsTime().Format("15:04:05.000000"); ct != "07:40:18.878601" ||
		len(ss[1].ans.Commit.GetWriteResults()) != 2 {
		t.Fatalf("answers %v %v", ss[0].ans.Commit, ss[1].ans.Commit)
	}
	if ss = s.pair(chunkEntries(t, `[[3,[`+oneResult+`]],[4,[`+twoResults+`]]]`)); len(ss) != 0 {
		t.Fatalf("redelivered arrays settled %s", outcomes(ss, w1, w2))
	}
}

// An error ends the Write stream: the oldest request is the one refused (failed when
// the status means nothing was applied, unknown otherwise), every later one is unknown.
func TestPairStreamErrors(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{`{"error":{"code":404,"message":"no entity","status":"NOT_FOUND"}}`, "w1:1 w2:2 "},
		{`{"error":{"status":"FAILED_PRECONDITION"}}`, "w1:1 w2:2 "},
		{`[{"error":{"status":"UNAVAILABLE"}}]`, "w1:2 w2:2 "}, // the older server's wrapping
		{`{"error":{"status":"DEADLINE_EXCEEDED"}}`, "w1:2 w2:2 "},
	} {
		s := testSession()
		w1, w2 := &pendingWrite{}, &pendingWrite{}
		s.queue = []*channelRequest{{w: w1, writes: 1}, {w: w2, writes: 1}}
		if got := outcomes(s.pair(chunkEntries(t, `[[5,[`+tc.msg+`]]]`)), w1, w2); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.msg, got, tc.want)
		}
		if !s.ended || len(s.queue) != 0 {
			t.Errorf("%s: session not ended", tc.msg)
		}
	}
}

// What cannot be paired for sure is never reported as success: a stopped channel, an
// answer whose result count is not its request's, a session adopted mid-way; an answer
// with nothing to pair is counted.
func TestPairNeverGuessesSuccess(t *testing.T) {
	s := testSession()
	w1, w2 := &pendingWrite{}, &pendingWrite{}
	s.queue = []*channelRequest{{w: w1, writes: 1}, {w: w2, writes: 1}}
	if got := outcomes(s.pair(chunkEntries(t, `[[1,[`+twoResults+`]],[2,["stop"]]]`)), w1, w2); got != "w1:2 w2:2 " {
		t.Errorf("mismatched count then stop: %s, want both unknown", got)
	}

	s = testSession()
	s.uncertain = true
	s.queue = []*channelRequest{{w: w1, writes: 1}}
	if got := outcomes(s.pair(chunkEntries(t, `[[7,[`+oneResult+`]]]`)), w1); got != "w1:2 " {
		t.Errorf("adopted session: %s, want unknown", got)
	}
	if ss := s.pair(chunkEntries(t, `[[8,[`+oneResult+`]],[9,["x-newer"]],[10,[1]]]`)); len(ss) != 0 {
		t.Errorf("an answer with nothing awaiting settled %v", ss)
	}
	for reason, want := range map[string]float64{unexpectedUnpaired: 1, unexpectedControl: 1, unexpectedMessage: 1} {
		if got := testutilCount(s.wc, reason); got != want {
			t.Errorf("unexpected{reason=%s} = %v, want %v", reason, got, want)
		}
	}

	s = testSession()
	s.queue = []*channelRequest{{}, {w: w1, writes: 1}}
	if got := outcomes(s.endAll(), w1); got != "w1:2 " || !s.ended {
		t.Errorf("terminate: %s, want unknown", got)
	}
}

func testutilCount(wc *writeChannels, reason string) float64 {
	var m dto.Metric
	wc.unexpected.WithLabelValues(reason).Write(&m)
	return m.GetCounter().GetValue()
}

// unitProxy is a Proxy with no Redis and an upstream nobody answers: enough to admit
// writes (beginWrite needs no Redis).
func unitProxy(t *testing.T) *Proxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - match: /products/{p}\n    ttl: 1m\n    scope: shared\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Rules: store, Upstream: "http://127.0.0.1:9", Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.tiers.Close() })
	return p
}

// A forward POST sent again (same map ids) is not admitted twice; messages this replica
// never saw hold their places; a write the proxy cannot classify refuses the POST and
// leaves the session as it was, so the POST sent again is admitted afresh.
func TestAdmitMapsOnce(t *testing.T) {
	p := unitProxy(t)
	s, _ := p.wch.newSession(&fasthttp.RequestCtx{}, nil)
	ctx := &fasthttp.RequestCtx{}
	db := "projects/p/databases/(default)"
	write := func(doc string) []byte {
		return fmt.Appendf(nil, `{"streamToken":"MA==","writes":[{"delete":"%s/documents/%s"}]}`, db, doc)
	}
	if r := p.admitMaps(ctx, s, []webchannel.Map{{ID: 0, Data: fmt.Appendf(nil, `{"database":%q}`, db)}}); r != nil {
		t.Fatal(r)
	}
	if s.database != db {
		t.Fatalf("database %q from the handshake", s.database)
	}
	for range 2 { // the second is WebChannel sending the failed POST again
		if r := p.admitMaps(ctx, s, []webchannel.Map{{ID: 1, Data: write("products/a")}}); r != nil {
			t.Fatal(r)
		}
	}
	if len(s.queue) != 2 || s.queue[1].w == nil || s.nextMap != 2 {
		t.Fatalf("queue %d, next %d after a POST sent twice", len(s.queue), s.nextMap)
	}
	if r := p.admitMaps(ctx, s, []webchannel.Map{{ID: 4, Data: write("products/b")}}); r != nil {
		t.Fatal(r)
	}
	if len(s.queue) != 5 || s.queue[2].w != nil || s.queue[4].w == nil {
		t.Fatalf("queue %d after a gap of 2", len(s.queue))
	}
	r := p.admitMaps(ctx, s, []webchannel.Map{{ID: 5, Data: write("products/c")}, {ID: 6, Data: write("products/../x")}})
	if r == nil || r.HTTPStatus != fasthttp.StatusBadRequest {
		t.Fatalf("unclassifiable write: refusal %+v", r)
	}
	if len(s.queue) != 5 || s.nextMap != 5 {
		t.Fatalf("a refused POST changed the session: queue %d, next %d", len(s.queue), s.nextMap)
	}
}

// A channel's identity is identityOf every credential the upstream applies to the
// session: the opening POST's own, and those the SDK sends in its "headers" field
// (Authorization, x-goog-api-key). A credential given twice, even once in each place,
// is ambiguous and refused without echoing it.
func TestChannelIdentity(t *testing.T) {
	p := unitProxy(t)
	both, _ := identityOf([]credential{{credAuthorization, []byte("Bearer a")}, {credAPIKey, []byte("k")}})
	for _, tc := range []struct {
		name    string
		headers http.Header
		http    string
		want    string // the identity; "refused"
	}{
		{"SDK headers", http.Header{"Authorization": {"Bearer a"}}, "", identityHash([]byte("Bearer a"))},
		{"SDK headers with a key", http.Header{"Authorization": {"Bearer a"}, "X-Goog-Api-Key": {"k"}, "Content-Type": {"text/plain"}}, "", both},
		{"HTTP header only", nil, "Bearer b", identityHash([]byte("Bearer b"))},
		{"both, same", http.Header{"Authorization": {"Bearer a"}}, "Bearer a", "refused"},
		{"both, different", http.Header{"Authorization": {"Bearer a"}}, "Bearer b", "refused"},
		{"repeated", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, "", "refused"},
		{"none", http.Header{"Content-Type": {"text/plain"}}, "", ""},
	} {
		ctx := &fasthttp.RequestCtx{}
		if tc.http != "" {
			ctx.Request.Header.Set("Authorization", tc.http)
		}
		s, ok := p.wch.newSession(ctx, tc.headers)
		switch {
		case tc.want == "refused":
			if ok || ctx.Response.StatusCode() != fasthttp.StatusBadRequest ||
				bytes.Contains(ctx.Response.Body(), []byte("Bearer")) {
				t.Errorf("%s: not refused, or the refusal echoes credentials: %d %s", tc.name, ctx.Response.StatusCode(), ctx.Response.Body())
			}
		case !ok || s == nil:
			t.Errorf("%s: refused", tc.name)
		case s.caller.Identity != tc.want:
			t.Errorf("%s: identity %q, want %q", tc.name, s.caller.Identity, tc.want)
		}
	}
}
