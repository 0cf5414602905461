package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event is one CloudEvent 1.0 as the proxy publishes it (structured JSON mode), with
// the extension attributes the proxy sets. Raw holds the message body exactly as it
// was received, so a handler that forwards the event (webhook) sends the same bytes
// the proxy published.
type Event struct {
	ID              string
	Source          string
	SpecVersion     string
	Type            string
	Subject         string
	Time            time.Time // zero when the event has no time attribute
	DataContentType string
	Data            json.RawMessage

	// Extension attributes set by the proxy.
	Database   string // database id, e.g. "(default)"
	Collection string // collection id of the document, e.g. "orders"
	Document   string // document path relative to the database, e.g. "orders/o1"
	AuthHash   string // hash of the writer's Authorization header; "" when anonymous

	// Raw is the message body as received.
	Raw []byte
	// Attempt is the delivery attempt this handling is, counting from 1. The consumer
	// sets it from the x-harvest-attempt header; it is not part of the CloudEvent.
	Attempt int
}

// Firestore event types, as Firestore's own triggers name them.
const (
	TypeCreated = "google.cloud.firestore.document.v1.created"
	TypeUpdated = "google.cloud.firestore.document.v1.updated"
	TypeDeleted = "google.cloud.firestore.document.v1.deleted"
	TypeWritten = "google.cloud.firestore.document.v1.written"
)

// Operation is the last dot-separated part of Type: "created", "updated", "deleted",
// "written" for Firestore events.
func (e Event) Operation() string {
	return e.Type[strings.LastIndexByte(e.Type, '.')+1:]
}

// wireEvent is the structured JSON form. Extensions are lower-case top-level members.
type wireEvent struct {
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	SpecVersion     string          `json:"specversion"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	Database        string          `json:"database"`
	Collection      string          `json:"collection"`
	Document        string          `json:"document"`
	AuthHash        string          `json:"authhash"`
}

// ErrNotCloudEvent wraps every reason ParseEvent refuses a body.
var ErrNotCloudEvent = errors.New("not a CloudEvent")

// ParseEvent decodes a structured-mode CloudEvent 1.0. It requires the attributes the
// specification makes mandatory (id, source, specversion 1.x, type) and a valid RFC 3339
// time when one is given. Document and Collection are derived from the subject
// ("documents/{path}") when the proxy did not set them.
func ParseEvent(body []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(body, &w); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrNotCloudEvent, err)
	}
	var missing []string
	for _, a := range []struct{ name, v string }{{"id", w.ID}, {"source", w.Source}, {"specversion", w.SpecVersion}, {"type", w.Type}} {
		if a.v == "" {
			missing = append(missing, a.name)
		}
	}
	if len(missing) > 0 {
		return Event{}, fmt.Errorf("%w: missing required attribute(s) %s", ErrNotCloudEvent, strings.Join(missing, ", "))
	}
	if !strings.HasPrefix(w.SpecVersion, "1.") {
		return Event{}, fmt.Errorf("%w: specversion %q, want 1.0", ErrNotCloudEvent, w.SpecVersion)
	}
	ev := Event{
		ID: w.ID, Source: w.Source, SpecVersion: w.SpecVersion, Type: w.Type, Subject: w.Subject,
		DataContentType: w.DataContentType, Data: w.Data,
		Database: w.Database, Collection: w.Collection, Document: w.Document, AuthHash: w.AuthHash,
		Raw: body,
	}
	if w.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return Event{}, fmt.Errorf("%w: time %q is not RFC 3339", ErrNotCloudEvent, w.Time)
		}
		ev.Time = t
	}
	if ev.Document == "" {
		ev.Document = strings.TrimPrefix(ev.Subject, "documents/")
		if ev.Document == ev.Subject { // subject not in the documents/{path} form
			ev.Document = ""
		}
	}
	if ev.Collection == "" && ev.Document != "" {
		// documents/a/b/c/d: the collection id is the second-to-last segment.
		segs := strings.Split(ev.Document, "/")
		if len(segs) >= 2 {
			ev.Collection = segs[len(segs)-2]
		}
	}
	return ev, nil
}
