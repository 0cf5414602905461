//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package upstream

import (
	"net"
	"syscall"
)

// peerGone reports whether the peer closed c (EOF or an error pending on the socket),
// or, unless unasked bytes are acceptable (tls), sent bytes nobody asked for. It never
// blocks and consumes nothing.
func peerGone(c net.Conn, tls bool) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var b [1]byte
	ctlErr := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK: // nothing pending: open
		case err == syscall.EINTR:
		case err != nil: // ECONNRESET and friends
			gone = true
		case n == 0: // an orderly close: EOF
			gone = true
		default: // bytes pending
			gone = !tls
		}
		return true // done: never wait for readiness
	})
	return gone || ctlErr != nil
}
