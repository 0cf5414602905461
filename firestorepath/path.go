// Package firestorepath parses Firestore REST document-tree paths:
//
//	/{version}/projects/{p}/databases/{d}/documents[/{path...}][:{verb}]
//
// where version is one the upstream serves documents under: v1 or v1beta1 (both served
// by Firestore and its emulator).
//
// Promises: Parse percent-decodes every segment, the version and keywords included,
// before deciding anything ("%28default%29" → "(default)"), and rejects (ErrMalformed)
// what a cache must never key on and what the upstream could read differently from the
// proxy: empty segments, "." and "..", a "/" produced by decoding, invalid escapes, a
// percent-encoded version or keyword ("/%76%31/", "%64ocuments": the emulator decodes
// them, then may never answer), an encoded ':' in the last segment (the emulator
// decodes it and takes what follows as the method verb), and ids the upstream
// normalises (Valid).
// Anything not under a version's projects/*/databases/*/documents is
// ErrNotDocumentPath. A parsed Path holds one string (the decoded resource path) and
// offsets into it, so Parse allocates once and never shares memory with its input;
// ParseName does not decode and does not allocate. Every function is pure and safe
// for concurrent use. No error text contains the input.
package firestorepath

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrNotDocumentPath marks a well-formed path outside the documents tree (database-level
// and admin methods, emulator endpoints, API versions without documents).
var ErrNotDocumentPath = errors.New("not a Firestore documents path")

// ErrMalformed marks a path no Firestore resource can have, or one the upstream could
// read as another resource than the proxy does.
var ErrMalformed = errors.New("malformed Firestore path")

// Path is a parsed document-tree path. The zero Path is invalid.
//
// Names are full resource names, e.g. "projects/p/databases/(default)/documents/farmers/f1";
// the relative path is the part under the documents root, e.g. "farmers/f1".
type Path struct {
	full     string // decoded resource name, followed by ":" + verb when there is one
	version  string // the API version: "v1" or "v1beta1" ("" for ParseName)
	projEnd  int    // end of "projects/{p}"
	dbEnd    int    // end of "projects/{p}/databases/{d}"
	rootEnd  int    // end of ".../documents"
	nameEnd  int    // end of the resource name (start of ":" + verb, or len(full))
	depth    int    // segments after "documents"
	lastCut  int    // index of the last "/" of the name (start of the last id), or -1 at the root
	priorCut int    // index of the "/" before that, or -1
}

const documentsWord = "documents"

func isVersion(v string) bool {
	for _, known := range Versions {
		if v == known {
			return true
		}
	}
	return false
}

// Versions are the API versions whose documents tree the upstream serves (the
// emulator answers v1 and v1beta1 and 404s v1beta2 and v1alpha1; v1beta2 is
// production's admin API, with no documents).
var Versions = [...]string{"v1", "v1beta1"}

// Parse parses the path of an HTTP request (the raw, still percent-encoded path, without
// the query string). The verb is the text after the last ':' of the last raw segment;
// an encoded colon (%3A) there is refused, since the upstream decodes it into a verb
// separator. A verb must be ASCII letters.
func Parse(rawPath string) (Path, error) {
	rest, ok := strings.CutPrefix(rawPath, "/")
	if !ok {
		return Path{}, fmt.Errorf("%w: does not start with /", ErrNotDocumentPath)
	}
	rawVersion, rest, more := strings.Cut(rest, "/")
	version, err := decodeVersion(rawVersion)
	if err != nil {
		return Path{}, err
	}
	if !more {
		return Path{}, fmt.Errorf("%w: nothing after the version", ErrNotDocumentPath)
	}
	verb := ""
	lastSeg := rest[strings.LastIndexByte(rest, '/')+1:]
	if i := strings.LastIndexByte(lastSeg, ':'); i >= 0 {
		verb = lastSeg[i+1:]
		rest = rest[:len(rest)-len(lastSeg)+i]
		lastSeg = lastSeg[:i]
		if !isVerb(verb) {
			return Path{}, fmt.Errorf("%w: bad method verb", ErrMalformed)
		}
	}
	if strings.Contains(lastSeg, "%3A") || strings.Contains(lastSeg, "%3a") {
		return Path{}, fmt.Errorf("%w: encoded ':' in the last segment", ErrMalformed)
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
	p.version = version
	return p, nil
}

// decodeVersion is the API version a raw first segment names, decoded.
func decodeVersion(raw string) (string, error) {
	if strings.IndexByte(raw, '%') >= 0 {
		// The emulator decodes "/%76%31/" to v1, and then never answers: the proxy
		// refuses what it cannot forward in a form the upstream reliably serves.
		var b strings.Builder
		if _, err := unescapeSegment(&b, raw); err == nil && isVersion(strings.TrimFunc(b.String(), edgeRune)) {
			return "", fmt.Errorf("%w: percent-encoded version segment", ErrMalformed)
		}
		return "", fmt.Errorf("%w: not under a documents API version", ErrNotDocumentPath)
	}
	var b strings.Builder
	if _, err := unescapeSegment(&b, raw); err != nil {
		return "", fmt.Errorf("%w: version segment: %v", ErrMalformed, err)
	}
	v := b.String()
	for _, known := range Versions {
		if v == known {
			return known, nil
		}
	}
	trimmed := strings.TrimFunc(v, edgeRune)
	for _, known := range Versions {
		if trimmed == known {
			return "", fmt.Errorf("%w: version segment with white space", ErrMalformed)
		}
	}
	return "", fmt.Errorf("%w: not under a documents API version", ErrNotDocumentPath)
}

// Valid reports whether id can be one segment of a resource name as the upstream
// keeps it: non-empty, valid UTF-8, not "." or "..", and without leading or trailing
// white space (Unicode White_Space, which the emulator trims: "orders " names
// "orders") or control characters. Production Firestore documents ids as "valid UTF-8
// ... cannot solely consist of a single period or double periods"; it does not
// promise to keep or to trim surrounding white space, so such ids are refused either
// way rather than guessed at.
func Valid(id string) bool {
	if id == "" || id == "." || id == ".." || !utf8.ValidString(id) {
		return false
	}
	first, _ := utf8.DecodeRuneInString(id)
	last, _ := utf8.DecodeLastRuneInString(id)
	return !edgeRune(first) && !edgeRune(last)
}

func edgeRune(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

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
		if !Valid(text) {
			return Path{}, fmt.Errorf("%w: segment %d is not a valid id", ErrMalformed, i)
		}
		if (i == 0 || i == 2 || i == 4) && decoded != nil && seg != text && (text == "projects" || text == "databases" || text == documentsWord) {
			return Path{}, fmt.Errorf("%w: percent-encoded keyword in segment %d", ErrMalformed, i)
		}
		switch i {
		case 0:
			if text != "projects" {
				return Path{}, fmt.Errorf("%w: first segment is not projects", ErrNotDocumentPath)
			}
		case 1:
			p.projEnd = out
		case 2:
			if text != "databases" {
				return Path{}, fmt.Errorf("%w: segment 2 is not databases", ErrNotDocumentPath)
			}
		case 3:
			p.dbEnd = out
		case 4:
			if text != documentsWord {
				return Path{}, fmt.Errorf("%w: segment 4 is not documents", ErrNotDocumentPath)
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
				return 0, errors.New("invalid percent escape")
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

// Version is the API version of a parsed request path ("v1", "v1beta1"); "" for a
// name parsed from a body.
func (p Path) Version() string { return p.version }

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
