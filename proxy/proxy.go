// Package proxy is harvest-proxy's request path: it classifies each Firestore REST
// request, answers cacheable reads from the tiers of package cache (L1 in process, L2 in
// Redis) or the upstream, forwards writes and invalidates what they touch, and passes
// everything else through untouched and streamed.
//
// Promises (docs/ARCHITECTURE.md, "Cache correctness"): once a write through any replica has
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/fanout"
	"github.com/harvest-hub/edge/internal/connsplit"
	"github.com/harvest-hub/edge/proxy/apierror"
	"github.com/harvest-hub/edge/proxy/cache"
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
	wch    *writeChannels  // the WebChannel Write channel's sessions (writechannel.go)
	lch    *listenChannels // the WebChannel Listen channel's server (listenchannel.go)

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

	own ownCredentials // events.go: the proxy's own reads, resolving open write intents

	// grpcServer serves the gRPC front (grpcfront.go) on the same listener as server;
	// grpcUp is its upstream connection.
	grpcServer *grpc.Server
	grpcUp     *grpc.ClientConn

	// The Listen fan-out (listen.go): every client Listen stream is served by
	// listenHandler (the hub's Serve) until it ends or listenCtx does (the proxy drains).
	hub           *fanout.Hub
	barrier       *viewBarrier // viewread.go: when each tag was last invalidated here
	listenConn    *lazyConn
	listenHandler fanout.Handler
	listenCtx     context.Context
	stopListen    context.CancelFunc
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
		URL: o.Upstream, Timeout: cfg.Upstream.Timeout,
		MaxConns: cfg.Upstream.MaxConns, MaxStreams: cfg.Upstream.MaxStreams,
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
	p.wch = newWriteChannels(p, o.Registry)
	p.lch = newListenChannels(p, o.ListenChannel, o.Registry)
	o.Rules.OnReload(func(*rules.Config) { p.clearPlans() })
	p.server = &fasthttp.Server{
		Handler:                       p.Handle,
		ErrorHandler:                  p.serverError,
		Logger:                        fasthttpLogger{o.Log},
		Name:                          "harvest-proxy",
		MaxRequestBodySize:            cfg.Server.MaxBodyBytes,
		ReadBufferSize:                maxHeaderBytes,
		ReadTimeout:                   cfg.Server.ReadTimeout,
		WriteTimeout:                  cfg.Server.WriteTimeout,
		IdleTimeout:                   cfg.Server.IdleTimeout,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		SecureErrorLogMessage:         true, // fasthttp's errors then quote no request bytes
		NoDefaultDate:                 true,
		CloseOnShutdown:               true,
		ReduceMemoryUsage:             false,
		StreamRequestBody:             false,
	}
	if err := p.newGRPC(); err != nil {
		tiers.Close()
		return nil, err
	}
	if p.hub, err = p.newHub(); err != nil {
		tiers.Close()
		p.grpcUp.Close()
		return nil, fmt.Errorf("proxy: fan-out: %w", err)
	}
	p.listenHandler = p.hub.Serve
	p.listenCtx, p.stopListen = context.WithCancel(context.Background())
	p.barrier = newViewBarrier()
	tiers.Gens.OnInvalidate(p.barrier.invalidated)
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

// Serve is Run on a listener the caller opened (tests use port 0). Its connections
// carry HTTP/1.1 (REST, WebChannel: fasthttp) or HTTP/2 with prior knowledge (gRPC),
// told apart by the connection preface.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	// Write intents a crash left open are resolved before serving (events.go).
	rctx, stopResolving := context.WithCancel(ctx)
	resolving := p.resolveIntents(rctx)
	defer func() { stopResolving(); <-resolving }()
	cfg := p.rules.Current()
	// The preface must arrive within the read timeout (at most 10 s): a connection that
	// sends nothing holds no more than a goroutine, and not for long.
	split := connsplit.New(ln, min(cfg.Server.ReadTimeout, 10*time.Second), nil)
	defer split.Close()
	errc := make(chan error, 3)
	go func() { errc <- p.server.Serve(split.HTTP1()) }()
	go func() {
		if err := p.grpcServer.Serve(split.HTTP2()); err != nil {
			errc <- fmt.Errorf("proxy: gRPC: %w", err)
		}
	}()
	if p.opts.AdminListen != "" {
		aln, err := net.Listen("tcp", p.opts.AdminListen)
		if err != nil {
			split.Close()
			p.grpcServer.Stop()
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
	stopCapture := p.startCapture(ctx)
	p.log.Info("serving", "listen", ln.Addr().String(), "admin", p.opts.AdminListen)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	p.draining.Store(true)
	// Listen streams never end by themselves: end them now (gRPC: UNAVAILABLE; the
	// WebChannel's sessions get ["stop"] and their backchannels end), or the drain
	// would wait the whole grace for them. The SDKs reconnect, to another replica.
	p.stopListen()
	p.lch.srv.Shutdown()
	grace := p.rules.Current().Server.ShutdownGrace
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	grpcDone := make(chan struct{})
	go func() { p.grpcServer.GracefulStop(); close(grpcDone) }()
	if err := p.server.ShutdownWithContext(sctx); err != nil {
		p.log.Warn("shutdown did not drain every request in time", "grace", grace, "err", err)
	}
	select {
	case <-grpcDone:
	case <-sctx.Done(): // streams still open (Listen never ends by itself): cut them
		p.log.Warn("shutdown did not drain every gRPC call in time", "grace", grace)
		p.grpcServer.Stop()
		<-grpcDone
	}
	split.Close()
	p.grpcUp.Close()
	p.hub.Close()
	p.listenConn.Close()
	if p.admin != nil {
		p.admin.Shutdown(sctx)
	}
	stopCapture()
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
	defer addCORS(ctx) // every answer, however made (cors.go)
	if h := &ctx.Request.Header; !h.IsHTTP11() && string(h.Protocol()) != "HTTP/1.0" {
		p.rejectProtocol(ctx) // fasthttp reads "HTTP/7.0" (any HTTP/d.d) as a request
		return
	}
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
	if isPreflight(ctx) {
		answerPreflight(ctx) // cors.go
		return
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
			req.Tags = []string{classify.DatabaseTag(req.Database)}
		}
		p.write(ctx, &req)
	default:
		if isWriteChannel(ctx) {
			p.writeChannel(ctx, &req)
			return
		}
		if isListenChannel(ctx) {
			p.listenChannel(ctx)
			return
		}
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

// serverError answers what fasthttp rejects before Handle (a protocol it cannot
// serve, garbage, oversized headers or body, a read timeout) in Firestore's shape,
// never echoing the request: fasthttp's error text quotes the raw bytes, so neither
// the answer nor the log carries it. Each rejection is counted by reason and logged
// at warn level; fasthttp closes the connection after it, so that is once per
// connection.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	defer addCORS(ctx)
	reason, code, status, message := rejection(err)
	if reason == "body_too_large" {
		message = fmt.Sprintf("request body larger than %d bytes", p.server.MaxRequestBodySize)
	}
	p.m.rejected.WithLabelValues(reason).Inc()
	p.log.Warn("request rejected before it could be read: connection closed", "reason", reason,
		"remote", ctx.RemoteAddr().String(), "conn", ctx.ConnID())
	apierror.Write(ctx, code, status, message)
}

// rejectProtocol answers a request in an HTTP version the proxy does not serve as
// serverError answers what fasthttp cannot read, and closes the connection.
func (p *Proxy) rejectProtocol(ctx *fasthttp.RequestCtx) {
	const reason = "unsupported_protocol"
	p.m.rejected.WithLabelValues(reason).Inc()
	p.log.Warn("request rejected before it could be read: connection closed", "reason", reason,
		"remote", ctx.RemoteAddr().String(), "conn", ctx.ConnID())
	apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, unsupportedProtocol)
	ctx.SetConnectionClose()
}

const unsupportedProtocol = "unsupported protocol: this port serves HTTP/1.1 (REST and WebChannel)"

// rejection sorts a fasthttp read error into a metric reason and its answer.
func rejection(err error) (reason string, code int, status, message string) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return "body_too_large", fasthttp.StatusRequestEntityTooLarge, apierror.PayloadTooLarge, "request body too large"
	case errors.As(err, &small):
		return "headers_too_large", fasthttp.StatusRequestHeaderFieldsTooLarge, apierror.InvalidArgument,
			fmt.Sprintf("request line and headers larger than %d bytes", maxHeaderBytes)
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout", fasthttp.StatusRequestTimeout, apierror.DeadlineExceeded, "the request was not received in time"
	case strings.Contains(err.Error(), "unsupported http version"), strings.Contains(err.Error(), "unsupported http request method"),
		errors.Is(err, fasthttp.ErrUnsupportedRequestMethod), errors.Is(err, fasthttp.ErrMissingRequestMethod):
		return "unsupported_protocol", fasthttp.StatusBadRequest, apierror.InvalidArgument, unsupportedProtocol
	}
	return "malformed", fasthttp.StatusBadRequest, apierror.InvalidArgument, "malformed HTTP request"
}

// maxHeaderBytes bounds a request's line and headers (fasthttp's read buffer): 64 KiB,
// the request-header bound Google's HTTP(S) load balancers document; the emulator
// takes at least 60 KB, and a Firebase ID token with an App Check token is a few KB.
// fasthttp's default (4 KiB) refused requests Firestore accepts.
const maxHeaderBytes = 64 << 10

// bypass forwards a request untouched and streams the answer back.
func (p *Proxy) bypass(ctx *fasthttp.RequestCtx, req *classify.Request) {
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	p.up.Prepare(ctx, out, false)
	start := time.Now()
	budget := upstream.Requests
	if req.Op == classify.Listen || req.Op == classify.WriteChannel {
		budget = upstream.Streams
	}
	if err := p.up.Stream(out, ctx, p.rules.Current().Server.WriteTimeout, budget); err != nil {
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
// standard logger, at debug level and without their arguments: those quote the raw
// request. serverError logs each rejection, with its reason, at warn level.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, _ ...any) {
	l.log.Debug("fasthttp: "+format, "component", "fasthttp")
}
