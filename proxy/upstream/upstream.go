// Package upstream is the proxy's client for the Firestore REST API (production or the
// emulator): pooled keep-alive connections, TLS for https, timeouts, and the header
// hygiene of a reverse proxy.
//
// Which headers it touches, and why (as net/http/httputil.ReverseProxy documents its own):
//   - hop-by-hop headers (Connection and the headers it names, Keep-Alive,
//     Proxy-Authenticate, Proxy-Authorization, Proxy-Connection, TE, Trailer,
//     Transfer-Encoding, Upgrade) are dropped both ways: they describe one connection, not
//     the message;
//   - Host is set to the upstream's host: Google's front end routes on it;
//   - X-Forwarded-For gets the client's address appended, so the upstream's logs and
//     quotas see the real caller;
//   - every other request header (Authorization, X-Goog-*, X-Firebase-*, Content-Type,
//     ...) passes unchanged;
//   - for cacheable reads only, Accept-Encoding is dropped so the cached bytes are
//     identity-encoded and servable to any client (compression belongs to nginx).
//
// The request path is forwarded byte for byte as the client sent it (no re-encoding of
// %28default%29 or %24alt): Firestore decodes it itself.
//
// Connections are pooled in two budgets (Budget): exchanges that end, and streams
// that last as long as a client listens. A pooled connection the upstream closed is
// never written to (see Client for what is retried, and why that is safe).
//
// A Client is safe for concurrent use.
package upstream

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Config of the upstream client.
type Config struct {
	// URL is the REST base: https://firestore.googleapis.com or http://127.0.0.1:8081.
	URL string
	// Timeout bounds one buffered request (headers and body), and the wait for a free
	// connection. Streams have no total bound. Default 30s.
	Timeout time.Duration
	// MaxConns bounds the connections of requests that end: reads, writes and unary
	// passthroughs (Budget Requests). Default 512.
	MaxConns int
	// MaxStreams bounds the connections held by Listen and Write streams (Budget
	// Streams), which live as long as a client listens: a separate budget, so that any
	// number of listeners never starves the reads and writes. Default 1024.
	MaxStreams int
	// MaxResponseBytes bounds a buffered response body (a cacheable read's answer).
	MaxResponseBytes int
}

// Budget names the connection pool a passthrough draws from.
type Budget uint8

const (
	// Requests: exchanges that end with their answer (Config.MaxConns).
	Requests Budget = iota
	// Streams: Listen and Write streams and channels, which last as long as a client
	// listens (Config.MaxStreams).
	Streams
)

// Client sends requests to the upstream.
//
// Reuse is checked (checkedConn): a pooled connection the upstream closed while idle is
// discarded before anything is written on it, and the request goes on another one, whatever
// its method. A request that was written and met a closed connection before the first
// byte of an answer is sent again only when doing so cannot do anything twice: GET, HEAD
// and OPTIONS, and the requests of a WebChannel (the Listen and Write channels number
// their messages, and the server ignores a message it already has: resending is what the
// browser itself does on a failed forward-channel request).
type Client struct {
	host     string
	timeout  time.Duration
	requests *fasthttp.HostClient
	streams  *fasthttp.HostClient
}

// New returns a Client for cfg.URL.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %w", cfg.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http://host[:port] or https://host", cfg.URL)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("upstream URL %q: must not have a path (the client's /v1/... path is forwarded as is)", cfg.URL)
	}
	tlsOn := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if tlsOn {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 512
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 1024
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = 64 << 20
	}
	dialer := &fasthttp.TCPDialer{Concurrency: 0}
	dial := func(addr string) (net.Conn, error) {
		c, err := dialer.Dial(addr)
		if err != nil {
			return nil, err
		}
		return &checkedConn{Conn: c, tls: tlsOn}, nil
	}
	base := func(maxConns int) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                          addr,
			IsTLS:                         tlsOn,
			TLSConfig:                     &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12},
			MaxConns:                      maxConns,
			MaxIdleConnDuration:           90 * time.Second,
			DisablePathNormalizing:        true,
			DisableHeaderNamesNormalizing: false,
			NoDefaultUserAgentHeader:      true,
			MaxConnWaitTimeout:            cfg.Timeout,
			Dial:                          dial,
			MaxIdemponentCallAttempts:     maxAttempts,
			RetryIfErr:                    retryIfSafe,
		}
	}
	// Buffered requests are bounded by DoTimeout's deadline, unary passthroughs by
	// nothing but the server's write timeout, as before they shared a pool.
	requests := base(cfg.MaxConns)
	requests.MaxResponseBodySize = cfg.MaxResponseBytes
	streams := base(cfg.MaxStreams)
	streams.StreamResponseBody = true
	return &Client{host: u.Host, timeout: cfg.Timeout, requests: requests, streams: streams}, nil
}

// maxAttempts bounds the tries of one request: a pool may hold several connections
// the upstream closed at once (it restarted; the emulator closes one after every
// WebChannel answer), each found dead before anything is sent, and a replayable
// request may meet a close that raced with it more than once.
const maxAttempts = 16

// retryIfSafe is the fasthttp retry policy (see Client).
func retryIfSafe(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	if errors.Is(err, errClosedIdle) {
		return false, true
	}
	if replayable(req) &&
		(errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed)) {
		return false, true
	}
	return false, false
}

// replayable: sending req twice does nothing a single send would not (see Client).
func replayable(req *fasthttp.Request) bool {
	h := &req.Header
	if h.IsGet() || h.IsHead() || h.IsOptions() {
		return true
	}
	path := req.URI().PathOriginal()
	return bytes.HasSuffix(path, listenChannel) || bytes.HasSuffix(path, writeChannel)
}

var (
	listenChannel = []byte("/google.firestore.v1.Firestore/Listen/channel")
	writeChannel  = []byte("/google.firestore.v1.Firestore/Write/channel")
)

// Host is the upstream's host[:port] as configured.
func (c *Client) Host() string { return c.host }

// Prepare copies the client's request into out, ready for the upstream: same method,
// raw request URI and body, headers cleaned as the package comment says. identity asks
// for an uncompressed answer (cacheable reads).
func (c *Client) Prepare(in *fasthttp.RequestCtx, out *fasthttp.Request, identity bool) {
	in.Request.CopyTo(out)
	out.SetRequestURIBytes(in.Request.RequestURI())
	out.URI().DisablePathNormalizing = true
	out.SetHost(c.host)
	stripHopByHop(&out.Header)
	if identity {
		out.Header.Del("Accept-Encoding")
	}
	ip := in.RemoteIP().String()
	if prior := out.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
		out.Header.Set("X-Forwarded-For", string(prior)+", "+ip)
	} else {
		out.Header.Set("X-Forwarded-For", ip)
	}
}

// Do sends a buffered request and reads the whole answer within the timeout.
func (c *Client) Do(req *fasthttp.Request, resp *fasthttp.Response) error {
	return c.requests.DoTimeout(req, resp, c.timeout)
}

// Stream forwards req and copies the answer to the client as it arrives, chunk by chunk,
// flushing each: long-poll channels (Listen/Write) and any unknown method pass through
// without being buffered whole. It returns the upstream's error when no answer came.
//
// budget says which connection pool the exchange draws from: Streams for Listen and
// Write, Requests for everything else.
//
// writeIdle > 0 replaces the server's write timeout, which bounds a whole response and
// would cut every long poll, by a bound on each chunk: a stream lives as long as it
// moves, and a client that stops reading is still let go after writeIdle.
func (c *Client) Stream(req *fasthttp.Request, ctx *fasthttp.RequestCtx, writeIdle time.Duration, budget Budget) error {
	hc := c.requests
	if budget == Streams {
		hc = c.streams
	}
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	if err := hc.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		return err
	}
	ctx.SetStatusCode(resp.StatusCode())
	for k, v := range resp.Header.All() {
		if isHopByHop(k) || strings.EqualFold(string(k), "Content-Length") {
			continue
		}
		ctx.Response.Header.AddBytesKV(k, v)
	}
	body := resp.BodyStream()
	if body == nil { // the whole (small) body was read with the headers
		ctx.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return nil
	}
	conn := ctx.Conn() // the writer outlives the handler, not the connection
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer fasthttp.ReleaseResponse(resp)
		defer resp.CloseBodyStream()
		buf := make([]byte, 32<<10)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				if writeIdle > 0 {
					conn.SetWriteDeadline(time.Now().Add(writeIdle))
				}
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if werr := w.Flush(); werr != nil {
					return // the client went away; closing the stream frees the upstream
				}
			}
			if err != nil { // io.EOF ends the stream; any other error ends it too
				return
			}
		}
	})
	return nil
}

var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopByHop(k []byte) bool {
	for _, h := range hopByHop {
		if strings.EqualFold(string(k), h) {
			return true
		}
	}
	return false
}

func stripHopByHop(h *fasthttp.RequestHeader) {
	// Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
	if c := h.Peek("Connection"); len(c) > 0 {
		for _, name := range strings.Split(string(c), ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}
