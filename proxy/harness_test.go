package proxy

// The integration harness: N proxy replicas, each its own *Proxy on a loopback
// listener, in front of ONE upstream meter in front of the shared Firestore emulator,
// sharing Redis (or not) through a per-test key prefix. Every test talks raw HTTP to
// the replicas, so headers (X-Cache, Age, hop-by-hop) are what a client sees.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// redisAddr is the shared test Redis; tests never FLUSH it, they delete their own
// prefix's keys.
const redisAddr = "127.0.0.1:6379"

// owner is the emulator's admin credential: list, listCollectionIds and batchWrite
// need it.
const owner = "Bearer owner"

// setup describes one harness.
type setup struct {
	replicas int
	// redis is the address the replicas use for Redis ("" runs each L1 only); a test
	// cutting Redis points it at a testbed.Relay.
	redis string
	// cache and server are extra YAML lines under cache: and server:.
	cache, server []string
	// rules is the body of rules: (a YAML list).
	rules string
	// adminToken guards POST /_proxy/purge.
	adminToken string
	// upstream, when set, gives replica i's upstream URL instead of the meter's (a
	// test-owned gate in front of the meter, or an httptest server).
	upstream func(i int, meterURL string) string

	// emitter gives each replica an event emitter (Options.Emitter), publishing to
	// amqp ("" keeps events in the outbox) with the events: settings of rules.yaml plus
	// the extra YAML lines in events. Each replica's outbox is its own temporary
	// directory, or outboxDir when set (one replica at a time: a restart test).
	emitter   bool
	amqp      string
	events    []string
	outboxDir string

	// capture is each replica's Options.Capture (capture_test.go).
	capture CaptureOptions
	// listenChannel is each replica's Options.ListenChannel (listenchannel_test.go).
	listenChannel ListenChannelOptions
}

type harness struct {
	t        *testing.T
	emu      *testbed.Emu
	meter    *testbed.Meter
	project  string
	prefix   string
	replicas []*replica
	http     *http.Client

	setup     setup  // what newHarness was given, defaults applied
	rulesPath string // the replicas' rules.yaml
}

type replica struct {
	*Proxy
	url string // http://127.0.0.1:port
	reg *prometheus.Registry
	em  *emitter.Emitter // nil unless setup.emitter
	// stop ends Serve, then closes the emitter without draining it (as a killed
	// process would leave it: what the broker has not confirmed stays in the outbox).
	// It is idempotent and also runs when the test ends.
	stop func()
}

// sharedRules caches everything under farmers/ and products/ for every caller, and
// everything else per caller (so a collection-group query, which may return documents
// at any depth, has a rule for each of them).
const sharedRules = `
  - match: /farmers/{f}/products/{p}
    ttl: 10m
    scope: shared
    negative_ttl: 10m
  - match: /farmers/{f}
    ttl: 10m
    scope: shared
  - match: /products/{p}
    ttl: 10m
    scope: shared
  - match: /{document=**}
    ttl: 10m
`

func newHarness(t *testing.T, s setup) *harness {
	t.Helper()
	if s.replicas == 0 {
		s.replicas = 1
	}
	if s.rules == "" {
		s.rules = sharedRules
	}
	emu := testbed.Emulator(t)
	h := &harness{
		t:       t,
		emu:     emu,
		project: emu.NewProject(t),
		meter:   testbed.NewMeter(t, emu.URL),
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		},
	}
	t.Cleanup(h.http.CloseIdleConnections)
	h.prefix = "test:" + testbed.RandomHex(6) + ":"
	if s.redis != "" {
		h.prefix = testbed.RedisPrefix(t, "proxy") // before the replicas: its keys go after they stop
	}
	yaml := h.rulesYAML(s)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	h.setup, h.rulesPath = s, path
	for range s.replicas {
		h.addReplica()
	}
	return h
}

// addReplica starts one more replica with the harness's setup (a restart, after an
// earlier replica's stop) and returns it.
func (h *harness) addReplica() *replica {
	h.t.Helper()
	up := h.meter.URL()
	if h.setup.upstream != nil {
		up = h.setup.upstream(len(h.replicas), up)
	}
	r := h.startReplica(h.rulesPath, h.setup, up)
	h.replicas = append(h.replicas, r)
	return r
}

func (h *harness) rulesYAML(s setup) string {
	var b strings.Builder
	b.WriteString("upstream:\n  timeout: 20s\n")
	b.WriteString("server:\n  shutdown_grace: 2s\n")
	for _, l := range s.server {
		b.WriteString("  " + l + "\n")
	}
	// A generous Redis timeout: two shared cores under -race must not turn into
	// "Redis is down" (the cut test cuts the connection instead, which fails fast).
	fmt.Fprintf(&b, "cache:\n  key_prefix: %q\n  redis_timeout: 500ms\n", h.prefix)
	for _, l := range s.cache {
		b.WriteString("  " + l + "\n")
	}
	if len(s.events) > 0 {
		b.WriteString("events:\n")
		for _, l := range s.events {
			b.WriteString("  " + l + "\n")
		}
	}
	b.WriteString("rules:\n" + s.rules)
	return b.String()
}

func (h *harness) startReplica(rulesPath string, s setup, upstream string) *replica {
	t := h.t
	t.Helper()
	store, err := rules.NewStore(rulesPath, nil)
	if err != nil {
		t.Fatalf("harness: rules: %v", err)
	}
	reg := prometheus.NewRegistry()
	o := Options{
		Listen:     "127.0.0.1:0",
		Upstream:   upstream,
		AdminToken: s.adminToken,
		Rules:      store,
		Registry:   reg,
		Capture:    s.capture,

		ListenChannel: s.listenChannel,
	}
	if s.redis != "" {
		o.RedisURL = "redis://" + s.redis
	}
	if s.emitter {
		ev := store.Current().Events
		ev.AMQPURL, ev.OutboxDir = s.amqp, s.outboxDir
		if ev.OutboxDir == "" {
			ev.OutboxDir = t.TempDir()
		}
		log := slog.New(slog.DiscardHandler)
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		em, err := emitter.New(ev, log, reg)
		if err != nil {
			t.Fatalf("harness: emitter.New: %v", err)
		}
		o.Emitter, o.AMQPURL, o.OutboxDir = em, ev.AMQPURL, ev.OutboxDir
	}
	p, err := New(o)
	if err != nil {
		if o.Emitter != nil {
			o.Emitter.Close()
		}
		t.Fatalf("harness: proxy.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("harness: Serve: %v", err)
			}
			if o.Emitter != nil {
				if err := o.Emitter.Close(); err != nil {
					t.Errorf("harness: closing the emitter: %v", err)
				}
			}
		})
	}
	t.Cleanup(stop)
	if s.redis != "" {
		// A replica is only ready once subscribed: before that its L1 is untrusted.
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := p.tiers.Gens.WaitTrusted(wctx); err != nil {
			t.Fatalf("harness: replica never subscribed to invalidations: %v", err)
		}
	}
	return &replica{Proxy: p, url: "http://" + ln.Addr().String(), reg: reg, em: o.Emitter, stop: stop}
}

// docs is the REST path of the project's documents root.
func (h *harness) docs() string {
	return "/v1/projects/" + h.project + "/databases/(default)/documents"
}

// name is the full resource name of a document path relative to the root.
func (h *harness) name(rel string) string {
	return "projects/" + h.project + "/databases/(default)/documents/" + rel
}

// answer is one HTTP exchange's result.
type answer struct {
	status int
	body   []byte
	header http.Header
}

func (a answer) cache() string { return a.header.Get("X-Cache") }

func (a answer) String() string {
	return fmt.Sprintf("%d X-Cache=%q %s", a.status, a.cache(), bytes.TrimSpace(a.body))
}

// call sends one request to base+path. Authorization defaults to the emulator's
// owner; hdr pairs override it ("Authorization", "" removes it).
func (h *harness) call(base, method, path, body string, hdr ...string) answer {
	h.t.Helper()
	a, err := h.send(base, method, path, body, hdr...)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// send is call for any goroutine: it reports instead of failing the test.
func (h *harness) send(base, method, path, body string, hdr ...string) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", owner)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	return answer{status: resp.StatusCode, body: b, header: resp.Header}, nil
}

// via sends a request through replica i.
func (h *harness) via(i int, method, path, body string, hdr ...string) answer {
	h.t.Helper()
	return h.call(h.replicas[i].url, method, path, body, hdr...)
}

// direct sends a request to the emulator itself, bypassing proxy and meter: the
// ground truth, uncounted.
func (h *harness) direct(method, path, body string, hdr ...string) answer {
	h.t.Helper()
	return h.call(h.emu.URL, method, path, body, hdr...)
}

// put writes a document directly to the emulator (test setup, not through the proxy).
func (h *harness) put(rel string, fields string) {
	h.t.Helper()
	if a := h.direct("PATCH", h.docs()+"/"+rel, `{"fields":`+fields+`}`); a.status != 200 {
		h.t.Fatalf("seeding %s: %v", rel, a)
	}
}

// counts is the meter's total of forwarded requests and billed reads.
func (h *harness) counts() (requests, billed int64) {
	c := h.meter.Snapshot()
	return c.Total, c.BilledReads
}

// normalized is a JSON answer without its readTime fields (which differ on every
// upstream call), for comparing content.
func normalized(t *testing.T, body []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return string(body) // not JSON (an emulator error page): compare as is
	}
	var strip func(any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			delete(x, "readTime")
			for k, e := range x {
				x[k] = strip(e)
			}
		case []any:
			for i, e := range x {
				x[i] = strip(e)
			}
		}
		return v
	}
	b, _ := json.Marshal(strip(v))
	return string(b)
}

// waitFor polls cond (a meter count, a subscription state) until it holds, failing
// the test after a generous bound: it synchronises, it does not measure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// unsignedJWT is an emulator-accepted ID token for uid (the emulator does not check
// signatures): distinct users with distinct Authorization headers.
func unsignedJWT(project, uid string) string {
	enc := base64.RawURLEncoding.EncodeToString
	head := enc([]byte(`{"alg":"none","typ":"JWT"}`))
	claims := enc(fmt.Appendf(nil, `{"sub":%q,"user_id":%q,"iat":1700000000,"exp":4000000000,"aud":%q,"iss":"https://securetoken.google.com/%s"}`,
		uid, uid, project, project))
	return "Bearer " + head + "." + claims + "."
}

// readKind is one cacheable read of the farmer f's products.
type readKind struct {
	name, method, path, body string
}

const onFilter = `"where":{"fieldFilter":{"field":{"fieldPath":"status"},"op":"EQUAL","value":{"stringValue":"on"}}}`

// readsOf lists every cacheable read kind over farmers/f and its products: each one
// depends on farmers/f/products/a (and b), so a write there must invalidate it.
func (h *harness) readsOf(f string) []readKind {
	base := h.docs() + "/farmers/" + f
	query := `{"structuredQuery":{"from":[{"collectionId":"products"}],` + onFilter + `}}`
	group := `{"structuredQuery":{"from":[{"collectionId":"products","allDescendants":true}],` + onFilter + `}}`
	count := `{"structuredAggregationQuery":{"structuredQuery":{"from":[{"collectionId":"products"}],` + onFilter +
		`},"aggregations":[{"alias":"n","count":{}}]}}`
	batch := fmt.Sprintf(`{"documents":[%q,%q]}`, h.name("farmers/"+f+"/products/a"), h.name("farmers/"+f+"/products/b"))
	return []readKind{
		{"get", "GET", base + "/products/a", ""},
		{"list", "GET", base + "/products", ""},
		{"query", "POST", base + ":runQuery", query},
		{"groupQuery", "POST", h.docs() + ":runQuery", group}, // the emulator wants groups at the root
		{"batchGet", "POST", h.docs() + ":batchGet", batch},
		{"count", "POST", base + ":runAggregationQuery", count},
		{"collectionIds", "POST", base + ":listCollectionIds", `{}`},
	}
}

func isHit(xcache string) bool { return xcache == "HIT-L1" || xcache == "HIT-L2" }

// firestoreError decodes a Firestore-shaped error body, failing the test when the
// body is not one.
func firestoreError(t *testing.T, a answer) (code int, status string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error.Status == "" || e.Error.Message == "" {
		t.Fatalf("want a Firestore-shaped JSON error, got %v (%v)", a, err)
	}
	if !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", a.header.Get("Content-Type"))
	}
	return e.Error.Code, e.Error.Status
}
