package rules

import "strings"

// Which rules govern the documents a multi-document read may return.
//
// A list of a collection or a query over it returns documents parent/C/{id}; a
// collection-group query returns documents parent/(any segment pairs)/C/{id} at any
// depth. Each such document is governed by the first rule that matches it (or by none),
// so a shared answer is only as safe as every rule that is the first match of at least
// one of them. firstMatches computes exactly that set, shadowing included, by set
// algebra on segment positions:
//
//   - at one depth d, the documents are a product of per-position sets: the parent's
//     literal segments, then free positions, then C, then a free id;
//   - a pattern's matches at depth d are a product too (a literal or any value per
//     position; {x=**} makes every position from its own on free);
//   - a product minus a product is a union of at most (literal positions) products
//     whose positions are a literal or "any value but these" (never empty: ids are an
//     infinite set), so "is there a document left that this rule matches first" and
//     "is there a document no rule matches" are exact.
//
// Depths: a pattern constrains at most its fixed segments, so once C sits beyond every
// rule's fixed segments, deeper depths are the same problem again; firstMatches checks
// depths up to the first such one.

// maxDocSetTerms bounds the work for one question; beyond it the answer is "in doubt"
// (complete=false), which callers treat as "not cached".
const maxDocSetTerms = 4096

// segSet is the set of values one path position may take: the literal lit when
// isLit, else any value except those in not.
type segSet struct {
	isLit bool
	lit   string
	not   []string
}

func (s segSet) has(v string) bool {
	if s.isLit {
		return s.lit == v
	}
	for _, n := range s.not {
		if n == v {
			return false
		}
	}
	return true
}

// without is s minus {v}; ok is false when nothing is left.
func (s segSet) without(v string) (segSet, bool) {
	if s.isLit {
		return s, s.lit != v
	}
	if !s.has(v) {
		return s, true
	}
	not := make([]string, len(s.not), len(s.not)+1)
	copy(not, s.not)
	return segSet{not: append(not, v)}, true
}

// docTerm is a product of per-position sets: a non-empty set of document paths of one depth.
type docTerm []segSet

// patternAt is pattern's per-position constraint at depth d: "" means any value.
// ok is false when the pattern matches no path of depth d.
func patternAt(pattern string, d int, dst []string) (lits []string, ok bool) {
	lits = dst[:0]
	p := trimSlash(pattern)
	for p != "" {
		seg, rest := cutSegment(p)
		if isMultiWildcard(seg) {
			for len(lits) < d {
				lits = append(lits, "")
			}
			return lits, true
		}
		if len(lits) == d {
			return nil, false // longer than d
		}
		if isWildcard(seg) {
			seg = ""
		}
		lits = append(lits, seg)
		p = rest
	}
	return lits, len(lits) == d
}

// intersects reports whether t shares a path with the pattern constraint lits.
func (t docTerm) intersects(lits []string) bool {
	for i, l := range lits {
		if l != "" && !t[i].has(l) {
			return false
		}
	}
	return true
}

// minus appends t minus the pattern constraint lits to dst, as disjoint terms.
func (t docTerm) minus(lits []string, dst []docTerm) []docTerm {
	if !t.intersects(lits) {
		return append(dst, t)
	}
	// Paths of t that differ from lits first at literal position i: equal before
	// (narrowed to the literal), outside it at i, anything after.
	prefix := append(docTerm(nil), t...)
	for i, l := range lits {
		if l == "" {
			continue
		}
		if rest, ok := t[i].without(l); ok {
			out := append(docTerm(nil), prefix...)
			out[i] = rest
			dst = append(dst, out)
		}
		prefix[i] = segSet{isLit: true, lit: l}
	}
	return dst
}

// maxFixedSegments is the largest number of positions any rule constrains.
func (c *Config) maxFixedSegments() int {
	n := 0
	for i := range c.Rules {
		k := 0
		p := trimSlash(c.Rules[i].Match)
		for p != "" {
			seg, rest := cutSegment(p)
			if isMultiWildcard(seg) {
				break
			}
			k++
			p = rest
		}
		n = max(n, k)
	}
	return n
}

// firstMatches returns, in file order, every rule that is the first match of at least
// one document parent/C/{id} (anyDepth false) or parent/(pairs)*/C/{id} (anyDepth
// true), and whether every such document has a rule (complete). complete is also false
// when the question exceeds maxDocSetTerms: in doubt, the caller does not cache.
func (c *Config) firstMatches(parent, collectionID string, anyDepth bool) (out []*Rule, complete bool) {
	parent = trimSlash(parent)
	var prefix []string
	if parent != "" {
		prefix = strings.Split(parent, "/")
	}
	used := make([]bool, len(c.Rules))
	complete = true
	limit := c.maxFixedSegments()
	var lits []string
	for d := len(prefix) + 2; ; d += 2 {
		term := make(docTerm, d)
		for i := range term {
			switch {
			case i < len(prefix):
				term[i] = segSet{isLit: true, lit: prefix[i]}
			case i == d-2:
				term[i] = segSet{isLit: true, lit: collectionID}
			}
		}
		left := []docTerm{term}
		for i := range c.Rules {
			if len(left) == 0 {
				break
			}
			var ok bool
			if lits, ok = patternAt(c.Rules[i].Match, d, lits); !ok {
				continue
			}
			var next []docTerm
			for _, t := range left {
				if t.intersects(lits) {
					used[i] = true
				}
				next = t.minus(lits, next)
			}
			if len(next) > maxDocSetTerms {
				return nil, false
			}
			left = next
		}
		if len(left) > 0 {
			complete = false
		}
		if !anyDepth || d-2 >= limit {
			break
		}
	}
	for i := range c.Rules {
		if used[i] {
			out = append(out, &c.Rules[i])
		}
	}
	return out, complete
}
