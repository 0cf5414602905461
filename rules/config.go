// Package rules is the model of rules.yaml: the file users edit to say what the
// proxy caches, for how long, for whom, and which writes become events.
//
// Promises: a Config returned by Load or Parse is complete (defaults applied,
// ${VAR} references expanded) and valid; every error is an ErrorList naming
// file:line and a reason for each problem found, not just the first. Matching
// (ForDocument, ForCollection, ForCollectionGroup) takes the first rule in file
// order, never panics on any path, and allocates nothing.
//
// Concurrency: a Config is immutable once returned and safe for concurrent use;
// reloads produce a new one. Store holds the Config in force behind an atomic
// pointer (see Store for its contract). REFERENCE.md documents every key.
package rules

import "time"

// Config is the whole of rules.yaml.
type Config struct {
	Upstream Upstream `yaml:"upstream"`
	Server   Server   `yaml:"server"`
	Cache    Cache    `yaml:"cache"`
	Listen   Listen   `yaml:"listen"`
	Events   Events   `yaml:"events"`
	Worker   Worker   `yaml:"worker"`
	Rules    []Rule   `yaml:"rules"`

	// Source is the file the configuration was read from ("" when parsed from memory).
	Source string `yaml:"-"`

	// index speeds up matching; built by Parse. A Config built by hand has none and
	// is matched by scanning every rule, with the same answers.
	index *ruleIndex
}

// Upstream says where Firestore is. Flags and environment override it.
type Upstream struct {
	// URL of the Firestore REST API, e.g. https://firestore.googleapis.com or
	// http://127.0.0.1:8081 for the emulator. Default: empty, the flag decides.
	URL string `yaml:"url"`
	// Timeout for one upstream request. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConns bounds the connections to the upstream for exchanges that end with
	// their answer: reads, writes, transactions, every unary passthrough. Default 512.
	MaxConns int `yaml:"max_conns"`
	// MaxStreams bounds the connections held by Listen and Write streams and the
	// browser SDK's Listen/Write channels, which last as long as a client listens; a
	// budget of their own, so listeners never starve reads and writes. Default 1024.
	MaxStreams int `yaml:"max_streams"`
	// MaxIdleConns is the deprecated name of MaxConns (it always bounded every
	// connection, not only idle ones): Parse copies it into MaxConns, and refuses a
	// file that gives both.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// Project is the Google Cloud project whose (default) database change capture
	// watches. Default: $GOOGLE_CLOUD_PROJECT.
	Project string `yaml:"project"`
}

// Server holds limits of the proxy's own listener.
type Server struct {
	// MaxBodyBytes is the largest request body accepted; larger gets 413. Default 10 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// ReadTimeout, WriteTimeout and IdleTimeout of client connections. Defaults 60s, 60s, 120s.
	// Long-poll channels (Listen/Write) are exempt from WriteTimeout.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// ShutdownGrace is how long SIGTERM waits for in-flight requests. Default 25s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

// Cache configures the two tiers.
type Cache struct {
	// L1MaxBytes bounds the in-process tier in bytes. 0 turns L1 off. Default 64 MiB.
	L1MaxBytes int64 `yaml:"l1_max_bytes"`
	// L1MaxEntries bounds the in-process tier in entries. Default 100000.
	L1MaxEntries int `yaml:"l1_max_entries"`
	// RedisURL of the shared tier, e.g. redis://127.0.0.1:6379/0. Empty: L1 only.
	RedisURL string `yaml:"redis_url"`
	// KeyPrefix namespaces every Redis key and channel. Default "harvest:".
	KeyPrefix string `yaml:"key_prefix"`
	// RedisTimeout bounds each Redis call on the request path. Default 25ms.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	// InvalidationLease bounds how stale a replica's L1 can be when its link to the
	// invalidation bus (Redis pub/sub) is slow or silent: a replica trusts L1 only
	// while it has heard from the bus within this bound, and a write waits for every
	// replica's acknowledgement at most this long before it is answered. Default 1s.
	InvalidationLease time.Duration `yaml:"invalidation_lease"`
}

// Listen configures the Listen fan-out (package fanout): clients' Listen streams
// (onSnapshot, and the full SDK's getDoc/getDocs) served from one upstream target per
// distinct target under scope: shared rules (per caller under scope: user).
type Listen struct {
	// Linger keeps an upstream target listened after its last client left, so a page
	// navigation or a reconnect reuses it with no upstream read. Default 30s; 0 closes
	// it at once.
	Linger time.Duration `yaml:"linger"`
	// ClientQueue bounds the messages waiting for one slow client stream; a client
	// further behind is ended with RESOURCE_EXHAUSTED (the SDKs reconnect) so it never
	// holds a shared target back. Default 4096.
	ClientQueue int `yaml:"client_queue"`
	// MaxClientTargets bounds the targets one client stream holds at once. Default 1000.
	MaxClientTargets int `yaml:"max_client_targets"`
}

// Events configures event emission from the proxy.
type Events struct {
	// AMQPURL of RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/. Empty: events stay in the outbox.
	AMQPURL string `yaml:"amqp_url"`
	// Exchange is the durable topic exchange. Default "firestore.events".
	Exchange string `yaml:"exchange"`
	// OutboxDir holds unconfirmed events on disk. Default "./data/outbox".
	OutboxDir string `yaml:"outbox_dir"`
	// OutboxMaxBytes caps the outbox; when full, writes to event paths are refused (503). Default 1 GiB.
	OutboxMaxBytes int64 `yaml:"outbox_max_bytes"`
	// OldValue makes the proxy read a document before writing it, to fill data.oldValue
	// and tell created from updated. Default false.
	OldValue bool `yaml:"old_value"`
}

// Worker is harvest-worker's configuration.
type Worker struct {
	Handlers []Handler `yaml:"handlers"`
}

// Handler is one consumer: a durable queue harvest.<Name> bound with On, and one action.
type Handler struct {
	// Name of the handler; queues are harvest.<Name>, harvest.<Name>.retry, harvest.<Name>.dlq.
	Name string `yaml:"name"`
	// On lists AMQP topic patterns: "orders.created", "orders.*", "#".
	On []string `yaml:"on"`
	// Action is one of webhook, analytics, invalidate, log.
	Action string `yaml:"action"`
	// URL and Secret are for webhook: POST target and HMAC-SHA256 key.
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
	// Timeout of one webhook call. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts before a message goes to the dead-letter queue. Default 5.
	MaxAttempts int `yaml:"max_attempts"`
	// Backoff is the first retry delay; it doubles up to MaxBackoff. Defaults 1s and 5m.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Prefetch and Concurrency bound in-flight messages. Defaults 32 and 8.
	Prefetch    int `yaml:"prefetch"`
	Concurrency int `yaml:"concurrency"`
	// IdempotencyTTL is how long a handled event id is remembered. Default 24h.
	IdempotencyTTL time.Duration `yaml:"idempotency_ttl"`

	// Line in the source file, for messages.
	Line int `yaml:"-"`
}

// Scope says whose entry a cached answer is.
type Scope string

const (
	// ScopeUser keys entries by a hash of the caller's whole Authorization header.
	ScopeUser Scope = "user"
	// ScopeShared shares entries between every caller who can reach the proxy.
	ScopeShared Scope = "shared"
)

// Consistency says what L1 may do while cross-replica invalidation is not assured.
type Consistency string

const (
	// Strong: L1 is not used while the replica is not subscribed to invalidations.
	Strong Consistency = "strong"
	// Eventual: L1 keeps serving, bounded by TTL, while not subscribed.
	Eventual Consistency = "eventual"
)

// EventTypes is a set of event kinds a rule emits.
type EventTypes uint8

const (
	Created EventTypes = 1 << iota
	Updated
	Deleted
	// Written is a set whose outcome (created or updated) the proxy cannot know.
	Written
	AllEvents = Created | Updated | Deleted | Written
)

// Rule is one entry of rules:, matched in order; the first match wins.
type Rule struct {
	// Match is a path pattern in security-rules syntax: /products/{id},
	// /farmers/{f}/products/{p}, /{document=**}.
	Match string `yaml:"match"`
	// TTL of cached answers; 0 never caches.
	TTL time.Duration `yaml:"ttl"`
	// Scope, default user.
	Scope Scope `yaml:"scope"`
	// Consistency, default strong.
	Consistency Consistency `yaml:"consistency"`
	// StaleWhileRevalidate serves an expired entry this long past TTL while refreshing it.
	StaleWhileRevalidate time.Duration `yaml:"stale_while_revalidate"`
	// StaleIfError serves an expired entry this long past TTL when the upstream fails.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// NegativeTTL caches single-document 404s this long; 0 does not.
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	// Events: true, false, or a list of created, updated, deleted, written.
	Events EventTypes `yaml:"-"`
	// Capture watches the rule's documents upstream (a Listen), so writes that go
	// around the proxy also invalidate and become events. Default false. See capture.go.
	Capture bool `yaml:"capture"`

	// Line in the source file, for messages and explain.
	Line int `yaml:"-"`
}
