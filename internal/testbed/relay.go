package testbed

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Relay is a TCP relay on loopback in front of a dependency (Redis, RabbitMQ, the
// upstream), so a test can cut, stall or slow the connection without touching the
// shared server. It is safe for concurrent use.
type Relay struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	cut     bool
	paused  bool
	resume  chan struct{} // closed when a pause ends
	latency time.Duration
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// NewRelay starts a relay to target ("127.0.0.1:6379") and closes it when the test ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay: listen: %v", err)
	}
	r := &Relay{target: target, ln: ln, conns: map[net.Conn]struct{}{}, resume: make(chan struct{})}
	close(r.resume)
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.Close)
	return r
}

// Addr is the relay's "host:port"; point the client here instead of at the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Cut closes every relayed connection and refuses new ones (closing them at once)
// until Restore.
func (r *Relay) Cut() {
	r.mu.Lock()
	r.cut = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
}

// Restore ends a Cut: new connections are relayed again.
func (r *Relay) Restore() {
	r.mu.Lock()
	r.cut = false
	r.mu.Unlock()
}

// Pause stops moving bytes in both directions, keeping connections open, as a hung
// peer would. Resume moves them again.
func (r *Relay) Pause() {
	r.mu.Lock()
	if !r.paused {
		r.paused = true
		r.resume = make(chan struct{})
	}
	r.mu.Unlock()
}

// Resume ends a Pause.
func (r *Relay) Resume() {
	r.mu.Lock()
	if r.paused {
		r.paused = false
		close(r.resume)
	}
	r.mu.Unlock()
}

// SetLatency delays every byte by d in each direction (a round trip takes 2d more),
// as a slow network link would: bytes read from now on are written d after they were
// read, in order, without limiting throughput. 0 ends the delay.
func (r *Relay) SetLatency(d time.Duration) {
	r.mu.Lock()
	r.latency = d
	r.mu.Unlock()
}

// Close stops the relay and every connection through it.
func (r *Relay) Close() {
	r.ln.Close()
	r.Resume()
	r.Cut()
	r.wg.Wait()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		refuse := r.cut
		r.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c, up) {
			continue
		}
		r.wg.Add(2)
		go r.pipe(up, c)
		go r.pipe(c, up)
	}
}

func (r *Relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *Relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

// pipe copies src to dst chunk by chunk: a reader queues each chunk with the time it
// is due (now + latency), a writer writes it then, waiting out pauses first.
func (r *Relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	defer r.untrack(dst)
	defer r.untrack(src)
	type chunk struct {
		b   []byte
		due time.Time
	}
	queue := make(chan chunk, 64)
	written := make(chan struct{})
	go func() {
		defer close(written)
		failed := false
		for c := range queue {
			if failed {
				continue // drain, so the reader never blocks
			}
			time.Sleep(time.Until(c.due))
			r.mu.Lock()
			wait := r.resume
			r.mu.Unlock()
			<-wait
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				src.Close() // ends the reader
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			due := time.Now().Add(r.latency)
			r.mu.Unlock()
			queue <- chunk{b: append([]byte(nil), buf[:n]...), due: due}
		}
		if err != nil { // EOF or a cut: either way this direction is done
			break
		}
	}
	close(queue)
	<-written
}
