package fanout

import (
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
)

// Presence is what the views know of a document.
type Presence uint8

const (
	// Unknown: no current view can tell; read it elsewhere.
	Unknown Presence = iota
	// Found: a current view holds the document.
	Found
	// Missing: a current documents-target view covers the name and does not hold it:
	// the document does not exist at the view's read time.
	Missing
)

func (p Presence) String() string {
	switch p {
	case Found:
		return "found"
	case Missing:
		return "missing"
	}
	return "unknown"
}

// Lookups answer only from views whose upstream stream is open (watch.Watch.Live): a
// view cut off from the upstream may be missing changes.

// LookupDocument answers a read of one document from the current views of database
// under scope: the document and the read time of the view that answered (the latest
// one that knows). A query view can say Found, never Missing (the document may exist
// and not match). Views follow the upstream with a delay: the caller must not use an
// answer older than its own writes to the document (compare ReadTime with the commit
// time of the last write it made), nor share it beyond the scope.
func (h *Hub) LookupDocument(database, name string, scope Scope) (doc *firestorepb.Document, p Presence, readTime time.Time) {
	for _, v := range h.viewsOf(database, scope) {
		v.mu.Lock()
		if v.current && !v.closed && v.w.Live() && !v.readTime.Before(readTime) {
			if d, ok := v.docs[name]; ok {
				doc, p, readTime = d, Found, v.readTime
			} else if v.covers(name) {
				doc, p, readTime = nil, Missing, v.readTime
			}
		}
		v.mu.Unlock()
	}
	return doc, p, readTime
}

// ViewKey names the view a lookup asks, computed once by a caller that asks often (the
// proxy keeps it in its read plan) so that a lookup is one map access.
type ViewKey struct {
	key  string
	name string // a document view's document; "" for a query
	q    *firestorepb.StructuredQuery
}

// DocumentViewKey is the key of the view of the one document name (the target the SDKs'
// getDoc and a document's onSnapshot listen to) under scope.
func DocumentViewKey(database, name string, scope Scope) ViewKey {
	return ViewKey{name: name, key: viewKey(database, scope, &firestorepb.Target{TargetType: &firestorepb.Target_Documents{
		Documents: &firestorepb.Target_DocumentsTarget{Documents: []string{name}}}})}
}

// QueryViewKey is the key of the view of the query (parent, q) under scope.
func QueryViewKey(database, parent string, q *firestorepb.StructuredQuery, scope Scope) ViewKey {
	return ViewKey{q: q, key: viewKey(database, scope, canonical(&firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: parent, QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: q},
	}}}))}
}

// lookup is the current, live view under k, or nil. With no view at all it costs one
// atomic load: the read path asks on every read a view could answer.
func (h *Hub) lookup(k ViewKey) *view {
	if h.nviews.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	v := h.views[k.key]
	h.mu.Unlock()
	return v
}

// LookupDocumentTarget is LookupDocument answered only by the view of that one document,
// found by its key: constant time whatever the number of views, for the read path.
func (h *Hub) LookupDocumentTarget(k ViewKey) (doc *firestorepb.Document, p Presence, readTime time.Time) {
	v := h.lookup(k)
	if v == nil || k.name == "" {
		return nil, Unknown, time.Time{}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.current || v.closed || !v.w.Live() {
		return nil, Unknown, time.Time{}
	}
	if d, ok := v.docs[k.name]; ok {
		return d, Found, v.readTime
	}
	return nil, Missing, v.readTime
}

// covers: the view is a documents target naming name.
func (v *view) covers(name string) bool {
	for _, n := range v.target.GetDocuments().GetDocuments() {
		if n == name {
			return true
		}
	}
	return false
}

// LookupQuery answers a query from the current view k names (QueryViewKey: the
// identical query, same parent and structured query, under a scope): its documents in the query's order and the
// view's read time. ok is false when no such view is current, or when the order is not
// one this package can reproduce exactly. The same caveats as LookupDocument apply.
func (h *Hub) LookupQuery(k ViewKey) (docs []*firestorepb.Document, readTime time.Time, ok bool) {
	v := h.lookup(k)
	if v == nil || k.q == nil {
		return nil, time.Time{}, false
	}
	v.mu.Lock()
	if !v.current || v.closed || !v.w.Live() {
		v.mu.Unlock()
		return nil, time.Time{}, false
	}
	docs = make([]*firestorepb.Document, 0, len(v.docs))
	for _, d := range v.docs {
		docs = append(docs, d)
	}
	readTime = v.readTime
	v.mu.Unlock()
	if !sortDocs(docs, k.q) {
		return nil, time.Time{}, false
	}
	return docs, readTime, true
}

// viewsOf are the views of database under scope.
func (h *Hub) viewsOf(database string, scope Scope) []*view {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.byScope[scopeIndex(database, scope)]
	out := make([]*view, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	return out
}
