package rules

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseEmptyFileIsDefaults(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "cache:\n"} {
		cfg := mustParse(t, src)
		want := Defaults()
		want.Source = "test.yaml"
		cfg.index, want.index = nil, nil
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("%q: got %+v, want defaults %+v", src, cfg, want)
		}
	}
}

func TestParseDecodesOverDefaults(t *testing.T) {
	cfg := mustParse(t, `
upstream:
  url: http://127.0.0.1:8081
cache:
  l1_max_bytes: 0
  redis_timeout: 50ms
server:
  max_body_bytes: 2MiB
events:
  old_value: true
rules:
  - match: /products/{id}
    ttl: 30m
worker:
  handlers:
    - name: log
      on: "#"
      action: log
      prefetch: 4
`)
	if cfg.Cache.L1MaxBytes != 0 {
		t.Errorf("explicit l1_max_bytes: 0 gave %d, want 0 (L1 off)", cfg.Cache.L1MaxBytes)
	}
	if cfg.Cache.L1MaxEntries != 100000 || cfg.Cache.KeyPrefix != "harvest:" || cfg.Cache.RedisTimeout != 50*time.Millisecond {
		t.Errorf("cache: %+v", cfg.Cache)
	}
	if cfg.Server.MaxBodyBytes != 2<<20 || cfg.Server.IdleTimeout != 120*time.Second {
		t.Errorf("server: %+v", cfg.Server)
	}
	if cfg.Upstream.URL != "http://127.0.0.1:8081" || cfg.Upstream.Timeout != 30*time.Second {
		t.Errorf("upstream: %+v", cfg.Upstream)
	}
	if !cfg.Events.OldValue || cfg.Events.Exchange != "firestore.events" {
		t.Errorf("events: %+v", cfg.Events)
	}
	r := cfg.Rules[0]
	if r.Scope != ScopeUser || r.Consistency != Strong || r.TTL != 30*time.Minute || r.Events != 0 || r.Line != 12 {
		t.Errorf("rule defaults: %+v", r)
	}
	h := cfg.Worker.Handlers[0]
	want := defaultHandler()
	want.Name, want.On, want.Action, want.Prefetch, want.Line = "log", []string{"#"}, "log", 4, 16
	if !reflect.DeepEqual(h, want) {
		t.Errorf("handler: got %+v, want %+v", h, want)
	}
}

func TestParseEvents(t *testing.T) {
	cases := []struct {
		yaml string
		want EventTypes
	}{
		{"", 0},
		{"events: false", 0},
		{"events: true", AllEvents},
		{"events: [created]", Created},
		{"events: [created, deleted]", Created | Deleted},
		{"events: [updated, written]", AllEvents}, // written means every change
		{"events: ${EV:-true}", AllEvents},
	}
	for _, tc := range cases {
		cfg := mustParse(t, "rules:\n  - match: /a/{b}\n    ttl: 1s\n    "+tc.yaml+"\n")
		if got := cfg.Rules[0].Events; got != tc.want {
			t.Errorf("%q: got %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

func TestEventTypesAllows(t *testing.T) {
	cases := []struct {
		set, kind EventTypes
		want      bool
	}{
		{Created, Created, true},
		{Created, Updated, false},
		{Created, Deleted, false},
		{Created, Written, true}, // a set that may have created the document
		{Updated, Written, true},
		{Deleted, Written, false},
		{Created | Updated | Deleted, Deleted, true},
		{AllEvents, Written, true},
		{0, Written, false},
		{0, Created, false},
	}
	for _, tc := range cases {
		if got := tc.set.Allows(tc.kind); got != tc.want {
			t.Errorf("(%v).Allows(%v) = %v, want %v", tc.set, tc.kind, got, tc.want)
		}
	}
}

func TestExpand(t *testing.T) {
	env := func(name string) (string, bool) {
		v, ok := map[string]string{"HOST": "redis.local", "EMPTY": ""}[name]
		return v, ok
	}
	cases := []struct{ in, want, err string }{
		{"plain", "plain", ""},
		{"redis://${HOST}:6379", "redis://redis.local:6379", ""},
		{"${UNSET}", "", ""},
		{"${UNSET:-fallback}", "fallback", ""},
		{"${EMPTY:-fallback}", "fallback", ""},
		{"${HOST:-fallback}", "redis.local", ""},
		{"${UNSET:-http://a:1/b}", "http://a:1/b", ""},
		{"pa$$word", "pa$word", ""},
		{"$${HOST}", "${HOST}", ""},
		{"${", "", "missing }"},
		{"${1BAD}", "", "bad variable reference ${1BAD}"},
		{"${}", "", "bad variable reference ${}"},
		{"$HOST", "", "bad variable reference"},
		{"trailing $", "", "bad variable reference"},
	}
	for _, tc := range cases {
		got, err := expand(tc.in, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expand(%q): err %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseExpandsValuesNotKeys(t *testing.T) {
	env := func(name string) (string, bool) {
		v, ok := map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0", "SIZE": "1024", "KEY": "cache"}[name]
		return v, ok
	}
	cfg, err := Parse("t.yaml", []byte("cache:\n  redis_url: ${REDIS_URL}\n  l1_max_entries: ${SIZE}\n  key_prefix: ${PREFIX:-hh:}\nevents:\n  amqp_url: ${RABBITMQ_URL}\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cache.RedisURL != "redis://127.0.0.1:6379/0" || cfg.Cache.L1MaxEntries != 1024 || cfg.Cache.KeyPrefix != "hh:" {
		t.Errorf("cache: %+v", cfg.Cache)
	}
	if cfg.Events.AMQPURL != "" {
		t.Errorf("unset ${RABBITMQ_URL} gave %q, want empty (no broker)", cfg.Events.AMQPURL)
	}
	// A key is never expanded: ${KEY} stays an unknown key.
	_, err = Parse("t.yaml", []byte("${KEY}:\n  x: 1\n"), env)
	if err == nil || !strings.Contains(err.Error(), `unknown key "${KEY}"`) {
		t.Errorf("expanded a key? err = %v", err)
	}
}

// Every problem in a file is reported, each with its line, in line order.
func TestParseReportsEveryErrorWithItsLine(t *testing.T) {
	src := `upstream:
  url: ftp://example.com
  timeout: 30
  colour: blue
server:
  max_body_bytes: -1
cache:
  redis_url: http://127.0.0.1:6379
  l1_max_bytes: ${1BAD}
events:
  amqp_url: ${AMQP:-amqp://guest:guest@127.0.0.1:5672/}
rules:
  - match: /{document=**}
    ttl: 0
  - match: /products/{id}
    ttl: 1m
  - match: /products/{pid}
    ttl: 2m
  - ttl: 5m
  - match: products/{id}
  - match: /products
  - match: /a/{x=**}/b
  - match: /a/{x}/{x}
  - match: /q/{id}
    scope: everyone
    consistency: maybe
    events: [created, renamed]
    stale_if_error: -1s
    tll: 5m
worker:
  handlers:
    - name: Order Hook
      on: []
      action: webhook
    - name: ok
      on: ["orders.*", "orders.cre*"]
      action: email
    - name: ok
      on: ["#"]
      action: log
      max_attempts: 0
      backoff: 10m
      max_backoff: 1m
`
	_, err := Parse("bad.yaml", []byte(src), nil)
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("err %T %v, want ErrorList", err, err)
	}
	want := []struct {
		line int
		msg  string
	}{
		{2, `upstream.url: URL scheme "ftp": want http or https`},
		{3, `upstream.timeout: bad duration "30"`},
		{4, `upstream: unknown key "colour"`},
		{6, "server.max_body_bytes: negative number -1"},
		{8, `cache.redis_url: URL scheme "http": want redis or rediss or unix`},
		{9, "cache.l1_max_bytes: bad variable reference ${1BAD}"},
		{15, "unreachable: shadowed by rule at line 13"},
		{17, "duplicate rule: same pattern as rule at line 15"},
		{19, "rule: missing match"},
		{20, "must start with /"},
		{21, "names a collection, not documents"},
		{22, "{x=**} must be the last segment"},
		{23, "wildcard {x} appears twice"},
		{24, "unreachable: shadowed by rule at line 13"},
		{25, `unknown scope "everyone"`},
		{26, `unknown consistency "maybe"`},
		{27, `rules[8].events: unknown event "renamed"`},
		{28, "rules[8].stale_if_error: negative duration -1s"},
		{29, `rules[8]: unknown key "tll"`},
		{32, `handler name "Order Hook": use only a-z`},
		{32, `handler "Order Hook": a webhook needs url`},
		{33, `handler "Order Hook": on: want at least one routing pattern`},
		{36, `routing pattern "orders.cre*": * and # must be whole words`},
		{37, `unknown action "email"`},
		{38, `handler name "ok": already used at line 35`},
		{41, "max_attempts must be at least 1"},
		{43, "max_backoff 1m0s is less than backoff 10m0s"},
	}
	if len(list) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i := 0; i < len(want) && i < len(list); i++ {
		e := list[i]
		if e.File != "bad.yaml" || e.Line != want[i].line || !strings.Contains(e.Msg, want[i].msg) {
			t.Errorf("error %d: got %q, want line %d containing %q", i, e.Error(), want[i].line, want[i].msg)
		}
	}
	if !strings.HasPrefix(err.Error(), "bad.yaml:2: upstream.url:") || strings.Count(err.Error(), "\n") != len(list)-1 {
		t.Errorf("Error() should be one file:line: reason per line:\n%s", err)
	}
}

func TestParseShadowing(t *testing.T) {
	cases := []struct {
		first, second string
		unreachable   bool
	}{
		{"/{document=**}", "/products/{id}", true},
		{"/products/{id}", "/products/p1", true},
		{"/products/{id}", "/products/{id}/reviews/{r}", false},
		{"/products/{id}/{rest=**}", "/products/{id}", true}, // ** takes zero segments
		{"/products/{id}/{rest=**}", "/products/{id}/reviews/{r}", true},
		{"/products/p1", "/products/{id}", false}, // specific first is the right order
		{"/{c}/{d}", "/products/{id}", true},
		{"/{c}/{d}", "/products/{id}/reviews/{r}", false},
		{"/users/{u}/orders/{o}", "/users/{u}/{rest=**}", false},
		{"/a/{x=**}", "/a/b/c/{d=**}", true},
	}
	for _, tc := range cases {
		src := "rules:\n  - match: " + tc.first + "\n    ttl: 1m\n  - match: " + tc.second + "\n    ttl: 1m\n"
		_, err := Parse("t.yaml", []byte(src), nil)
		if tc.unreachable {
			if err == nil || err.Error() != "t.yaml:4: unreachable: shadowed by rule at line 2 ("+tc.first+"); put the more specific rule first" {
				t.Errorf("%s then %s: err %v, want unreachable", tc.first, tc.second, err)
			}
		} else if err != nil {
			t.Errorf("%s then %s: unexpected %v", tc.first, tc.second, err)
		}
	}
}

func TestParseBadYAMLNamesLine(t *testing.T) {
	_, err := Parse("t.yaml", []byte("cache:\n  redis_url: a\n   bad: [\n"), nil)
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].Line == 0 || !strings.HasPrefix(err.Error(), "t.yaml:") {
		t.Fatalf("got %v", err)
	}
	_, err = Parse("t.yaml", []byte("- just\n- a list\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "t.yaml:1: top level: want a mapping") {
		t.Fatalf("got %v", err)
	}
	_, err = Parse("t.yaml", []byte("cache: {}\ncache: {}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), `t.yaml:2: top level: duplicate key "cache" (first at line 1)`) {
		t.Fatalf("got %v", err)
	}
}
