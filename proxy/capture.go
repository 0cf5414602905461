package proxy

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/capture"
	"github.com/harvest-hub/edge/rules"
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

// startCapture starts change capture's Runner as soon as a rule captures (now, or
// after a reload) and returns the function that stops it, waiting until its watches
// released their leases. Nothing is dialled while no rule captures: finding
// Application Default Credentials may probe the network.
func (p *Proxy) startCapture(ctx context.Context) (stop func()) {
	var mu sync.Mutex
	var stopRunner func()
	stopped := false
	try := func(cfg *rules.Config) {
		mu.Lock()
		defer mu.Unlock()
		if stopRunner != nil || stopped || !capturing(cfg) {
			return
		}
		stopRunner = p.runCapture(ctx)
	}
	// Reload callbacks run under the Store's lock, which capture.New takes too.
	p.rules.OnReload(func(cfg *rules.Config) { go try(cfg) })
	try(p.rules.Current())
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if stopRunner != nil {
			stopRunner()
		}
	}
}

func capturing(cfg *rules.Config) bool {
	for i := range cfg.Rules {
		if cfg.Rules[i].Capture {
			return true
		}
	}
	return false
}

// runCapture dials the upstream's gRPC API with the proxy's own credentials and runs
// the Runner; nil when it cannot (logged).
func (p *Proxy) runCapture(ctx context.Context) (stop func()) {
	co := p.opts.Capture
	upstream := co.Upstream
	if upstream == "" {
		upstream = p.opts.Upstream
	}
	conn, err := watch.Dial(ctx, watch.DialOptions{URL: upstream, TokenFile: co.TokenFile})
	if err != nil {
		p.log.Error("change capture off: cannot reach the upstream's Listen with the proxy's credentials", "err", err)
		return nil
	}
	var rdb *redis.Client
	if p.opts.RedisURL != "" {
		opt, err := redis.ParseURL(p.opts.RedisURL)
		if err != nil {
			conn.Close()
			p.log.Error("change capture off: bad Redis URL", "err", err)
			return nil
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
		return nil
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
