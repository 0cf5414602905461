package rules

import (
	"fmt"
	"strings"
)

// Patterns are kept as the user wrote them ("/farmers/{f}/products/{p}") and matched
// directly on the string, segment by segment, so matching needs no compiled form and
// allocates nothing. A segment is a literal, "{name}" (exactly one segment) or
// "{name=**}" (zero or more segments; only as the last segment).

// cutSegment splits s at its first '/': the segment and what follows it.
func cutSegment(s string) (seg, rest string) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// trimSlash drops one leading '/', so "/a/b" and "a/b" read the same.
func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

func isWildcard(seg string) bool { return len(seg) >= 2 && seg[0] == '{' && seg[len(seg)-1] == '}' }

func isMultiWildcard(seg string) bool { return isWildcard(seg) && strings.HasSuffix(seg, "=**}") }

// segmentMatches reports whether pattern segment pseg accepts path segment seg.
func segmentMatches(pseg, seg string) bool { return isWildcard(pseg) || pseg == seg }

// matchDocument reports whether pattern matches the document path exactly.
func matchDocument(pattern, path string) bool {
	p := trimSlash(pattern)
	for {
		if p == "" {
			return path == ""
		}
		pseg, prest := cutSegment(p)
		if isMultiWildcard(pseg) {
			return true // zero or more segments: whatever is left
		}
		if path == "" {
			return false
		}
		seg, rest := cutSegment(path)
		if !segmentMatches(pseg, seg) {
			return false
		}
		p, path = prest, rest
	}
}

// matchCollection reports whether pattern matches every document of the collection:
// it matches the collection path followed by one more segment that only a wildcard
// accepts (any document id).
func matchCollection(pattern, path string) bool {
	p := trimSlash(pattern)
	for path != "" {
		if p == "" {
			return false
		}
		pseg, prest := cutSegment(p)
		if isMultiWildcard(pseg) {
			return true
		}
		seg, rest := cutSegment(path)
		if !segmentMatches(pseg, seg) {
			return false
		}
		p, path = prest, rest
	}
	if p == "" {
		return false
	}
	pseg, prest := cutSegment(p)
	// The id goes to {id} (with nothing after it but a {x=**} taking zero) or to {x=**}.
	return isMultiWildcard(pseg) || (isWildcard(pseg) && (prest == "" || isMultiWildcard(prest)))
}

// matchGroup reports whether pattern could match every document of some collection
// named collectionID nested at any depth under parent ("" for the root): a path
// parent/(any segment pairs)/collectionID/{any id}.
func matchGroup(pattern, parent, collectionID string) bool {
	p := trimSlash(pattern)
	for parent != "" {
		if p == "" {
			return false
		}
		pseg, prest := cutSegment(p)
		if isMultiWildcard(pseg) {
			return true
		}
		seg, rest := cutSegment(parent)
		if !segmentMatches(pseg, seg) {
			return false
		}
		p, parent = prest, rest
	}
	// What is left must take (2k arbitrary segments) + collectionID + any id. A final
	// {x=**} takes anything; otherwise count the segments and check the last two.
	if p == "" {
		return false
	}
	last := p
	n := 1
	for i := 0; i < len(p); i++ {
		if p[i] == '/' {
			n++
			last = p[i+1:]
		}
	}
	if isMultiWildcard(last) {
		return true
	}
	if n < 2 || n%2 != 0 || !isWildcard(last) {
		return false
	}
	beforeLast := p[:len(p)-len(last)-1]
	if i := strings.LastIndexByte(beforeLast, '/'); i >= 0 {
		beforeLast = beforeLast[i+1:]
	}
	return segmentMatches(beforeLast, collectionID)
}

// covers reports whether every document pattern b matches is also matched by a.
// It is exact for single patterns and conservative: it never claims a cover that
// does not hold. Both patterns must be valid.
func covers(a, b string) bool {
	a, b = trimSlash(a), trimSlash(b)
	for {
		if a == "" || b == "" {
			if a == "" {
				return b == ""
			}
			aseg, _ := cutSegment(a)
			return isMultiWildcard(aseg)
		}
		aseg, arest := cutSegment(a)
		bseg, brest := cutSegment(b)
		switch {
		case isMultiWildcard(aseg):
			return true
		case isMultiWildcard(bseg):
			return false // b reaches any depth, a only a fixed one
		case isWildcard(aseg):
		case isWildcard(bseg) || aseg != bseg:
			return false
		}
		a, b = arest, brest
	}
}

// canonicalPattern names every wildcard "*" or "**", so two patterns that differ only
// in wildcard names compare equal.
func canonicalPattern(pattern string) string {
	var sb strings.Builder
	p := trimSlash(pattern)
	for p != "" {
		seg, rest := cutSegment(p)
		sb.WriteByte('/')
		switch {
		case isMultiWildcard(seg):
			sb.WriteString("{**}")
		case isWildcard(seg):
			sb.WriteString("{*}")
		default:
			sb.WriteString(seg)
		}
		p = rest
	}
	return sb.String()
}

// checkPattern returns why pattern is not a valid document pattern, or "".
func checkPattern(pattern string) string {
	if pattern == "" {
		return "match: empty pattern"
	}
	if pattern[0] != '/' {
		return fmt.Sprintf("match %q: must start with / (paths are relative to the documents root)", pattern)
	}
	if pattern == "/" {
		return `match "/": names the documents root, not documents; use /{document=**} for everything`
	}
	if strings.HasSuffix(pattern, "/") {
		return fmt.Sprintf("match %q: must not end with /", pattern)
	}
	names := map[string]bool{}
	fixed := 0
	p := pattern[1:]
	for p != "" {
		seg, rest := cutSegment(p)
		if seg == "" {
			return fmt.Sprintf("match %q: empty segment", pattern)
		}
		if strings.ContainsAny(seg, "{}") {
			if !isWildcard(seg) {
				return fmt.Sprintf("match %q: segment %q: a wildcard is a whole segment, {name} or {name=**}", pattern, seg)
			}
			name := seg[1 : len(seg)-1]
			multi := isMultiWildcard(seg)
			if multi {
				name = strings.TrimSuffix(name, "=**")
				if rest != "" {
					return fmt.Sprintf("match %q: {%s=**} must be the last segment", pattern, name)
				}
			}
			if !validName(name) {
				return fmt.Sprintf("match %q: wildcard name %q: want a letter or _ then letters, digits or _", pattern, name)
			}
			if names[name] {
				return fmt.Sprintf("match %q: wildcard {%s} appears twice", pattern, name)
			}
			names[name] = true
			if multi {
				return ""
			}
		} else if seg == "." || seg == ".." {
			return fmt.Sprintf("match %q: segment %q is not a valid id", pattern, seg)
		}
		fixed++
		p = rest
	}
	if fixed%2 != 0 {
		return fmt.Sprintf("match %q: names a collection, not documents (odd number of segments); add /{id}", pattern)
	}
	return ""
}

// validName reports whether name is an identifier: a letter or _ then letters, digits or _.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// bindings lists the wildcard values of a document path matched by pattern, for
// explain: "farmerId=f1 productId=p1". Not on the request path, so it may allocate.
func bindings(pattern, path string) []string {
	var out []string
	p := trimSlash(pattern)
	for p != "" {
		pseg, prest := cutSegment(p)
		if isMultiWildcard(pseg) {
			out = append(out, pseg[1:len(pseg)-4]+"="+path)
			return out
		}
		seg, rest := cutSegment(path)
		if isWildcard(pseg) {
			out = append(out, pseg[1:len(pseg)-1]+"="+seg)
		}
		p, path = prest, rest
	}
	return out
}
