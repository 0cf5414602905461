package event

import (
	"fmt"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
)

// Captured is one change change capture saw on its upstream Listen: a document that
// was created, updated or deleted, whoever wrote it.
type Captured struct {
	// Name is the document's full resource name.
	Name string
	// Doc is the document after the change; nil for a delete.
	Doc *firestorepb.Document
	// Old is the document as the watch last knew it (nil: unknown). A document with
	// fields becomes data.oldValue; one with only an update_time still names the
	// version a delete removed.
	Old *firestorepb.Document
	// ReadTime is the snapshot at which the change was seen: the time of a delete.
	ReadTime time.Time
}

// FromCaptured builds the event of a captured change: created when the document's
// create_time equals its update_time, updated otherwise, deleted when Doc is nil. Its
// id is ID(name, update_time), or for a delete DeleteID(name, old update_time,
// read time): the ids a write through the proxy of the same change gets (see ID and
// DeleteID for when a delete's ids agree).
func FromCaptured(c Captured) (Event, error) {
	if c.Doc == nil {
		version := asTime(c.Old.GetUpdateTime())
		var old *firestorepb.Document
		if len(c.Old.GetFields()) > 0 {
			old = c.Old
		}
		return build(c.Name, nil, DeleteID(c.Name, version, c.ReadTime), TypeDeleted, c.ReadTime.UTC(), nil, old, "")
	}
	if c.Doc.GetName() != c.Name || c.Doc.GetUpdateTime() == nil || c.Doc.GetCreateTime() == nil {
		return Event{}, fmt.Errorf("event: captured document %s lacks its name, create or update time", c.Name)
	}
	typ := TypeUpdated
	if proto.Equal(c.Doc.GetCreateTime(), c.Doc.GetUpdateTime()) {
		typ = TypeCreated
	}
	var old *firestorepb.Document
	if typ == TypeUpdated && len(c.Old.GetFields()) > 0 {
		old = c.Old
	}
	t := asTime(c.Doc.GetUpdateTime())
	return build(c.Name, nil, ID(c.Name, t), typ, t, c.Doc, old, "")
}
