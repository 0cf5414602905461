// Package handlers holds the actions harvest-worker can run for an event, one per
// file: webhook (a signed POST), analytics (per-day counters in Redis), invalidate
// (bump the proxy's cache generations) and log. New builds the one a rules.yaml
// handler names.
//
// Every handler is safe for concurrent use: the consumer calls Handle from up to
// Concurrency goroutines at once. Handlers do no retrying and no deduplication of their
// own; the consumer (package worker) does both around them.
package handlers

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/worker"
)

// Deps are what handlers may need beyond their own configuration.
type Deps struct {
	// Redis and KeyPrefix are for analytics. Required by an analytics handler.
	Redis     redis.UniversalClient
	KeyPrefix string
	// StatsRetention is how long analytics counters live. Default 90 days.
	StatsRetention time.Duration
	// Invalidator is for invalidate. Required by an invalidate handler.
	Invalidator Invalidator
	// Logger is for log, default slog.Default().
	Logger *slog.Logger
}

// Actions is the list of action names New knows.
var Actions = []string{"webhook", "analytics", "invalidate", "log"}

// New builds the handler for cfg.Action, or says why it cannot.
func New(cfg rules.Handler, deps Deps) (worker.Handler, error) {
	switch cfg.Action {
	case "webhook":
		return NewWebhook(cfg.URL, cfg.Secret, cfg.Timeout)
	case "analytics":
		if deps.Redis == nil {
			return nil, fmt.Errorf("handler %s: analytics needs Redis (set -redis, REDIS_URL or cache.redis_url)", cfg.Name)
		}
		return NewAnalytics(deps.Redis, deps.KeyPrefix, deps.StatsRetention), nil
	case "invalidate":
		if deps.Invalidator == nil {
			return nil, fmt.Errorf("handler %s: invalidate needs the proxy's cache (Redis) to bump generations in", cfg.Name)
		}
		return NewInvalidate(deps.Invalidator), nil
	case "log":
		return NewLog(deps.Logger), nil
	default:
		return nil, fmt.Errorf("handler %s: unknown action %q (want one of %v)", cfg.Name, cfg.Action, Actions)
	}
}
