package handlers

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/harvest-hub/edge/worker"
)

type recordingInvalidator struct {
	calls [][2]string
	err   error
}

func (r *recordingInvalidator) Invalidate(_ context.Context, database, doc string) error {
	r.calls = append(r.calls, [2]string{database, doc})
	return r.err
}

func TestInvalidateBumpsTheEventsDocument(t *testing.T) {
	inv := &recordingInvalidator{}
	h := NewInvalidate(inv)
	ev, err := worker.ParseEvent([]byte(`{"specversion":"1.0","id":"1","type":"google.cloud.firestore.document.v1.deleted",
		"source":"//firestore.googleapis.com/projects/p/databases/(default)","subject":"documents/farmers/f1/products/p2","database":"(default)"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	if len(inv.calls) != 1 || inv.calls[0] != [2]string{"projects/p/databases/(default)", "farmers/f1/products/p2"} {
		t.Errorf("Invalidate calls %v", inv.calls)
	}

	inv.err = errors.New("redis down")
	if err := h.Handle(context.Background(), ev); err == nil || worker.IsPermanent(err) {
		t.Errorf("invalidator failure: %v, want a retryable error", err)
	}
	if err := h.Handle(context.Background(), worker.Event{ID: "x"}); !worker.IsPermanent(err) {
		t.Errorf("event without a document: %v, want a permanent error", err)
	}
	if err := h.Handle(context.Background(), worker.Event{ID: "x", Document: "a/b", Source: "elsewhere"}); !worker.IsPermanent(err) {
		t.Errorf("event from another source: %v, want a permanent error", err)
	}
}

func TestLogWritesOneLinePerEvent(t *testing.T) {
	var buf bytes.Buffer
	l := NewLog(slog.New(slog.NewTextHandler(&buf, nil)))
	_ = l.Handle(context.Background(), worker.Event{ID: "e9", Type: "t", Subject: "documents/a/b"})
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "id=e9") || !strings.Contains(out, "subject=documents/a/b") {
		t.Errorf("log line %q", out)
	}
}
