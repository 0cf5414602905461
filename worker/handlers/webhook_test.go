package handlers

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/worker"
)

func TestSignatureRoundTripAndRejections(t *testing.T) {
	body := `{"specversion":"1.0","id":"e1"}`
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := Sign("s3cret", ts, []byte(body))

	if err := VerifySignature("s3cret", ts, body, sig, 5*time.Minute); err != nil {
		t.Fatalf("genuine delivery refused: %v", err)
	}
	if err := VerifySignature("s3cret", ts, body+" ", sig, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered body: %v, want ErrBadSignature", err)
	}
	if err := VerifySignature("other", ts, body, sig, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong secret: %v, want ErrBadSignature", err)
	}
	old := strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)
	if err := VerifySignature("s3cret", old, body, Sign("s3cret", old, []byte(body)), 5*time.Minute); !errors.Is(err, ErrStaleRequest) {
		t.Errorf("old timestamp, correctly signed: %v, want ErrStaleRequest", err)
	}
	// Moving a signature to another timestamp breaks it.
	later := strconv.FormatInt(now.Unix()+1, 10)
	if err := VerifySignature("s3cret", later, body, sig, 5*time.Minute); !errors.Is(err, ErrBadSignature) {
		t.Errorf("replayed signature with new timestamp: %v, want ErrBadSignature", err)
	}
	for _, h := range []string{"", strings.TrimPrefix(sig, "sha256="), "sha256=zz"} {
		if err := VerifySignature("s3cret", ts, body, h, 5*time.Minute); !errors.Is(err, ErrMalformed) {
			t.Errorf("signature %q: %v, want ErrMalformed", h, err)
		}
	}
}

func TestWebhookPostsTheEventAsReceivedSigned(t *testing.T) {
	raw := []byte(`{"specversion":"1.0","id":"e7","source":"s","type":"google.cloud.firestore.document.v1.created"}`)
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotBody = r, must(io.ReadAll(r.Body))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	wh, err := NewWebhook(srv.URL+"/api/hook", "k", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Handle(context.Background(), worker.Event{ID: "e7", Raw: raw, Attempt: 2}); err != nil {
		t.Fatalf("202 answer treated as failure: %v", err)
	}
	if got.Method != http.MethodPost || got.URL.Path != "/api/hook" || string(gotBody) != string(raw) {
		t.Errorf("got %s %s %q", got.Method, got.URL.Path, gotBody)
	}
	h := got.Header
	if h.Get("Content-Type") != "application/cloudevents+json" || h.Get(HeaderIdempotencyKey) != "e7" || h.Get(HeaderAttempt) != "2" {
		t.Errorf("headers %v", h)
	}
	if err := VerifySignature("k", h.Get(HeaderTimestamp), string(gotBody), h.Get(HeaderSignature), time.Minute); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
}

func TestWebhookNon2xxIsAnErrorWithTheStatus(t *testing.T) {
	for _, status := range []int{http.StatusFound, http.StatusBadRequest, http.StatusInternalServerError} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if status == http.StatusFound {
				w.Header().Set("Location", "/elsewhere")
			}
			w.WriteHeader(status)
			_, _ = io.WriteString(w, "nope")
		}))
		wh, _ := NewWebhook(srv.URL, "k", time.Second)
		err := wh.Handle(context.Background(), worker.Event{ID: "e", Raw: []byte("{}")})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != status || !strings.Contains(err.Error(), strconv.Itoa(status)) {
			t.Errorf("status %d: err %v, want a StatusError naming it", status, err)
		}
		srv.Close()
	}
}

func TestWebhookTimeoutIsAnError(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	wh, _ := NewWebhook(srv.URL, "k", 50*time.Millisecond)
	if err := wh.Handle(context.Background(), worker.Event{ID: "e", Raw: []byte("{}")}); err == nil {
		t.Fatal("a receiver that never answers was treated as success")
	}
}

func TestNewWebhookRefusesBadConfig(t *testing.T) {
	if _, err := NewWebhook("ftp://x", "k", 0); err == nil {
		t.Error("ftp URL accepted")
	}
	if _, err := NewWebhook("https://x", "", 0); err == nil {
		t.Error("empty secret accepted")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
