package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A streaming method the proxy passes through (the REST documents:listen) streams:
// the upstream's first chunk reaches the client while the upstream still holds the
// rest, which it sends only once the client has that first chunk.
func TestPassthroughStreamsWithoutBuffering(t *testing.T) {
	clientGotFirst := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-protobuf")
		fmt.Fprint(w, "first-chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-clientGotFirst:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "the-rest\n")
	}))
	defer up.Close()
	h := newHarness(t, setup{upstream: func(int, string) string { return up.URL }})

	resp, err := h.http.Post(h.replicas[0].url+"/v1/projects/p/databases/(default)/documents:listen",
		"application/x-www-form-urlencoded", strings.NewReader("count=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("X-Cache"); got != "BYPASS" {
		t.Errorf("X-Cache = %q, want BYPASS", got)
	}
	rd := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		line, _ := rd.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "first-chunk\n" {
			t.Fatalf("first chunk = %q", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the first chunk never reached the client: the proxy buffers the stream")
	}
	close(clientGotFirst)
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "the-rest\n" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
}

// Header hygiene, on a cacheable read and on a bypass: X-Forwarded-For gains the
// client's address, Authorization passes, hop-by-hop headers (and the ones Connection
// names) do not; a hit carries Age.
func TestHeadersToTheUpstream(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		json.NewEncoder(w).Encode(map[string]any{"name": "projects/p/databases/(default)/documents/products/p1", "fields": map[string]any{}})
	}))
	defer up.Close()
	h := newHarness(t, setup{upstream: func(int, string) string { return up.URL }})
	addr := strings.TrimPrefix(h.replicas[0].url, "http://")

	for _, path := range []string{
		"/v1/projects/p/databases/(default)/documents/products/p1",      // a cacheable read
		"/v1/projects/p/databases/(default)/documents:beginTransaction", // a bypass
	} {
		method := "GET"
		if strings.HasSuffix(path, "beginTransaction") {
			method = "POST"
		}
		mu.Lock()
		seen = nil
		mu.Unlock()
		raw := method + " " + path + " HTTP/1.1\r\n" +
			"Host: " + addr + "\r\n" +
			"Authorization: Bearer user-token\r\n" +
			"X-Forwarded-For: 203.0.113.7\r\n" +
			"Connection: keep-alive, X-Hop\r\n" +
			"X-Hop: only-for-this-connection\r\n" +
			"Keep-Alive: timeout=5\r\n" +
			"Proxy-Authorization: Basic c2VjcmV0\r\n" +
			"Te: trailers\r\n" +
			"Upgrade: websocket\r\n" +
			"X-Goog-Api-Client: gl-go/1\r\n" +
			"Content-Length: 2\r\n\r\n{}"
		if method == "GET" {
			raw = strings.Replace(raw, "Content-Length: 2\r\n\r\n{}", "\r\n", 1)
		}
		status := rawExchange(t, addr, raw)
		if status != 200 {
			t.Fatalf("%s %s: status %d", method, path, status)
		}
		mu.Lock()
		if len(seen) != 1 {
			mu.Unlock()
			t.Fatalf("%s: upstream saw %d requests, want 1", path, len(seen))
		}
		got := seen[0]
		mu.Unlock()
		if xff := got.Get("X-Forwarded-For"); xff != "203.0.113.7, 127.0.0.1" {
			t.Errorf("%s: X-Forwarded-For = %q, want the client's chain plus 127.0.0.1", path, xff)
		}
		if a := got.Get("Authorization"); a != "Bearer user-token" {
			t.Errorf("%s: Authorization = %q, want it unchanged", path, a)
		}
		if g := got.Get("X-Goog-Api-Client"); g != "gl-go/1" {
			t.Errorf("%s: X-Goog-Api-Client = %q, want it unchanged", path, g)
		}
		for _, hop := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade"} {
			if v := got.Get(hop); v != "" {
				t.Errorf("%s: hop-by-hop %s = %q reached the upstream", path, hop, v)
			}
		}
	}

	// Age on hits (the document read above was a MISS and is cached for this rule).
	a := h.via(0, "GET", "/v1/projects/p/databases/(default)/documents/products/p1", "")
	if !isHit(a.cache()) || a.header.Get("Age") == "" {
		t.Errorf("repeat read: X-Cache %q, Age %q: want a hit with Age", a.cache(), a.header.Get("Age"))
	}
}

// rawExchange writes one raw HTTP/1.1 request (so hop-by-hop headers go out exactly as
// written) and returns the status code.
func rawExchange(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Streams passed through outlive server.write_timeout (rules.yaml: "Listen/Write channels
// are exempt"): a stream still moving after the timeout is not cut.
func TestPassthroughStreamOutlivesWriteTimeout(t *testing.T) {
	clientGotFirst := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first-chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-clientGotFirst:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "the-rest\n")
	}))
	defer up.Close()
	h := newHarness(t, setup{server: []string{"write_timeout: 200ms"}, upstream: func(int, string) string { return up.URL }})
	resp, err := h.http.Post(h.replicas[0].url+"/v1/projects/p/databases/(default)/documents:listen",
		"application/x-www-form-urlencoded", strings.NewReader("count=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); line != "first-chunk\n" {
		t.Fatalf("first chunk = %q, %v", line, err)
	}
	// The one sleep of these tests: the point is a stream older than the timeout.
	time.Sleep(500 * time.Millisecond)
	close(clientGotFirst)
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "the-rest\n" {
		t.Fatalf("after the write timeout the stream was cut: rest = %q, %v", rest, err)
	}
}
