package rules

import "strings"

// eventNames maps the names accepted in a rule's events list to kinds.
var eventNames = []struct {
	name string
	kind EventTypes
}{
	{"created", Created},
	{"updated", Updated},
	{"deleted", Deleted},
	{"written", Written},
}

// Allows reports whether a rule with event set t emits an event of kind. An event of
// kind Written (a set whose outcome, created or updated, is unknown) is allowed when t
// has Created, Updated or Written: whoever wants either outcome wants to hear of it.
func (t EventTypes) Allows(kind EventTypes) bool {
	if kind == Written {
		return t&(Created|Updated|Written) != 0
	}
	return t&kind != 0
}

// String lists the kinds: "created, updated", "all", or "none".
func (t EventTypes) String() string {
	switch t {
	case 0:
		return "none"
	case AllEvents:
		return "all (created, updated, deleted, written)"
	}
	var names []string
	for _, e := range eventNames {
		if t&e.kind != 0 {
			names = append(names, e.name)
		}
	}
	return strings.Join(names, ", ")
}
