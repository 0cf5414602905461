package rules

import (
	"strings"
	"sync"
	"sync/atomic"
)

// ruleIndex narrows the rules to try for a path. Each candidate list keeps file
// order, so the first match in a list is the first match in the file.
type ruleIndex struct {
	first keyedLists // by the path's first segment
	group keyedLists // by the collection id of a collection-group query
	rules int        // len(Rules) when built: a Config whose Rules changed since is scanned

	// sets remembers firstMatches answers (a set algebra over every rule, on the miss
	// path of each new multi-document read) by setKey, up to maxRememberedSets.
	sets  sync.Map
	nsets atomic.Int32
}

// maxRememberedSets bounds the answers an index remembers: parents are client input.
const maxRememberedSets = 4096

type setKey struct {
	parent, collectionID string
	anyDepth             bool
}

type setAnswer struct {
	rules    []*Rule
	complete bool
}

// keyedLists maps a key to the rules that name it literally or accept any value
// there; rules that accept any value are also the list for keys no rule names.
type keyedLists struct {
	byKey map[string][]int
	any   []int
}

func (k keyedLists) lookup(key string) []int {
	if l, ok := k.byKey[key]; ok {
		return l
	}
	return k.any
}

// buildKeyed builds the lists from each rule's key, "" meaning any value.
func buildKeyed(keys []string) keyedLists {
	k := keyedLists{byKey: map[string][]int{}}
	for i, key := range keys {
		if key == "" {
			k.any = append(k.any, i)
			for lit := range k.byKey {
				k.byKey[lit] = append(k.byKey[lit], i)
			}
			continue
		}
		if _, ok := k.byKey[key]; !ok {
			// A new key also sees every earlier any-value rule, in order.
			k.byKey[key] = append([]int(nil), k.any...)
		}
		k.byKey[key] = append(k.byKey[key], i)
	}
	return k
}

func buildIndex(rs []Rule) *ruleIndex {
	first := make([]string, len(rs))
	group := make([]string, len(rs))
	for i := range rs {
		segs := strings.Split(trimSlash(rs[i].Match), "/")
		if !isWildcard(segs[0]) {
			first[i] = segs[0]
		}
		// A group query over id can only match a rule whose second-to-last segment is
		// id or a wildcard, unless it ends in {x=**}, which takes any id.
		if n := len(segs); n >= 2 && !isMultiWildcard(segs[n-1]) && !isWildcard(segs[n-2]) {
			group[i] = segs[n-2]
		}
	}
	return &ruleIndex{first: buildKeyed(first), group: buildKeyed(group), rules: len(rs)}
}

// candidates returns the indexes of rules that may match a path starting with first,
// or nil with ok=false when the Config has no index (built by hand, not by Parse).
func (c *Config) candidates(path string) (list []int, ok bool) {
	if c.index == nil || c.index.rules != len(c.Rules) {
		return nil, false
	}
	first, _ := cutSegment(path)
	return c.index.first.lookup(first), true
}

// ForDocument returns the first rule whose pattern matches the document path
// ("farmers/f1/products/p1": relative to the documents root, percent-decoded; a
// leading / is ignored), or nil: not cached, no events. It does not allocate.
func (c *Config) ForDocument(path string) *Rule {
	path = trimSlash(path)
	if list, ok := c.candidates(path); ok {
		for _, i := range list {
			if matchDocument(c.Rules[i].Match, path) {
				return &c.Rules[i]
			}
		}
		return nil
	}
	for i := range c.Rules {
		if matchDocument(c.Rules[i].Match, path) {
			return &c.Rules[i]
		}
	}
	return nil
}

// ForCollection returns the first rule that covers every document of the collection
// ("farmers/f1/products"): its pattern matches the collection path followed by any
// document id, so its last segment is a wildcard ({id} or {x=**}). nil when none does.
// It does not allocate.
func (c *Config) ForCollection(path string) *Rule {
	path = trimSlash(path)
	if list, ok := c.candidates(path); ok {
		for _, i := range list {
			if matchCollection(c.Rules[i].Match, path) {
				return &c.Rules[i]
			}
		}
		return nil
	}
	for i := range c.Rules {
		if matchCollection(c.Rules[i].Match, path) {
			return &c.Rules[i]
		}
	}
	return nil
}

// ForCollectionGroup returns the first rule whose pattern could match every document
// of a collection named collectionID at some depth, or nil. It answers "which rule
// reads like the group's", for explain; what a group query may be cached under is
// CollectionGroupRules' answer, which weighs every rule that governs any document.
func (c *Config) ForCollectionGroup(collectionID string) *Rule {
	return c.ForCollectionGroupUnder("", collectionID)
}

// ForCollectionGroupUnder is ForCollectionGroup for a query whose parent is the
// document parent ("users/u1"; "" for the root): only collections nested under parent
// count. It does not allocate.
func (c *Config) ForCollectionGroupUnder(parent, collectionID string) *Rule {
	parent = trimSlash(parent)
	if parent != "" {
		if list, ok := c.candidates(parent); ok {
			for _, i := range list {
				if matchGroup(c.Rules[i].Match, parent, collectionID) {
					return &c.Rules[i]
				}
			}
			return nil
		}
	}
	if parent == "" && c.index != nil && c.index.rules == len(c.Rules) {
		for _, i := range c.index.group.lookup(collectionID) {
			if matchGroup(c.Rules[i].Match, parent, collectionID) {
				return &c.Rules[i]
			}
		}
		return nil
	}
	for i := range c.Rules {
		if matchGroup(c.Rules[i].Match, parent, collectionID) {
			return &c.Rules[i]
		}
	}
	return nil
}

// CollectionGroupRules returns every rule that governs at least one document a
// collection-group query over collectionID under parent ("" for the root) may return
// (parent/(any segment pairs)/collectionID/{id}, at any depth), in file order: the
// rules that are the first match of such a document, recursive wildcards ({x=**}) and
// shadowing by earlier rules included. complete is false when some such document
// matches no rule at all, or when the question was too large to answer exactly.
//
// A group query returns documents that different rules govern (public comments and a
// user's private comments share the id "comments"), so it may be cached only when
// complete, and only as strictly as the strictest rule returned.
func (c *Config) CollectionGroupRules(parent, collectionID string) (rs []*Rule, complete bool) {
	return c.rememberedFirstMatches(trimSlash(parent), collectionID, true)
}

// rememberedFirstMatches is firstMatches, remembered in the index when there is one.
// The returned slice is shared: callers must not modify it.
func (c *Config) rememberedFirstMatches(parent, collectionID string, anyDepth bool) ([]*Rule, bool) {
	if c.index == nil || c.index.rules != len(c.Rules) {
		return c.firstMatches(parent, collectionID, anyDepth)
	}
	k := setKey{parent, collectionID, anyDepth}
	if v, ok := c.index.sets.Load(k); ok {
		a := v.(setAnswer)
		return a.rules, a.complete
	}
	rs, complete := c.firstMatches(parent, collectionID, anyDepth)
	if c.index.nsets.Load() < maxRememberedSets {
		if _, loaded := c.index.sets.LoadOrStore(k, setAnswer{rs, complete}); !loaded {
			c.index.nsets.Add(1)
		}
	}
	return rs, complete
}

// CollectionRules is CollectionGroupRules for the documents of one collection
// ("farmers/f1/products"): the rules that are the first match of at least one of its
// documents (an earlier rule for one document id included), and whether every
// document has one. A list or query of the collection may be cached only when
// complete, and only as strictly as every rule returned.
func (c *Config) CollectionRules(path string) (rs []*Rule, complete bool) {
	path = trimSlash(path)
	parent, id := "", path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		parent, id = path[:i], path[i+1:]
	}
	return c.rememberedFirstMatches(parent, id, false)
}
