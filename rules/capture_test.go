package rules

import (
	"strings"
	"testing"
)

func TestCaptureNeedsAProject(t *testing.T) {
	src := "rules:\n  - match: /orders/{o}\n    events: true\n    capture: true\n"
	_, err := Parse("rules.yaml", []byte(src), nil)
	if err == nil || !strings.Contains(err.Error(), "rules.yaml:4") || !strings.Contains(err.Error(), "no project to watch") {
		t.Fatalf("capture without a project: got %v, want an error at rules.yaml:4 naming the missing project", err)
	}
	env := func(k string) (string, bool) {
		return map[string]string{"GOOGLE_CLOUD_PROJECT": "harvest"}[k], k == "GOOGLE_CLOUD_PROJECT"
	}
	cfg, err := Parse("rules.yaml", []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.Project != "harvest" || !cfg.Rules[0].Capture {
		t.Fatalf("project %q capture %v: want harvest from GOOGLE_CLOUD_PROJECT and capture on", cfg.Upstream.Project, cfg.Rules[0].Capture)
	}
	cfg, err = Parse("rules.yaml", []byte("upstream:\n  project: mine\n"+src), env)
	if err != nil || cfg.Upstream.Project != "mine" {
		t.Fatalf("upstream.project given: %v %q, want it to win over the environment", err, cfg.Upstream.Project)
	}
}

func TestCaptureRefusesPatternsItCannotWatch(t *testing.T) {
	for _, m := range []string{"/{document=**}", "/users/{u}/{rest=**}", "/farmers/{f}/{coll}/{id}"} {
		src := "upstream:\n  project: p\nrules:\n  - match: " + m + "\n    capture: true\n"
		_, err := Parse("rules.yaml", []byte(src), nil)
		if err == nil || !strings.Contains(err.Error(), "rules.yaml:5") || !strings.Contains(err.Error(), "cannot be watched") {
			t.Errorf("capture on %s: got %v, want it refused at line 5", m, err)
		}
	}
}

func TestCaptureTarget(t *testing.T) {
	for m, want := range map[string]string{
		"/orders/{o}":               "collection orders",
		"/farmers/f1/products/{p}":  "collection farmers/f1/products",
		"/farmers/{f}/products/{p}": "collection group products",
		"/config/settings":          "collection config",
		"/a/{x}/b/c/orders/{o}":     "collection group orders",
	} {
		r := Rule{Match: m}
		got, ok := r.CaptureTarget()
		if !ok || got.String() != want {
			t.Errorf("%s: %v %q, want %q", m, ok, got, want)
		}
	}
}

func TestExplainPrintsTheCaptureCostModel(t *testing.T) {
	cfg, err := Parse("rules.yaml", []byte("upstream:\n  project: harvest\nrules:\n  - match: /farmers/{f}/orders/{o}\n    capture: true\n    events: true\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := Explain(cfg, "farmers/f1/orders/o1")
	for _, want := range []string{"collection group orders", "projects/harvest/databases/(default)", "cold start reads every document", "reset"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
}
