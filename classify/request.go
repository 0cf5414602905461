// Package classify sorts a Firestore REST request into a cacheable read, a write or a
// bypass, from its method, percent-decoded path, query string and (for POST) a protojson
// parse of its body into the official firestorepb types.
//
// Promises: Classify is a pure function (no I/O, no global state) and never panics on
// any input; a request it cannot understand is a Bypass, never a Read; a malformed body
// on a method it recognises is an *Error with a Firestore-shaped status (400), and so is
// a write-capable request whose written documents cannot be determined (a write must
// never succeed without its tags being known). Equivalent bodies written differently
// (field order, enums as numbers or names, whitespace, camelCase or proto field names)
// yield identical CacheBody bytes. A Request never shares memory with Classify's inputs.
//
// Tags (see Request.Tags and WriteTags) are the generation keys of the cache: a read
// depends on its tags, a write bumps its tags, and every read a write can change
// depends on at least one tag the write bumps.
package classify

import "cloud.google.com/go/firestore/apiv1/firestorepb"

// Kind is what the proxy does with a request.
type Kind uint8

const (
	// Bypass: forwarded untouched and streamed, never cached.
	Bypass Kind = iota
	// Read: may be answered from cache.
	Read
	// Write: forwarded; on success invalidates Tags and emits events for Writes.
	Write
)

// Op is the Firestore REST method.
type Op uint8

const (
	OpUnknown Op = iota
	GetDocument
	ListDocuments
	RunQuery
	RunAggregationQuery
	BatchGetDocuments
	ListCollectionIds
	CreateDocument
	PatchDocument
	DeleteDocument
	Commit
	BatchWrite
	BeginTransaction
	Rollback
	PartitionQuery
	Listen
	WriteChannel
	ExecutePipeline
	// ClearDatabase is the emulator's "delete every document" endpoint: a Write of a
	// whole database, with no Tags (the caller invalidates the database).
	ClearDatabase
)

// TargetKind says what a Target's Path names.
type TargetKind uint8

const (
	TargetDocument   TargetKind = iota // Path is a document: "farmers/f1/products/p1"
	TargetCollection                   // Path is a collection: "farmers/f1/products"
	TargetGroup                        // a collection group: CollectionID under Path (the parent, "" for the root)
)

// Target is what a rule is matched against, relative to the database's documents root,
// percent-decoded, without a leading slash.
type Target struct {
	Kind         TargetKind
	Path         string
	CollectionID string // for TargetGroup (and TargetCollection: the last segment)
}

// Request is the classification of one HTTP request.
type Request struct {
	Kind Kind
	Op   Op
	// Database is "projects/{p}/databases/{d}", decoded.
	Database string
	// ResourcePath is the decoded resource path with its verb, the path part of the cache
	// key: "projects/p/databases/(default)/documents/products/p1",
	// "projects/p/databases/(default)/documents:runQuery". Set whenever the path parsed.
	ResourcePath string
	// Targets: for a read, what it reads (one for most ops, one per document for
	// batchGet); for a write, one per written document.
	Targets []Target
	// Tags: for a read, the generation tags it depends on; for a write, the tags it
	// touches. Each tag is prefixed with Database so databases never share a tag:
	// "doc:projects/p/databases/(default)/documents/products/p1",
	// "coll:projects/p/databases/(default)/documents/farmers/f1/products",
	// "group:projects/p/databases/(default)/products",
	// "colls:projects/p/databases/(default)/documents/farmers/f1".
	Tags []string
	// CacheBody is the canonical form of the body for the cache key (deterministic
	// protobuf bytes of the parsed request without its path-derived fields: parent,
	// database); set for POST reads, nil for GET and for writes.
	CacheBody []byte
	// KeyParams is KeyParams(rawQuery): the canonical query parameters for the cache key.
	// Set for reads (including transactional reads that bypass); nil for writes.
	KeyParams []byte
	// Writes are the document writes of a Write request, in request order.
	Writes []DocWrite
	// Transactional is set when the request carries transaction, newTransaction or
	// readTime; such reads are Bypass.
	Transactional bool
	// Privileged is set on reads whose answer depends on privileges no rule can vouch
	// for (Firestore answers them only to IAM principals: listCollectionIds, and
	// listDocuments with showMissing): they are cached per caller at most, whatever
	// the rule's scope.
	Privileged bool
}

// DocWrite is one document written by a Write request.
type DocWrite struct {
	// Name is the full resource name: projects/p/databases/d/documents/products/p1.
	Name string
	// Index is the write's position in the request (0 for single-document methods).
	Index int
	// Write is the write as a Commit would carry it (PATCH, DELETE and create are
	// expressed as the equivalent firestorepb.Write: update with mask and
	// precondition, delete, update with exists=false precondition).
	Write *firestorepb.Write
}

// Error is a malformed request, answered with a Firestore-shaped error.
type Error struct {
	HTTPStatus int    // 400
	Status     string // "INVALID_ARGUMENT"
	Message    string
}

func (e *Error) Error() string { return e.Status + ": " + e.Message }
