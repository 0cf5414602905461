package intent

import (
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter/event"
)

// ClockSkew is how far the proxy's clock may be ahead of the upstream's: a document
// updated no earlier than At-ClockSkew may have been updated by the intent's write.
const ClockSkew = 250 * time.Millisecond

// Outcome is what Resolve concluded about an intent.
type Outcome struct {
	// Landed: the write (or, for a BatchWrite, some of its writes) was applied.
	Landed bool
	// The answer the upstream would have given, reconstructed from the documents as
	// they are now, for event.Build (at most one set).
	Commit     *firestorepb.CommitResponse
	BatchWrite *firestorepb.BatchWriteResponse
	Document   *firestorepb.Document
	// SeenAt is the time of events whose answer carries none (a delete-only write):
	// the intent's At.
	SeenAt time.Time
}

// BuildInput is the event.BuildInput of the intent's events under o (allowed and
// nothing else left for the caller to fill).
func (o Outcome) BuildInput(in *Intent) event.BuildInput {
	return event.BuildInput{
		Writes: in.Writes, Commit: o.Commit, BatchWrite: o.BatchWrite, Document: o.Document,
		SeenAt: o.SeenAt, AuthHash: in.AuthHash, Old: in.Old,
	}
}

// Resolve decides, from the documents as they are now (now: by full name, nil or
// absent for a missing one), whether the intent's write was applied. It is pure.
//
// The rule, per written document (a document write "shows" when):
//   - a set, update or create shows when the document exists, changed since the intent
//     (its updateTime differs from the old document's when that was read, else is no
//     earlier than At-ClockSkew; a create's createTime too), and every field the write
//     sets (the mask's, or all for a set; fields under a transform excepted) has the
//     written value. Its updateTime is the write's commit time.
//   - a transform-only write shows when the document changed since the intent.
//   - a delete shows when the document is missing (and existed before, when known).
//
// A Commit is atomic: it landed when any of its non-delete writes shows, at that
// write's updateTime, and then all its writes landed; a Commit of deletes only landed
// when every delete shows, at an unknown time (SeenAt). A BatchWrite's writes are
// independent: each landed when it shows. A write overwritten again before Resolve
// (another value, or deleted) does not show: its events are not emitted (the limit of
// resolving after the fact, documented in the README).
func Resolve(in *Intent, now map[string]*firestorepb.Document) Outcome {
	out := Outcome{SeenAt: in.At}
	shows := make([]bool, len(in.Writes))
	for i, dw := range in.Writes {
		shows[i] = writeShows(in, dw, now[dw.Name])
	}
	switch in.Op {
	case classify.BatchWrite:
		br := &firestorepb.BatchWriteResponse{}
		for i, dw := range in.Writes {
			for len(br.WriteResults) <= dw.Index {
				br.WriteResults = append(br.WriteResults, &firestorepb.WriteResult{})
				br.Status = append(br.Status, &status.Status{Code: int32(codes.Unknown)})
			}
			if !shows[i] {
				continue
			}
			out.Landed = true
			br.Status[dw.Index] = &status.Status{}
			if doc := now[dw.Name]; doc != nil && dw.Write.GetDelete() == "" {
				br.WriteResults[dw.Index] = writeResult(dw.Write, doc)
			}
		}
		out.BatchWrite = br
		return out
	case classify.Commit:
		var at *firestorepb.Document
		deletesOnly := true
		for i, dw := range in.Writes {
			if dw.Write.GetDelete() != "" {
				continue
			}
			deletesOnly = false
			if shows[i] && at == nil {
				at = now[dw.Name]
			}
		}
		switch {
		case at != nil:
			cr := &firestorepb.CommitResponse{CommitTime: at.GetUpdateTime()}
			for _, dw := range in.Writes {
				for len(cr.WriteResults) <= dw.Index {
					cr.WriteResults = append(cr.WriteResults, &firestorepb.WriteResult{})
				}
				if doc := now[dw.Name]; doc != nil && dw.Write.GetDelete() == "" &&
					proto.Equal(doc.GetUpdateTime(), at.GetUpdateTime()) {
					cr.WriteResults[dw.Index] = writeResult(dw.Write, doc)
				}
			}
			out.Landed, out.Commit = true, cr
		case deletesOnly && len(in.Writes) > 0 && all(shows):
			out.Landed = true // time unknown: SeenAt
		}
		return out
	default: // single-document REST methods
		if len(in.Writes) != 1 || !shows[0] {
			return out
		}
		out.Landed = true
		if dw := in.Writes[0]; dw.Write.GetDelete() == "" {
			out.Document = now[dw.Name]
		}
		return out
	}
}

func all(b []bool) bool {
	for _, v := range b {
		if !v {
			return false
		}
	}
	return true
}

// writeResult is the WriteResult the upstream gave a write that produced doc: its
// update time and the transformed fields' values.
func writeResult(w *firestorepb.Write, doc *firestorepb.Document) *firestorepb.WriteResult {
	r := &firestorepb.WriteResult{UpdateTime: doc.GetUpdateTime()}
	for _, ft := range transforms(w) {
		v, _ := event.FieldAt(doc, ft.GetFieldPath())
		if v == nil {
			v = &firestorepb.Value{ValueType: &firestorepb.Value_NullValue{}}
		}
		r.TransformResults = append(r.TransformResults, v)
	}
	return r
}

func transforms(w *firestorepb.Write) []*firestorepb.DocumentTransform_FieldTransform {
	if tr := w.GetTransform(); tr != nil {
		return tr.GetFieldTransforms()
	}
	return w.GetUpdateTransforms()
}

func writeShows(in *Intent, dw classify.DocWrite, doc *firestorepb.Document) bool {
	w := dw.Write
	old, oldKnown := in.Old[dw.Name]
	if w.GetDelete() != "" {
		return doc == nil && (!oldKnown || old != nil)
	}
	if doc == nil {
		return false
	}
	threshold := in.At.Add(-ClockSkew)
	switch {
	case oldKnown && old != nil:
		if proto.Equal(doc.GetUpdateTime(), old.GetUpdateTime()) {
			return false
		}
	case oldKnown: // it did not exist: it was created since
	default:
		if doc.GetUpdateTime().AsTime().Before(threshold) {
			return false
		}
		if c, ok := w.GetCurrentDocument().GetConditionType().(*firestorepb.Precondition_Exists); ok && !c.Exists &&
			doc.GetCreateTime().AsTime().Before(threshold) {
			return false // a create: the document must be younger than the intent
		}
	}
	u := w.GetUpdate()
	if u == nil {
		return true // a transform only: nothing else to compare
	}
	skip := map[string]bool{}
	for _, ft := range transforms(w) {
		skip[ft.GetFieldPath()] = true
	}
	if m := w.GetUpdateMask(); m != nil {
		for _, path := range m.GetFieldPaths() {
			if skip[path] {
				continue
			}
			want, _ := event.FieldAt(u, path)
			got, _ := event.FieldAt(doc, path)
			if !proto.Equal(want, got) {
				return false
			}
		}
		return true
	}
	for k, v := range u.GetFields() {
		if !transformedUnder(skip, k) && !proto.Equal(v, doc.GetFields()[k]) {
			return false
		}
	}
	for k := range doc.GetFields() {
		if _, set := u.GetFields()[k]; !set && !transformedUnder(skip, k) {
			return false // a set replaces the document: no other field survives it
		}
	}
	return true
}

// transformedUnder reports whether a transform targets top-level field k or a path
// inside it.
func transformedUnder(skip map[string]bool, k string) bool {
	for p := range skip {
		if p == k || len(p) > len(k) && p[:len(k)] == k && p[len(k)] == '.' {
			return true
		}
	}
	return false
}
