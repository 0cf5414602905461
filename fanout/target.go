package fanout

import (
	"slices"
	"strings"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
)

// Mode says how the hub serves one client target; Config.Policy decides it.
type Mode uint8

const (
	// Passthrough: a private upstream Listen stream of the client stream, with the
	// caller's credentials; responses are relayed as the upstream sends them. The zero
	// Mode, so a target nobody classified is never shared.
	Passthrough Mode = iota
	// Shared: one upstream target per canonical target and database, listened with the
	// proxy's own credentials, serves every client (rules with scope: shared).
	Shared
	// PerCaller: shared only between callers with the same Caller.Identity, listened
	// with the first such caller's Metadata (rules with scope: user).
	PerCaller
)

func (m Mode) String() string {
	switch m {
	case Shared:
		return "shared"
	case PerCaller:
		return "per_caller"
	}
	return "passthrough"
}

// Scope names whose views a lookup may read: SharedScope, or CallerScope(identity) for
// the views listened under PerCaller with that identity.
type Scope string

// SharedScope is the scope of the views listened with the proxy's credentials.
const SharedScope Scope = "shared"

// CallerScope is the scope of the PerCaller views of callers with this Identity.
func CallerScope(identity string) Scope { return Scope("caller:" + identity) }

func scopeOf(mode Mode, identity string) Scope {
	if mode == PerCaller {
		return CallerScope(identity)
	}
	return SharedScope
}

// canonical is the target as the view listens to it: no client target id, no resume
// point, no once or expected count, the documents of a documents target sorted and
// unique. Two client targets with the same canonical form and scope share a view.
func canonical(t *firestorepb.Target) *firestorepb.Target {
	c := proto.Clone(t).(*firestorepb.Target)
	c.TargetId = 0
	c.ResumeType = nil
	c.Once = false
	c.ExpectedCount = nil
	if d := c.GetDocuments(); d != nil {
		slices.Sort(d.Documents)
		d.Documents = slices.Compact(d.Documents)
	}
	return c
}

// viewKey identifies a view: database, scope and the canonical target's deterministic
// encoding.
func viewKey(database string, scope Scope, c *firestorepb.Target) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "" // not reached: a Target always marshals
	}
	return database + "\x00" + string(scope) + "\x00" + string(b)
}

// validDatabase: "projects/{p}/databases/{d}" with non-empty ids.
func validDatabase(db string) bool {
	parts := strings.Split(db, "/")
	return len(parts) == 4 && parts[0] == "projects" && parts[1] != "" && parts[2] == "databases" && parts[3] != ""
}

// validTarget: a query under the database's documents, or documents of the database.
// The rest (filters, orders, cursors) is the upstream's to judge.
func validTarget(database string, t *firestorepb.Target) bool {
	root := database + "/documents"
	switch tt := t.GetTargetType().(type) {
	case *firestorepb.Target_Query:
		p := tt.Query.GetParent()
		if p != root && !strings.HasPrefix(p, root+"/") {
			return false
		}
		return len(tt.Query.GetStructuredQuery().GetFrom()) > 0
	case *firestorepb.Target_Documents:
		names := tt.Documents.GetDocuments()
		if len(names) == 0 {
			return false
		}
		for _, n := range names {
			if !strings.HasPrefix(n, root+"/") || len(strings.Split(n[len(root)+1:], "/"))%2 != 0 {
				return false
			}
		}
		return true
	}
	return false
}
