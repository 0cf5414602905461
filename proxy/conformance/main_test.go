package conformance

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/proxy/proxytest"
	"github.com/harvest-hub/edge/rules"
)

func TestMain(m *testing.M) {
	// The Go client refuses NewRESTClient when FIRESTORE_EMULATOR_HOST is set, and the
	// proxy would take its upstream from it: the tests name every address themselves.
	os.Unsetenv("FIRESTORE_EMULATOR_HOST")
	os.Exit(testbed.Main(m))
}

// redisAddr is the shared test Redis; the proxy gets a random key prefix, and the
// test deletes that prefix's keys (never FLUSH).
const redisAddr = "127.0.0.1:6379"

// sampleRules is the sample rules.yaml of the repository: the proxy under test runs
// with exactly the rules users start from.
const sampleRules = "../../rules.yaml"

// stack is one proxy in front of an upstream meter in front of the shared emulator.
type stack struct {
	emu   *testbed.Emu
	meter *testbed.Meter
	proxy *proxy.Proxy
	// addr is the proxy's "127.0.0.1:port".
	addr string
}

// newStack starts a proxy with the sample rules.yaml, Redis at redisAddr under a
// random key prefix, and L1 on (the sample's 64 MiB), whose upstream is a meter in
// front of the emulator. Everything stops when the test ends.
func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackVia(t, func(meterURL string) string { return meterURL })
}

// newStackVia is newStack with the proxy's upstream URL chosen by via from the meter's
// (a TCP relay in front of the meter, say).
func newStackVia(t *testing.T, via func(meterURL string) string) *stack {
	t.Helper()
	emu := testbed.Emulator(t)
	meter := testbed.NewMeter(t, emu.URL)
	prefix := testbed.RedisPrefix(t, "conformance") // before the proxy: its keys go after it stops

	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(rulesFor(t, prefix, t.TempDir())), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	if l1 := store.Current().Cache.L1MaxBytes; l1 <= 0 {
		t.Fatalf("the sample rules.yaml turns L1 off (l1_max_bytes %d); this suite wants L1 on", l1)
	}
	p := proxytest.Start(t, proxy.Options{
		Upstream:  via(meter.URL()),
		RedisURL:  "redis://" + redisAddr,
		OutboxDir: filepath.Join(t.TempDir(), "outbox"),
		Rules:     store,
	})
	// Until it is subscribed to invalidations the proxy does not trust its L1: wait,
	// so the cache under test is the one users get in steady state.
	deadline := time.Now().Add(15 * time.Second)
	for !p.Stats().Subscribed {
		if time.Now().After(deadline) {
			t.Fatalf("proxy never subscribed to invalidations on Redis %s", redisAddr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &stack{emu: emu, meter: meter, proxy: p.Proxy, addr: p.Addr}
}

// rulesFor is the sample rules.yaml with this test's Redis key prefix and outbox
// directory, and a Redis timeout that two shared cores under -race keep (the sample's
// 25 ms would make a busy test machine look like "Redis is down", which is a different
// test). Nothing else changes: the rules are the sample's.
func rulesFor(t *testing.T, prefix, outbox string) string {
	t.Helper()
	data, err := os.ReadFile(sampleRules)
	if err != nil {
		t.Fatalf("reading the sample rules: %v", err)
	}
	y := string(data)
	for _, r := range [][2]string{
		{`key_prefix: ${HARVEST_KEY_PREFIX:-harvest:}`, fmt.Sprintf("key_prefix: %q", prefix)},
		{`redis_timeout: 25ms`, `redis_timeout: 500ms`},
		{`outbox_dir: ${HARVEST_OUTBOX_DIR:-./data/outbox}`, "outbox_dir: " + outbox},
	} {
		if !strings.Contains(y, r[0]) {
			t.Fatalf("%s no longer contains %q: update rulesFor", sampleRules, r[0])
		}
		y = strings.Replace(y, r[0], r[1], 1)
	}
	return y
}

// observer is a reverse proxy on loopback between a client and the address under test
// (emulator or proxy): it records the X-Cache header of every answer, so a test sees
// what the proxy did for each request of a client whose HTTP client it cannot replace
// (the Go client refuses option.WithHTTPClient), and can add an Authorization header
// (the emulator's "Bearer owner" for the admin-only list methods). It changes nothing
// else, and runs in front of both runs alike.
type observer struct {
	addr string
	seen chan string
}

func newObserver(t *testing.T, target, auth string) *observer {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{seen: make(chan string, 1<<16)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			if auth != "" {
				pr.Out.Header.Set("Authorization", auth)
			}
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			select {
			case o.seen <- resp.Header.Get("X-Cache"):
			default:
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	o.addr = ln.Addr().String()
	return o
}

// drain returns the X-Cache values recorded since the last drain, in order.
func (o *observer) drain() []string {
	var out []string
	for {
		select {
		case v := <-o.seen:
			out = append(out, v)
		default:
			return out
		}
	}
}
