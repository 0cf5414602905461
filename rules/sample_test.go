package rules

import (
	"bytes"
	"strings"
	"testing"
)

// The sample file in the repository root is what users copy: it must pass check and
// mean what its comments say.
func TestSampleRulesFile(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := RunCheck([]string{"../rules.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("check exit %d, stderr:\n%s", code, errOut.String())
	}
	if want := "../rules.yaml: ok (6 rules, 3 handlers)\n"; out.String() != want {
		t.Errorf("check output %q, want %q", out.String(), want)
	}
	out.Reset()
	if code := RunExplain([]string{"../rules.yaml", "/farmers/f1/products/p1"}, &out, &errOut); code != 0 {
		t.Fatalf("explain exit %d, stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{
		"document farmers/f1/products/p1",
		"rule:        /farmers/{farmerId}/products/{productId} (../rules.yaml:",
		"wildcards:   farmerId=f1 productId=p1",
		"ttl:         30m",
		"scope:       shared",
		"stale_while_revalidate: 1m",
		"stale_if_error:         1h",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
}
