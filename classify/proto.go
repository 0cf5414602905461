package classify

import (
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/harvest-hub/edge/firestorepath"
)

// FromProtoRead classifies a read that arrived as a protobuf request (the gRPC
// front): GetDocumentRequest, ListDocumentsRequest, RunQueryRequest,
// RunAggregationQueryRequest, BatchGetDocumentsRequest or ListCollectionIdsRequest.
//
// The result is what Classify returns for the same read sent as REST: the same Kind,
// Op, Database, Targets, Tags and Transactional, so rules match alike and a write
// invalidates both. What keys it differs: ResourcePath is the request's resource name
// (parent, name, or the database for batchGet) without a verb, KeyParams is nil, and
// CacheBody is the deterministic encoding of the whole request but that name, so every
// field that shapes the answer (mask, page size and token, order, the query) is part
// of the key. Callers key gRPC entries apart from REST ones (the answers' encodings
// differ); tags are shared.
//
// A read the proxy cannot describe (a malformed or foreign resource name, a field this
// proxy does not know, a query without collections) is a Bypass: the upstream answers
// it. m is not modified. FromProtoRead never fails: a malformed read is the upstream's
// to refuse, and it changes nothing.
func FromProtoRead(m proto.Message) Request {
	if hasUnknown(m.ProtoReflect()) {
		return Request{Op: protoOp(m)} // a newer field may change the answer's meaning
	}
	switch r := m.(type) {
	case *firestorepb.GetDocumentRequest:
		c, ok := protoClassifier(r.GetName())
		if !ok || !c.path.IsDocument() {
			return Request{Op: GetDocument}
		}
		cp := proto.Clone(r).(*firestorepb.GetDocumentRequest)
		cp.Name = ""
		return c.protoRead(GetDocument, cp, r.GetConsistencySelector() != nil, c.getDocument)
	case *firestorepb.ListDocumentsRequest:
		if r.GetShowMissing() || !validID(r.GetCollectionId()) {
			return Request{Op: ListDocuments}
		}
		c, ok := protoClassifier(r.GetParent())
		if !ok || !(c.path.Depth() == 0 || c.path.IsDocument()) {
			return Request{Op: ListDocuments}
		}
		coll, err := firestorepath.ParseName(r.GetParent() + "/" + r.GetCollectionId())
		if err != nil || !coll.IsCollection() {
			return Request{Op: ListDocuments}
		}
		c.path = coll
		cp := proto.Clone(r).(*firestorepb.ListDocumentsRequest)
		cp.Parent, cp.CollectionId = "", ""
		req := c.protoRead(ListDocuments, cp, r.GetConsistencySelector() != nil, c.listDocuments)
		req.ResourcePath = coll.Name()
		return req
	case *firestorepb.RunQueryRequest:
		c, ok := protoClassifier(r.GetParent())
		if !ok || !(c.path.Depth() == 0 || c.path.IsDocument()) {
			return Request{Op: RunQuery}
		}
		cp := proto.Clone(r).(*firestorepb.RunQueryRequest)
		cp.Parent = ""
		return c.protoRead(RunQuery, cp, r.GetConsistencySelector() != nil, func() (Request, error) {
			if !c.queryTargets(r.GetStructuredQuery()) {
				return c.bypass(RunQuery)
			}
			return c.read(RunQuery, false)
		})
	case *firestorepb.RunAggregationQueryRequest:
		c, ok := protoClassifier(r.GetParent())
		if !ok || !(c.path.Depth() == 0 || c.path.IsDocument()) {
			return Request{Op: RunAggregationQuery}
		}
		cp := proto.Clone(r).(*firestorepb.RunAggregationQueryRequest)
		cp.Parent = ""
		return c.protoRead(RunAggregationQuery, cp, r.GetConsistencySelector() != nil, func() (Request, error) {
			if !c.queryTargets(r.GetStructuredAggregationQuery().GetStructuredQuery()) {
				return c.bypass(RunAggregationQuery)
			}
			return c.read(RunAggregationQuery, false)
		})
	case *firestorepb.BatchGetDocumentsRequest:
		c, ok := protoClassifier(r.GetDatabase() + "/documents")
		if !ok || c.path.Depth() != 0 || len(r.GetDocuments()) == 0 {
			return Request{Op: BatchGetDocuments}
		}
		cp := proto.Clone(r).(*firestorepb.BatchGetDocumentsRequest)
		cp.Database = ""
		req := c.protoRead(BatchGetDocuments, cp, r.GetConsistencySelector() != nil, func() (Request, error) {
			for _, name := range r.GetDocuments() {
				d, err := firestorepath.ParseName(name)
				if err != nil || !d.IsDocument() || d.Database() != c.path.Database() {
					c.req.Targets, c.req.Tags = nil, nil
					return c.bypass(BatchGetDocuments)
				}
				c.req.Targets = append(c.req.Targets, Target{Kind: TargetDocument, Path: d.Relative()})
				c.req.Tags = append(c.req.Tags, docTag(name))
			}
			return c.read(BatchGetDocuments, false)
		})
		req.ResourcePath = r.GetDatabase()
		return req
	case *firestorepb.ListCollectionIdsRequest:
		c, ok := protoClassifier(r.GetParent())
		if !ok || !(c.path.Depth() == 0 || c.path.IsDocument()) {
			return Request{Op: ListCollectionIds}
		}
		cp := proto.Clone(r).(*firestorepb.ListCollectionIdsRequest)
		cp.Parent = ""
		return c.protoRead(ListCollectionIds, cp, r.GetConsistencySelector() != nil, func() (Request, error) {
			c.req.Privileged = true // answered to IAM principals only: per caller, whatever the rule
			c.req.Targets = []Target{{Kind: TargetDocument, Path: c.path.Relative()}}
			c.req.Tags = []string{collsTag(c.path.Name())}
			return c.read(ListCollectionIds, false)
		})
	}
	return Request{}
}

// protoClassifier starts classifying a read of the resource name (a document, a
// collection, or a database's documents root). ok is false for a name that is none.
func protoClassifier(name string) (*classifier, bool) {
	p, err := firestorepath.ParseName(name)
	if err != nil {
		return nil, false
	}
	return &classifier{path: p, req: Request{Database: p.Database(), ResourcePath: p.Name()}}, true
}

// protoRead runs classify (the REST classification's own step for this op, which sets
// Targets and Tags), then keys it by keyed (the request without its resource name) and
// marks it transactional when it carries a consistency selector.
func (c *classifier) protoRead(op Op, keyed proto.Message, transactional bool, classify func() (Request, error)) Request {
	req, err := classify()
	if err != nil || req.Kind != Read && !req.Transactional {
		return Request{Op: op, Database: c.req.Database}
	}
	if req.CacheBody, err = canonicalBytes(keyed); err != nil {
		return Request{Op: op, Database: c.req.Database}
	}
	if transactional {
		req.Transactional, req.Kind = true, Bypass
	}
	return req
}

// protoOp is the Op of a read request message (OpUnknown for any other message).
func protoOp(m proto.Message) Op {
	switch m.(type) {
	case *firestorepb.GetDocumentRequest:
		return GetDocument
	case *firestorepb.ListDocumentsRequest:
		return ListDocuments
	case *firestorepb.RunQueryRequest:
		return RunQuery
	case *firestorepb.RunAggregationQueryRequest:
		return RunAggregationQuery
	case *firestorepb.BatchGetDocumentsRequest:
		return BatchGetDocuments
	case *firestorepb.ListCollectionIdsRequest:
		return ListCollectionIds
	}
	return OpUnknown
}

// hasUnknown reports whether m or any message inside it carries fields the published
// proto does not define: the REST classification's "unknown JSON field" for protobuf.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					found = hasUnknown(mv.Message())
					return !found
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len() && !found; i++ {
					found = hasUnknown(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}

// FromProtoWrite classifies a single-document write that arrived as a protobuf request
// (the gRPC front): CreateDocumentRequest, UpdateDocumentRequest or
// DeleteDocumentRequest. Like the REST create, patch and delete, the write is expressed
// as the equivalent firestorepb.Write (an update with exists=false for a create, the
// update mask and precondition for an update, a delete with its precondition), so
// Targets, Tags and Writes are what the REST classification of the same write gives.
// A create without a document id names only its collection (the server picks the id).
// A write whose document the proxy cannot determine is an *Error: it must never be
// forwarded unaccounted for.
func FromProtoWrite(m proto.Message) (Request, error) {
	switch r := m.(type) {
	case *firestorepb.CreateDocumentRequest:
		const op = CreateDocument
		if !validID(r.GetCollectionId()) {
			return Request{Op: op}, invalidArgument("invalid collection id")
		}
		coll, err := firestorepath.ParseName(r.GetParent() + "/" + r.GetCollectionId())
		if err != nil || !coll.IsCollection() {
			return Request{Op: op}, invalidArgument("invalid parent")
		}
		c := &classifier{path: coll, req: Request{Database: coll.Database(), ResourcePath: coll.Name()}}
		doc := &firestorepb.Document{}
		if r.GetDocument() != nil {
			doc = proto.Clone(r.GetDocument()).(*firestorepb.Document)
		}
		target := coll
		if id := r.GetDocumentId(); id != "" {
			if !validID(id) {
				return Request{Op: op}, invalidArgument("invalid document id")
			}
			d, err := firestorepath.ParseName(coll.Name() + "/" + id)
			if err != nil || !d.IsDocument() {
				return Request{Op: op}, invalidArgument("invalid document id")
			}
			target, doc.Name = d, d.Name()
		} else {
			doc.Name = ""
		}
		w := &firestorepb.Write{
			Operation:       &firestorepb.Write_Update{Update: doc},
			CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: false}},
		}
		c.addWrite(target, 0, w)
		return c.write(op)
	case *firestorepb.UpdateDocumentRequest:
		const op = PatchDocument
		d, err := firestorepath.ParseName(r.GetDocument().GetName())
		if err != nil || !d.IsDocument() {
			return Request{Op: op}, invalidArgument("invalid document name")
		}
		c := &classifier{path: d, req: Request{Database: d.Database(), ResourcePath: d.Name()}}
		w := &firestorepb.Write{
			Operation:       &firestorepb.Write_Update{Update: r.GetDocument()},
			UpdateMask:      r.GetUpdateMask(),
			CurrentDocument: r.GetCurrentDocument(),
		}
		c.addWrite(d, 0, w)
		return c.write(op)
	case *firestorepb.DeleteDocumentRequest:
		const op = DeleteDocument
		d, err := firestorepath.ParseName(r.GetName())
		if err != nil || !d.IsDocument() {
			return Request{Op: op}, invalidArgument("invalid document name")
		}
		c := &classifier{path: d, req: Request{Database: d.Database(), ResourcePath: d.Name()}}
		w := &firestorepb.Write{
			Operation:       &firestorepb.Write_Delete{Delete: d.Name()},
			CurrentDocument: r.GetCurrentDocument(),
		}
		c.addWrite(d, 0, w)
		return c.write(op)
	}
	return Request{}, invalidArgument("not a single-document write")
}
