// Package proxytest runs a harvest-proxy in-process for the tests of other packages
// (nginx, the conformance suites): on loopback ports chosen by the system, serving until
// the test ends, and stopped cleanly then.
package proxytest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/proxy"
)

// Server is a running proxy.
type Server struct {
	*proxy.Proxy
	// Addr is the client-facing "127.0.0.1:port"; AdminAddr the admin listener's
	// ("" when Options.AdminListen was empty).
	Addr, AdminAddr string
}

// Start builds a proxy from o and serves it on 127.0.0.1:0 (o.Listen is ignored). Give
// o.AdminListen "127.0.0.1:0" for an admin listener on a free port. A nil o.Registry
// gets a fresh one. It fails the test on any error, and stops the proxy at cleanup.
func Start(t testing.TB, o proxy.Options) *Server {
	t.Helper()
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	p, err := proxy.New(o)
	if err != nil {
		t.Fatalf("proxytest: proxy.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxytest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxytest: Serve: %v", err)
		}
	})
	s := &Server{Proxy: p, Addr: ln.Addr().String()}
	if o.AdminListen != "" {
		deadline := time.Now().Add(10 * time.Second)
		for s.AdminAddr = p.AdminAddr(); s.AdminAddr == ""; s.AdminAddr = p.AdminAddr() {
			select {
			case err := <-done:
				t.Fatalf("proxytest: Serve stopped before its admin listener opened: %v", err)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("proxytest: the admin listener did not open within 10 s")
			}
		}
	}
	return s
}
