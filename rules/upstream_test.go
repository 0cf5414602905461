package rules

import (
	"strings"
	"testing"
)

func TestUpstreamConnectionBudgets(t *testing.T) {
	cfg := mustParse(t, "upstream:\n  max_conns: 64\n  max_streams: 2000\n")
	if cfg.Upstream.MaxConns != 64 || cfg.Upstream.MaxStreams != 2000 {
		t.Errorf("got max_conns %d, max_streams %d; want 64, 2000", cfg.Upstream.MaxConns, cfg.Upstream.MaxStreams)
	}
	def := mustParse(t, "")
	if def.Upstream.MaxConns != 512 || def.Upstream.MaxStreams != 1024 {
		t.Errorf("defaults: max_conns %d, max_streams %d; want 512, 1024", def.Upstream.MaxConns, def.Upstream.MaxStreams)
	}
}

// A rules.yaml written for an older proxy keeps working: max_idle_conns is read as
// max_conns (what it always limited), and streams keep their default budget.
func TestUpstreamMaxIdleConnsIsTheOldNameOfMaxConns(t *testing.T) {
	cfg := mustParse(t, "upstream:\n  max_idle_conns: 100\n")
	if cfg.Upstream.MaxConns != 100 || cfg.Upstream.MaxStreams != 1024 || cfg.Upstream.MaxIdleConns != 0 {
		t.Errorf("got %+v; want MaxConns 100, MaxStreams 1024, MaxIdleConns resolved to 0", cfg.Upstream)
	}
	for _, src := range []string{"upstream:\n  max_idle_conns:\n", "upstream:\n  max_idle_conns: 0\n"} {
		if cfg := mustParse(t, src); cfg.Upstream.MaxConns != 512 {
			t.Errorf("%q: max_conns %d, want the default 512 (as before)", src, cfg.Upstream.MaxConns)
		}
	}
}

func TestUpstreamBudgetsRefused(t *testing.T) {
	for src, want := range map[string]string{
		"upstream:\n  max_conns: 10\n  max_idle_conns: 20\n": "test.yaml:3: upstream: max_idle_conns is the old name of max_conns",
		"upstream:\n  max_streams: 0\n":                      "test.yaml:2: upstream.max_streams: must be at least 1",
		"upstream:\n  max_conns: 0\n":                        "test.yaml:2: upstream.max_conns: must be at least 1",
		"upstream:\n  max_conns: -1\n":                       "test.yaml:2: upstream.max_conns: negative number",
	} {
		_, err := Parse("test.yaml", []byte(src), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", src, err, want)
		}
	}
}
