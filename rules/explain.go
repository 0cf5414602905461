package rules

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Explain says which rule applies to a document or collection path (relative to the
// documents root; a leading / is accepted; an even number of segments is a document,
// odd a collection) and with what effective settings, or that none does and the path
// is therefore neither cached nor a source of events.
func Explain(cfg *Config, path string) string {
	path = strings.Trim(path, "/")
	if path == "" {
		return "the documents root is neither a document nor a collection: give a path such as products/p1\n"
	}
	segments := strings.Count(path, "/") + 1
	kind := "document"
	var r *Rule
	if segments%2 == 0 {
		r = cfg.ForDocument(path)
	} else {
		kind = "collection"
		r = cfg.ForCollection(path)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s %s\n", kind, path)
	if r == nil {
		fmt.Fprintf(&sb, "  no rule matches: not cached, no events\n")
		return sb.String()
	}
	src := cfg.Source
	if src == "" {
		src = "rules"
	}
	fmt.Fprintf(&sb, "  rule:        %s (%s:%d)\n", r.Match, src, r.Line)
	if kind == "document" {
		if b := bindings(r.Match, path); len(b) > 0 {
			fmt.Fprintf(&sb, "  wildcards:   %s\n", strings.Join(b, " "))
		}
	}
	if r.TTL == 0 {
		fmt.Fprintf(&sb, "  ttl:         0 (not cached)\n")
	} else {
		fmt.Fprintf(&sb, "  ttl:         %s\n", formatDuration(r.TTL))
		switch r.Scope {
		case ScopeShared:
			fmt.Fprintf(&sb, "  scope:       shared (one cached answer for every caller who can reach the proxy)\n")
		default:
			fmt.Fprintf(&sb, "  scope:       user (cached per Authorization header)\n")
		}
		switch r.Consistency {
		case Eventual:
			fmt.Fprintf(&sb, "  consistency: eventual (L1 keeps serving, within ttl, while invalidations may be missed)\n")
		default:
			fmt.Fprintf(&sb, "  consistency: strong (L1 unused while invalidations may be missed)\n")
		}
		fmt.Fprintf(&sb, "  stale_while_revalidate: %s\n", offOr(r.StaleWhileRevalidate))
		fmt.Fprintf(&sb, "  stale_if_error:         %s\n", offOr(r.StaleIfError))
		if kind == "document" {
			fmt.Fprintf(&sb, "  negative_ttl:           %s\n", offOr(r.NegativeTTL))
		}
	}
	fmt.Fprintf(&sb, "  events:      %s\n", r.Events)
	explainCapture(&sb, cfg, r)
	return sb.String()
}

func offOr(d time.Duration) string {
	if d == 0 {
		return "off"
	}
	return formatDuration(d)
}

// formatDuration drops zero units: 30m, 1h, 1h30m, 25ms.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// DefaultFile is the rules file the commands read when given none.
const DefaultFile = "rules.yaml"

// RunCheck is "rules check [FILE]": it validates FILE (default rules.yaml), prints
// "FILE: ok (N rules, M handlers)" to stdout and returns 0, or prints every problem to
// stderr and returns 1 (2 for a usage error).
func RunCheck(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 || (len(args) == 1 && strings.HasPrefix(args[0], "-")) {
		fmt.Fprintln(stderr, "usage: rules check [FILE]   (default "+DefaultFile+")")
		return 2
	}
	file := DefaultFile
	if len(args) == 1 {
		file = args[0]
	}
	cfg, err := Load(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d rules, %d handlers)\n", file, len(cfg.Rules), len(cfg.Worker.Handlers))
	return 0
}

// RunExplain is "rules explain [FILE] PATH": it prints Explain for PATH under FILE
// (default rules.yaml) and returns 0; 1 when the file is bad, 2 for a usage error.
func RunExplain(args []string, stdout, stderr io.Writer) int {
	file := DefaultFile
	var path string
	switch {
	case len(args) == 1 && !strings.HasPrefix(args[0], "-"):
		path = args[0]
	case len(args) == 2 && !strings.HasPrefix(args[0], "-"):
		file, path = args[0], args[1]
	default:
		fmt.Fprintln(stderr, "usage: rules explain [FILE] PATH   (e.g. rules explain /farmers/f1/products/p1)")
		return 2
	}
	cfg, err := Load(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stdout, Explain(cfg, path))
	return 0
}
