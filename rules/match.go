package rules

import "strings"

// ruleIndex narrows the rules to try for a path. Each candidate list keeps file
// order, so the first match in a list is the first match in the file.
type ruleIndex struct {
	first keyedLists // by the path's first segment
	group keyedLists // by the collection id of a collection-group query
	rules int        // len(Rules) when built: a Config whose Rules changed since is scanned
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
// of a collection named collectionID at any depth (a collection-group query over the
// whole database), or nil. Rules are tried in file order, so put the strictest rule
// for a collection id first: the first rule that could apply decides for the group.
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

// CollectionGroupRules returns every rule that names collectionID as the collection it
// enumerates (a literal segment, not a wildcard) and could match documents of such a
// collection under parent ("" for the root), in file order. A collection-group query
// returns documents that different rules govern (public comments and a user's private
// comments share the id "comments"), so the proxy treats such a query as strictly as
// the strictest of these rules; when none names the id, ForCollectionGroupUnder (a
// wildcard rule such as /{document=**}) decides.
func (c *Config) CollectionGroupRules(parent, collectionID string) []*Rule {
	parent = trimSlash(parent)
	var out []*Rule
	for i := range c.Rules {
		p := trimSlash(c.Rules[i].Match)
		if enumerated, ok := enumeratedCollection(p); !ok || enumerated != collectionID {
			continue
		}
		if matchGroup(p, parent, collectionID) {
			out = append(out, &c.Rules[i])
		}
	}
	return out
}

// enumeratedCollection is the literal collection segment a document pattern's last
// segment enumerates ("products" for /farmers/{f}/products/{p}); ok is false when that
// segment is a wildcard or the pattern ends in {x=**}.
func enumeratedCollection(pattern string) (string, bool) {
	i := strings.LastIndexByte(pattern, '/')
	if i < 0 {
		return "", false
	}
	last, rest := pattern[i+1:], pattern[:i]
	if isMultiWildcard(last) || !isWildcard(last) {
		return "", false
	}
	coll := rest[strings.LastIndexByte(rest, '/')+1:]
	if coll == "" || isWildcard(coll) {
		return "", false
	}
	return coll, true
}
