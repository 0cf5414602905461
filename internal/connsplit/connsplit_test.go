package connsplit

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func start(t *testing.T, timeout time.Duration, undecided chan<- error) *Splitter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, timeout, func(_ net.Conn, err error) {
		if undecided != nil {
			undecided <- err
		}
	})
	t.Cleanup(func() { s.Close() })
	return s
}

// readAll accepts one connection from ln and returns everything the client sent.
func readAll(t *testing.T, ln net.Listener) <-chan string {
	t.Helper()
	out := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			out <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		out <- string(b)
	}()
	return out
}

// send writes the chunks one by one (a pause between them), then half-closes.
func send(t *testing.T, addr string, chunks ...string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range chunks {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := c.Write([]byte(ch)); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	t.Cleanup(func() { c.Close() })
}

func TestSortsByPrefaceWithoutLosingBytes(t *testing.T) {
	s := start(t, 5*time.Second, nil)
	addr := s.ln.Addr().String()

	h1 := readAll(t, s.HTTP1())
	send(t, addr, "P", "OST /v1/x HTTP/1.1\r\nHost: a\r\n\r\n")
	if got := <-h1; got != "POST /v1/x HTTP/1.1\r\nHost: a\r\n\r\n" {
		t.Errorf("HTTP/1 connection read %q", got)
	}

	h2 := readAll(t, s.HTTP2())
	// The preface a byte group at a time, then a frame: all of it reaches the HTTP/2 side.
	send(t, addr, "PRI * HT", "TP/2.0\r\n\r\nSM\r", "\n\r\n", "\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	if got := <-h2; got != Preface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00" {
		t.Errorf("HTTP/2 connection read %q", got)
	}
}

func TestSilentClientIsClosedAfterTimeout(t *testing.T) {
	undecided := make(chan error, 1)
	s := start(t, 50*time.Millisecond, undecided)
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("PRI * ")); err != nil { // a prefix of the preface, then nothing
		t.Fatal(err)
	}
	var ne net.Error
	if err := <-undecided; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("undecided because of %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent connection was not closed")
	}
}

func TestClosedChildClosesLateConnections(t *testing.T) {
	s := start(t, 5*time.Second, nil)
	s.HTTP2().Close()
	if _, err := s.HTTP2().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(Preface))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection for the closed HTTP/2 side was not closed")
	}
}
