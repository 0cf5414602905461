package rules

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestExplain(t *testing.T) {
	cfg := mustParse(t, `rules:
  - match: /users/{u}/orders/{o}
    ttl: 5m
    negative_ttl: 30s
    consistency: eventual
    events: [created, updated, deleted]
  - match: /tmp/{id}
    ttl: 0
`)
	cases := []struct {
		path string
		want []string
		not  []string
	}{
		{"/users/u1/orders/o1", []string{
			"document users/u1/orders/o1\n",
			"rule:        /users/{u}/orders/{o} (test.yaml:2)",
			"wildcards:   u=u1 o=o1",
			"ttl:         5m\n",
			"scope:       user",
			"consistency: eventual",
			"stale_while_revalidate: off",
			"negative_ttl:           30s",
			"events:      created, updated, deleted",
		}, nil},
		{"users/u1/orders", []string{"collection users/u1/orders\n", "(test.yaml:2)"}, []string{"negative_ttl"}},
		{"tmp/t1", []string{"(test.yaml:7)", "ttl:         0 (not cached)", "events:      none"}, []string{"scope"}},
		{"farmers/f1", []string{"document farmers/f1\n", "no rule matches: not cached, no events"}, []string{"rule:"}},
		{"/", []string{"neither a document nor a collection"}, nil},
	}
	for _, tc := range cases {
		out := Explain(cfg, tc.path)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("Explain(%q) lacks %q:\n%s", tc.path, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("Explain(%q) has %q:\n%s", tc.path, n, out)
			}
		}
	}
}

func TestRunCheckAndExplain(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, goodRules+"worker:\n  handlers:\n    - name: log\n      on: ['#']\n      action: log\n")
	writeFile(t, bad, "rules:\n  - match: /products\n  - match: /a/{b}\n    scope: all\n")

	run := func(f func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := f(args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	check := func(args []string, o, e *bytes.Buffer) int { return RunCheck(args, o, e) }
	explain := func(args []string, o, e *bytes.Buffer) int { return RunExplain(args, o, e) }

	code, out, errOut := run(check, good)
	if code != 0 || out != good+": ok (1 rules, 1 handlers)\n" || errOut != "" {
		t.Errorf("check good: %d %q %q", code, out, errOut)
	}
	code, out, errOut = run(check, bad)
	if code != 1 || out != "" || errOut != bad+":2: match \"/products\": names a collection, not documents (odd number of segments); add /{id}\n"+
		bad+":4: scope: unknown scope \"all\": want user or shared\n" {
		t.Errorf("check bad: %d %q %q", code, out, errOut)
	}
	if code, _, errOut = run(check, filepath.Join(dir, "none.yaml")); code != 1 || !strings.Contains(errOut, "none.yaml") {
		t.Errorf("check missing file: %d %q", code, errOut)
	}
	if code, _, errOut = run(check, "a", "b"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("check two files: %d %q", code, errOut)
	}

	code, out, _ = run(explain, good, "/products/p1")
	if code != 0 || !strings.Contains(out, "rule:        /products/{id} ("+good+":2)") {
		t.Errorf("explain: %d %q", code, out)
	}
	if code, _, errOut = run(explain, bad, "/products/p1"); code != 1 || !strings.Contains(errOut, bad+":2:") {
		t.Errorf("explain with bad file: %d %q", code, errOut)
	}
	if code, _, errOut = run(explain); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("explain without path: %d %q", code, errOut)
	}

	// With no FILE both read rules.yaml in the working directory.
	t.Chdir(dir)
	writeFile(t, filepath.Join(dir, "rules.yaml"), goodRules)
	if code, out, _ = run(check); code != 0 || out != "rules.yaml: ok (1 rules, 0 handlers)\n" {
		t.Errorf("check default file: %d %q", code, out)
	}
	if code, out, _ = run(explain, "products"); code != 0 || !strings.Contains(out, "collection products\n  rule:        /products/{id} (rules.yaml:2)") {
		t.Errorf("explain default file: %d %q", code, out)
	}
}
