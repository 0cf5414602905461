package upstream

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// closingServer answers every request with a complete, keep-alive-looking answer
// (Content-Length, no Connection: close) and then closes the connection, as the
// Firestore emulator does after each WebChannel answer. closed receives a value once
// a connection is closed; got counts requests received.
func closingServer(t *testing.T) (addr string, got *atomic.Int64, closed chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = &atomic.Int64{}
	closed = make(chan struct{}, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { c.Close(); closed <- struct{}{} }()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				req.Body.Close()
				got.Add(1)
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	return ln.Addr().String(), got, closed
}

func post(c *Client, path string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(path)
	req.SetHost(c.Host())
	req.SetBodyString("count=1&ofs=0")
	return req
}

// A POST (which the client may not replay) on a connection the upstream closed after
// its previous answer is sent on a fresh connection instead, exactly once: every
// request succeeds and the upstream sees each once. Before, every other one failed with
// "the server closed connection before returning the first response byte".
func TestClosedIdleConnectionIsNeverWrittenTo(t *testing.T) {
	addr, got, closed := closingServer(t)
	c, err := New(Config{URL: "http://" + addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		req := post(c, "/v1/projects/p/databases/(default)/documents:commit")
		resp := fasthttp.AcquireResponse()
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("request %d: %v (status %d)", i, err, resp.StatusCode())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		<-closed // the upstream has closed the connection the next request would reuse
	}
	if got.Load() != n {
		t.Errorf("the upstream saw %d requests, want %d (each once)", got.Load(), n)
	}
}

// The same through Stream, on both budgets: the channel requests of the browser SDK.
func TestStreamSurvivesClosedConnections(t *testing.T) {
	addr, got, closed := closingServer(t)
	c, err := New(Config{URL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 0; i < n; i++ {
		for _, b := range []Budget{Requests, Streams} {
			req := post(c, "/google.firestore.v1.Firestore/Write/channel?VER=8")
			var ctx fasthttp.RequestCtx
			if err := c.Stream(req, &ctx, 0, b); err != nil || ctx.Response.StatusCode() != 200 {
				t.Fatalf("request %d, budget %d: %v (status %d)", i, b, err, ctx.Response.StatusCode())
			}
			fasthttp.ReleaseRequest(req)
			<-closed
		}
	}
	if got.Load() != 2*n {
		t.Errorf("the upstream saw %d requests, want %d", got.Load(), 2*n)
	}
}

// replayable: only what cannot do anything twice.
func TestReplayable(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v1/projects/p/databases/(default)/documents/a/b", true},
		{"OPTIONS", "/v1/projects/p/databases/(default)/documents:runQuery", true},
		{"POST", "/google.firestore.v1.Firestore/Listen/channel", true},
		{"POST", "/google.firestore.v1.Firestore/Write/channel", true},
		{"POST", "/v1/projects/p/databases/(default)/documents:commit", false},
		{"POST", "/v1/projects/p/databases/(default)/documents:beginTransaction", false},
		{"PATCH", "/v1/projects/p/databases/(default)/documents/a/b", false},
		{"DELETE", "/v1/projects/p/databases/(default)/documents/a/b", false},
	} {
		req := fasthttp.AcquireRequest()
		req.Header.SetMethod(c.method)
		req.SetRequestURI(c.path)
		if got := replayable(req); got != c.want {
			t.Errorf("%s %s: replayable %v, want %v", c.method, c.path, got, c.want)
		}
		fasthttp.ReleaseRequest(req)
	}
}

// Streams have a budget of their own: with every stream connection held by a
// listener that never ends, requests that end still get connections and answers.
// Before, one pool served both, and the listeners starved everything else into 503s.
func TestStreamsDoNotStarveRequests(t *testing.T) {
	release := make(chan struct{})
	var held sync.WaitGroup
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/Listen/channel") {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			held.Done()
			<-release // a long poll that outlives the test's requests
			return
		}
		fmt.Fprint(w, "{}")
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	defer close(release)

	const streams = 8
	c, err := New(Config{URL: "http://" + ln.Addr().String(), Timeout: 5 * time.Second, MaxConns: 2, MaxStreams: streams})
	if err != nil {
		t.Fatal(err)
	}
	held.Add(streams)
	for i := 0; i < streams; i++ {
		req := post(c, "/google.firestore.v1.Firestore/Listen/channel?TYPE=xmlhttp&CI=1")
		ctx := &fasthttp.RequestCtx{}
		if err := c.Stream(req, ctx, 0, Streams); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		fasthttp.ReleaseRequest(req)
		// The body is never read: the stream holds its connection.
	}
	held.Wait()
	for i := 0; i < 20; i++ {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI("/v1/projects/p/databases/(default)/documents/a/b")
		req.SetHost(c.Host())
		resp := fasthttp.AcquireResponse()
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("read %d with %d streams open: %v (status %d)", i, streams, err, resp.StatusCode())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		unary := post(c, "/v1/projects/p/databases/(default)/documents:beginTransaction")
		var ctx fasthttp.RequestCtx
		if err := c.Stream(unary, &ctx, 0, Requests); err != nil || ctx.Response.StatusCode() != 200 {
			t.Fatalf("unary passthrough %d with %d streams open: %v", i, streams, err)
		}
		fasthttp.ReleaseRequest(unary)
	}
}
