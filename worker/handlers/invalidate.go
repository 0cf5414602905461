package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/harvest-hub/edge/worker"
)

// Invalidator bumps the proxy's cache generations for one document, so no replica
// serves a cached read that predates a write made outside the proxy. database is
// "projects/{p}/databases/{d}", taken from the event's source; documentName is the
// document path relative to the database's documents, e.g. "orders/o1". These are the
// arguments of the proxy cache's (*cache.Tiers).PurgeDocument.
type Invalidator interface {
	Invalidate(ctx context.Context, database, documentName string) error
}

// Invalidate calls an Invalidator for the event's document.
type Invalidate struct{ inv Invalidator }

// NewInvalidate invalidates through inv.
func NewInvalidate(inv Invalidator) *Invalidate { return &Invalidate{inv: inv} }

// Handle invalidates ev's document. An event without a document cannot be acted on,
// and retrying will not change that: the error is Permanent.
func (h *Invalidate) Handle(ctx context.Context, ev worker.Event) error {
	if ev.Document == "" {
		return worker.Permanent(errors.New("invalidate: event names no document (subject must be documents/{path})"))
	}
	db, ok := strings.CutPrefix(ev.Source, "//firestore.googleapis.com/")
	if !ok || !strings.HasPrefix(db, "projects/") {
		return worker.Permanent(fmt.Errorf("invalidate: source %q is not //firestore.googleapis.com/projects/{p}/databases/{d}", ev.Source))
	}
	if err := h.inv.Invalidate(ctx, db, ev.Document); err != nil {
		return fmt.Errorf("invalidate %s: %w", ev.Document, err)
	}
	return nil
}
