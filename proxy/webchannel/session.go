package webchannel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Why a session ended: its Context's cause, and what Recv returns once the messages
// that arrived before are taken.
var (
	// ErrClosed: Close ended the session (Recv returns it when Close was given nil).
	ErrClosed = errors.New("webchannel: session closed by the server")
	// ErrExpired: no backchannel and no forward request for Config.SessionIdle.
	ErrExpired = errors.New("webchannel: session expired (the client went away)")
	// ErrShutdown: the Server shut down.
	ErrShutdown = errors.New("webchannel: server shutting down")
	// ErrTerminated: the client terminated the channel (Recv returns io.EOF).
	ErrTerminated = errors.New("webchannel: the client terminated the session")
)

// Session is one client's channel: the messages its forward POSTs carry, in order and
// each once (Recv), and the arrays its backchannel delivers (Send). Recv may be called
// from one goroutine and Send from another; Close from any.
type Session struct {
	srv     *Server
	id      string
	params  url.Values
	headers http.Header
	ctx     context.Context
	cancel  context.CancelCauseFunc

	fwd sync.Mutex // serialises the session's forward POSTs, so maps queue in id order

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change a waiter waits for
	nextMap int64         // map ids below it were queued
	inbox   [][]byte
	inBytes int

	nextArray    int64   // the next array id (0 was the opening ["c",...])
	unacked      []array // sent or to send, not acknowledged; ids ascending
	unackedBytes int

	bc      *backchannel // the attached backchannel, nil when none
	bcEnded time.Time    // when the last one ended (the session's creation before any)
	active  int          // requests of the session being served
	idle    *time.Timer

	closed  bool  // no more Send: closed, terminated, expired or shutting down
	cause   error // why it closed (the context's cause, set with closed)
	final   bool  // the last array (["close"] or ["stop"]) is queued
	recvErr error // what Recv returns, once closed and the inbox is empty
	ended   bool  // removed from the server: every request is refused
}

// array is one backchannel array, [id,payload], as JSON text.
type array struct {
	id   int64
	text []byte
}

// backchannel is one backchannel GET attached to a session.
type backchannel struct {
	streaming bool
	hold      time.Duration // how long a long poll waits for data before a noop
	sentUpTo  int64         // arrays up to it were written to this GET
}

func newSession(srv *Server, id string, params url.Values, headers http.Header) *Session {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		srv: srv, id: id, params: params, headers: headers, ctx: ctx, cancel: cancel,
		changed:   make(chan struct{}),
		nextArray: 1,
		bcEnded:   time.Now(),
	}
	s.idle = time.AfterFunc(srv.cfg.SessionIdle, s.expire)
	return s
}

// ID is the session id (SID): 128 random bits, unguessable.
func (s *Session) ID() string { return s.id }

// Params are the query parameters of the session-opening request (database, VER, ...).
// The map must not be modified.
func (s *Session) Params() url.Values { return s.params }

// Headers are the headers the client asked the session to carry: those of the
// opening POST's "headers" field (where the Firebase SDK puts Authorization and
// x-goog-api-key) and of a $httpHeaders query parameter, names canonical. They are
// not the opening request's own HTTP headers. The map must not be modified.
func (s *Session) Headers() http.Header { return s.headers }

// Context ends when the session ends (terminated, expired, closed, shut down); its
// cause (context.Cause) says which.
func (s *Session) Context() context.Context { return s.ctx }

// Recv returns the next message of the forward channel: a map's __data__, the JSON
// text the client sent, in map-id order, each once however often the client sent
// it. Once the session is over and every message that arrived before was returned,
// it returns io.EOF (the client terminated) or why the session ended.
func (s *Session) Recv() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if len(s.inbox) > 0 {
			m := s.inbox[0]
			s.inbox[0] = nil
			s.inbox = s.inbox[1:]
			s.inBytes -= len(m)
			s.signalLocked()
			return m, nil
		}
		if s.closed {
			return nil, s.recvErr
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
}

// Send queues msg (one JSON value, UTF-8) as the payload of the next backchannel
// array, [id,[msg]]. It returns once the array is queued: it is written to the
// backchannel now, or to the next one the client opens, and kept until the client
// acknowledges it. While the session holds Config.MaxUnackedBytes of arrays not
// acknowledged, Send waits. It fails once the session is closed.
func (s *Session) Send(msg []byte) error {
	if !utf8.Valid(msg) {
		return errors.New("webchannel: a message must be UTF-8 JSON")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return s.cause
		}
		if s.unackedBytes < s.srv.cfg.MaxUnackedBytes {
			break
		}
		ch := s.changed
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
	payload := make([]byte, 0, len(msg)+2)
	payload = append(append(append(payload, '['), msg...), ']')
	s.appendLocked(payload)
	return nil
}

// Close ends the session from the server's side: Send fails from now on, Recv returns
// err (ErrClosed when nil) once the messages already arrived are taken, and the
// client gets ["close"] after the arrays already sent, upon which it ends its
// channel. The session is freed once that reached a backchannel, or at the idle
// timeout. Closing a closed session does nothing.
func (s *Session) Close(err error) {
	if err == nil {
		err = ErrClosed
	}
	s.finish(err, err, ctlClose)
}

var (
	ctlNoop  = []byte(`["noop"]`)
	ctlClose = []byte(`["close"]`)
	ctlStop  = []byte(`["stop"]`)
)

// finish closes the session with a last control array, which the backchannel
// delivers before the session is freed; with none attached, it waits for one until
// the idle timeout.
func (s *Session) finish(cause, recvErr error, last []byte) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.cause, s.final, s.recvErr = true, cause, true, recvErr
	s.appendLocked(last)
	s.mu.Unlock()
	s.cancel(cause)
}

// appendLocked queues an array with the next id and wakes the backchannel.
func (s *Session) appendLocked(payload []byte) {
	id := s.nextArray
	s.nextArray++
	text := make([]byte, 0, len(payload)+24)
	text = append(text, '[')
	text = strconv.AppendInt(text, id, 10)
	text = append(text, ',')
	text = append(text, payload...)
	text = append(text, ']')
	s.unacked = append(s.unacked, array{id: id, text: text})
	s.unackedBytes += len(text)
	s.signalLocked()
}

func (s *Session) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ackLocked drops the arrays up to aid, which the client says it received.
func (s *Session) ackLocked(aid int64) {
	n := 0
	for n < len(s.unacked) && s.unacked[n].id <= aid {
		s.unackedBytes -= len(s.unacked[n].text)
		s.unacked[n] = array{}
		n++
	}
	if n > 0 {
		s.unacked = s.unacked[n:]
		if len(s.unacked) == 0 {
			s.unacked = nil // let the backing array go
		}
		s.signalLocked()
	}
}

// begin counts a request of the session in; false when the session has ended.
func (s *Session) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.active++
	s.idle.Stop()
	return true
}

// done counts a request out: with none left, the idle timeout runs.
func (s *Session) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	if s.active == 0 && !s.ended {
		s.idle.Reset(s.srv.cfg.SessionIdle)
	}
}

// expire ends a session that stayed idle (its timer).
func (s *Session) expire() {
	s.mu.Lock()
	idle := s.active == 0 && !s.ended
	s.mu.Unlock()
	if idle {
		s.end(ErrExpired, ErrExpired)
	}
}

// terminate serves TYPE=terminate: the client is gone.
func (s *Session) terminate() { s.end(ErrTerminated, io.EOF) }

// end removes the session: every later request of it is refused as an unknown SID,
// its attached backchannel ends, Recv drains then fails, Send fails.
func (s *Session) end(cause, recvErr error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if cause == nil {
		cause = s.cause // ending a closed session: it closed for its own reason
	}
	if !s.closed {
		s.closed, s.cause, s.recvErr = true, cause, recvErr
	}
	s.idle.Stop()
	s.unacked, s.unackedBytes = nil, 0
	s.signalLocked()
	s.mu.Unlock()
	s.cancel(cause)
	s.srv.remove(s)
}

// forward queues the maps of a forward POST (ids from ofs on) that were not queued
// before, waiting while the inbox is full, and returns the POST's answer:
// [backchannel present (1) or missing (0), last array id, unacknowledged bytes].
func (s *Session) forward(aid int64, f *Forward) ([]byte, error) {
	s.fwd.Lock()
	defer s.fwd.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ackLocked(aid)
	if len(f.Maps) > 0 && f.Maps[0].ID > s.nextMap {
		return nil, forwardErr("messages are missing before this POST's")
	}
	for _, m := range f.Maps {
		if m.Data == nil {
			return nil, forwardErr("a message has no __data__")
		}
	}
	for _, m := range f.Maps {
		if m.ID < s.nextMap {
			continue // sent again after a failed POST: queued already
		}
		for !s.closed && s.inBytes > 0 && s.inBytes+len(m.Data) > s.srv.cfg.MaxQueuedBytes {
			ch := s.changed
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		if s.closed {
			break // nobody will read it
		}
		s.inbox = append(s.inbox, m.Data)
		s.inBytes += len(m.Data)
		s.nextMap = m.ID + 1
		s.signalLocked()
	}
	present := 0
	if s.bc != nil || time.Since(s.bcEnded) < backchannelGrace {
		present = 1
	}
	out := []byte{'['}
	out = strconv.AppendInt(out, int64(present), 10)
	out = append(out, ',')
	out = strconv.AppendInt(out, s.nextArray-1, 10)
	out = append(out, ',')
	out = strconv.AppendInt(out, int64(s.unackedBytes), 10)
	return append(out, ']'), nil
}

// backchannelGrace is how long after a backchannel ended a forward POST still reports
// it present: a long-polling client opens the next GET at once, and a client told its
// backchannel is missing restarts it only after a retry delay of 5 to 15 s. It is
// closure's estimate of a round trip (WebChannelBase.RTT_ESTIMATE).
const backchannelGrace = 3 * time.Second

// attach makes bc the session's backchannel (ending the one before, which the client
// has given up), after dropping the arrays up to aid. False when the session ended.
func (s *Session) attach(bc *backchannel, aid int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	s.ackLocked(aid)
	bc.sentUpTo = aid
	if len(s.unacked) > 0 {
		bc.sentUpTo = s.unacked[0].id - 1 // every array not acknowledged goes again
	}
	s.bc = bc
	s.active++
	s.idle.Stop()
	s.signalLocked() // a writer of the replaced backchannel ends
	return true
}

// detach ends bc's attachment (done for its request).
func (s *Session) detach(bc *backchannel) {
	s.mu.Lock()
	if s.bc == bc {
		s.bc = nil
		s.bcEnded = time.Now()
	}
	s.mu.Unlock()
	s.done()
}

// serveBackchannel writes the session's arrays to one backchannel GET: all arrays not
// acknowledged, then new ones as they come, as chunks. A long poll ends after one
// chunk; a streaming one when the session ends, when another backchannel replaces it,
// when it wrote half of MaxUnackedBytes (the client reopens it and so acknowledges
// what it received), or when a write fails. Without data for NoopInterval (a long
// poll: its hold) it sends ["noop"].
func (s *Session) serveBackchannel(w *bufio.Writer, conn net.Conn, bc *backchannel) {
	defer s.detach(bc)
	cfg := &s.srv.cfg
	wait := cfg.NoopInterval
	if !bc.streaming && bc.hold > 0 {
		wait = min(wait, bc.hold)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	written := 0
	var pending []array
	var buf []byte
	if bc.streaming {
		// Something at once: the client takes a backchannel whose first byte is late
		// for a buffering proxy's and falls back to long polls.
		s.mu.Lock()
		if !s.closed && len(s.unacked) == 0 {
			s.appendLocked(ctlNoop)
		}
		s.mu.Unlock()
	}
	for {
		s.mu.Lock()
		if s.bc != bc || s.ended {
			s.mu.Unlock()
			return
		}
		i := sort.Search(len(s.unacked), func(i int) bool { return s.unacked[i].id > bc.sentUpTo })
		pending = append(pending[:0], s.unacked[i:]...)
		lastFinal := s.final && len(pending) > 0 && pending[len(pending)-1].id == s.nextArray-1
		ch := s.changed
		s.mu.Unlock()
		if len(pending) > 0 {
			buf = buf[:0]
			text := []byte{'['}
			for j, a := range pending {
				if j > 0 {
					text = append(text, ',')
				}
				text = append(text, a.text...)
			}
			text = append(text, ']')
			buf = AppendChunk(buf, text)
			if cfg.WriteTimeout > 0 && conn != nil {
				conn.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
			if err := w.Flush(); err != nil {
				return
			}
			bc.sentUpTo = pending[len(pending)-1].id
			written += len(buf)
			clear(pending)
			if lastFinal {
				s.end(nil, nil) // the last array is on its way: nothing more will come
				return
			}
			if !bc.streaming || written >= cfg.MaxUnackedBytes/2 {
				return
			}
			timer.Reset(wait) // Go 1.23 timers: no stale tick to drain
			continue
		}
		select {
		case <-ch:
		case <-timer.C:
			s.mu.Lock()
			if !s.closed {
				s.appendLocked(ctlNoop)
			}
			s.mu.Unlock()
			timer.Reset(wait)
		}
	}
}
