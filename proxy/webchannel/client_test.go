package webchannel

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// A Go client of the protocol, as closure's WebChannelBase speaks it, against a Server
// on a loopback port: what the tests of this package drive.

const channelPath = "/google.firestore.v1.Firestore/Listen/channel"

// testServer serves srv on a loopback port until the test ends. Sessions opened are
// sent on the returned channel (Open accepts every session).
func testServer(t *testing.T, cfg Config) (*Server, *client, <-chan *Session) {
	t.Helper()
	opened := make(chan *Session, 1024)
	if cfg.Open == nil {
		cfg.Open = func(s *Session, _ *fasthttp.RequestCtx) error {
			opened <- s
			return nil
		}
	}
	srv := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &fasthttp.Server{Handler: srv.Handle, CloseOnShutdown: true}
	done := make(chan struct{})
	go func() { hs.Serve(ln); close(done) }()
	t.Cleanup(func() {
		srv.Shutdown()
		hs.Shutdown()
		<-done
	})
	c := &client{t: t, base: "http://" + ln.Addr().String() + channelPath + "?VER=8&database=projects%2Fp%2Fdatabases%2F(default)",
		hc: &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, DisableCompression: true}}}
	t.Cleanup(c.hc.CloseIdleConnections)
	return srv, c, opened
}

type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

type reply struct {
	status int
	body   string
}

func (c *client) do(method, query, body string) reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+query, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, query, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading: %v", method, query, err)
	}
	return reply{resp.StatusCode, string(b)}
}

// form encodes messages as the maps of a forward POST from ofs on.
func form(ofs int, msgs ...string) string {
	v := url.Values{}
	v.Set("count", strconv.Itoa(len(msgs)))
	if len(msgs) > 0 {
		v.Set("ofs", strconv.Itoa(ofs))
	}
	for i, m := range msgs {
		v.Set(fmt.Sprintf("req%d___data__", i), m)
	}
	return v.Encode()
}

// open opens a session with the SDK's headers field and msgs, and returns its SID.
func (c *client) open(msgs ...string) string {
	c.t.Helper()
	body := "headers=" + url.QueryEscape("Authorization:Bearer tok\r\nx-goog-api-key:k\r\n") + "&" + form(0, msgs...)
	r := c.do("POST", "&RID=4321&CVER=22&X-HTTP-Session-Id=gsessionid&zx=a&t=1", body)
	if r.status != 200 {
		c.t.Fatalf("open: %v", r)
	}
	entries := chunks(c.t, r.body)
	sid, ok := SessionID(entries)
	if !ok || len(entries) != 1 || entries[0].ArrayID != 0 {
		c.t.Fatalf("open answered %q", r.body)
	}
	return sid
}

// post sends msgs from map id ofs with AID aid.
func (c *client) post(sid string, ofs int, aid int64, msgs ...string) reply {
	c.t.Helper()
	return c.do("POST", "&SID="+url.QueryEscape(sid)+"&RID=5&AID="+strconv.FormatInt(aid, 10)+"&zx=b&t=1", form(ofs, msgs...))
}

// chunks parses a whole answer body of length-prefixed chunks into its entries.
func chunks(t *testing.T, body string) []Entry {
	t.Helper()
	var s Splitter
	var out []Entry
	for _, seg := range s.Feed([]byte(body)) {
		if seg.Chunk == nil {
			t.Fatalf("not chunked: %q", body)
		}
		es, err := ParseChunk(seg.Chunk)
		if err != nil {
			t.Fatalf("chunk %q: %v", seg.Chunk, err)
		}
		out = append(out, es...)
	}
	if s.Broken() || s.Held() > 0 {
		t.Fatalf("not whole chunks: %q", body)
	}
	return out
}

// backchannel is an open backchannel GET, read entry by entry.
type backchannel_ struct {
	t      *testing.T
	resp   *http.Response
	status int
	rd     *bufio.Reader
	split  Splitter
	queue  []Entry
	err    error
}

// back opens a backchannel GET (streaming, or a long poll with ci "1").
func (c *client) back(sid string, aid int64, ci string) *backchannel_ {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+"&RID=rpc&SID="+url.QueryEscape(sid)+"&AID="+strconv.FormatInt(aid, 10)+
		"&CI="+ci+"&TYPE=xmlhttp&zx=c&t=1", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("backchannel: %v", err)
	}
	b := &backchannel_{t: c.t, resp: resp, status: resp.StatusCode, rd: bufio.NewReader(resp.Body)}
	c.t.Cleanup(func() { resp.Body.Close() })
	return b
}

// next returns the next entry, or io.EOF once the answer ended.
func (b *backchannel_) next() (Entry, error) {
	buf := make([]byte, 4096)
	for len(b.queue) == 0 {
		if b.err != nil {
			return Entry{}, b.err
		}
		n, err := b.rd.Read(buf)
		for _, seg := range b.split.Feed(buf[:n]) {
			if seg.Chunk == nil {
				b.t.Fatalf("backchannel framing broken: %q", seg.Raw)
			}
			es, perr := ParseChunk(seg.Chunk)
			if perr != nil {
				b.t.Fatalf("backchannel chunk %q: %v", seg.Chunk, perr)
			}
			b.queue = append(b.queue, es...)
		}
		if err != nil {
			b.err = err
		}
	}
	e := b.queue[0]
	b.queue = b.queue[1:]
	return e, nil
}

// data returns the next data message, skipping noops, failing on anything else.
func (b *backchannel_) data() (int64, string) {
	b.t.Helper()
	for {
		e, err := b.next()
		if err != nil {
			b.t.Fatalf("backchannel ended before a message: %v", err)
		}
		if name, ok := e.Control(); ok {
			if name == "noop" {
				continue
			}
			b.t.Fatalf("control %q before a message", name)
		}
		m, ok := e.Message()
		if !ok {
			b.t.Fatalf("entry %d is neither data nor control", e.ArrayID)
		}
		return e.ArrayID, string(m)
	}
}

// rest reads the answer to its end and returns its entries.
func (b *backchannel_) rest() []Entry {
	b.t.Helper()
	var out []Entry
	for {
		e, err := b.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			b.t.Fatalf("backchannel: %v", err)
		}
		out = append(out, e)
	}
}

// withoutNoops is controls without the noops.
func withoutNoops(es []Entry) []string {
	var out []string
	for _, c := range controls(es) {
		if c != "noop" {
			out = append(out, c)
		}
	}
	return out
}

// controls names each entry: a control's name, or a message's JSON.
func controls(es []Entry) []string {
	var out []string
	for _, e := range es {
		if name, ok := e.Control(); ok {
			out = append(out, name)
		} else {
			m, _ := e.Message()
			out = append(out, string(m))
		}
	}
	return out
}

// recv takes the next message of s, failing the test if none comes in 10 s.
func recv(t *testing.T, s *Session) string {
	t.Helper()
	type result struct {
		m   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() { m, err := s.Recv(); ch <- result{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Recv: %v", r.err)
		}
		return string(r.m)
	case <-time.After(10 * time.Second):
		t.Fatal("Recv: no message")
	}
	return ""
}

func mustJSON(t *testing.T, s string) []any {
	t.Helper()
	var v []any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return v
}
