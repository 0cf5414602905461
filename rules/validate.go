package rules

import (
	"fmt"
	"net/url"
	"strings"
)

// validate checks what decoding alone cannot: required keys, enumerations, URLs,
// patterns, handler names, and rules that can never apply.
func (d *decoder) validate(cfg *Config) {
	d.checkURL(cfg.Upstream.URL, d.lineOf(&cfg.Upstream, "url"), "upstream.url", "http", "https")
	d.validateUpstreamConns(&cfg.Upstream)
	d.checkURL(cfg.Cache.RedisURL, d.lineOf(&cfg.Cache, "redis_url"), "cache.redis_url", "redis", "rediss", "unix")
	d.checkURL(cfg.Events.AMQPURL, d.lineOf(&cfg.Events, "amqp_url"), "events.amqp_url", "amqp", "amqps")
	if cfg.Cache.InvalidationLease <= 0 {
		d.errorf(d.lineOf(&cfg.Cache, "invalidation_lease"), "cache.invalidation_lease: must be more than 0 (with Redis, L1 would never be trusted; l1_max_bytes: 0 turns L1 off)")
	}
	if cfg.Listen.Linger < 0 {
		d.errorf(d.lineOf(&cfg.Listen, "linger"), "listen.linger: must not be negative (0 closes an upstream target as its last client leaves)")
	}
	if cfg.Listen.ClientQueue < 1 {
		d.errorf(d.lineOf(&cfg.Listen, "client_queue"), "listen.client_queue: must be at least 1")
	}
	if cfg.Listen.MaxClientTargets < 1 {
		d.errorf(d.lineOf(&cfg.Listen, "max_client_targets"), "listen.max_client_targets: must be at least 1")
	}
	d.validateRules(cfg.Rules)
	d.validateHandlers(cfg.Worker.Handlers)
	d.validateCapture(cfg)
}

// lineOf is the line of key in the struct at ptr, or 0 when it was not written.
func (d *decoder) lineOf(ptr any, key string) int {
	return d.keyLines[ptr][key]
}

// lineOr is lineOf, falling back to the struct's own line.
func (d *decoder) lineOr(ptr any, key string, fallback int) int {
	if l := d.lineOf(ptr, key); l > 0 {
		return l
	}
	return fallback
}

func (d *decoder) checkURL(raw string, line int, what string, schemes ...string) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		d.errorf(line, "%s: bad URL: %v", what, err)
		return
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		d.errorf(line, "%s: URL scheme %q: want %s", what, u.Scheme, strings.Join(schemes, " or "))
		return
	}
	if u.Host == "" && u.Scheme != "unix" {
		d.errorf(line, "%s: URL %q has no host", what, raw)
	}
}

func (d *decoder) validateRules(rs []Rule) {
	valid := make([]bool, len(rs))
	for i := range rs {
		r := &rs[i]
		if _, decoded := d.keyLines[r]; !decoded {
			continue // not a mapping: already reported
		}
		switch {
		case d.lineOf(r, "match") == 0:
			d.errorf(r.Line, "rule: missing match (a pattern like /products/{id})")
		default:
			if msg := checkPattern(r.Match); msg != "" {
				d.errorf(d.lineOf(r, "match"), "%s", msg)
			} else {
				valid[i] = true
			}
		}
		if r.Scope != ScopeUser && r.Scope != ScopeShared {
			d.errorf(d.lineOr(r, "scope", r.Line), "scope: unknown scope %q: want user or shared", r.Scope)
		}
		if r.Consistency != Strong && r.Consistency != Eventual {
			d.errorf(d.lineOr(r, "consistency", r.Line), "consistency: unknown consistency %q: want strong or eventual", r.Consistency)
		}
	}
	// A rule whose every document an earlier rule already matches can never apply:
	// almost always a rule in the wrong order.
	for j := range rs {
		if !valid[j] {
			continue
		}
		if i := d.firstEarlier(rs, valid, j, func(a, b string) bool { return canonicalPattern(a) == canonicalPattern(b) }); i >= 0 {
			d.errorf(rs[j].Line, "duplicate rule: same pattern as rule at line %d", rs[i].Line)
		} else if i := d.firstEarlier(rs, valid, j, covers); i >= 0 {
			d.errorf(rs[j].Line, "unreachable: shadowed by rule at line %d (%s); put the more specific rule first", rs[i].Line, rs[i].Match)
		}
	}
}

// firstEarlier returns the first valid rule before j for which rel(its pattern, j's
// pattern) holds, or -1.
func (d *decoder) firstEarlier(rs []Rule, valid []bool, j int, rel func(a, b string) bool) int {
	for i := 0; i < j; i++ {
		if valid[i] && rel(rs[i].Match, rs[j].Match) {
			return i
		}
	}
	return -1
}

var handlerActions = []string{"webhook", "analytics", "invalidate", "log"}

func (d *decoder) validateHandlers(hs []Handler) {
	names := map[string]int{}
	for i := range hs {
		h := &hs[i]
		if _, decoded := d.keyLines[h]; !decoded {
			continue // not a mapping: already reported
		}
		nameLine := d.lineOr(h, "name", h.Line)
		switch {
		case h.Name == "":
			d.errorf(h.Line, "handler: missing name")
		case !validQueueName(h.Name):
			d.errorf(nameLine, "handler name %q: use only a-z, 0-9, '.', '_' and '-' (it names queues harvest.<name>)", h.Name)
		default:
			if first, dup := names[h.Name]; dup {
				d.errorf(nameLine, "handler name %q: already used at line %d", h.Name, first)
			}
			names[h.Name] = nameLine
		}
		if len(h.On) == 0 {
			d.errorf(d.lineOr(h, "on", h.Line), "handler %q: on: want at least one routing pattern, e.g. orders.created, orders.*, #", h.Name)
		}
		for _, p := range h.On {
			if msg := checkTopicPattern(p); msg != "" {
				d.errorf(d.lineOr(h, "on", h.Line), "handler %q: on: %s", h.Name, msg)
			}
		}
		known := false
		for _, a := range handlerActions {
			known = known || h.Action == a
		}
		if !known {
			if h.Action == "" {
				d.errorf(h.Line, "handler %q: missing action: want one of %s", h.Name, strings.Join(handlerActions, ", "))
			} else {
				d.errorf(d.lineOf(h, "action"), "handler %q: unknown action %q: want one of %s", h.Name, h.Action, strings.Join(handlerActions, ", "))
			}
		}
		if h.Action == "webhook" {
			if h.URL == "" {
				d.errorf(d.lineOr(h, "url", h.Line), "handler %q: a webhook needs url", h.Name)
			} else {
				d.checkURL(h.URL, d.lineOf(h, "url"), fmt.Sprintf("handler %q: url", h.Name), "http", "https")
			}
		}
		for _, f := range []struct {
			key string
			val int
		}{{"max_attempts", h.MaxAttempts}, {"prefetch", h.Prefetch}, {"concurrency", h.Concurrency}} {
			if f.val < 1 {
				d.errorf(d.lineOr(h, f.key, h.Line), "handler %q: %s must be at least 1", h.Name, f.key)
			}
		}
		if h.MaxBackoff < h.Backoff {
			d.errorf(d.lineOr(h, "max_backoff", h.Line), "handler %q: max_backoff %s is less than backoff %s", h.Name, h.MaxBackoff, h.Backoff)
		}
	}
}

func validQueueName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != "" && len(s) <= 200
}

// checkTopicPattern returns why p is not an AMQP topic binding pattern, or "": words
// separated by '.', each non-empty, '*' (one word) and '#' (zero or more words) only
// as whole words, at most 255 bytes.
func checkTopicPattern(p string) string {
	if p == "" {
		return "empty routing pattern"
	}
	if len(p) > 255 {
		return fmt.Sprintf("routing pattern %q is longer than 255 bytes", clip(p))
	}
	for _, w := range strings.Split(p, ".") {
		if w == "" {
			return fmt.Sprintf("routing pattern %q has an empty word", p)
		}
		if w != "*" && w != "#" && strings.ContainsAny(w, "*#") {
			return fmt.Sprintf("routing pattern %q: * and # must be whole words", p)
		}
	}
	return ""
}
