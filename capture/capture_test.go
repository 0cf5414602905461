package capture

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/watch"
)

func TestMain(m *testing.M) {
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(testbed.Main(m))
}

const brokerURL = "amqp://guest:guest@127.0.0.1:5672/"

// env is one test's emulator project, Redis prefix, rules and event exchange.
type env struct {
	t        *testing.T
	emu      *testbed.Emu
	project  string
	prefix   string
	store    *rules.Store
	exchange string
	events   <-chan amqp.Delivery
}

func newEnv(t *testing.T) *env {
	emu := testbed.Emulator(t)
	e := &env{t: t, emu: emu, project: emu.NewProject(t), prefix: testbed.RedisPrefix(t, "capture")}
	e.exchange = testbed.UniqueName("test.capture")
	e.events = testbed.Subscribe(t, brokerURL, e.exchange)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	yaml := "upstream:\n  project: " + e.project + "\ncache:\n  key_prefix: \"" + e.prefix + "\"" +
		"\nrules:\n  - match: /orders/{o}\n    events: true\n    capture: true\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.store, err = rules.NewStore(path, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// replica is one Runner with its own Redis connection (redisAddr: the shared Redis or
// a relay in front of it), generations and emitter.
type replica struct {
	r    *Runner
	stop func()
}

func (e *env) start(name, redisAddr string) *replica {
	t := e.t
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", name)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	gens, err := cache.NewGenerations(cache.GenerationsOptions{Redis: rdb, Prefix: e.prefix, Timeout: 300 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	em, err := emitter.New(rules.Events{AMQPURL: brokerURL, Exchange: e.exchange, OutboxDir: t.TempDir(), OutboxMaxBytes: 1 << 20}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := watch.Dial(context.Background(), watch.DialOptions{URL: e.emu.URL})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Rules: e.store, Conn: conn, Gens: gens, Emitter: em, Redis: rdb, Prefix: e.prefix,
		Replica: name, LeaseTTL: 1500 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		em.Close()
		gens.Close()
		conn.Close()
		rdb.Close()
	}
	t.Cleanup(stop)
	return &replica{r: r, stop: stop}
}

// watching reports whether the replica holds the orders watch and finished a snapshot.
func (rp *replica) watching() bool {
	rp.r.mu.Lock()
	defer rp.r.mu.Unlock()
	for _, t := range rp.r.targets {
		st, held := t.stats()
		return held && !st.ReadTime.IsZero()
	}
	return false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) write(method, path, body string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.emu.DocumentsURL(e.project)+"/"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer owner")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 {
		e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
}

// saved reports whether rp's watch state in Redis has the document.
func (e *env) saved(rp *replica, doc string) bool {
	rp.r.mu.Lock()
	var k keys
	for _, t := range rp.r.targets {
		k = rp.r.keysOf(t)
	}
	rp.r.mu.Unlock()
	rdb := redis.NewClient(&redis.Options{Addr: testbed.RedisAddr})
	defer rdb.Close()
	ok, _ := rdb.HExists(context.Background(), k.members, "projects/"+e.project+"/databases/(default)/documents/"+doc).Result()
	return ok
}

type ce struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Subject string `json:"subject"`
}

// until collects events up to and including the first about subject.
func (e *env) until(subject string) []ce {
	e.t.Helper()
	var got []ce
	for {
		select {
		case m := <-e.events:
			var c ce
			if err := json.Unmarshal(m.Body, &c); err != nil {
				e.t.Fatal(err)
			}
			got = append(got, c)
			if c.Subject == "documents/"+subject {
				return got
			}
		case <-time.After(30 * time.Second):
			e.t.Fatalf("no event of %s within 30s; got %v", subject, got)
		}
	}
}

// A lease holder cut off from Redis (as good as dead to the others) stops watching;
// another replica takes over once the lease expires, and the change made in between is
// reported: once, under one id.
func TestLeaseHolderCutOffIsReplacedAndNothingIsLost(t *testing.T) {
	e := newEnv(t)
	relay := testbed.NewRelay(t, testbed.RedisAddr)
	a := e.start("a", relay.Addr())
	waitUntil(t, "replica a watches", a.watching)
	b := e.start("b", testbed.RedisAddr)
	e.write("PATCH", "orders/before", `{"fields":{}}`)
	e.until("orders/before")
	// Saved after its event was confirmed: from then on no holder reports it again.
	waitUntil(t, "orders/before saved", func() bool { return e.saved(a, "orders/before") })
	if b.watching() {
		t.Fatal("both replicas watch")
	}

	relay.Cut() // a can neither renew nor release its lease
	e.write("PATCH", "orders/during", `{"fields":{}}`)
	waitUntil(t, "replica b takes over", b.watching)
	waitUntil(t, "replica a stops watching", func() bool { return !a.watching() })
	e.write("PATCH", "orders/after", `{"fields":{}}`)
	got := e.until("orders/after")
	e.write("PATCH", "orders/sentinel", `{"fields":{}}`)
	got = append(got, e.until("orders/sentinel")...)

	ids := map[string]map[string]bool{}
	for _, c := range got {
		if ids[c.Subject] == nil {
			ids[c.Subject] = map[string]bool{}
		}
		ids[c.Subject][c.ID] = true
	}
	for _, doc := range []string{"during", "after", "sentinel"} {
		if n := len(ids["documents/orders/"+doc]); n != 1 {
			t.Errorf("orders/%s: %d distinct event ids, want 1 (events %v)", doc, n, got)
		}
	}
	if len(ids["documents/orders/before"]) != 0 {
		t.Errorf("orders/before reported again after the takeover: %v", got)
	}
}
