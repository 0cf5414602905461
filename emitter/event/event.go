// Package event turns successful Firestore writes into CloudEvents 1.0 in structured
// JSON form, the shape Firestore's own triggers use.
//
// Promises:
//   - Build is pure: no I/O, no clocks (the caller passes the time it saw the success),
//     no global state; safe for concurrent use. The same input always yields the same
//     events, byte for byte apart from protojson's whitespace.
//   - One event per successfully written document, in request order. Writes that
//     batchWrite reports as failed yield nothing.
//   - The id names the change, not the request: for a create or update it is a hash of
//     the document name and the update_time the write gave it (ID); for a delete, of
//     the name and the update_time of the version it deleted, when known (DeleteID).
//     The same write always gets the same id, so consumers can deduplicate
//     redeliveries; and change capture, which sees the same name and update_time on
//     its Listen, gives a write that went through the proxy the same id again.
//   - The caller identity is carried only as the hash the cache uses (authhash); Build
//     never sees a token.
//   - Document JSON is produced by protojson from the official firestorepb types.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/rules"
)

// Type prefixes and kinds, as Firestore's Eventarc triggers name them.
const (
	typePrefix = "google.cloud.firestore.document.v1."

	TypeCreated = typePrefix + "created"
	TypeUpdated = typePrefix + "updated"
	TypeDeleted = typePrefix + "deleted"
	// TypeWritten is a set (no precondition, no mask) whose outcome, created or
	// updated, the proxy cannot know without reading the old document first.
	TypeWritten = typePrefix + "written"
)

// Event is one CloudEvent ready to publish. Body is the complete structured-mode
// CloudEvent JSON; the other fields repeat what transports need without parsing it.
type Event struct {
	ID         string    // deterministic, see package doc
	Type       string    // TypeCreated, TypeUpdated, TypeDeleted or TypeWritten
	RoutingKey string    // "<collectionId>.<created|updated|deleted|written>"
	Document   string    // full resource name, the unit of ordering
	Time       time.Time // commit time (or the time the proxy saw the success)
	Body       []byte    // application/cloudevents+json
}

// BuildInput is everything Build needs about one successful write request.
// Exactly one of Commit, BatchWrite, Document is set, or none (DELETE answers
// an empty body).
type BuildInput struct {
	// Writes are the request's document writes (classify.Request.Writes).
	Writes []classify.DocWrite

	// Commit is the parsed answer of :commit; its commit_time is every event's time
	// and write_results[Index] carry transform results.
	Commit *firestorepb.CommitResponse
	// BatchWrite is the parsed answer of :batchWrite; only writes whose status is OK
	// (code 0) emit; each event's time is its write result's update_time.
	BatchWrite *firestorepb.BatchWriteResponse
	// Document is the answer of PATCH or create: the document after the write. It is
	// the event's value and its update_time the event's time.
	Document *firestorepb.Document

	// SeenAt is when the proxy saw the upstream's success; the time of events whose
	// answer carries none (DELETE, batchWrite deletes).
	SeenAt time.Time

	// AuthHash identifies the caller: the same hash the cache uses for scope: user.
	AuthHash string

	// Old holds documents as they were before the write (old_value mode), by full
	// name. A name present with a nil document did not exist; an absent name is
	// unknown. Known old documents decide created vs updated and fill data.oldValue.
	Old map[string]*firestorepb.Document

	// Allowed says which event types a document's rule emits; nil allows all. An
	// event is kept when the rule's set Allows its type (rules.EventTypes.Allows): a
	// plain set, whose outcome is unknown (written), is kept by a rule that emits
	// created, updated or written, since whoever wants either outcome wants to hear
	// of it. The proxy and rules explain thus agree on what a rule emits.
	Allowed func(docName string) rules.EventTypes
}

// Build returns the events of a successful write request, in request order.
func Build(in BuildInput) ([]Event, error) {
	var results []*firestorepb.WriteResult
	var commitTime time.Time
	switch {
	case in.Commit != nil:
		results = in.Commit.GetWriteResults()
		commitTime = asTime(in.Commit.GetCommitTime())
	case in.BatchWrite != nil:
		results = in.BatchWrite.GetWriteResults()
	}
	// Track documents written earlier in the same request, so a second write to a
	// document sees the first one's outcome as its old state.
	var old map[string]*firestorepb.Document
	if in.Old != nil {
		old = make(map[string]*firestorepb.Document, len(in.Old))
		for k, v := range in.Old {
			old[k] = v
		}
	}

	// A document written more than once in one request (an update then a transform,
	// say): only its last write names the version others see; earlier ones are told
	// apart by their index.
	last := make(map[string]int, len(in.Writes))
	for _, dw := range in.Writes {
		last[dw.Name] = dw.Index
	}

	events := make([]Event, 0, len(in.Writes))
	for _, dw := range in.Writes {
		// A create without a documentId gets its id from the server: the answer names it.
		if in.Document.GetName() != "" && len(in.Writes) == 1 {
			dw.Name = in.Document.GetName()
		}
		if dw.Write == nil {
			return nil, fmt.Errorf("event: write %d (%s) has no firestorepb.Write", dw.Index, dw.Name)
		}
		var res *firestorepb.WriteResult
		if dw.Index >= 0 && dw.Index < len(results) {
			res = results[dw.Index]
		}
		if in.BatchWrite != nil {
			st := in.BatchWrite.GetStatus()
			if dw.Index >= len(st) || st[dw.Index].GetCode() != 0 {
				continue // failed (or unreported) writes changed nothing
			}
		}

		t := commitTime
		if t.IsZero() && res.GetUpdateTime() != nil {
			t = asTime(res.GetUpdateTime())
		}
		if t.IsZero() && in.Document.GetUpdateTime() != nil {
			t = asTime(in.Document.GetUpdateTime())
		}
		if t.IsZero() {
			t = in.SeenAt.UTC()
		}

		oldDoc, oldKnown := old[dw.Name]
		typ := typeOf(dw.Write, oldDoc, oldKnown)
		if in.Allowed != nil && !in.Allowed(dw.Name).Allows(typeBit(typ)) {
			continue
		}

		value, err := valueOf(dw, res, in.Document, t)
		if err != nil {
			return nil, err
		}
		var id string
		switch {
		case lastIndexOf(last, dw.Name, dw.Index) != dw.Index:
			id = IndexedID(dw.Name, t, dw.Index)
		case typ == TypeDeleted:
			// The version it deleted: the old document read first (events.old_value)
			// or the update_time precondition the delete carried.
			var version time.Time
			if oldDoc != nil {
				version = asTime(oldDoc.GetUpdateTime())
			} else if ut := dw.Write.GetCurrentDocument().GetUpdateTime(); ut != nil {
				version = asTime(ut)
			}
			id = DeleteID(dw.Name, version, t)
		default:
			updated := asTime(res.GetUpdateTime())
			if updated.IsZero() {
				updated = asTime(value.GetUpdateTime())
			}
			if updated.IsZero() {
				updated = t
			}
			id = ID(dw.Name, updated)
		}
		ev, err := build(dw.Name, dw.Write.GetUpdateMask(), id, typ, t, value, oldDoc, in.AuthHash)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
		if oldKnown {
			old[dw.Name] = value // nil after a delete: the next write sees it gone
		}
	}
	return events, nil
}

// typeOf applies the documented type rules.
func typeOf(w *firestorepb.Write, old *firestorepb.Document, oldKnown bool) string {
	if w.GetDelete() != "" {
		return TypeDeleted
	}
	if oldKnown {
		if old == nil {
			return TypeCreated
		}
		return TypeUpdated
	}
	if p := w.GetCurrentDocument(); p != nil {
		switch c := p.GetConditionType().(type) {
		case *firestorepb.Precondition_Exists:
			if !c.Exists {
				return TypeCreated
			}
			return TypeUpdated
		case *firestorepb.Precondition_UpdateTime:
			return TypeUpdated // the document must exist at that time
		}
	}
	if w.GetUpdateMask() != nil {
		return TypeUpdated
	}
	return TypeWritten
}

func typeBit(typ string) rules.EventTypes {
	switch typ {
	case TypeCreated:
		return rules.Created
	case TypeUpdated:
		return rules.Updated
	case TypeDeleted:
		return rules.Deleted
	default:
		return rules.Written
	}
}

// valueOf is the document after the write: the answer's document when the upstream
// returned one, else the written document with its transform results applied; nil
// for a delete.
func valueOf(dw classify.DocWrite, res *firestorepb.WriteResult, answer *firestorepb.Document, t time.Time) (*firestorepb.Document, error) {
	w := dw.Write
	if w.GetDelete() != "" {
		return nil, nil
	}
	if answer.GetName() == dw.Name {
		return answer, nil
	}
	doc := &firestorepb.Document{Name: dw.Name}
	if u := w.GetUpdate(); u != nil {
		doc = proto.Clone(u).(*firestorepb.Document)
		doc.Name = dw.Name
	}
	transforms := w.GetUpdateTransforms()
	if tr := w.GetTransform(); tr != nil {
		transforms = tr.GetFieldTransforms()
	}
	results := res.GetTransformResults()
	for i, ft := range transforms {
		if i >= len(results) {
			break // results unknown (e.g. no answer body): leave the field as written
		}
		if err := setField(doc, ft.GetFieldPath(), results[i]); err != nil {
			return nil, fmt.Errorf("event: apply transform of %s on %s: %w", ft.GetFieldPath(), dw.Name, err)
		}
	}
	if res.GetUpdateTime() != nil {
		doc.UpdateTime = res.GetUpdateTime()
	} else if !t.IsZero() {
		doc.UpdateTime = timestamppb.New(t)
	}
	return doc, nil
}

// FieldAt is the value at a (possibly nested, possibly backquoted) field path of doc;
// false when the path is malformed or absent.
func FieldAt(doc *firestorepb.Document, path string) (*firestorepb.Value, bool) {
	segs, err := splitFieldPath(path)
	if err != nil {
		return nil, false
	}
	fields := doc.GetFields()
	for i, s := range segs {
		v, ok := fields[s]
		if !ok {
			return nil, false
		}
		if i == len(segs)-1 {
			return v, true
		}
		fields = v.GetMapValue().GetFields()
	}
	return nil, false
}

// setField sets a (possibly nested, possibly backquoted) field path in doc.
func setField(doc *firestorepb.Document, path string, v *firestorepb.Value) error {
	segs, err := splitFieldPath(path)
	if err != nil {
		return err
	}
	if doc.Fields == nil {
		doc.Fields = map[string]*firestorepb.Value{}
	}
	fields := doc.Fields
	for _, s := range segs[:len(segs)-1] {
		next := fields[s].GetMapValue()
		if next == nil {
			next = &firestorepb.MapValue{}
			fields[s] = &firestorepb.Value{ValueType: &firestorepb.Value_MapValue{MapValue: next}}
		}
		if next.Fields == nil {
			next.Fields = map[string]*firestorepb.Value{}
		}
		fields = next.Fields
	}
	fields[segs[len(segs)-1]] = v
	return nil
}

// splitFieldPath splits a Firestore field path: dot-separated segments, each either
// a simple name or a backquoted name with \` and \\ escapes.
func splitFieldPath(p string) ([]string, error) {
	var segs []string
	for i := 0; i < len(p); {
		var seg strings.Builder
		if p[i] == '`' {
			i++
			closed := false
			for i < len(p) {
				c := p[i]
				if c == '\\' && i+1 < len(p) {
					seg.WriteByte(p[i+1])
					i += 2
					continue
				}
				i++
				if c == '`' {
					closed = true
					break
				}
				seg.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("unterminated backquote in field path %q", p)
			}
		} else {
			j := strings.IndexByte(p[i:], '.')
			if j < 0 {
				j = len(p) - i
			}
			seg.WriteString(p[i : i+j])
			i += j
		}
		if seg.Len() == 0 {
			return nil, fmt.Errorf("empty segment in field path %q", p)
		}
		segs = append(segs, seg.String())
		if i < len(p) {
			if p[i] != '.' {
				return nil, fmt.Errorf("bad field path %q", p)
			}
			i++
			if i == len(p) {
				return nil, fmt.Errorf("trailing dot in field path %q", p)
			}
		}
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("empty field path")
	}
	return segs, nil
}

// cloudEvent is the structured-mode JSON; field order here is the order on the wire.
type cloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Database        string `json:"database"`
	Collection      string `json:"collection"`
	Document        string `json:"document"`
	AuthHash        string `json:"authhash,omitempty"`
	Data            data   `json:"data"`
}

type data struct {
	Value      json.RawMessage `json:"value,omitempty"`
	OldValue   json.RawMessage `json:"oldValue,omitempty"`
	UpdateMask json.RawMessage `json:"updateMask,omitempty"`
}

var docJSON = protojson.MarshalOptions{}

func build(docName string, mask *firestorepb.DocumentMask, id, typ string, t time.Time, value, old *firestorepb.Document, authHash string) (Event, error) {
	n, err := parseName(docName)
	if err != nil {
		return Event{}, err
	}
	var d data
	if value != nil {
		if d.Value, err = docJSON.Marshal(value); err != nil {
			return Event{}, fmt.Errorf("event: marshal value of %s: %w", docName, err)
		}
	}
	if old != nil {
		if d.OldValue, err = docJSON.Marshal(old); err != nil {
			return Event{}, fmt.Errorf("event: marshal oldValue of %s: %w", docName, err)
		}
	}
	if mask != nil {
		if d.UpdateMask, err = docJSON.Marshal(mask); err != nil {
			return Event{}, fmt.Errorf("event: marshal updateMask of %s: %w", docName, err)
		}
	}
	body, err := json.Marshal(cloudEvent{
		SpecVersion:     "1.0",
		ID:              id,
		Source:          "//firestore.googleapis.com/projects/" + n.project + "/databases/" + n.database,
		Type:            typ,
		Subject:         "documents/" + n.path,
		Time:            t.UTC().Format(time.RFC3339Nano),
		DataContentType: "application/json",
		Database:        n.database,
		Collection:      n.collection,
		Document:        n.path,
		AuthHash:        authHash,
		Data:            d,
	})
	if err != nil {
		return Event{}, fmt.Errorf("event: marshal %s: %w", docName, err)
	}
	return Event{
		ID:         id,
		Type:       typ,
		RoutingKey: n.collection + "." + strings.TrimPrefix(typ, typePrefix),
		Document:   docName,
		Time:       t.UTC(),
		Body:       body,
	}, nil
}

// ID is the event id of a create or update: the first 128 bits of a SHA-256 of the
// document's full name and the update_time the write gave it, in hex. Whoever sees
// that version (the proxy in the write's answer, change capture on its Listen)
// computes the same id. A write that changed nothing keeps the old update_time, and
// so the id of the change that made that version.
func ID(name string, updateTime time.Time) string {
	return hashID("v", name, stamp(updateTime))
}

// DeleteID is the event id of a delete. With version, the update_time of the document
// version it deleted, it is a hash of the name and that version: change capture knows
// the version from its view, and the proxy when it read the document first
// (events.old_value) or the delete carried an update_time precondition; such a delete
// gets the same id on both paths. With version zero (not known), it is a hash of the
// name and at, the commit time (or the time the proxy saw the success): still the same
// for the same write, but change capture reports that delete under its own id.
func DeleteID(name string, version, at time.Time) string {
	if !version.IsZero() {
		return hashID("deleted", name, stamp(version))
	}
	return hashID("deleted-at", name, stamp(at))
}

func lastIndexOf(last map[string]int, name string, index int) int {
	if i, ok := last[name]; ok {
		return i
	}
	return index
}

// IndexedID tells apart the earlier writes of a document written more than once in
// one request (only the last one's version is visible to anyone else).
func IndexedID(name string, t time.Time, index int) string {
	return hashID("w", name, stamp(t), strconv.Itoa(index))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// hashID is the first 128 bits of a SHA-256 of parts, NUL-separated, in hex.
func hashID(parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

type name struct {
	project, database, path, collection string
}

// parseName splits "projects/{p}/databases/{d}/documents/{path}".
func parseName(full string) (name, error) {
	parts := strings.SplitN(full, "/", 6)
	if len(parts) < 6 || parts[0] != "projects" || parts[2] != "databases" || parts[4] != "documents" || parts[5] == "" {
		return name{}, fmt.Errorf("event: %q is not a document name", full)
	}
	segs := strings.Split(parts[5], "/")
	if len(segs)%2 != 0 {
		return name{}, fmt.Errorf("event: %q names a collection, not a document", full)
	}
	return name{project: parts[1], database: parts[3], path: parts[5], collection: segs[len(segs)-2]}, nil
}

func asTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().UTC()
}
