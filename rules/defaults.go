package rules

import "time"

// Defaults returns the configuration an empty rules.yaml yields: every default
// documented on the Config fields, and no rules (nothing cached).
func Defaults() *Config {
	return &Config{
		Upstream: Upstream{
			Timeout:    30 * time.Second,
			MaxConns:   512,
			MaxStreams: 1024,
		},
		Server: Server{
			MaxBodyBytes:  10 << 20,
			ReadTimeout:   60 * time.Second,
			WriteTimeout:  60 * time.Second,
			IdleTimeout:   120 * time.Second,
			ShutdownGrace: 25 * time.Second,
		},
		Cache: Cache{
			L1MaxBytes:   64 << 20,
			L1MaxEntries: 100000,
			KeyPrefix:    "harvest:",
			RedisTimeout: 25 * time.Millisecond,

			InvalidationLease: time.Second,
		},
		Listen: Listen{
			Linger:           30 * time.Second,
			ClientQueue:      4096,
			MaxClientTargets: 1000,
		},
		Events: Events{
			Exchange:       "firestore.events",
			OutboxDir:      "./data/outbox",
			OutboxMaxBytes: 1 << 30,
		},
	}
}

// defaultRule is what a rule is before its keys are decoded over it.
func defaultRule() Rule {
	return Rule{Scope: ScopeUser, Consistency: Strong}
}

// defaultHandler is what a handler is before its keys are decoded over it.
func defaultHandler() Handler {
	return Handler{
		Timeout:        10 * time.Second,
		MaxAttempts:    5,
		Backoff:        time.Second,
		MaxBackoff:     5 * time.Minute,
		Prefetch:       32,
		Concurrency:    8,
		IdempotencyTTL: 24 * time.Hour,
	}
}
