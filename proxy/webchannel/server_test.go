package webchannel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The opening POST is answered as Firestore answers it, the session carries the
// opening request's parameters and encoded headers, and the messages of the opening
// POST are the first Recv returns.
func TestOpenAnswersAsFirestore(t *testing.T) {
	_, c, opened := testServer(t, Config{NoopInterval: 25 * time.Second})
	sid := c.open(`{"addTarget":{"targetId":2}}`)
	s := <-opened
	if s.ID() != sid || len(sid) < 22 {
		t.Fatalf("SID %q, session %q: want 128 random bits", sid, s.ID())
	}
	if got := s.Params().Get("database"); got != "projects/p/databases/(default)" {
		t.Errorf("database param = %q", got)
	}
	if got := s.Headers().Get("Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization from the headers field = %q", got)
	}
	if m := recv(t, s); m != `{"addTarget":{"targetId":2}}` {
		t.Errorf("first message %q", m)
	}
	// The whole answer, byte for byte: [[0,["c",SID,"",8,12,keepalive ms]]].
	r := c.do("POST", "&RID=1&CVER=22&zx=a&t=1", form(0))
	<-opened
	es := chunks(t, r.body)
	p := es[0].Payload
	if len(p) != 6 || string(p[0]) != `"c"` || string(p[2]) != `""` || string(p[3]) != "8" || string(p[5]) != "25000" {
		t.Errorf("opening answer %q", r.body)
	}
}

// SIDs are unguessable: every session gets a fresh random one.
func TestSessionIDsDiffer(t *testing.T) {
	_, c, _ := testServer(t, Config{})
	seen := map[string]bool{}
	for range 50 {
		sid := c.open()
		if seen[sid] {
			t.Fatalf("SID %q given twice", sid)
		}
		seen[sid] = true
	}
}

// Messages reach Recv in map-id order, each once, though the client sends a POST again
// after a failure; a POST that skips map ids is refused. The POST's answer is
// [backchannel present, last array id, bytes not acknowledged].
func TestForwardInOrderOnce(t *testing.T) {
	_, c, opened := testServer(t, Config{})
	sid := c.open(`"m0"`)
	s := <-opened
	if r := c.post(sid, 1, 0, `"m1"`, `"m2"`); r.status != 200 {
		t.Fatalf("post: %v", r)
	}
	r := c.post(sid, 1, 0, `"m1"`, `"m2"`, `"m3"`) // m1, m2 again: a retry
	if r.status != 200 {
		t.Fatalf("post again: %v", r)
	}
	for i := range 4 {
		if m := recv(t, s); m != fmt.Sprintf(`"m%d"`, i) {
			t.Fatalf("message %d = %s", i, m)
		}
	}
	if err := s.Send([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	r = c.post(sid, 4, 0)
	es := mustJSON(t, strings.TrimPrefix(r.body, r.body[:strings.IndexByte(r.body, '\n')+1]))
	if fmt.Sprint(es) != fmt.Sprintf("[1 1 %d]", len(`[1,[{"a":1}]]`)) {
		t.Errorf("forward answer %q", r.body)
	}
	if r := c.post(sid, 9, 0, `"lost before"`); r.status != 400 {
		t.Errorf("a POST skipping map ids = %v, want 400", r)
	}
}

// A streaming backchannel (CI=0) delivers every array in order as it is sent, with
// ids from 1, and keeps the connection: noops keep it alive.
func TestStreamingBackchannel(t *testing.T) {
	_, c, opened := testServer(t, Config{NoopInterval: 30 * time.Millisecond})
	sid := c.open()
	s := <-opened
	b := c.back(sid, 0, "0")
	if b.status != 200 {
		t.Fatalf("backchannel status %d", b.status)
	}
	for i := range 20 {
		if err := s.Send([]byte(fmt.Sprintf(`{"n":%d,"é😀":"ü"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	last := int64(0)
	for i := range 20 {
		id, m := b.data()
		if id <= last || m != fmt.Sprintf(`{"n":%d,"é😀":"ü"}`, i) {
			t.Fatalf("array %d = %d %s", i, id, m)
		}
		last = id
	}
	noops := 0
	for noops < 3 {
		e, err := b.next()
		if err != nil {
			t.Fatalf("the idle streaming backchannel ended: %v", err)
		}
		if name, _ := e.Control(); name == "noop" && e.ArrayID > last {
			noops++
			last = e.ArrayID
		}
	}
}

// A backchannel reopened with AID=n gets every array after n again, and none before;
// a forward POST's AID acknowledges too.
func TestReopenedBackchannelResendsUnacknowledged(t *testing.T) {
	_, c, opened := testServer(t, Config{})
	sid := c.open()
	s := <-opened
	for i := range 3 {
		s.Send([]byte(fmt.Sprintf(`{"a":%d}`, i)))
	}
	got := controls(c.back(sid, 0, "1").rest())
	if fmt.Sprint(got) != `[{"a":0} {"a":1} {"a":2}]` {
		t.Fatalf("first long poll: %v", got)
	}
	got = controls(c.back(sid, 1, "1").rest())
	if fmt.Sprint(got) != `[{"a":1} {"a":2}]` {
		t.Fatalf("after AID=1: %v", got)
	}
	c.post(sid, 0, 3)
	s.Send([]byte(`{"a":3}`))
	got = controls(c.back(sid, 3, "1").rest())
	if fmt.Sprint(got) != `[{"a":3}]` {
		t.Fatalf("after a POST with AID=3: %v", got)
	}
}

// Long-poll mode (CI=1): an answer ends after the data it carries; a poll with nothing
// to say is held, then answered with a noop (at the TO the client asked for when
// sooner than the noop interval).
func TestLongPoll(t *testing.T) {
	_, c, opened := testServer(t, Config{NoopInterval: 50 * time.Millisecond})
	sid := c.open()
	s := <-opened
	go func() {
		time.Sleep(20 * time.Millisecond)
		s.Send([]byte(`{"late":true}`))
	}()
	b := c.back(sid, 0, "1")
	if got := controls(b.rest()); len(got) != 1 || got[0] != `{"late":true}` {
		t.Fatalf("a held poll answered %v", got)
	}
	if got := controls(c.back(sid, 1, "1").rest()); fmt.Sprint(got) != "[noop]" {
		t.Fatalf("an empty poll answered %v, want one noop", got)
	}
	r := c.do("GET", "&RID=rpc&SID="+url.QueryEscape(sid)+"&AID=2&CI=1&TO=10&TYPE=xmlhttp", "")
	if r.status != 200 || fmt.Sprint(controls(chunks(t, r.body))) != "[noop]" {
		t.Fatalf("a poll with TO=10 answered %v", r)
	}
}

// Send waits while the session holds MaxUnackedBytes the client has not acknowledged;
// a streaming backchannel ends after half of that so that the client acknowledges.
func TestSendWaitsForAcknowledgements(t *testing.T) {
	_, c, opened := testServer(t, Config{MaxUnackedBytes: 1000})
	sid := c.open()
	s := <-opened
	msg := []byte(`"` + strings.Repeat("x", 300) + `"`)
	for range 4 {
		if err := s.Send(msg); err != nil { // 4 arrays of 307 bytes: over the bound
			t.Fatal(err)
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- s.Send(msg) }()
	select {
	case err := <-sent:
		t.Fatalf("Send over the bound returned %v before any acknowledgement", err)
	case <-time.After(100 * time.Millisecond):
	}
	b := c.back(sid, 0, "0")
	es := b.rest() // half the bound written: the streaming answer ends
	if len(es) == 0 {
		t.Fatal("the streaming backchannel wrote nothing")
	}
	last := es[len(es)-1].ArrayID
	b = c.back(sid, last, "0") // reopening acknowledges
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	b.resp.Body.Close()
}

// TYPE=terminate (as sendBeacon POSTs it) ends the session: Recv returns io.EOF after
// the messages that came before, Send fails, the context ends with ErrTerminated, and
// every later request of the session is answered 400 "Unknown SID" as closure expects.
func TestTerminate(t *testing.T) {
	srv, c, opened := testServer(t, Config{})
	sid := c.open(`"first"`)
	s := <-opened
	b := c.back(sid, 0, "0")
	if r := c.do("POST", "&SID="+url.QueryEscape(sid)+"&RID=9&TYPE=terminate&zx=z&t=1", ""); r.status != 200 {
		t.Fatalf("terminate: %v", r)
	}
	if m := recv(t, s); m != `"first"` {
		t.Fatalf("Recv %q", m)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("Recv after terminate = %v, want io.EOF", err)
	}
	if err := s.Send([]byte(`{}`)); err == nil {
		t.Fatal("Send after terminate succeeded")
	}
	if cause := context.Cause(s.Context()); !errors.Is(cause, ErrTerminated) {
		t.Fatalf("cause %v", cause)
	}
	if got := withoutNoops(b.rest()); len(got) != 0 { // rest returns at the end of the answer
		t.Fatalf("the attached backchannel carried %v", got)
	}
	for _, r := range []reply{c.post(sid, 1, 0, `"x"`), c.do("GET", "&RID=rpc&SID="+url.QueryEscape(sid)+"&AID=0&CI=0&TYPE=xmlhttp", "")} {
		if r.status != 400 || strings.Index(r.body, "Unknown SID") <= 0 {
			t.Errorf("request of a terminated session = %v, want 400 with Unknown SID", r)
		}
	}
	if srv.Len() != 0 {
		t.Errorf("%d sessions left", srv.Len())
	}
}

// Close delivers ["close"] after what was sent, ends the backchannel, and frees the
// session.
func TestCloseDeliversClose(t *testing.T) {
	srv, c, opened := testServer(t, Config{})
	sid := c.open()
	s := <-opened
	s.Send([]byte(`{"error":{"code":403}}`))
	s.Close(errors.New("denied"))
	if got := withoutNoops(c.back(sid, 0, "0").rest()); fmt.Sprint(got) != `[{"error":{"code":403}} close]` {
		t.Fatalf("after Close the backchannel carried %v", got)
	}
	waitFor(t, "the closed session is freed", func() bool { return srv.Len() == 0 })
	if _, err := s.Recv(); err == nil || err.Error() != "denied" {
		t.Fatalf("Recv after Close = %v", err)
	}
}

// Shutdown sends ["stop"] on every backchannel and ends it; sessions without one end
// at once; new sessions are refused with 503.
func TestShutdownStops(t *testing.T) {
	srv, c, opened := testServer(t, Config{})
	sid := c.open()
	s := <-opened
	c.open()
	idle := <-opened
	b := c.back(sid, 0, "0")
	waitFor(t, "the backchannel is attached", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.bc != nil })
	srv.Shutdown()
	if got := withoutNoops(b.rest()); fmt.Sprint(got) != "[stop]" {
		t.Fatalf("shutdown delivered %v", got)
	}
	for _, x := range []*Session{s, idle} {
		if _, err := x.Recv(); !errors.Is(err, ErrShutdown) {
			t.Errorf("Recv after shutdown = %v", err)
		}
	}
	if r := c.do("POST", "&RID=1&CVER=22", form(0)); r.status != 503 {
		t.Errorf("opening during shutdown = %v, want 503", r)
	}
	waitFor(t, "every session ended", func() bool { return srv.Len() == 0 })
}

// Beyond MaxSessions an opening POST gets 503, and nothing is kept of it.
func TestMaxSessions(t *testing.T) {
	srv, c, _ := testServer(t, Config{MaxSessions: 3})
	for range 3 {
		c.open()
	}
	if r := c.do("POST", "&RID=1", form(0, `"m"`)); r.status != 503 || !strings.Contains(r.body, `"UNAVAILABLE"`) {
		t.Fatalf("a fourth session = %v", r)
	}
	if srv.Len() != 3 {
		t.Fatalf("%d sessions", srv.Len())
	}
}

// A refused session answers what Open wrote and is not kept.
func TestOpenRefuses(t *testing.T) {
	var srv *Server
	srv, c, _ := testServer(t, Config{Open: func(s *Session, req *fasthttp.RequestCtx) error {
		req.SetStatusCode(403)
		req.SetBodyString(`{"error":{"code":403}}`)
		return errors.New("no")
	}})
	if r := c.do("POST", "&RID=1", form(0)); r.status != 403 {
		t.Fatalf("refused open = %v", r)
	}
	if srv.Len() != 0 {
		t.Fatal("a refused session was kept")
	}
}

// Malformed requests get a Firestore-shaped 400 that echoes nothing.
func TestMalformedRequests(t *testing.T) {
	_, c, _ := testServer(t, Config{})
	sid := c.open()
	const marker = "ECHO<script>"
	for _, q := range []struct{ method, query, body string }{
		{"GET", "&RID=rpc&SID=" + sid + "&CI=0&TYPE=html" + marker, ""},
		{"GET", "&RID=rpc&SID=" + sid + "&CI=7&TYPE=xmlhttp", ""},
		{"POST", "&VER=7", form(0)},
		{"POST", "&SID=" + sid + "&AID=x" + marker, form(1)},
		{"POST", "&SID=" + sid, "count=2&ofs=1&req0___data__=" + marker},
		{"POST", "", "count=1&ofs=0&req0_other=" + marker},
		{"PUT", "&SID=" + sid, ""},
	} {
		r := c.do(q.method, q.query, q.body)
		if r.status != 400 || !strings.Contains(r.body, `"INVALID_ARGUMENT"`) || strings.Contains(r.body, "ECHO") {
			t.Errorf("%s %s %q = %v", q.method, q.query, q.body, r)
		}
	}
}

// A client that vanishes without terminating, with or without a backchannel open,
// leaves nothing behind once the idle timeout passed: no session, no goroutine.
func TestVanishedClientsAreFreed(t *testing.T) {
	srv, c, opened := testServer(t, Config{NoopInterval: 20 * time.Millisecond, SessionIdle: 100 * time.Millisecond})
	var handlers sync.WaitGroup
	const n = 200
	for i := range n {
		sid := c.open(`"hello"`)
		s := <-opened
		handlers.Add(1)
		go func() { // a handler as the proxy runs one: Recv until the session is over
			defer handlers.Done()
			for {
				if _, err := s.Recv(); err != nil {
					return
				}
			}
		}()
		if i%2 == 0 {
			// A backchannel whose client goes away mid-answer.
			conn, err := net.Dial("tcp", strings.TrimPrefix(strings.SplitN(c.base, "/google", 2)[0], "http://"))
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(c.base + "&RID=rpc&SID=" + url.QueryEscape(sid) + "&AID=0&CI=0&TYPE=xmlhttp")
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", u.RequestURI())
			buf := make([]byte, 100)
			conn.Read(buf) // the answer started
			conn.Close()
		}
	}
	waitFor(t, "every vanished session expired", func() bool { return srv.Len() == 0 })
	handlers.Wait()
	waitFor(t, "no goroutine serves a session", func() bool { return sessionGoroutines() == 0 })
}

// sessionGoroutines counts the goroutines running a method of Session (a backchannel
// writer, a Recv or Send waiting).
func sessionGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "webchannel.(*Session)") {
			n++
		}
	}
	return n
}

// Sessions of a server, used from many goroutines at once (run with -race).
func TestConcurrentSessions(t *testing.T) {
	_, c, opened := testServer(t, Config{NoopInterval: 10 * time.Millisecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sid := c.open(`"0"`)
			s := <-opened
			go func() {
				for i := range 50 {
					s.Send([]byte(fmt.Sprintf(`{"n":%d}`, i)))
				}
			}()
			b := c.back(sid, 0, "0")
			for i := range 50 {
				if _, m := b.data(); m != fmt.Sprintf(`{"n":%d}`, i) {
					t.Errorf("message %d = %s", i, m)
					return
				}
			}
			for i := 1; i <= 20; i++ {
				c.post(sid, i, -1, fmt.Sprintf(`"%d"`, i))
			}
			for i := 0; i <= 20; i++ {
				if m := recv(t, s); m != fmt.Sprintf(`"%d"`, i) {
					t.Errorf("forward %d = %s", i, m)
				}
			}
			c.do("GET", "&SID="+url.QueryEscape(sid)+"&RID=9&TYPE=terminate", "")
		}()
	}
	wg.Wait()
}

// FuzzHandlePost drives the whole POST handling with arbitrary queries and bodies:
// no panic, and every answer is a 200 or a Firestore-shaped error.
func FuzzHandlePost(f *testing.F) {
	f.Add("VER=8&RID=1&CVER=22", openBody, false)
	f.Add("VER=8&RID=2&AID=0", writeBody, true)
	f.Add("VER=8&RID=2&AID=5", "count=2&ofs=0&req0___data__=1&req1___data__=2", true)
	f.Add("VER=8&TYPE=terminate", "", true)
	f.Fuzz(func(t *testing.T, query, body string, withSID bool) {
		srv := NewServer(Config{Open: func(*Session, *fasthttp.RequestCtx) error { return nil }})
		defer srv.Shutdown()
		sid := ""
		if withSID {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/c?VER=8&RID=1")
			ctx.Request.SetBodyString("count=0")
			srv.Handle(&ctx)
			for _, s := range srv.sessions {
				sid = s.id
			}
			query += "&SID=" + url.QueryEscape(sid)
		}
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/c?" + query)
		ctx.Request.SetBodyString(body)
		srv.Handle(&ctx)
		if code := ctx.Response.StatusCode(); code != 200 && !strings.Contains(string(ctx.Response.Body()), `"error"`) {
			t.Fatalf("answer %d %q", code, ctx.Response.Body())
		}
	})
}

// FuzzRequest: ParseRequest never panics, and what it accepts is one of the kinds
// with the parameters that kind needs.
func FuzzRequest(f *testing.F) {
	for _, q := range []string{
		"VER=8&database=projects%2Fp%2Fdatabases%2F(default)&RID=1234&CVER=22&X-HTTP-Session-Id=gsessionid&zx=abc&t=1",
		"VER=8&RID=rpc&SID=abc&AID=3&CI=0&TYPE=xmlhttp&zx=x&t=1",
		"VER=8&RID=rpc&SID=abc&AID=3&CI=1&TO=1000&TYPE=xmlhttp",
		"VER=8&SID=abc&RID=5&TYPE=terminate",
		"SID=a&SID=b", "AID=-2", "%zz",
	} {
		f.Add("GET", q)
		f.Add("POST", q)
	}
	f.Fuzz(func(t *testing.T, method, query string) {
		r, params, err := ParseRequest(method, query)
		if err != nil {
			if !errors.Is(err, ErrRequest) {
				t.Fatalf("error %v does not wrap ErrRequest", err)
			}
			return
		}
		if params == nil || r.AID < -1 {
			t.Fatalf("accepted %+v", r)
		}
		switch r.Kind {
		case Open:
			if r.SID != "" || method != "POST" {
				t.Fatalf("open %+v by %s", r, method)
			}
		case ForwardPost, Backchannel, Terminate:
			if r.SID == "" {
				t.Fatalf("%+v without SID", r)
			}
		default:
			t.Fatalf("kind %d", r.Kind)
		}
	})
}
