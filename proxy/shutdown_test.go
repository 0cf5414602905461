package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// SIGTERM (Serve's context ending) stops taking traffic (/readyz answers 503) and
// drains: a request already in flight is answered in full before Serve returns.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(arrived)
		<-release
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name":"slow"}`))
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, setup{upstream: func(int, string) string { return up.URL }})
	r := h.replicas[0]

	answered := make(chan answer, 1)
	go func() {
		a, err := h.send(r.url, "GET", h.docs()+"/products/slow", "")
		if err != nil {
			t.Errorf("the in-flight request failed during shutdown: %v", err)
		}
		answered <- a
	}()
	<-arrived // the request is in flight, held by the upstream

	stopped := make(chan struct{})
	go func() { r.stop(); close(stopped) }()
	waitFor(t, "the replica to start draining", r.draining.Load)
	ready := httptest.NewRecorder()
	r.adminHandler().ServeHTTP(ready, httptest.NewRequest("GET", "/readyz", nil))
	if ready.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", ready.Code)
	}
	select {
	case <-stopped:
		t.Fatal("Serve returned while a request was still in flight")
	default:
	}

	close(release)
	if a := <-answered; a.status != http.StatusOK || string(a.body) != `{"name":"slow"}` {
		t.Errorf("in-flight request answered %v, want the upstream's 200", a)
	}
	<-stopped
}
