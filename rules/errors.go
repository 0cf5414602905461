package rules

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a rules file, at a line.
type Error struct {
	File string // as given to Parse or Load; may be empty
	Line int    // 1-based; 0 when the problem has no line (e.g. an unreadable file)
	Msg  string
}

// Error formats the problem as "file:line: reason".
func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// ErrorList is every problem found in one file, in line order. Parse and Load
// return one (as error) so a user fixes everything in one pass.
type ErrorList []*Error

// Error joins the problems, one per line.
func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// sortByLine orders problems by line, keeping the order of discovery within a line.
func (l ErrorList) sortByLine() {
	sort.SliceStable(l, func(i, j int) bool { return l[i].Line < l[j].Line })
}
