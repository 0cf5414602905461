package webchannel

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/harvest-hub/edge/proxy/apierror"
)

// Config tunes a Server. Zero fields take their defaults.
type Config struct {
	// NoopInterval is how long a backchannel goes without data before the server sends
	// ["noop"], and how long a long poll is held empty. It is announced to the client
	// in the opening answer as the keep-alive interval: the client gives up on a
	// backchannel silent for 1.5 times it. Default 30 s (what Firestore announces).
	NoopInterval time.Duration
	// SessionIdle ends a session that has had no backchannel and no forward request
	// for this long: a client that vanished without terminating frees everything.
	// Default 60 s.
	SessionIdle time.Duration
	// MaxSessions bounds the open sessions; an opening POST beyond it is answered 503
	// UNAVAILABLE (the client retries with backoff). Default 10000.
	MaxSessions int
	// MaxUnackedBytes bounds the backchannel arrays a session keeps until the client
	// acknowledges them: Send waits while the session holds this many, and a streaming
	// backchannel ends once it wrote half of it, so the client reopens it and
	// acknowledges what it received. Default 8 MiB.
	MaxUnackedBytes int
	// MaxQueuedBytes bounds the forward messages a session holds that Recv has not
	// taken: a forward POST waits for room (one message, however large, is always
	// taken). Default 8 MiB.
	MaxQueuedBytes int
	// WriteTimeout bounds each write to a backchannel (a client that stopped reading).
	// Default 60 s.
	WriteTimeout time.Duration
	// Open is called for every new session, from its opening POST's handler, before the
	// client learns the session id; the messages of the opening POST are already
	// queued for Recv. req is the opening request, valid only during the call. Open
	// serves the session (in a goroutine of its own) and returns nil, or refuses it
	// with an error, having written the answer to req (a Firestore-shaped 400 is sent
	// when it wrote none). Required.
	Open func(s *Session, req *fasthttp.RequestCtx) error
}

func (c *Config) defaults() {
	if c.NoopInterval <= 0 {
		c.NoopInterval = 30 * time.Second
	}
	if c.SessionIdle <= 0 {
		c.SessionIdle = 60 * time.Second
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.MaxUnackedBytes <= 0 {
		c.MaxUnackedBytes = 8 << 20
	}
	if c.MaxQueuedBytes <= 0 {
		c.MaxQueuedBytes = 8 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 60 * time.Second
	}
}

// Server is the server side of one channel path: its sessions, keyed by SID. It is
// safe for concurrent use.
type Server struct {
	cfg Config

	mu       sync.Mutex
	sessions map[string]*Session
	shutdown bool
}

// NewServer returns a Server; cfg.Open is required.
func NewServer(cfg Config) *Server {
	if cfg.Open == nil {
		panic("webchannel: Config.Open is nil")
	}
	cfg.defaults()
	return &Server{cfg: cfg, sessions: map[string]*Session{}}
}

// Len is the number of open sessions.
func (srv *Server) Len() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// Shutdown ends every session: each gets ["stop"] (the client reports an error and
// reconnects, to another replica or after the restart) on its backchannel, which then
// ends; a session with none attached ends at once. New sessions are refused. It does
// not wait: the backchannel requests finish as the HTTP server drains.
func (srv *Server) Shutdown() {
	srv.mu.Lock()
	srv.shutdown = true
	list := make([]*Session, 0, len(srv.sessions))
	for _, s := range srv.sessions {
		list = append(list, s)
	}
	srv.mu.Unlock()
	for _, s := range list {
		s.finish(ErrShutdown, ErrShutdown, ctlStop)
		s.mu.Lock()
		attached := s.bc != nil
		s.mu.Unlock()
		if !attached {
			s.end(ErrShutdown, ErrShutdown)
		}
	}
}

func (srv *Server) remove(s *Session) {
	srv.mu.Lock()
	if srv.sessions[s.id] == s {
		delete(srv.sessions, s.id)
	}
	srv.mu.Unlock()
}

func (srv *Server) lookup(sid string) *Session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.sessions[sid]
}

// Handle serves one request on the channel path: the opening POST, forward POSTs,
// backchannel GETs and terminates. Malformed requests get a Firestore-shaped 400
// that quotes nothing of the request; requests of a session the server does not know
// (ended, or another replica's) get 400 "Unknown SID", upon which the client fails
// its channel and opens a new one.
func (srv *Server) Handle(ctx *fasthttp.RequestCtx) {
	r, params, err := ParseRequest(string(ctx.Method()), string(ctx.URI().QueryString()))
	if err != nil {
		badRequest(ctx, "malformed WebChannel request")
		return
	}
	if r.Kind == Open {
		srv.open(ctx, params)
		return
	}
	s := srv.lookup(r.SID)
	if s == nil {
		unknownSID(ctx)
		return
	}
	switch r.Kind {
	case Terminate:
		s.terminate()
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType("text/plain; charset=utf-8")
	case ForwardPost:
		if !s.begin() {
			unknownSID(ctx)
			return
		}
		defer s.done()
		srv.forward(ctx, s, r)
	case Backchannel:
		bc := &backchannel{streaming: r.Streaming, hold: r.LongPoll}
		if !s.attach(bc, r.AID) {
			unknownSID(ctx)
			return
		}
		channelHeaders(ctx)
		ctx.Response.Header.Set("X-Accel-Buffering", "no") // nginx: pass each chunk on at once
		conn := ctx.Conn()
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) { s.serveBackchannel(w, conn, bc) })
	}
}

// open serves the session-opening POST: it answers [[0,["c",SID,"",8,12,keepalive]]],
// as Firestore and its emulator do.
func (srv *Server) open(ctx *fasthttp.RequestCtx, params map[string][]string) {
	if len(ctx.Request.Header.ContentEncoding()) > 0 {
		badRequest(ctx, "a compressed WebChannel body is not accepted")
		return
	}
	f, err := ParseForward(ctx.PostBody())
	if err != nil {
		badRequest(ctx, "malformed WebChannel handshake body")
		return
	}
	headers := f.Headers
	if hv, ok := params["$httpHeaders"]; ok {
		if len(hv) != 1 {
			badRequest(ctx, "$httpHeaders given more than once")
			return
		}
		more, err := ParseHeaders(hv[0])
		if err != nil {
			badRequest(ctx, "malformed $httpHeaders")
			return
		}
		if headers == nil {
			headers = more
		} else {
			for k, vs := range more {
				headers[k] = append(headers[k], vs...)
			}
		}
	}
	if len(f.Maps) > 0 && f.Maps[0].ID != 0 {
		badRequest(ctx, "a handshake's messages start at ofs 0")
		return
	}
	for _, m := range f.Maps {
		if m.Data == nil {
			badRequest(ctx, "a WebChannel message has no __data__")
			return
		}
	}
	sid, err := newSID()
	if err != nil {
		apierror.Write(ctx, fasthttp.StatusServiceUnavailable, apierror.Unavailable, "no session id could be made")
		return
	}
	s := newSession(srv, sid, params, headers)
	for _, m := range f.Maps {
		s.inbox = append(s.inbox, m.Data)
		s.inBytes += len(m.Data)
	}
	s.nextMap = int64(len(f.Maps))
	srv.mu.Lock()
	switch {
	case srv.shutdown:
		srv.mu.Unlock()
		s.end(ErrShutdown, ErrShutdown)
		apierror.Write(ctx, fasthttp.StatusServiceUnavailable, apierror.Unavailable, "the server is shutting down")
		return
	case len(srv.sessions) >= srv.cfg.MaxSessions:
		srv.mu.Unlock()
		s.end(ErrShutdown, ErrShutdown)
		apierror.Write(ctx, fasthttp.StatusServiceUnavailable, apierror.Unavailable, "too many WebChannel sessions on this server")
		return
	}
	srv.sessions[sid] = s
	srv.mu.Unlock()
	if err := srv.cfg.Open(s, ctx); err != nil {
		s.end(err, err)
		if ctx.Response.StatusCode() == fasthttp.StatusOK {
			badRequest(ctx, "the session was refused")
		}
		return
	}
	channelHeaders(ctx)
	keepalive := srv.cfg.NoopInterval.Milliseconds()
	text := fmt.Appendf(nil, `[[0,["c",%q,"",%d,%d,%d]]]`, sid, ProtocolVersion, serverVersion, keepalive)
	ctx.SetBody(AppendChunk(nil, text))
}

// serverVersion is what the opening answer announces as the server's version (SVER),
// as the Firestore emulator does.
const serverVersion = 12

// forward serves a forward POST of s.
func (srv *Server) forward(ctx *fasthttp.RequestCtx, s *Session, r Request) {
	if len(ctx.Request.Header.ContentEncoding()) > 0 {
		badRequest(ctx, "a compressed WebChannel body is not accepted")
		return
	}
	f, err := ParseForward(ctx.PostBody())
	if err != nil {
		badRequest(ctx, "malformed WebChannel forward body")
		return
	}
	answer, err := s.forward(r.AID, f)
	if err != nil {
		badRequest(ctx, "malformed WebChannel forward body")
		return
	}
	channelHeaders(ctx)
	ctx.SetBody(AppendChunk(nil, answer))
}

// channelHeaders are the headers of every channel answer, as the emulator sends them:
// the response headers closure may read cross-origin are exposed.
func channelHeaders(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	h := &ctx.Response.Header
	h.SetContentType("text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Access-Control-Expose-Headers", "x-client-wire-protocol, x-http-session-id, x-http-initial-response")
}

func badRequest(ctx *fasthttp.RequestCtx, message string) {
	apierror.Write(ctx, fasthttp.StatusBadRequest, apierror.InvalidArgument, message)
}

// unknownSID answers a request of a session the server does not know. closure tells
// this answer (400 whose text holds "Unknown SID" after its first character) from
// other failures.
func unknownSID(ctx *fasthttp.RequestCtx) {
	badRequest(ctx, "Unknown SID: the WebChannel session ended or never existed here")
}

// newSID returns 128 random bits, URL-safe.
func newSID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
