// Package proxy is harvest-proxy's request path: it classifies each Firestore REST
// request, answers cacheable reads from the tiers of package cache (L1 in process, L2 in
// Redis) or the upstream, forwards writes and invalidates what they touch, and passes
// everything else through untouched and streamed.
//
// Promises (ARCHITECTURE.md, "Cache correctness"): once a write through any replica has
// been answered with success, no replica serves a cached read that predates it; a read
// that began before a write finished is never stored as fresh; entries of scope user are
// keyed by a hash of exactly the credentials the upstream will use (identity.go), and a
// request with ambiguous credentials is refused; only 200 answers (and 404s
// of single documents where the rule asks for negative caching) are cached; Redis faults
// degrade to L1 and upstream with no error to the client; the proxy's own failures are
// Firestore-shaped JSON errors.
//
// A Proxy is safe for concurrent use; Run serves until its context ends.
package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/harvest-hub/edge/proxy/apierror"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/proxy/classify"
	"github.com/harvest-hub/edge/proxy/upstream"
	"github.com/harvest-hub/edge/rules"
)

// Proxy serves the Firestore REST API with a cache in front.
type Proxy struct {
	opts   Options
	log    *slog.Logger
	rules  *rules.Store
	up     *upstream.Client
	tiers  *cache.Tiers
	flight singleflight.Group
	m      *metrics

	// plans is the alias index of the hit path: from aliasKey (a hash of the raw
	// request) to the *readPlan Classify, the rules and cacheKey made of it, so a
	// repeated read is answered without classifying, matching or hashing it again.
	// A plan made under an older Config is ignored (and the index is cleared on each
	// reload); the index is cleared whole when it exceeds maxPlans.
	plans     sync.Map
	planCount atomic.Int64
	maxPlans  int64
	planSeeds [2]maphash.Seed

	server    *fasthttp.Server
	admin     *http.Server
	adminAddr atomic.Value // string: where the admin listener listens, once Serve opened it
	draining  atomic.Bool
}

// New builds a Proxy from resolved options. It dials nothing yet but Redis (whose
// absence degrades, it does not fail).
func New(o Options) (*Proxy, error) {
	if o.Rules == nil {
		return nil, errors.New("proxy: no rules")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cfg := o.Rules.Current()
	up, err := upstream.New(upstream.Config{
		URL: o.Upstream, Timeout: cfg.Upstream.Timeout, MaxConns: cfg.Upstream.MaxIdleConns,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	cacheCfg := cfg.Cache
	cacheCfg.RedisURL = o.RedisURL
	tiers, err := cache.New(cache.Config{Cache: cacheCfg, Registerer: o.Registry, Logger: o.Log})
	if err != nil {
		return nil, fmt.Errorf("proxy: cache: %w", err)
	}
	p := &Proxy{
		opts:  o,
		log:   o.Log,
		rules: o.Rules,
		up:    up,
		tiers: tiers,
		m:     newMetrics(o.Registry),

		maxPlans:  int64(max(cfg.Cache.L1MaxEntries, 1<<14)),
		planSeeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
	o.Rules.OnReload(func(*rules.Config) { p.clearPlans() })
	p.server = &fasthttp.Server{
		Handler:                       p.Handle,
		ErrorHandler:                  p.serverError,
		Logger:                        fasthttpLogger{o.Log},
		Name:                          "harvest-proxy",
		MaxRequestBodySize:            cfg.Server.MaxBodyBytes,
		ReadTimeout:                   cfg.Server.ReadTimeout,
		WriteTimeout:                  cfg.Server.WriteTimeout,
		IdleTimeout:                   cfg.Server.IdleTimeout,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		CloseOnShutdown:               true,
		ReduceMemoryUsage:             false,
		StreamRequestBody:             false,
	}
	return p, nil
}

// Run serves the client listener and the admin listener until ctx ends, then stops
// taking new requests, drains in-flight ones for up to the configured grace, and
// closes the tiers.
func (p *Proxy) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.opts.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", p.opts.Listen, err)
	}
	return p.Serve(ctx, ln)
}

// Serve is Run on a listener the caller opened (tests use port 0).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 2)
	go func() { errc <- p.server.Serve(ln) }()
	if p.opts.AdminListen != "" {
		aln, err := net.Listen("tcp", p.opts.AdminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("proxy: admin listen %s: %w", p.opts.AdminListen, err)
		}
		p.adminAddr.Store(aln.Addr().String())
		p.admin = &http.Server{Handler: p.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := p.admin.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("proxy: admin: %w", err)
			}
		}()
	}
	p.log.Info("serving", "listen", ln.Addr().String(), "admin", p.opts.AdminListen)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	p.draining.Store(true)
	grace := p.rules.Current().Server.ShutdownGrace
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := p.server.ShutdownWithContext(sctx); err != nil {
		p.log.Warn("shutdown did not drain every request in time", "grace", grace, "err", err)
	}
	if p.admin != nil {
		p.admin.Shutdown(sctx)
	}
	if err := p.tiers.Close(); err != nil {
		p.log.Warn("closing cache tiers", "err", err)
	}
	p.log.Info("stopped")
	return serveErr
}

// AdminAddr is the admin listener's address once Serve has opened it ("" before, or
// when there is none): with AdminListen "127.0.0.1:0" it tells which port was chosen.
func (p *Proxy) AdminAddr() string {
	a, _ := p.adminAddr.Load().(string)
	return a
}

// Handle serves one client request.
//
// Before anything else, a request the upstream could read differently from the proxy
// is refused: a method override header, ambiguous credentials (identity.go).
//
// A read seen before (same method, raw request URI, body and credential headers,
// under the same rules) is served from its remembered readPlan: Classify, the rule
// match and the cache key are functions of exactly those inputs and the Config, so
// the plan is what they would compute again. Everything after (generations,
// freshness, fills) is the same code either way.
func (p *Proxy) Handle(ctx *fasthttp.RequestCtx) {
	p.m.inflightN.Add(1)
	defer p.m.inflightN.Add(-1)
	var ak aliasKey
	var hf headerFacts
	scanHeaders(&ctx.Request.Header, &hf)
	if hf.override {
		p.refuse(ctx, "X-HTTP-Method-Override is not accepted: send the method itself")
		return
	}
	method := ctx.Method()
	aliased := string(method) == fasthttp.MethodGet || string(method) == fasthttp.MethodPost
	if aliased {
		ak = p.aliasOf(ctx, &hf)
		if v, ok := p.plans.Load(ak); ok {
			if plan := v.(*readPlan); plan.cfg == p.rules.Current() {
				p.serveRead(ctx, plan)
				return
			}
		}
	}
	// A plan is only ever made for a request that passed this check, and the alias
	// covers every credential header, so hits need not repeat it.
	if !requestCredentialsOK(ctx, &hf) {
		p.refuse(ctx, errAmbiguousCredentials.Error())
		return
	}
	req, err := classify.Classify(string(method), string(ctx.URI().PathOriginal()),
		string(ctx.URI().QueryString()), ctx.PostBody())
	if err != nil {
		var ce *classify.Error
		if errors.As(err, &ce) {
			p.m.requestOp(req.Op, resultError)
			apierror.Write(ctx, ce.HTTPStatus, ce.Status, ce.Message)
			return
		}
		p.m.requestOp(req.Op, resultError)
		apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, "malformed request")
		return
	}
	switch req.Kind {
	case classify.Read:
		p.read(ctx, &req, ak, aliased)
	case classify.Write:
		if req.Op == classify.ClearDatabase { // the emulator's wipe: every read of the database
			req.Tags = []string{cache.DatabaseTag(req.Database)}
		}
		p.write(ctx, &req)
	default:
		p.bypass(ctx, &req)
	}
}

// aliasKey identifies a raw request for the plan index: two seeded 64-bit maphash
// halves (128 bits, the strength cache.Key asks for) over the method, the raw request
// URI, every credential header (name and value, in order: what requestIdentity
// hashes, the query's credentials being in the URI) and the body, each
// length-prefixed.
type aliasKey [2]uint64

func (p *Proxy) aliasOf(ctx *fasthttp.RequestCtx, hf *headerFacts) aliasKey {
	method, uri, body := ctx.Method(), ctx.Request.Header.RequestURI(), ctx.PostBody()
	creds := hf.credentials()
	n := 16 + len(method) + len(uri) + len(body)
	for _, c := range creds {
		n += 2*binary.MaxVarintLen64 + len(c.name) + len(c.value)
	}
	var stack [1024]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n) // a large body: one allocation, still one pass per half
	}
	buf = binary.AppendUvarint(buf, uint64(len(method)))
	buf = binary.AppendUvarint(buf, uint64(len(uri)))
	buf = append(buf, method...)
	buf = append(buf, uri...)
	buf = binary.AppendUvarint(buf, uint64(len(creds)))
	if hf.overflow {
		buf = append(buf, 0xff) // never planned: requestCredentialsOK refuses it
	}
	for _, c := range creds {
		buf = binary.AppendUvarint(buf, uint64(len(c.name)))
		buf = append(buf, c.name...)
		buf = binary.AppendUvarint(buf, uint64(len(c.value)))
		buf = append(buf, c.value...)
	}
	buf = append(buf, body...) // last: its length is implied
	return aliasKey{maphash.Bytes(p.planSeeds[0], buf), maphash.Bytes(p.planSeeds[1], buf)}
}

// remember stores plan under k, clearing the index first when it is full.
func (p *Proxy) remember(k aliasKey, plan *readPlan) {
	if _, loaded := p.plans.Swap(k, plan); !loaded && p.planCount.Add(1) > p.maxPlans {
		p.clearPlans()
	}
}

func (p *Proxy) clearPlans() {
	p.plans.Clear()
	p.planCount.Store(0)
}

// refuse answers a request the proxy will not forward with 400 INVALID_ARGUMENT.
// message must not contain client input.
func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, message string) {
	p.m.requestOp(classify.OpUnknown, resultError)
	apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, message)
}

// serverError answers what fasthttp rejects before Handle (oversized or unparseable
// requests) in Firestore's shape.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		apierror.Write(ctx, fasthttp.StatusRequestEntityTooLarge, apierror.PayloadTooLarge,
			fmt.Sprintf("request body larger than %d bytes", p.server.MaxRequestBodySize))
		return
	}
	apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, "malformed HTTP request: "+err.Error())
}

// bypass forwards a request untouched and streams the answer back.
func (p *Proxy) bypass(ctx *fasthttp.RequestCtx, req *classify.Request) {
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	p.up.Prepare(ctx, out, false)
	start := time.Now()
	if err := p.up.Stream(out, ctx, p.rules.Current().Server.WriteTimeout); err != nil {
		p.m.requestOp(req.Op, resultError)
		p.upstreamFailed(ctx, req.Op, err)
		return
	}
	p.m.requestOp(req.Op, resultBypass)
	p.m.upstream.WithLabelValues(req.Op.String()).Observe(time.Since(start).Seconds())
	ctx.Response.Header.Set("X-Cache", "BYPASS")
}

// upstreamFailed answers a transport failure (no answer from the upstream) with 503
// UNAVAILABLE (504 DEADLINE_EXCEEDED on a timeout) and logs it once.
func (p *Proxy) upstreamFailed(ctx *fasthttp.RequestCtx, op classify.Op, err error) {
	reason, code, status := "unavailable", fasthttp.StatusServiceUnavailable, apierror.Unavailable
	if errors.Is(err, fasthttp.ErrTimeout) {
		reason, code, status = "timeout", fasthttp.StatusGatewayTimeout, apierror.DeadlineExceeded
	}
	p.m.upstreamErrors.WithLabelValues(op.String(), reason).Inc()
	p.log.Warn("upstream failed", "op", op.String(), "path", string(ctx.URI().PathOriginal()), "err", err)
	apierror.Write(ctx, code, status, "the Firestore upstream did not answer ("+reason+")")
}

// fasthttpLogger sends fasthttp's own messages (connections it could not serve, such
// as an oversized body already answered with 413) to the proxy's log instead of the
// standard logger.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
