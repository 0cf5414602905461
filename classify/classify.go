package classify

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/harvest-hub/edge/firestorepath"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Classify sorts one request. method is the HTTP method (case-sensitive), path the raw
// (percent-encoded) URL path, rawQuery the raw query string without '?', body the request
// body (read only for POST and PATCH; its content type does not matter: the JS SDK sends
// JSON as text/plain).
//
// The returned Request never shares memory with path, rawQuery or body, so a caller may
// pass strings that alias fasthttp's reused buffers (zero-copy) as long as they stay
// unchanged during the call.
//
// When err is non-nil it is an *Error to answer with (the Request then only tells Op);
// otherwise Kind says what to do. Reads that are transactional (transaction,
// newTransaction, readTime) come back as Bypass with Transactional set and with
// Targets, Tags, KeyParams and CacheBody filled, so a caller may still match rules.
//
// What is an error rather than a bypass: a malformed body on a recognised method, and
// anything about a write-capable request (PATCH, DELETE, POST) that would leave the proxy
// unable to say which documents it writes (a malformed documents path, an undecodable
// query, a write naming no valid document of this database). Firestore rejects all of
// these itself; answering 400 here guarantees no write succeeds unaccounted for.
//
// A write-capable request the proxy does not understand is refused too, never
// forwarded blind: a method other than GET, HEAD, OPTIONS, POST, PATCH and DELETE; a
// POST, PATCH or DELETE outside the documents tree of a served version (firestorepath
// Versions, decoded first: "/%76%31/" is v1) or with a verb this package does not know.
// The exceptions are the two WebChannel paths (/google.firestore.v1.Firestore/Listen/channel
// and .../Write/channel, streamed through) and the emulator's two admin endpoints: PUT .../:securityRules passes, and
// DELETE /emulator/v1/projects/{p}/databases/{d}/documents (the emulator's wipe) is a
// Write of op ClearDatabase with no Tags: the caller invalidates the whole database.
// Reads under a version other than v1 are Bypass (their cache key has no version).
func Classify(method, path, rawQuery string, body []byte) (Request, error) {
	if op := channelOp(path); op != OpUnknown {
		return Request{Op: op}, nil // the browser SDK's WebChannel: forwarded untouched
	}
	switch method {
	case "GET", "POST", "PATCH", "DELETE":
	case "HEAD", "OPTIONS":
		return Request{}, nil // never a write
	case "PUT":
		if isEmulatorRules(path) {
			return Request{}, nil
		}
		return Request{}, unsupported()
	default:
		return Request{}, unsupported()
	}
	p, err := firestorepath.Parse(path)
	if err != nil {
		switch {
		case method == "GET":
			return Request{}, nil
		case errors.Is(err, firestorepath.ErrMalformed):
			return Request{}, invalidArgument("Invalid resource path: a segment is empty, '.', '..', not valid UTF-8, has white space at either end, or has an encoded '/', an encoded ':' (last segment), or an encoded version or keyword")
		case isWebChannel(path):
			return Request{}, nil
		case method == "DELETE":
			if db, ok := emulatorWipe(path); ok {
				return Request{Kind: Write, Op: ClearDatabase, Database: db}, nil
			}
		}
		return Request{}, unsupported()
	}
	req, err := classifyDocuments(method, p, rawQuery, body)
	if err == nil && req.Kind == Read && p.Version() != "v1" {
		req.Kind = Bypass
	}
	return req, err
}

// isWebChannel reports the browser SDK's Listen and Write channel paths, exactly: any
// other /google.firestore.v1.Firestore/{Method} (gRPC-Web, say) could be a write.
func isWebChannel(path string) bool {
	return path == "/google.firestore.v1.Firestore/Listen/channel" || path == "/google.firestore.v1.Firestore/Write/channel"
}

// unsupported refuses a write-capable request the proxy cannot classify.
func unsupported() *Error {
	return invalidArgument("This method and path are not served through the proxy: a request that may write must be one the proxy understands (see the README, \"What the proxy refuses\")")
}

// emulatorWipe reports whether path is the emulator's "delete every document"
// endpoint, /emulator/v1/projects/{p}/databases/{d}/documents, and of which database.
func emulatorWipe(path string) (database string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/emulator/v1/")
	if !ok {
		return "", false
	}
	p, err := firestorepath.Parse("/v1/" + rest)
	if err != nil || p.Depth() != 0 || p.Verb() != "" {
		return "", false
	}
	return p.Database(), true
}

// isEmulatorRules reports the emulator's security-rules endpoint,
// /emulator/v1/projects/{p}:securityRules: it changes who may read, not data.
func isEmulatorRules(path string) bool {
	rest, ok := strings.CutPrefix(path, "/emulator/v1/projects/")
	if !ok {
		return false
	}
	project, ok := strings.CutSuffix(rest, ":securityRules")
	return ok && firestorepath.Valid(project) && !strings.ContainsAny(project, "/%")
}

// classifyDocuments classifies a request on a parsed documents path.
func classifyDocuments(method string, p firestorepath.Path, rawQuery string, body []byte) (Request, error) {
	c := classifier{
		path: p,
		body: body,
		req:  Request{Database: p.Database(), ResourcePath: p.Resource()},
	}
	var buf [8]queryParam
	params := parseQuery(rawQuery, buf[:0])
	c.facts = readFacts(params)
	// Built for every request, kept only by reads: cheaper than keeping params around.
	if len(params) > 0 {
		c.keyParams = appendKeyParams(make([]byte, 0, len(rawQuery)+16), params)
	}
	verb := p.Verb()
	switch method {
	case "GET":
		switch {
		case verb != "":
		case p.IsDocument():
			return c.getDocument()
		case p.IsCollection():
			return c.listDocuments()
		}
	case "PATCH":
		if verb == "" && p.IsDocument() {
			return c.patchDocument()
		}
	case "DELETE":
		if verb == "" && p.IsDocument() {
			return c.deleteDocument()
		}
	case "POST":
		return c.post(verb)
	}
	if method != "GET" {
		return Request{}, unsupported()
	}
	return c.bypass(OpUnknown)
}

// channelOp names the WebChannel endpoints of the Firebase web SDK
// (/google.firestore.v1.Firestore/{Listen,Write}/channel), which are no /v1/ path.
func channelOp(path string) Op {
	switch path {
	case "/google.firestore.v1.Firestore/Listen/channel":
		return Listen
	case "/google.firestore.v1.Firestore/Write/channel":
		return WriteChannel
	}
	return OpUnknown
}

// classifier carries one request through classification.
type classifier struct {
	path      firestorepath.Path
	facts     queryFacts
	keyParams []byte
	body      []byte
	req       Request
}

func (c *classifier) post(verb string) (Request, error) {
	p := c.path
	root, doc := p.Depth() == 0, p.IsDocument()
	switch {
	case verb == "" && p.IsCollection():
		return c.createDocument()
	case verb == "runQuery" && (root || doc):
		return c.runQuery()
	case verb == "runAggregationQuery" && (root || doc):
		return c.runAggregationQuery()
	case verb == "listCollectionIds" && (root || doc):
		return c.listCollectionIds()
	case verb == "partitionQuery" && (root || doc):
		return c.bypass(PartitionQuery)
	case !root:
		return Request{}, unsupported()
	}
	switch verb {
	case "batchGet":
		return c.batchGet()
	case "commit":
		return c.commit()
	case "batchWrite":
		return c.batchWrite()
	case "beginTransaction":
		return c.bypass(BeginTransaction)
	case "rollback":
		return c.bypass(Rollback)
	case "listen":
		return c.bypass(Listen)
	case "write":
		return c.bypass(WriteChannel)
	case "executePipeline":
		return c.bypass(ExecutePipeline)
	}
	return Request{}, unsupported()
}

// bypass forwards the request untouched.
func (c *classifier) bypass(op Op) (Request, error) {
	c.req.Kind, c.req.Op = Bypass, op
	return c.req, nil
}

// fail reports a malformed request of a recognised method.
func (c *classifier) fail(op Op, err error) (Request, error) {
	return Request{Op: op}, err
}

// read finishes a read whose Targets and Tags are set: a cacheable Read unless the
// request is transactional or its query does not decode.
func (c *classifier) read(op Op, transactional bool) (Request, error) {
	c.req.Op = op
	c.req.KeyParams = c.keyParams
	c.req.Tags = dedupe(c.req.Tags)
	c.req.Transactional = transactional || c.facts.transactional
	switch {
	case c.req.Transactional, c.facts.undecodable:
		c.req.Kind = Bypass
	default:
		c.req.Kind = Read
	}
	return c.req, nil
}

func (c *classifier) getDocument() (Request, error) {
	c.req.Targets = []Target{{Kind: TargetDocument, Path: c.path.Relative()}}
	c.req.Tags = []string{docTag(c.path.Name())}
	return c.read(GetDocument, false)
}

func (c *classifier) listDocuments() (Request, error) {
	c.req.Privileged = c.facts.showMissing
	if c.facts.showMissing {
		// Missing documents appear when anything is written below them, which the
		// collection's tag does not track.
		return c.bypass(ListDocuments)
	}
	c.req.Targets = []Target{{Kind: TargetCollection, Path: c.path.Relative(), CollectionID: c.path.ID()}}
	c.req.Tags = []string{collTag(c.path.Name())}
	return c.read(ListDocuments, false)
}

// sameResource reports whether a resource name repeated in a body agrees with the
// path (or is absent). When they differ the upstream's choice is not ours to guess.
func sameResource(inBody, fromPath string) bool {
	return inBody == "" || inBody == fromPath
}

func (c *classifier) runQuery() (Request, error) {
	m := &firestorepb.RunQueryRequest{}
	unknown, err := decodeBody(c.body, m)
	if err != nil {
		return c.fail(RunQuery, err)
	}
	if unknown || !sameResource(m.GetParent(), c.path.Name()) || !c.queryTargets(m.GetStructuredQuery()) {
		return c.bypass(RunQuery)
	}
	m.Parent = ""
	if c.req.CacheBody, err = canonicalBytes(m); err != nil {
		return c.bypass(RunQuery)
	}
	return c.read(RunQuery, m.GetConsistencySelector() != nil)
}

func (c *classifier) runAggregationQuery() (Request, error) {
	m := &firestorepb.RunAggregationQueryRequest{}
	unknown, err := decodeBody(c.body, m)
	if err != nil {
		return c.fail(RunAggregationQuery, err)
	}
	if unknown || !sameResource(m.GetParent(), c.path.Name()) ||
		!c.queryTargets(m.GetStructuredAggregationQuery().GetStructuredQuery()) {
		return c.bypass(RunAggregationQuery)
	}
	m.Parent = ""
	if c.req.CacheBody, err = canonicalBytes(m); err != nil {
		return c.bypass(RunAggregationQuery)
	}
	return c.read(RunAggregationQuery, m.GetConsistencySelector() != nil)
}

// queryTargets sets Targets and Tags from a query's collection selectors; false when
// the query has none or one the tags cannot describe (kindless queries).
func (c *classifier) queryTargets(q *firestorepb.StructuredQuery) bool {
	from := q.GetFrom()
	if len(from) == 0 {
		return false
	}
	rel, name := c.path.Relative(), c.path.Name()
	for _, sel := range from {
		id := sel.GetCollectionId()
		if !validID(id) {
			return false
		}
		if sel.GetAllDescendants() {
			c.req.Targets = append(c.req.Targets, Target{Kind: TargetGroup, Path: rel, CollectionID: id})
			c.req.Tags = append(c.req.Tags, groupTag(c.path.Database(), id))
			continue
		}
		c.req.Targets = append(c.req.Targets, Target{Kind: TargetCollection, Path: join(rel, id), CollectionID: id})
		c.req.Tags = append(c.req.Tags, collTag(name+"/"+id))
	}
	return true
}

func (c *classifier) batchGet() (Request, error) {
	m := &firestorepb.BatchGetDocumentsRequest{}
	unknown, err := decodeBody(c.body, m)
	if err != nil {
		return c.fail(BatchGetDocuments, err)
	}
	if unknown || !sameResource(m.GetDatabase(), c.path.Database()) || len(m.GetDocuments()) == 0 {
		return c.bypass(BatchGetDocuments)
	}
	c.req.Targets = make([]Target, 0, len(m.Documents))
	c.req.Tags = make([]string, 0, len(m.Documents))
	for _, name := range m.Documents {
		d, err := firestorepath.ParseName(name)
		if err != nil || !d.IsDocument() || d.Database() != c.path.Database() {
			c.req.Targets, c.req.Tags = nil, nil
			return c.bypass(BatchGetDocuments)
		}
		c.req.Targets = append(c.req.Targets, Target{Kind: TargetDocument, Path: d.Relative()})
		c.req.Tags = append(c.req.Tags, docTag(name))
	}
	m.Database = ""
	if c.req.CacheBody, err = canonicalBytes(m); err != nil {
		return c.bypass(BatchGetDocuments)
	}
	return c.read(BatchGetDocuments, m.GetConsistencySelector() != nil)
}

func (c *classifier) listCollectionIds() (Request, error) {
	m := &firestorepb.ListCollectionIdsRequest{}
	unknown, err := decodeBody(c.body, m)
	if err != nil {
		return c.fail(ListCollectionIds, err)
	}
	if unknown || !sameResource(m.GetParent(), c.path.Name()) {
		return c.bypass(ListCollectionIds)
	}
	m.Parent = ""
	c.req.Privileged = true
	c.req.Targets = []Target{{Kind: TargetDocument, Path: c.path.Relative()}}
	c.req.Tags = []string{collsTag(c.path.Name())}
	if c.req.CacheBody, err = canonicalBytes(m); err != nil {
		return c.bypass(ListCollectionIds)
	}
	return c.read(ListCollectionIds, m.GetConsistencySelector() != nil)
}

// write finishes a Write whose Writes are set: Targets and Tags follow from them.
func (c *classifier) write(op Op) (Request, error) {
	c.req.Kind, c.req.Op = Write, op
	c.req.Tags = dedupe(c.req.Tags)
	return c.req, nil
}

// addWrite records one written document; d must name a document (or, for a create
// with a server-assigned id, the collection it goes into).
func (c *classifier) addWrite(d firestorepath.Path, index int, w *firestorepb.Write) {
	name := ""
	if d.IsDocument() {
		name = d.Name()
		c.req.Targets = append(c.req.Targets, Target{Kind: TargetDocument, Path: d.Relative()})
	} else {
		c.req.Targets = append(c.req.Targets, Target{Kind: TargetCollection, Path: d.Relative(), CollectionID: d.ID()})
	}
	c.req.Tags = appendWriteTags(c.req.Tags, d)
	c.req.Writes = append(c.req.Writes, DocWrite{Name: name, Index: index, Write: w})
}

// writeQuery refuses a write whose query the proxy could misread.
func (c *classifier) writeQuery() error {
	if c.facts.undecodable {
		return invalidArgument("Invalid query string: a parameter is not percent-encoded correctly")
	}
	return nil
}

func (c *classifier) createDocument() (Request, error) {
	const op = CreateDocument
	if err := c.writeQuery(); err != nil {
		return c.fail(op, err)
	}
	doc := &firestorepb.Document{}
	if _, err := decodeBody(c.body, doc); err != nil {
		return c.fail(op, err)
	}
	target := c.path
	switch ids := c.facts.documentID; {
	case len(ids) > 1:
		return c.fail(op, invalidArgument("documentId given %d times", len(ids)))
	case len(ids) == 1 && ids[0] != "":
		if !validID(ids[0]) {
			return c.fail(op, invalidArgument("Invalid documentId: empty, '.', '..', not valid UTF-8, white space at either end, or contains '/'"))
		}
		d, err := firestorepath.ParseName(c.path.Name() + "/" + ids[0])
		if err != nil {
			return c.fail(op, invalidArgument("Invalid documentId: it does not name a document"))
		}
		target = d
		doc.Name = d.Name()
	default:
		doc.Name = "" // assigned by the server
	}
	w := &firestorepb.Write{
		Operation:       &firestorepb.Write_Update{Update: doc},
		CurrentDocument: &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: false}},
	}
	c.addWrite(target, 0, w)
	return c.write(op)
}

func (c *classifier) patchDocument() (Request, error) {
	const op = PatchDocument
	if err := c.writeQuery(); err != nil {
		return c.fail(op, err)
	}
	doc := &firestorepb.Document{}
	if _, err := decodeBody(c.body, doc); err != nil {
		return c.fail(op, err)
	}
	pre, err := c.precondition()
	if err != nil {
		return c.fail(op, err)
	}
	doc.Name = c.path.Name()
	w := &firestorepb.Write{Operation: &firestorepb.Write_Update{Update: doc}, CurrentDocument: pre}
	if c.facts.hasUpdateMask {
		w.UpdateMask = &firestorepb.DocumentMask{FieldPaths: c.facts.updateMask}
	}
	c.addWrite(c.path, 0, w)
	return c.write(op)
}

func (c *classifier) deleteDocument() (Request, error) {
	const op = DeleteDocument
	if err := c.writeQuery(); err != nil {
		return c.fail(op, err)
	}
	pre, err := c.precondition()
	if err != nil {
		return c.fail(op, err)
	}
	w := &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: c.path.Name()}, CurrentDocument: pre}
	c.addWrite(c.path, 0, w)
	return c.write(op)
}

// precondition reads currentDocument.exists / currentDocument.updateTime (a oneof:
// at most one of them, once).
func (c *classifier) precondition() (*firestorepb.Precondition, error) {
	ex, ut := c.facts.exists, c.facts.updateTime
	switch {
	case len(ex)+len(ut) == 0:
		return nil, nil
	case len(ex)+len(ut) > 1:
		return nil, invalidArgument("currentDocument: give exists or updateTime, once")
	case len(ex) == 1:
		switch strings.ToLower(ex[0]) {
		case "true":
			return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: true}}, nil
		case "false":
			return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_Exists{Exists: false}}, nil
		}
		return nil, invalidArgument("Invalid value at 'current_document.exists' (TYPE_BOOL): want true or false")
	}
	ts := &timestamppb.Timestamp{}
	// The query value is a Timestamp's JSON form without its quotes. Go quoting equals
	// JSON quoting for every valid timestamp; anything else fails to parse, as it should.
	if err := protojson.Unmarshal([]byte(strconv.Quote(ut[0])), ts); err != nil {
		return nil, invalidArgument("Invalid value at 'current_document.update_time' (type.googleapis.com/google.protobuf.Timestamp): want an RFC 3339 timestamp")
	}
	return &firestorepb.Precondition{ConditionType: &firestorepb.Precondition_UpdateTime{UpdateTime: ts}}, nil
}

func (c *classifier) commit() (Request, error) {
	const op = Commit
	if err := c.writeQuery(); err != nil {
		return c.fail(op, err)
	}
	m := &firestorepb.CommitRequest{}
	if _, err := decodeBody(c.body, m); err != nil {
		return c.fail(op, err)
	}
	if !sameResource(m.GetDatabase(), c.path.Database()) {
		return c.fail(op, invalidArgument("database in the body differs from the path"))
	}
	if err := c.addWrites(m.GetWrites(), verifyWrites(c.body)); err != nil {
		return c.fail(op, err)
	}
	c.req.Transactional = len(m.GetTransaction()) > 0
	return c.write(op)
}

func (c *classifier) batchWrite() (Request, error) {
	const op = BatchWrite
	if err := c.writeQuery(); err != nil {
		return c.fail(op, err)
	}
	m := &firestorepb.BatchWriteRequest{}
	if _, err := decodeBody(c.body, m); err != nil {
		return c.fail(op, err)
	}
	if !sameResource(m.GetDatabase(), c.path.Database()) {
		return c.fail(op, invalidArgument("database in the body differs from the path"))
	}
	if err := c.addWrites(m.GetWrites(), verifyWrites(c.body)); err != nil {
		return c.fail(op, err)
	}
	return c.write(op)
}

// addWrites records the writes of a commit or batchWrite, Index = position. verify
// tells which operation-less writes are verify writes (see verifyWrites).
func (c *classifier) addWrites(writes []*firestorepb.Write, verify func(i int) bool) error {
	c.req.Targets = make([]Target, 0, len(writes))
	c.req.Writes = make([]DocWrite, 0, len(writes))
	for i, w := range writes {
		var name string
		switch o := w.GetOperation().(type) {
		case *firestorepb.Write_Update:
			name = o.Update.GetName()
		case *firestorepb.Write_Delete:
			name = o.Delete
		case *firestorepb.Write_Transform:
			name = o.Transform.GetDocument()
		default:
			if verify(i) {
				continue // a transaction's read check: it writes nothing, so nothing to invalidate
			}
			return invalidArgument("writes[%d] has no operation", i)
		}
		d, err := firestorepath.ParseName(name)
		if err != nil || !d.IsDocument() {
			return invalidArgument("writes[%d]: invalid document name", i)
		}
		if d.Database() != c.path.Database() {
			return invalidArgument("writes[%d]: the document is not in the request's database", i)
		}
		c.addWrite(d, i, w)
	}
	return nil
}

// verifyWrites reports which writes of a JSON commit body are "verify" writes: the
// Firebase JS SDK adds one for each document a transaction read but did not write, to
// fail the commit if it changed. The published v1 firestorepb.Write has no such field,
// so the lenient parse drops it and the write looks empty; the raw JSON tells. The body
// is parsed once, whatever the number of writes (classification stays linear in the
// request's size).
func verifyWrites(body []byte) func(i int) bool {
	var raw struct {
		Writes []map[string]json.RawMessage `json:"writes"`
	}
	parsed := false
	return func(i int) bool {
		if !parsed {
			parsed = true
			if json.Unmarshal(body, &raw) != nil {
				raw.Writes = nil
			}
		}
		if i >= len(raw.Writes) {
			return false
		}
		v, ok := raw.Writes[i]["verify"]
		return ok && len(raw.Writes[i]) <= 2 && string(v) != "null" // verify and, at most, currentDocument
	}
}

// verifyField is the field number of Write.verify in the Firebase SDKs' copy of
// google/firestore/v1/write.proto (a string: the document name), absent from the
// published v1 proto the Go types are generated from.
const verifyField = 5

// protoVerify reports which writes of a binary (gRPC) request are verify writes: an
// operation-less Write whose unknown fields hold field 5 as a length-delimited value.
func protoVerify(writes []*firestorepb.Write) func(i int) bool {
	return func(i int) bool {
		b := writes[i].ProtoReflect().GetUnknown()
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return false
			}
			if num == verifyField && typ == protowire.BytesType {
				return true
			}
			b = b[n:]
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return false
			}
			b = b[m:]
		}
		return false
	}
}

// FromWrites classifies writes that did not arrive as a REST request: a gRPC Commit or
// BatchWrite, or one message of the Write stream (gRPC or WebChannel), whose writes are
// committed like a Commit's. op is Commit or BatchWrite; database is
// "projects/{p}/databases/{d}"; transactional marks a commit in a transaction. The
// result is what Classify returns for the same writes as a REST body: Kind Write,
// Targets, Tags and Writes (Index = position in writes), or an *Error when a write
// names no document of database (such a request must never be forwarded unaccounted
// for). The writes are referenced, not copied: callers must not modify them after.
func FromWrites(op Op, database string, writes []*firestorepb.Write, transactional bool) (Request, error) {
	db, err := firestorepath.ParseName(database + "/documents")
	if err != nil || db.Depth() != 0 || db.Database() != database {
		return Request{Op: op}, invalidArgument("invalid database name")
	}
	c := classifier{path: db, req: Request{Database: db.Database(), ResourcePath: db.Resource()}}
	if err := c.addWrites(writes, protoVerify(writes)); err != nil {
		return Request{Op: op}, err
	}
	c.req.Transactional = transactional
	return c.write(op)
}

// validID reports whether id can be one segment of a document path.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && strings.IndexByte(id, '/') < 0
}

func join(parent, id string) string {
	if parent == "" {
		return id
	}
	return parent + "/" + id
}

// dedupe sorts tags and drops repeats.
func dedupe(tags []string) []string {
	if len(tags) < 2 {
		return tags
	}
	slices.Sort(tags)
	return slices.Compact(tags)
}

// String names an Op as Firestore's REST reference does.
func (o Op) String() string {
	switch o {
	case GetDocument:
		return "get"
	case ListDocuments:
		return "list"
	case RunQuery:
		return "runQuery"
	case RunAggregationQuery:
		return "runAggregationQuery"
	case BatchGetDocuments:
		return "batchGet"
	case ListCollectionIds:
		return "listCollectionIds"
	case CreateDocument:
		return "createDocument"
	case PatchDocument:
		return "patch"
	case DeleteDocument:
		return "delete"
	case Commit:
		return "commit"
	case BatchWrite:
		return "batchWrite"
	case BeginTransaction:
		return "beginTransaction"
	case Rollback:
		return "rollback"
	case PartitionQuery:
		return "partitionQuery"
	case Listen:
		return "listen"
	case WriteChannel:
		return "write"
	case ExecutePipeline:
		return "executePipeline"
	case ClearDatabase:
		return "clearDatabase"
	}
	return "unknown"
}

// String names a Kind.
func (k Kind) String() string {
	switch k {
	case Bypass:
		return "bypass"
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}
