package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/capture"
	"github.com/harvest-hub/edge/watch"
)

// CaptureOptions tune change capture (package capture), which runs when a rule has
// capture: true.
type CaptureOptions struct {
	// TokenFile holds the bearer token of the proxy's own upstream Listen; empty:
	// "owner" on an http (emulator) upstream, Application Default Credentials on https.
	TokenFile string
	// Upstream overrides Options.Upstream for the Listen ("" uses it).
	Upstream string
	// LeaseTTL of a watch's lease in Redis. Default 5s.
	LeaseTTL time.Duration
}

// startCapture starts change capture's Runner and returns the function that stops it
// (waiting until its watches released their leases). It is a no-op when the upstream
// cannot be dialled with the proxy's credentials and no rule captures.
func (p *Proxy) startCapture(ctx context.Context) (stop func()) {
	co := p.opts.Capture
	upstream := co.Upstream
	if upstream == "" {
		upstream = p.opts.Upstream
	}
	wanted := false
	for _, r := range p.rules.Current().Rules {
		wanted = wanted || r.Capture
	}
	level := slog.LevelInfo
	if wanted {
		level = slog.LevelError
	}
	conn, err := watch.Dial(ctx, watch.DialOptions{URL: upstream, TokenFile: co.TokenFile})
	if err != nil {
		p.log.Log(ctx, level, "change capture off: cannot reach the upstream's Listen with the proxy's credentials", "err", err)
		return func() {}
	}
	var rdb *redis.Client
	if p.opts.RedisURL != "" {
		opt, err := redis.ParseURL(p.opts.RedisURL)
		if err != nil {
			conn.Close()
			p.log.Log(ctx, level, "change capture off: bad Redis URL", "err", err)
			return func() {}
		}
		rdb = redis.NewClient(opt)
	}
	r, err := capture.New(capture.Config{
		Rules: p.rules, Conn: conn, Gens: p.tiers.Gens, Emitter: p.opts.Emitter, Redis: rdb,
		Prefix: p.rules.Current().Cache.KeyPrefix, Replica: p.tiers.Gens.ID(), LeaseTTL: co.LeaseTTL,
		Registerer: p.opts.Registry, Log: p.log,
	})
	if err != nil {
		p.log.Error("change capture off", "err", err)
		conn.Close()
		if rdb != nil {
			rdb.Close()
		}
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		conn.Close()
		if rdb != nil {
			rdb.Close()
		}
	}
}
