package testbed

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/harvest-hub/edge/internal/connsplit"
)

// Meter is a reverse proxy between the code under test and the upstream (the emulator)
// that counts what reaches the upstream and can misbehave on command.
//
// Counting: every request forwarded upstream is counted under its Firestore REST method
// (see Method) when it is forwarded; its billed document reads are counted once the
// upstream's answer is in, before the client sees the end of that answer, so a client
// that has read a response may trust Snapshot. Answers of the read methods (get, list,
// runQuery, batchGet, runAggregationQuery, listCollectionIds) are read whole to count
// them, then passed on; every other answer (Listen, Write, long polls) streams through
// unbuffered. The meter touches no header but Host.
//
// The same port carries gRPC (HTTP/2 cleartext, as the emulator serves it), told apart
// by the connection preface: calls are relayed to the upstream's gRPC side and counted
// under the gRPC method's name ("GetDocument", "RunQuery", "Commit", ...), response
// messages counted into billed reads as their REST twins' are (grpcmeter.go).
//
// Listen, on gRPC and on the WebChannel Listen channel, is counted as it streams: the
// documents the upstream sends and the targets it is asked to add (listenmeter.go).
type Meter struct {
	upstream *url.URL
	ln       *meterListener
	srv      *http.Server
	grpcSrv  *grpc.Server
	grpcUp   *grpc.ClientConn
	proxy    *httputil.ReverseProxy
	log      *slog.Logger

	mu         sync.Mutex
	requests   map[string]int64
	billed     int64
	injected   int64
	listen     listenCounts
	latency    time.Duration
	failStatus int

	channels  channelSessions // listenmeter.go
	transport *channelTransport
}

// Counts is a snapshot of a Meter's counters.
type Counts struct {
	// Requests is the number of requests forwarded upstream, by REST method
	// ("get", "list", "runQuery", ..., "other").
	Requests map[string]int64
	// BilledReads is the number of document reads Firestore would bill for the
	// forwarded requests' answers.
	BilledReads int64
	// Total is the number of requests forwarded upstream (the sum of Requests).
	Total int64
	// Injected is the number of requests answered by FailWith, never forwarded.
	Injected int64
	// ListenDocuments is the number of Listen responses carrying a document
	// (document_change, document_delete, document_remove) the upstream streamed, on
	// gRPC and on the WebChannel Listen channel (listenmeter.go).
	ListenDocuments int64
	// ListenTargets is the number of targets added upstream (add_target requests of
	// Listen streams and channels).
	ListenTargets int64
	// ListenTargetsByAuth is ListenTargets by the Authorization the stream or channel
	// session presented upstream ("" for none).
	ListenTargetsByAuth map[string]int64
}

// NewMeter starts a meter on a free loopback port in front of upstreamURL
// ("http://127.0.0.1:8686") and stops it when the test ends.
func NewMeter(t testing.TB, upstreamURL string) *Meter {
	t.Helper()
	up, err := url.Parse(upstreamURL)
	if err != nil || up.Scheme == "" || up.Host == "" {
		t.Fatalf("testbed: meter: upstream %q is not an absolute URL (%v)", upstreamURL, err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testbed: meter: listen: %v", err)
	}
	m := &Meter{
		upstream:  up,
		ln:        &meterListener{Listener: inner, conns: map[net.Conn]struct{}{}},
		log:       slog.Default().With("component", "testbed.meter"),
		requests:  map[string]int64{},
		channels:  channelSessions{lastArray: map[string]int64{}, lastMap: map[string]int64{}, auth: map[string]string{}},
		transport: newChannelTransport(),
	}
	m.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(m.upstream)
		},
		// -1: flush every write, so Listen streams and long polls pass as they come.
		FlushInterval:  -1,
		Transport:      m.transport,
		ModifyResponse: m.countBilledReads,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			m.log.Warn("upstream unreachable", "url", r.URL.String(), "err", err)
			writeFirestoreError(w, http.StatusBadGateway, fmt.Sprintf("testbed meter: upstream: %v", err))
		},
	}
	m.srv = &http.Server{
		Handler:     http.HandlerFunc(m.serveHTTP),
		ReadTimeout: 0, // Listen long polls are long
	}
	if err := m.startGRPC(); err != nil {
		inner.Close()
		t.Fatalf("testbed: meter: %v", err)
	}
	split := connsplit.New(m.ln, 10*time.Second, nil)
	go func() { _ = m.srv.Serve(split.HTTP1()) }()
	go func() { _ = m.grpcSrv.Serve(split.HTTP2()) }()
	t.Cleanup(m.close)
	return m
}

// URL is the meter's base URL ("http://127.0.0.1:port"); point the code under test here.
func (m *Meter) URL() string { return "http://" + m.Addr() }

// Addr is the meter's "127.0.0.1:port".
func (m *Meter) Addr() string { return m.ln.Addr().String() }

// Snapshot returns a copy of the counters.
func (m *Meter) Snapshot() Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := Counts{Requests: maps.Clone(m.requests), BilledReads: m.billed, Injected: m.injected,
		ListenDocuments: m.listen.documents, ListenTargets: m.listen.targets,
		ListenTargetsByAuth: maps.Clone(m.listen.byAuth)}
	for _, n := range m.requests {
		c.Total += n
	}
	return c
}

// Reset zeroes the counters; injected behaviour (latency, errors, refusal) stays, and
// so does what the meter remembers of open Listen channels (nothing is counted twice).
func (m *Meter) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = map[string]int64{}
	m.billed = 0
	m.injected = 0
	m.listen = listenCounts{}
}

// SetLatency delays every request by d before it is forwarded (or failed by FailWith),
// as a distant upstream would. 0 removes the delay.
func (m *Meter) SetLatency(d time.Duration) {
	m.mu.Lock()
	m.latency = d
	m.mu.Unlock()
}

// FailWith answers every request with status and a Firestore-shaped JSON error
// ({"error":{"code":503,"message":"...","status":"UNAVAILABLE"}}) instead of forwarding
// it, until Heal.
func (m *Meter) FailWith(status int) {
	m.mu.Lock()
	m.failStatus = status
	m.mu.Unlock()
}

// Heal ends FailWith: requests are forwarded again.
func (m *Meter) Heal() { m.FailWith(0) }

// Refuse closes every open connection to the meter and closes new ones as soon as they
// are accepted (with a TCP reset), as a crashed upstream would; the port stays bound so
// Accept can bring the same address back.
func (m *Meter) Refuse() { m.ln.setRefusing(true) }

// Accept ends Refuse: new connections are served again.
func (m *Meter) Accept() { m.ln.setRefusing(false) }

func (m *Meter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close() // long polls still open: cut them
	}
	m.grpcSrv.Stop()
	m.grpcUp.Close()
	m.ln.Close()
	m.transport.close()
}

// exchangeKey carries what the request half learned to the response half.
type exchangeKey struct{}

type exchange struct {
	method       string
	countAliases map[string]bool // runAggregationQuery: aliases of count() aggregations
	listenSID    string          // Listen channel: the WebChannel session ("" when opening one)
	listenAuth   string          // Listen channel: the Authorization the session presents
}

func (m *Meter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	latency, failStatus := m.latency, m.failStatus
	m.mu.Unlock()

	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if failStatus != 0 {
		m.mu.Lock()
		m.injected++
		m.mu.Unlock()
		writeFirestoreError(w, failStatus, fmt.Sprintf("testbed meter: injected %d", failStatus))
		return
	}

	ex := &exchange{method: Method(r.Method, r.URL.Path)}
	if ex.method == "runAggregationQuery" && r.Body != nil {
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			writeFirestoreError(w, http.StatusBadRequest, fmt.Sprintf("testbed meter: read body: %v", err))
			return
		}
		ex.countAliases = countAliases(body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if isListenChannel(r.URL.Path) {
		ex.listenSID = r.URL.Query().Get("SID")
		ex.listenAuth = r.Header.Get("Authorization")
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(r.Body)
			r.Body.Close()
			if err != nil {
				writeFirestoreError(w, http.StatusBadRequest, fmt.Sprintf("testbed meter: read body: %v", err))
				return
			}
			ex.listenAuth = m.countListenForward(ex.listenSID, ex.listenAuth, body)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
	}

	m.mu.Lock()
	m.requests[ex.method]++
	m.mu.Unlock()

	m.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex)))
}

// countBilledReads counts the billed reads of a read method's answer before the
// proxy passes it on; a Listen channel's answer is counted as it streams; other answers
// pass untouched.
func (m *Meter) countBilledReads(resp *http.Response) error {
	ex, _ := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	if ex != nil && isListenChannel(resp.Request.URL.Path) {
		m.countingListenChannel(resp, ex.listenSID, ex.listenAuth)
		return nil
	}
	if ex == nil || !isMeteredRead(ex.method) {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("testbed meter: read %s answer: %w", ex.method, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))

	plain := body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if zr, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			if b, err := io.ReadAll(zr); err == nil {
				plain = b
			}
		}
	}
	n, err := billedReads(ex.method, resp.StatusCode, plain, ex.countAliases)
	if err != nil {
		// Count what Firestore would bill at least (one read) and say why.
		m.log.Warn("cannot parse answer; counting 1 billed read", "method", ex.method, "err", err)
		n = 1
	}
	m.mu.Lock()
	m.billed += n
	m.mu.Unlock()
	return nil
}

// firestoreStatus maps HTTP status codes to the google.rpc.Code names Firestore uses.
var firestoreStatus = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
	404: "NOT_FOUND", 409: "ABORTED", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED",
	499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
	503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

func writeFirestoreError(w http.ResponseWriter, status int, message string) {
	name, ok := firestoreStatus[status]
	if !ok {
		name = "UNKNOWN"
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code": status, "message": message, "status": name,
	}})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// meterListener tracks the meter's connections so Refuse can reset them, and resets
// new ones while refusing.
type meterListener struct {
	net.Listener

	mu       sync.Mutex
	refusing bool
	conns    map[net.Conn]struct{}
}

func (l *meterListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		refusing := l.refusing
		if !refusing {
			l.conns[c] = struct{}{}
		}
		l.mu.Unlock()
		if !refusing {
			return &trackedConn{Conn: c, l: l}, nil
		}
		reset(c)
	}
}

func (l *meterListener) setRefusing(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refusing = on
	if on {
		for c := range l.conns {
			reset(c)
		}
	}
}

// trackedConn leaves the listener's set when closed (HTTP/1 and gRPC connections alike).
type trackedConn struct {
	net.Conn
	l *meterListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// reset closes c with SO_LINGER 0, so the peer sees a reset rather than a clean close.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func isListenChannel(path string) bool { return strings.HasSuffix(path, "/Listen/channel") }

// channelTransport sends WebChannel requests (.../channel) each on a connection of its
// own, every other request on pooled ones. The emulator closes its connection after
// every channel answer without saying "Connection: close"; net/http would reuse it, and
// a POST that met the close cannot be replayed (its body is gone), which the meter would
// answer with 502. The proxy's own upstream client handles that by looking before reuse
// (proxy/upstream); here a fresh connection per channel request is simpler and enough.
type channelTransport struct {
	pooled, fresh *http.Transport
}

func newChannelTransport() *channelTransport {
	pooled := http.DefaultTransport.(*http.Transport).Clone()
	fresh := pooled.Clone()
	fresh.DisableKeepAlives = true
	return &channelTransport{pooled: pooled, fresh: fresh}
}

func (c *channelTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/channel") {
		return c.fresh.RoundTrip(r)
	}
	return c.pooled.RoundTrip(r)
}

func (c *channelTransport) close() {
	c.pooled.CloseIdleConnections()
	c.fresh.CloseIdleConnections()
}
