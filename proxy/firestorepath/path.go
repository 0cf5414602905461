// Package firestorepath parses Firestore REST v1 document-tree paths:
//
//	/v1/projects/{p}/databases/{d}/documents[/{path...}][:{verb}]
//
// Promises: Parse percent-decodes every segment ("%28default%29" → "(default)") and
// rejects what a cache must never key on: empty segments, "." and "..", a "/" produced
// by decoding, invalid escapes, and anything not under /v1/projects/*/databases/*/documents.
// A parsed Path holds one string (the decoded resource path) and offsets into it, so
// Parse allocates once and never shares memory with its input; ParseName does not decode
// and does not allocate. Every function is pure and safe for concurrent use.
package firestorepath

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotDocumentPath marks a well-formed path outside the documents tree (database-level
// and admin methods, emulator endpoints, other API versions).
var ErrNotDocumentPath = errors.New("not a Firestore v1 documents path")

// ErrMalformed marks a path inside /v1/ that no Firestore resource can have.
var ErrMalformed = errors.New("malformed Firestore path")

// Path is a parsed document-tree path. The zero Path is invalid.
//
// Names are full resource names, e.g. "projects/p/databases/(default)/documents/farmers/f1";
// the relative path is the part under the documents root, e.g. "farmers/f1".
type Path struct {
	full     string // decoded resource name, followed by ":" + verb when there is one
	projEnd  int    // end of "projects/{p}"
	dbEnd    int    // end of "projects/{p}/databases/{d}"
	rootEnd  int    // end of ".../documents"
	nameEnd  int    // end of the resource name (start of ":" + verb, or len(full))
	depth    int    // segments after "documents"
	lastCut  int    // index of the last "/" of the name (start of the last id), or -1 at the root
	priorCut int    // index of the "/" before that, or -1
}

const (
	apiPrefix     = "/v1/"
	documentsWord = "documents"
)

// Parse parses the path of an HTTP request (the raw, still percent-encoded path, without
// the query string). The verb is the text after the last ':' of the last raw segment; an
// encoded colon (%3A) belongs to the id. A verb must be ASCII letters.
func Parse(rawPath string) (Path, error) {
	if !strings.HasPrefix(rawPath, apiPrefix) {
		return Path{}, fmt.Errorf("%w: %q is not under %s", ErrNotDocumentPath, truncate(rawPath), apiPrefix)
	}
	rest := rawPath[len(apiPrefix):]
	verb := ""
	lastSeg := rest[strings.LastIndexByte(rest, '/')+1:]
	if i := strings.LastIndexByte(lastSeg, ':'); i >= 0 {
		verb = lastSeg[i+1:]
		rest = rest[:len(rest)-len(lastSeg)+i]
		if !isVerb(verb) {
			return Path{}, fmt.Errorf("%w: bad method verb %q", ErrMalformed, truncate(verb))
		}
	}
	var b strings.Builder
	b.Grow(len(rest) + 1 + len(verb))
	p, err := scan(rest, &b)
	if err != nil {
		return Path{}, err
	}
	if verb != "" {
		b.WriteByte(':')
		b.WriteString(verb)
	}
	p.full = b.String()
	return p, nil
}

// ParseName parses a resource name as found in request bodies
// ("projects/p/databases/d/documents/products/p1"): no percent-decoding, no verb. The
// Path shares memory with name.
func ParseName(name string) (Path, error) {
	p, err := scan(name, nil)
	if err != nil {
		return Path{}, err
	}
	p.full = name
	return p, nil
}

// scan validates the segments of s and records the offsets of the result. With a
// builder it percent-decodes each segment into it (offsets then refer to the decoded
// text); without one the offsets refer to s itself.
func scan(s string, decoded *strings.Builder) (Path, error) {
	p := Path{lastCut: -1, priorCut: -1}
	out := 0 // length of the output so far
	for i := 0; ; i++ {
		seg, more, hasMore := strings.Cut(s, "/")
		s = more
		if seg == "" {
			return Path{}, fmt.Errorf("%w: empty segment %d", ErrMalformed, i)
		}
		if i > 0 {
			if decoded != nil {
				decoded.WriteByte('/')
			}
			out++
		}
		start := out
		if decoded != nil {
			n, err := unescapeSegment(decoded, seg)
			if err != nil {
				return Path{}, fmt.Errorf("%w: segment %d: %v", ErrMalformed, i, err)
			}
			out += n
		} else {
			out += len(seg)
		}
		var text string
		if decoded != nil {
			text = decoded.String()[start:out]
		} else {
			text = seg
		}
		if text == "." || text == ".." {
			return Path{}, fmt.Errorf("%w: dot segment %d", ErrMalformed, i)
		}
		switch i {
		case 0:
			if text != "projects" {
				return Path{}, fmt.Errorf("%w: first segment is %q, not projects", ErrNotDocumentPath, truncate(text))
			}
		case 1:
			p.projEnd = out
		case 2:
			if text != "databases" {
				return Path{}, fmt.Errorf("%w: segment 2 is %q, not databases", ErrNotDocumentPath, truncate(text))
			}
		case 3:
			p.dbEnd = out
		case 4:
			if text != documentsWord {
				return Path{}, fmt.Errorf("%w: segment 4 is %q, not documents", ErrNotDocumentPath, truncate(text))
			}
			p.rootEnd = out
		default:
			p.depth++
			p.priorCut = p.lastCut
			p.lastCut = start - 1
		}
		if !hasMore {
			if i < 4 {
				return Path{}, fmt.Errorf("%w: no documents segment", ErrNotDocumentPath)
			}
			p.nameEnd = out
			return p, nil
		}
	}
}

// unescapeSegment writes the percent-decoded seg to b and returns its length. '+' is a
// literal plus in a path. A decoded '/' would change the path's shape, so it is refused.
func unescapeSegment(b *strings.Builder, seg string) (int, error) {
	n := 0
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c == '%' {
			var ok bool
			if i+2 < len(seg) {
				c, ok = Unhex(seg[i+1], seg[i+2])
			}
			if !ok {
				return 0, fmt.Errorf("invalid escape %q", truncate(seg[i:]))
			}
			i += 2
			if c == '/' {
				return 0, errors.New("encoded '/' in a segment")
			}
		}
		b.WriteByte(c)
		n++
	}
	return n, nil
}

func isVerb(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // ASCII lower case
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// Unhex decodes the two hex digits of a %XX escape; ok is false when either is not a
// hex digit. Shared by the path and query decoders, which differ in what they refuse.
func Unhex(hi, lo byte) (c byte, ok bool) {
	if !isHex(hi) || !isHex(lo) {
		return 0, false
	}
	return unhex(hi)<<4 | unhex(lo), true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// truncate keeps error messages short when the input is huge.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Resource is the decoded resource path including the verb:
// "projects/p/databases/(default)/documents:runQuery".
func (p Path) Resource() string { return p.full }

// Name is the resource name without the verb: "projects/p/databases/(default)/documents/products/p1".
func (p Path) Name() string { return p.full[:p.nameEnd] }

// Database is "projects/{p}/databases/{d}".
func (p Path) Database() string { return p.full[:p.dbEnd] }

// Project is the project id.
func (p Path) Project() string { return p.full[len("projects/"):p.projEnd] }

// DatabaseID is the database id, e.g. "(default)".
func (p Path) DatabaseID() string { return p.full[p.projEnd+len("/databases/") : p.dbEnd] }

// Root is the name of the documents root: "projects/{p}/databases/{d}/documents".
func (p Path) Root() string { return p.full[:p.rootEnd] }

// Relative is the path under the documents root ("farmers/f1/products"), "" at the root.
func (p Path) Relative() string {
	if p.depth == 0 {
		return ""
	}
	return p.full[p.rootEnd+1 : p.nameEnd]
}

// Verb is the custom method after ':' ("runQuery"), or "".
func (p Path) Verb() string {
	if p.nameEnd == len(p.full) {
		return ""
	}
	return p.full[p.nameEnd+1:]
}

// Depth is the number of segments under the documents root: 0 for the root, odd for a
// collection, even for a document.
func (p Path) Depth() int { return p.depth }

// IsDocument reports whether the path names a document.
func (p Path) IsDocument() bool { return p.depth > 0 && p.depth%2 == 0 }

// IsCollection reports whether the path names a collection.
func (p Path) IsCollection() bool { return p.depth%2 == 1 }

// ID is the last segment: a document's id or a collection's id; "" at the root.
func (p Path) ID() string {
	if p.lastCut < 0 {
		return ""
	}
	return p.full[p.lastCut+1 : p.nameEnd]
}

// Collection is the name of the collection a document belongs to, or a collection's
// own name; "" at the root.
func (p Path) Collection() string {
	switch {
	case p.IsCollection():
		return p.Name()
	case p.IsDocument():
		return p.full[:p.lastCut]
	}
	return ""
}

// CollectionID is the id of Collection(); "" at the root.
func (p Path) CollectionID() string {
	switch {
	case p.IsCollection():
		return p.ID()
	case p.IsDocument():
		return p.full[p.priorCut+1 : p.lastCut]
	}
	return ""
}

// ParentDocument is the name of the document holding Collection(), or Root() for a
// top-level collection; "" at the root.
func (p Path) ParentDocument() string {
	switch {
	case p.IsCollection():
		return p.full[:p.lastCut]
	case p.IsDocument():
		return p.full[:p.priorCut]
	}
	return ""
}

// AncestorDocuments calls yield with the name of every document that contains p's
// collection, nearest first, and finally Root(); nothing at the root. For
// "…/documents/a/1/b/2/c/3" that is "…/a/1/b/2", "…/a/1", "…/documents".
func (p Path) AncestorDocuments(yield func(name string) bool) {
	if p.depth == 0 {
		return
	}
	// Segment k (1-based) under the root ends a document when k is even; walk the
	// cuts backwards from the collection holding p (or p itself when a collection).
	name := p.Collection()
	seg := p.depth
	if p.IsDocument() {
		seg--
	}
	for i := len(name) - 1; i >= p.rootEnd; i-- {
		if name[i] != '/' {
			continue
		}
		seg--
		if i == p.rootEnd || seg%2 == 0 {
			if !yield(name[:i]) {
				return
			}
		}
	}
}
