package rules

import (
	"fmt"
	"strings"
)

// EnvProject names the environment variable upstream.project defaults to.
const EnvProject = "GOOGLE_CLOUD_PROJECT"

// CaptureDatabase is the database change capture watches in upstream.project.
const CaptureDatabase = "(default)"

// CaptureTarget is what a rule with capture: true watches upstream: one Listen over a
// query of the rule's last collection id, whose results are then filtered to the
// documents the rule actually decides (first match wins).
type CaptureTarget struct {
	// CollectionID is the pattern's last collection id.
	CollectionID string
	// Parent is the document the collection is under, relative to the documents root
	// ("" for a top-level collection); meaningful only when Group is false.
	Parent string
	// Group: the pattern has wildcards above its last collection, so the watch is a
	// collection-group query over every collection of that id in the database.
	Group bool
}

// String names the watched query for people: "collection farmers/f1/products" or
// "collection group orders".
func (t CaptureTarget) String() string {
	if t.Group {
		return "collection group " + t.CollectionID
	}
	if t.Parent == "" {
		return "collection " + t.CollectionID
	}
	return "collection " + t.Parent + "/" + t.CollectionID
}

// CaptureTarget returns what the rule watches, and false when its pattern cannot be
// watched: the last collection must be a fixed id and the pattern must end in one
// document segment (not {x=**}).
func (r *Rule) CaptureTarget() (CaptureTarget, bool) {
	segs := strings.Split(strings.Trim(r.Match, "/"), "/")
	if len(segs) < 2 || len(segs)%2 != 0 || isMultiWildcard(segs[len(segs)-1]) || isWildcard(segs[len(segs)-2]) {
		return CaptureTarget{}, false
	}
	t := CaptureTarget{CollectionID: segs[len(segs)-2]}
	parent := segs[:len(segs)-2]
	for _, s := range parent {
		if isWildcard(s) {
			t.Group = true
			return t, true
		}
	}
	t.Parent = strings.Join(parent, "/")
	return t, true
}

// validateCapture defaults upstream.project from $GOOGLE_CLOUD_PROJECT and checks
// every rule with capture: true: its pattern can be watched and a project is known.
func (d *decoder) validateCapture(cfg *Config) {
	if cfg.Upstream.Project == "" && d.env != nil {
		cfg.Upstream.Project, _ = d.env(EnvProject)
	}
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		if !r.Capture {
			continue
		}
		line := d.lineOr(r, "capture", r.Line)
		if checkPattern(r.Match) != "" {
			continue // already reported
		}
		if _, ok := r.CaptureTarget(); !ok {
			d.errorf(line, "capture: pattern %s cannot be watched: its last collection must be a fixed id and it must end in one document segment, e.g. /orders/{id} or /farmers/{f}/products/{p}", r.Match)
		}
		if cfg.Upstream.Project == "" {
			d.errorf(line, "capture: no project to watch: set upstream.project or %s", EnvProject)
		}
	}
}

// explainCapture prints a capture rule's watch and its cost model.
func explainCapture(sb *strings.Builder, cfg *Config, r *Rule) {
	if !r.Capture {
		return
	}
	t, ok := r.CaptureTarget()
	if !ok {
		return
	}
	fmt.Fprintf(sb, "  capture:     watches the %s in projects/%s/databases/%s (one upstream Listen, held by one replica)\n",
		t, cfg.Upstream.Project, CaptureDatabase)
	scope := "every document of that collection"
	if t.Group {
		scope = "every document of every " + t.CollectionID + " collection in the database, including ones this rule does not match"
	}
	fmt.Fprintf(sb, "  capture cost: a cold start reads %s once (1 billed read each);\n", scope)
	fmt.Fprintf(sb, "                then 1 read per document change; a resume within 30 minutes reads only changes;\n")
	fmt.Fprintf(sb, "                a reset (resume refused, existence-filter mismatch) reads them all again\n")
}
