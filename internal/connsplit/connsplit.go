// Package connsplit serves two protocols on one listener: it tells HTTP/2 with prior
// knowledge (the connection preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", as gRPC clients
// send to a cleartext host) from everything else (HTTP/1.1) by a connection's first
// bytes, and hands each connection to one of two listeners.
//
// Promises: no byte is lost (the bytes read to decide are read again first by whoever
// serves the connection); deciding is bounded by a read deadline, so a client that
// connects and sends nothing (or a byte at a time) holds a goroutine for at most that
// long and is then closed; a connection whose protocol is decided after its listener
// closed is closed. The decision reads only as far as needed: an HTTP/1.1 request is
// told apart by its first or second byte.
//
// Hand-written because neither net/http nor grpc-go shares a port with fasthttp; it
// frames nothing, it only compares a prefix.
package connsplit

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"
)

// Preface is the HTTP/2 client connection preface (RFC 9113, section 3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Splitter accepts from one listener and sorts connections into HTTP1 and HTTP2.
type Splitter struct {
	ln      net.Listener
	timeout time.Duration
	// OnUndecided, when set, is told about a connection closed before its protocol was
	// decided (timeout, or the peer left); err says why.
	onUndecided func(net.Conn, error)

	http1, http2 *child
	closeOnce    sync.Once
}

// New starts sorting ln's connections. timeout bounds the wait for the bytes that
// decide (10 s when <= 0). onUndecided may be nil. The caller serves HTTP1() and
// HTTP2(), and calls Close to stop accepting.
func New(ln net.Listener, timeout time.Duration, onUndecided func(net.Conn, error)) *Splitter {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	s := &Splitter{ln: ln, timeout: timeout, onUndecided: onUndecided}
	s.http1 = newChild(ln.Addr())
	s.http2 = newChild(ln.Addr())
	go s.accept()
	return s
}

// HTTP1 is the listener of connections that do not start with the HTTP/2 preface.
func (s *Splitter) HTTP1() net.Listener { return s.http1 }

// HTTP2 is the listener of connections that start with the HTTP/2 preface.
func (s *Splitter) HTTP2() net.Listener { return s.http2 }

// Close closes the underlying listener and both children.
func (s *Splitter) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.ln.Close()
		s.http1.Close()
		s.http2.Close()
	})
	return err
}

func (s *Splitter) accept() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if !errors.Is(err, net.ErrClosed) && errors.As(err, &te) && te.Temporary() {
				// EMFILE and friends: back off and retry, as net/http does
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.http1.fail(err)
			s.http2.fail(err)
			return
		}
		delay = 0
		go s.sort(c)
	}
}

// sort reads until the first bytes match the preface or cannot, then delivers c.
func (s *Splitter) sort(c net.Conn) {
	var buf [len(Preface)]byte
	n := 0
	_ = c.SetReadDeadline(time.Now().Add(s.timeout))
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if !bytes.Equal(buf[:n], []byte(Preface[:n])) {
			break // not the preface: HTTP/1 (an error after these bytes is the server's to see)
		}
		if err != nil {
			if s.onUndecided != nil {
				s.onUndecided(c, err)
			}
			c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: append([]byte(nil), buf[:n]...)}
	target := s.http1
	if n == len(buf) && string(buf[:]) == Preface {
		target = s.http2
	}
	target.deliver(pc)
}

// child is one of the two listeners: Accept takes what sort delivers.
type child struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error
}

func newChild(addr net.Addr) *child {
	return &child{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (c *child) Accept() (net.Conn, error) {
	select {
	case conn := <-c.conns:
		return conn, nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, c.err
	}
}

func (c *child) deliver(conn net.Conn) {
	select {
	case c.conns <- conn:
	case <-c.done:
		conn.Close()
	}
}

// fail ends Accept with err (the parent listener failed or closed).
func (c *child) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.once.Do(func() { close(c.done) })
}

// Close stops this child only: connections sorted to it from now on are closed.
func (c *child) Close() error {
	c.fail(net.ErrClosed)
	return nil
}

func (c *child) Addr() net.Addr { return c.addr }

// prefixConn reads the bytes consumed while deciding before the rest of the conn.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
