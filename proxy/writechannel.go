package proxy

// The WebChannel front of the write core: the Firebase web SDK's Write channel
// (POST/GET /google.firestore.v1.Firestore/Write/channel) is a write path. A write made
// on it invalidates every replica and becomes its events exactly as the same REST
// commit would (writecore.go), before the browser sees its acknowledgement.
//
// How (the wire is described in package webchannel):
//
//   - Per WebChannel session (SID) the proxy keeps the WriteRequests the browser sent, in
//     map-id order: the first carries database and no writes (the handshake), later ones
//     carry writes and the streamToken. A forward-channel POST's writes are classified
//     (classify.FromWrites, as a Commit) and admitted (beginWrite) before the POST is
//     forwarded: the upstream may acknowledge a write on the backchannel before it
//     answers the POST that carried it. A POST sent again (same map ids) is not admitted
//     twice.
//   - The Write stream answers each WriteRequest with one WriteResponse, in order. The
//     backchannel is read chunk by chunk; each new array (ids above the last one seen, so
//     a backchannel reopened with AID gets no write settled twice) that holds a
//     WriteResponse settles the oldest request awaiting one: succeeded with its
//     writeResults and commitTime, BEFORE the chunk is forwarded; an error settles it
//     failed (a status that means nothing was applied) or unknown, and every later
//     request unknown (the stream is over). A session that ends (TYPE=terminate,
//     ["stop"], ["close"], idle without a backchannel for writeSessionIdle) settles
//     what still waits as unknown: invalidated as if it landed, no event.
//   - Refusals (the outbox is full, a write the proxy cannot classify, ambiguous
//     credentials) answer the forward-channel POST with the Firestore-shaped HTTP error
//     and forward nothing. WebChannel takes a failed forward POST for a network error: it
//     retries it, then fails the channel; the SDK reopens the Write stream with backoff
//     and sends the write again, so the write stays pending in the app and is never
//     acknowledged without having been applied, invalidated and its events kept.
//
// The caller's identity: the SDK sends its Authorization (and x-goog-api-key) in the
// "headers" field of the session-opening POST (encodeInitMessageHeaders: no CORS
// preflight), not as HTTP headers; the upstream applies them to the whole session. A
// session's identity is identityOf (identity.go) every credential of the opening POST:
// its own headers and query, and those in its "headers" field; a credential given
// twice, even once in each place, is ambiguous and refused. A new token means a new
// stream (the SDK reopens its streams when credentials change).
//
// Framing the proxy does not understand never breaks the app's stream: it is forwarded
// untouched, logged (never its content) and counted in
// harvest_proxy_webchannel_unexpected_total. A forward body it cannot read may carry
// messages whose answers it cannot place: from then on the session's writes are settled
// unknown (invalidated once answered), never paired with the wrong request. The backchannel stays unbuffered: each
// chunk is forwarded as soon as it is complete (a torn chunk is held until then, never
// reordered).
//
// Limits: sessions live in the replica that saw them open. Behind several replicas the
// channel's requests need affinity by SID (as Google's front end gives it by
// gsessionid). A session this replica never saw opened (another replica's, or one that
// outlived a restart) is adopted and counted: its writes are invalidated once answered
// (settled unknown), never reported as events, since nothing ties its answers to
// requests sent before the replica saw it.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/proxy/apierror"
	"github.com/harvest-hub/edge/proxy/upstream"
	"github.com/harvest-hub/edge/proxy/webchannel"
)

// writeChannelPath is where the Firebase web SDK opens its Write channel.
const writeChannelPath = "/google.firestore.v1.Firestore/Write/channel"

const (
	// writeSessionIdle ends a session with no request and no open backchannel for this
	// long (WebChannel's backchannel sends a noop every 30 s while it is open).
	writeSessionIdle = 10 * time.Minute
	// maxWriteSessions bounds the sessions a replica tracks; past it new sessions pass
	// through untracked (counted as "sessions_full").
	maxWriteSessions = 1 << 16
)

// isWriteChannel reports whether the request is on the Write channel (the decoded,
// normalised path, so another spelling of it is not forwarded untracked).
func isWriteChannel(ctx *fasthttp.RequestCtx) bool {
	return string(ctx.Path()) == writeChannelPath
}

// writeChannels is a replica's registry of Write-channel sessions.
type writeChannels struct {
	p          *Proxy
	unexpected *prometheus.CounterVec

	mu        sync.Mutex
	sessions  map[string]*writeSession
	lastSweep time.Time
}

func newWriteChannels(p *Proxy, reg *prometheus.Registry) *writeChannels {
	wc := &writeChannels{
		p: p,
		unexpected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "harvest_proxy_webchannel_unexpected_total",
			Help: "WebChannel Write-channel traffic the proxy forwarded untouched without understanding it, by reason.",
		}, []string{"reason"}),
		sessions: map[string]*writeSession{},
	}
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "harvest_proxy_webchannel_write_sessions",
		Help: "Write-channel sessions this replica tracks.",
	}, func() float64 {
		wc.mu.Lock()
		defer wc.mu.Unlock()
		return float64(len(wc.sessions))
	})
	if reg != nil {
		reg.MustRegister(wc.unexpected, sessions)
	}
	return wc
}

// Reasons for harvest_proxy_webchannel_unexpected_total.
const (
	unexpectedForward        = "forward_body"     // a forward POST body that is not the wire
	unexpectedMessage        = "message"          // a message that is not a WriteRequest/WriteResponse
	unexpectedControl        = "control"          // a control array other than c, noop, stop, close
	unexpectedFraming        = "framing"          // backchannel bytes that are not length-prefixed chunks
	unexpectedChunk          = "chunk"            // a chunk that is not [[arrayId, payload], ...]
	unexpectedTorn           = "torn_at_end"      // a backchannel that ended inside a chunk
	unexpectedEncoded        = "encoded"          // a compressed body the proxy does not read
	unexpectedUnpaired       = "unpaired"         // a WriteResponse with no request to pair, or a mismatched one
	unexpectedUnknownSession = "unknown_session"  // a SID this replica never saw opened
	unexpectedSessionsFull   = "sessions_full"    // maxWriteSessions reached
	unexpectedNoSession      = "session_not_told" // an opening answer without ["c", SID]
)

func (wc *writeChannels) count(reason string) {
	wc.unexpected.WithLabelValues(reason).Inc()
	wc.p.log.Warn("Write channel: forwarded traffic the proxy does not understand, untouched", "reason", reason)
}

// writeSession is one WebChannel session of the Write stream.
type writeSession struct {
	wc       *writeChannels
	database string // projects/{p}/databases/{d}
	caller   Caller
	// creds are the credential headers of the opening POST's "headers" field, which the
	// upstream applies to the session: old_value reads carry them too.
	creds []credential

	// fwd serialises forward POSTs of the session while their maps are admitted, so the
	// queue is in map-id order.
	fwd sync.Mutex

	mu           sync.Mutex
	sid          string
	nextMap      int64 // map ids below were seen
	lastArray    int64 // the highest backchannel array id handled; -1 before any
	queue        []*channelRequest
	ended        bool
	uncertain    bool // pairing cannot be trusted (adopted midway, or an unread forward body): see pair
	backchannels int
	lastActive   time.Time
}

// channelRequest is a WriteRequest awaiting its WriteResponse.
type channelRequest struct {
	w      *pendingWrite // nil: no writes (the handshake), or not a WriteRequest
	writes int
}

// settlement is an outcome decided under the session's lock, applied outside it.
type settlement struct {
	w       *pendingWrite
	outcome int // settleOK, settleFailed, settleUnknown
	ans     WriteAnswer
}

const (
	settleOK = iota
	settleFailed
	settleUnknown
)

func (s settlement) apply() {
	switch s.outcome {
	case settleOK:
		s.w.succeeded(s.ans)
	case settleFailed:
		s.w.failed()
	default:
		s.w.unknown()
	}
}

func applyAll(ss []settlement) {
	for _, s := range ss {
		s.apply()
	}
}

// writeChannel serves one request of the Write channel.
func (p *Proxy) writeChannel(ctx *fasthttp.RequestCtx, req *classify.Request) {
	req.Op = classify.WriteChannel // counted as a write, whatever classify made of the path
	q := ctx.QueryArgs()
	sid := string(q.Peek("SID"))
	switch {
	case ctx.IsPost() && sid == "":
		p.openWriteSession(ctx, req)
	case ctx.IsPost():
		p.forwardWrites(ctx, req, sid)
	case ctx.IsGet() && string(q.Peek("TYPE")) == "terminate":
		// Forwarded first: once the upstream has ended the stream, what it did not
		// answer will not land later, after the unknown writes' second bump.
		p.bypass(ctx, req)
		p.wch.end(sid)
	case ctx.IsGet() && string(q.Peek("RID")) == "rpc" && sid != "":
		p.backchannel(ctx, req, sid)
	default:
		p.bypass(ctx, req)
	}
}

// openWriteSession serves the session-opening POST: its answer tells the SID.
func (p *Proxy) openWriteSession(ctx *fasthttp.RequestCtx, req *classify.Request) {
	if len(ctx.Request.Header.ContentEncoding()) > 0 {
		p.wch.count(unexpectedEncoded)
		p.bypass(ctx, req)
		return
	}
	f, err := webchannel.ParseForward(ctx.PostBody())
	if err != nil {
		p.wch.count(unexpectedForward)
		p.bypass(ctx, req)
		return
	}
	s, ok := p.wch.newSession(ctx, f.Headers)
	if !ok {
		return // refused, answered
	}
	if s == nil {
		p.bypass(ctx, req)
		return
	}
	s.fwd.Lock()
	refusal := p.admitMaps(ctx, s, f.Maps)
	s.fwd.Unlock()
	if refusal != nil {
		p.refuseChannel(ctx, req, refusal)
		return
	}
	p.streamChannel(ctx, req, s, true)
}

// forwardWrites serves a forward-channel POST of an open session. A body the proxy
// cannot read is forwarded untouched; the messages it may carry get answers the proxy
// cannot place, so from then on the session's writes are settled unknown, never paired
// with a wrong request.
func (p *Proxy) forwardWrites(ctx *fasthttp.RequestCtx, req *classify.Request, sid string) {
	unread := ""
	var f *webchannel.Forward
	if len(ctx.Request.Header.ContentEncoding()) > 0 {
		unread = unexpectedEncoded
	} else if parsed, err := webchannel.ParseForward(ctx.PostBody()); err != nil {
		unread = unexpectedForward
	} else {
		f = parsed
	}
	if unread != "" {
		p.wch.count(unread)
		p.wch.markUncertain(sid)
		p.bypass(ctx, req)
		return
	}
	s := p.wch.lookup(ctx, sid)
	if s == nil {
		p.bypass(ctx, req)
		return
	}
	s.fwd.Lock()
	refusal := p.admitMaps(ctx, s, f.Maps)
	s.fwd.Unlock()
	if refusal != nil {
		p.refuseChannel(ctx, req, refusal)
		return
	}
	// The answer ([1,lastArrayId,outstanding]) says nothing about writes: pass it through.
	p.bypass(ctx, req)
}

// backchannel serves a backchannel GET, settling writes as their answers go by.
func (p *Proxy) backchannel(ctx *fasthttp.RequestCtx, req *classify.Request, sid string) {
	s := p.wch.lookup(ctx, sid)
	if s == nil {
		p.bypass(ctx, req)
		return
	}
	p.streamChannel(ctx, req, s, false)
}

func (p *Proxy) refuseChannel(ctx *fasthttp.RequestCtx, req *classify.Request, r *Refusal) {
	p.m.requestOp(req.Op, resultError)
	apierror.Write(ctx, r.HTTPStatus, r.Status, r.Message)
}

// newSession makes the session of an opening POST (not yet registered: its SID comes
// with the answer). ok=false: refused and answered; s=nil: pass through untracked.
func (wc *writeChannels) newSession(ctx *fasthttp.RequestCtx, headers map[string][]string) (s *writeSession, ok bool) {
	identity, sent, err := channelIdentity(ctx, headers)
	if err != nil {
		wc.p.m.requestOp(classify.WriteChannel, resultError)
		apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, err.Error())
		return nil, false
	}
	wc.mu.Lock()
	full := len(wc.sessions) >= maxWriteSessions
	wc.mu.Unlock()
	if full {
		wc.sweep(time.Now())
		wc.mu.Lock()
		full = len(wc.sessions) >= maxWriteSessions
		wc.mu.Unlock()
		if full {
			wc.count(unexpectedSessionsFull)
			return nil, true
		}
	}
	s = &writeSession{
		wc:         wc,
		database:   string(ctx.QueryArgs().Peek("database")),
		caller:     Caller{Identity: identity},
		creds:      sent,
		lastArray:  -1,
		lastActive: time.Now(),
	}
	return s, true
}

// channelIdentity is the identity of a session (identity.go): identityOf every
// credential the upstream applies to it, those of the opening request itself (headers,
// query) and those its "headers" field carries (where the SDK puts Authorization and
// x-goog-api-key). A credential given twice, even in both places, is ambiguous. sent
// are the "headers" field's credentials, copied.
func channelIdentity(ctx *fasthttp.RequestCtx, headers map[string][]string) (string, []credential, error) {
	var f headerFacts
	scanHeaders(&ctx.Request.Header, &f)
	if f.overflow {
		return "", nil, errAmbiguousCredentials
	}
	var sent []credential
	for name, values := range headers {
		wire := strings.ToLower(name)
		if credentialHeaderName([]byte(wire)) == "" {
			continue
		}
		for _, v := range values {
			sent = append(sent, credential{name: wire, value: []byte(v)})
		}
	}
	creds := appendQueryCredentials(append(append([]credential(nil), f.credentials()...), sent...), ctx.QueryArgs())
	id, err := identityOf(creds)
	return id, sent, err
}

// bind registers s under the SID its opening answer told.
func (wc *writeChannels) bind(s *writeSession, sid string) {
	now := time.Now()
	wc.mu.Lock()
	if old := wc.sessions[sid]; old != nil && old != s {
		wc.mu.Unlock()
		applyAll(old.endAll()) // a SID reused: the old session is over
		wc.mu.Lock()
	}
	wc.sessions[sid] = s
	sweep := now.Sub(wc.lastSweep) > time.Minute
	wc.mu.Unlock()
	s.mu.Lock()
	s.sid = sid
	s.mu.Unlock()
	if sweep {
		wc.sweep(now)
	}
}

// lookup finds the session of sid. A session this replica never saw opened (another
// replica opened it, or this process restarted) is adopted (database from the URL,
// identity from the request's own headers), so its writes are at least invalidated
// once answered; see pair.
func (wc *writeChannels) lookup(ctx *fasthttp.RequestCtx, sid string) *writeSession {
	wc.mu.Lock()
	s := wc.sessions[sid]
	wc.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		s.lastActive = time.Now()
		s.mu.Unlock()
		return s
	}
	wc.count(unexpectedUnknownSession)
	fresh, ok := wc.newSession(ctx, nil)
	if !ok || fresh == nil {
		return nil
	}
	// Requests sent before this one may still be unanswered, and nothing tells their
	// answers from later ones: take the first map as it comes, and settle the session's
	// writes unknown (invalidated once answered, no events) rather than pair them wrongly.
	fresh.nextMap = -1
	fresh.uncertain = true
	fresh.sid = sid
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if s = wc.sessions[sid]; s == nil { // a concurrent request may have adopted it first
		s = fresh
		wc.sessions[sid] = s
	}
	return s
}

// markUncertain stops trusting the pairing of sid's session, if this replica has it.
func (wc *writeChannels) markUncertain(sid string) {
	wc.mu.Lock()
	s := wc.sessions[sid]
	wc.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		s.uncertain = true
		s.mu.Unlock()
	}
}

// end ends the session of sid (TYPE=terminate).
func (wc *writeChannels) end(sid string) {
	wc.mu.Lock()
	s := wc.sessions[sid]
	delete(wc.sessions, sid)
	wc.mu.Unlock()
	if s != nil {
		applyAll(s.endAll())
	}
}

// sweep ends sessions idle past writeSessionIdle with no backchannel open.
func (wc *writeChannels) sweep(now time.Time) {
	wc.mu.Lock()
	wc.lastSweep = now
	var idle []*writeSession
	for sid, s := range wc.sessions {
		s.mu.Lock()
		if s.backchannels == 0 && now.Sub(s.lastActive) > writeSessionIdle {
			idle = append(idle, s)
			delete(wc.sessions, sid)
		}
		s.mu.Unlock()
	}
	wc.mu.Unlock()
	for _, s := range idle {
		applyAll(s.endAll())
	}
}

// endAll ends the session: every request still awaiting its answer is unknown.
func (s *writeSession) endAll() []settlement {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	return s.drainLocked(settleUnknown)
}

func (s *writeSession) drainLocked(outcome int) []settlement {
	var out []settlement
	for _, r := range s.queue {
		if r.w != nil {
			out = append(out, settlement{w: r.w, outcome: outcome})
		}
	}
	s.queue = nil
	return out
}

// channelJSON parses WriteRequests and WriteResponses; unknown fields (a newer API) are
// not errors.
var channelJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// admitMaps admits the new messages of a forward POST, in order, before it is
// forwarded. A Refusal refuses the whole POST: writes admitted from it are settled
// failed (nothing was forwarded) and its maps stay unseen, so the POST sent again is
// admitted afresh. The caller holds s.fwd.
func (p *Proxy) admitMaps(ctx *fasthttp.RequestCtx, s *writeSession, maps []webchannel.Map) *Refusal {
	var added []*channelRequest
	s.mu.Lock()
	next := s.nextMap
	s.mu.Unlock()
	for _, m := range maps {
		if next >= 0 && m.ID < next {
			continue // sent again after a failed POST: admitted the first time
		}
		if next >= 0 && m.ID > next {
			// Messages this replica never saw (sent through another one): each still gets
			// its answer, so hold their places.
			s.wc.count(unexpectedUnpaired)
			for range m.ID - next {
				added = append(added, &channelRequest{})
			}
		}
		next = m.ID + 1
		r, refusal := p.admitMessage(ctx, s, m.Data)
		if refusal != nil {
			for _, a := range added {
				if a.w != nil {
					a.w.failed()
				}
			}
			return refusal
		}
		added = append(added, r)
	}
	s.mu.Lock()
	s.nextMap = next
	s.lastActive = time.Now()
	if s.ended {
		// The session ended while these were admitted: nothing will answer them here.
		s.mu.Unlock()
		for _, a := range added {
			if a.w != nil {
				a.w.unknown()
			}
		}
		return nil
	}
	s.queue = append(s.queue, added...)
	s.mu.Unlock()
	return nil
}

// admitMessage parses one WriteRequest and admits its writes.
func (p *Proxy) admitMessage(ctx *fasthttp.RequestCtx, s *writeSession, data []byte) (*channelRequest, *Refusal) {
	wr := &firestorepb.WriteRequest{}
	if data == nil || channelJSON.Unmarshal(data, wr) != nil {
		// Not a WriteRequest: the upstream cannot take it for one either; it still gets
		// an answer (an error), so it holds a place.
		s.wc.count(unexpectedMessage)
		return &channelRequest{}, nil
	}
	if db := wr.GetDatabase(); db != "" {
		s.mu.Lock()
		s.database = db
		s.mu.Unlock()
	}
	if len(wr.GetWrites()) == 0 {
		return &channelRequest{}, nil
	}
	s.mu.Lock()
	database := s.database
	s.mu.Unlock()
	req, err := classify.FromWrites(classify.Commit, database, wr.GetWrites(), false)
	if err != nil {
		// A write the proxy cannot tell the effects of is never forwarded blind.
		p.log.Warn("Write channel: refused a write the proxy cannot classify")
		return nil, &Refusal{HTTPStatus: fasthttp.StatusBadRequest, Status: apierror.InvalidArgument,
			Message: "the proxy cannot tell what this write changes (an invalid document name or write); it was not applied"}
	}
	w, refusal := p.beginWrite(ctx, &req, s.caller, p.channelOldReader(ctx, s, &req))
	if refusal != nil {
		return nil, refusal
	}
	return &channelRequest{w: w, writes: len(wr.GetWrites())}, nil
}

// channelOldReader reads old values (events.old_value) with the session's credentials:
// one batchGet, as the REST front does.
func (p *Proxy) channelOldReader(ctx *fasthttp.RequestCtx, s *writeSession, req *classify.Request) OldReader {
	return func(_ context.Context, names []string, _ []byte) map[string]*firestorepb.Document {
		body, err := protojson.Marshal(&firestorepb.BatchGetDocumentsRequest{Documents: names})
		if err != nil {
			return nil
		}
		out := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(out)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		p.up.Prepare(ctx, out, true)
		uri := "/v1/" + req.Database + "/documents:batchGet"
		if key := ctx.QueryArgs().Peek("key"); len(key) > 0 {
			uri += "?key=" + string(fasthttp.AppendQuotedArg(nil, key))
		}
		out.Header.SetMethod(fasthttp.MethodPost)
		out.SetRequestURI(uri)
		out.URI().DisablePathNormalizing = true
		out.Header.Del("Content-Encoding")
		for _, c := range s.creds {
			out.Header.SetBytesV(c.name, c.value)
		}
		out.Header.SetContentType("application/json")
		out.SetBody(body)
		if err := p.up.Do(out, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
			p.log.Warn("old_value: reading the documents before a Write-channel write failed; old state unknown")
			return nil
		}
		old, err := parseBatchGet(resp.Body())
		if err != nil {
			return nil
		}
		return old
	}
}

// streamChannel forwards a request whose answer is backchannel chunks (the opening
// POST's, or a backchannel GET's) and settles writes from each chunk before forwarding
// it. opening: the answer tells the SID the session is registered under.
func (p *Proxy) streamChannel(ctx *fasthttp.RequestCtx, req *classify.Request, s *writeSession, opening bool) {
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	p.up.Prepare(ctx, out, true) // identity-encoded, so it can be read
	// upstream.Stream copies the answer into a RequestCtx; give it one of our own and
	// read what it copies, so every chunk passes through the pairing on its way.
	var scratch fasthttp.RequestCtx
	scratch.Init(&ctx.Request, ctx.RemoteAddr(), nil)
	start := time.Now()
	if err := p.up.Stream(out, &scratch, 0, upstream.Streams); err != nil {
		p.m.requestOp(req.Op, resultError)
		if opening {
			applyAll(s.endAll())
		}
		p.upstreamFailed(ctx, req.Op, err)
		return
	}
	p.m.requestOp(req.Op, resultBypass)
	p.m.upstream.WithLabelValues(req.Op.String()).Observe(time.Since(start).Seconds())
	ctx.SetStatusCode(scratch.Response.StatusCode())
	for k, v := range scratch.Response.Header.All() {
		if !bytes.EqualFold(k, []byte(fasthttp.HeaderContentLength)) {
			ctx.Response.Header.AddBytesKV(k, v)
		}
	}
	ctx.Response.Header.Set("X-Cache", "BYPASS")
	r := &chunkReader{s: s, opening: opening, parse: scratch.Response.StatusCode() == fasthttp.StatusOK}
	if len(scratch.Response.Header.ContentEncoding()) > 0 {
		p.wch.count(unexpectedEncoded)
		r.parse = false
	}
	body := scratch.Response.BodyStream()
	if body == nil { // the whole (small) answer came with the headers
		var buf bytes.Buffer
		r.feed(&buf, scratch.Response.Body())
		r.finish(&buf)
		ctx.SetBody(buf.Bytes())
		return
	}
	s.mu.Lock()
	s.backchannels++
	s.mu.Unlock()
	writeIdle := p.rules.Current().Server.WriteTimeout
	conn := ctx.Conn()
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer func() {
			scratch.Response.CloseBodyStream() // frees the upstream connection
			s.mu.Lock()
			s.backchannels--
			s.lastActive = time.Now()
			s.mu.Unlock()
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				if writeIdle > 0 {
					conn.SetWriteDeadline(time.Now().Add(writeIdle))
				}
				r.feed(w, buf[:n])
				if w.Flush() != nil {
					return // the client went away
				}
			}
			if err != nil {
				r.finish(w)
				w.Flush()
				return
			}
		}
	})
}

// chunkReader cuts one backchannel answer into chunks and settles the writes each
// answers before writing it on.
type chunkReader struct {
	s       *writeSession
	opening bool
	parse   bool // false: pass everything through (not a 200, or encoded)
	split   webchannel.Splitter
	broken  bool
}

type byteWriter interface{ Write([]byte) (int, error) }

func (r *chunkReader) feed(w byteWriter, p []byte) {
	if !r.parse {
		w.Write(p)
		return
	}
	for _, seg := range r.split.Feed(p) {
		if seg.Chunk != nil {
			r.chunk(seg.Chunk)
		} else if !r.broken {
			r.broken = true
			r.s.wc.count(unexpectedFraming)
		}
		w.Write(seg.Raw)
	}
}

func (r *chunkReader) finish(w byteWriter) {
	if rest := r.split.Rest(); len(rest) > 0 {
		r.s.wc.count(unexpectedTorn)
		w.Write(rest)
	}
	if r.opening {
		r.s.mu.Lock()
		bound := r.s.sid != ""
		r.s.mu.Unlock()
		if !bound {
			if r.parse {
				r.s.wc.count(unexpectedNoSession)
			}
			applyAll(r.s.endAll())
		}
	}
}

// chunk handles one complete chunk: it binds an opening session to its SID and settles
// the writes its arrays answer, before the chunk is forwarded.
func (r *chunkReader) chunk(chunk []byte) {
	entries, err := webchannel.ParseChunk(chunk)
	if err != nil {
		r.s.wc.count(unexpectedChunk)
		return
	}
	if r.opening {
		r.s.mu.Lock()
		bound := r.s.sid != ""
		r.s.mu.Unlock()
		if sid, ok := webchannel.SessionID(entries); ok && !bound {
			r.s.wc.bind(r.s, sid)
		}
	}
	applyAll(r.s.pair(entries))
}

// pair matches the arrays of a chunk with the requests awaiting answers.
func (s *writeSession) pair(entries []webchannel.Entry) []settlement {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastActive = time.Now()
	var out []settlement
	for _, e := range entries {
		if e.ArrayID <= s.lastArray {
			continue // sent again to a reopened backchannel: handled the first time
		}
		s.lastArray = e.ArrayID
		if name, ok := e.Control(); ok {
			switch name {
			case "stop", "close":
				s.ended = true
				out = append(out, s.drainLocked(settleUnknown)...)
			case "c", "noop": // the opening, a keep-alive
			default:
				s.wc.count(unexpectedControl)
			}
			continue
		}
		msg, ok := e.Message()
		if !ok {
			s.wc.count(unexpectedMessage)
			continue
		}
		if status, isErr := streamError(msg); isErr {
			// The stream is over: the oldest request is the one refused.
			if len(s.queue) > 0 {
				if r := s.queue[0]; r.w != nil {
					outcome := settleUnknown
					if notApplied(status) {
						outcome = settleFailed
					}
					out = append(out, settlement{w: r.w, outcome: outcome})
				}
				s.queue = s.queue[1:]
			}
			s.ended = true
			out = append(out, s.drainLocked(settleUnknown)...)
			continue
		}
		if len(s.queue) == 0 {
			s.wc.count(unexpectedUnpaired)
			continue
		}
		r := s.queue[0]
		s.queue = s.queue[1:]
		if r.w == nil {
			continue
		}
		resp := &firestorepb.WriteResponse{}
		if channelJSON.Unmarshal(msg, resp) != nil || len(resp.GetWriteResults()) != r.writes {
			s.wc.count(unexpectedUnpaired)
			out = append(out, settlement{w: r.w, outcome: settleUnknown})
			continue
		}
		if s.uncertain {
			out = append(out, settlement{w: r.w, outcome: settleUnknown})
			continue
		}
		out = append(out, settlement{w: r.w, outcome: settleOK, ans: WriteAnswer{Commit: &firestorepb.CommitResponse{
			WriteResults: resp.GetWriteResults(), CommitTime: resp.GetCommitTime(),
		}}})
	}
	return out
}

// streamError recognises an error message ({"error":{...}}, or the older
// [{"error":{...}}]) and returns its status name.
func streamError(msg json.RawMessage) (status string, ok bool) {
	var wrapped []json.RawMessage
	if json.Unmarshal(msg, &wrapped) == nil {
		if len(wrapped) == 0 {
			return "", false
		}
		msg = wrapped[0]
	}
	var m struct {
		Error *struct {
			Status string `json:"status"`
		} `json:"error"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Error == nil {
		return "", false
	}
	return m.Error.Status, true
}

// notApplied reports whether a stream error status means the write was not applied
// (settled failed); any other status leaves its outcome unknown.
func notApplied(status string) bool {
	switch status {
	case "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
		"UNAUTHENTICATED", "RESOURCE_EXHAUSTED":
		return true
	}
	return false
}
