package upstream

import (
	"errors"
	"net"
)

// errClosedIdle is what writing a request on a pooled connection returns when the
// upstream had already closed that connection while it sat idle: nothing of the
// request was sent, so sending it again on another connection is safe for any method.
var errClosedIdle = errors.New("upstream closed the idle connection before the request was sent")

// checkedConn is an upstream connection that looks before it reuses. HTTP/1.1 gives a
// client no way to learn that a server closed an idle keep-alive connection other than
// finding it closed: Go's net/http watches every idle connection with a background
// read; fasthttp does not, and sends the next request into the closed socket, where it
// meets EOF before any answer and cannot know whether the server saw the request. The
// Firestore emulator closes its connection after each WebChannel answer without saying
// "Connection: close", so that happened to every other channel request.
//
// The check costs one non-blocking peek (recv with MSG_PEEK|MSG_DONTWAIT) when the
// first byte of a new request is written on a connection that has answered before; a
// fresh connection is not checked.
type checkedConn struct {
	net.Conn
	// tls: bytes may legitimately arrive unasked on an idle TLS connection (a TLS 1.3
	// session ticket), so only a close counts there; on plain HTTP/1.1 unasked bytes
	// mean the connection is out of step (a 408 before a close) and unusable.
	tls bool
	// answered is set once bytes were read, cleared by the next write: the next write
	// begins a request on a reused connection. fasthttp writes a request, then reads its
	// answer, then pools the connection (its pool lock orders the next user's writes
	// after these reads).
	answered bool
}

func (c *checkedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.answered = true
	}
	return n, err
}

func (c *checkedConn) Write(p []byte) (int, error) {
	if c.answered {
		c.answered = false
		if peerGone(c.Conn, c.tls) {
			return 0, errClosedIdle
		}
	}
	return c.Conn.Write(p)
}
