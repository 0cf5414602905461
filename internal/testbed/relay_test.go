package testbed_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// echoServer answers every line with the same line, on loopback, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dialRelay(t *testing.T, r *testbed.Relay) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads the echo, failing on a deadline so a broken relay
// fails the test instead of hanging it.
func roundTrip(c net.Conn, rd *bufio.Reader, line string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func TestRelayCutAndRestore(t *testing.T) {
	r := testbed.NewRelay(t, echoServer(t))
	live, liveRd := dialRelay(t, r)
	if got, err := roundTrip(live, liveRd, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the relay: %q, %v", got, err)
	}

	r.Cut()
	if _, err := roundTrip(live, liveRd, "after cut"); err == nil {
		t.Error("a live connection still works after Cut")
	}
	fresh, freshRd := dialRelay(t, r)
	if _, err := roundTrip(fresh, freshRd, "new during cut"); err == nil {
		t.Error("a new connection works during Cut")
	}

	r.Restore()
	healed, healedRd := dialRelay(t, r)
	if got, err := roundTrip(healed, healedRd, "back"); err != nil || got != "back" {
		t.Errorf("after Restore: %q, %v", got, err)
	}
}

func TestRelayPauseStallsUntilResume(t *testing.T) {
	r := testbed.NewRelay(t, echoServer(t))
	c, rd := dialRelay(t, r)
	if _, err := roundTrip(c, rd, "warm"); err != nil {
		t.Fatal(err)
	}

	r.Pause()
	if _, err := io.WriteString(c, "stalled\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if got, err := rd.ReadString('\n'); err == nil {
		t.Fatalf("bytes moved during Pause: %q", got)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("during Pause the connection failed (%v); want it open and silent", err)
	}

	r.Resume()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := rd.ReadString('\n'); err != nil || got != "stalled\n" {
		t.Errorf("after Resume: %q, %v; want the stalled line", got, err)
	}
}
