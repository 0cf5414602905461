package rules

import (
	"strings"
	"testing"
	"time"
)

// listen: defaults a user can rely on (30s linger, 4096, 1000), given values win, a
// linger of 0 is allowed (close at once), bad values are refused at their line.
func TestListenSection(t *testing.T) {
	d := mustParse(t, "")
	if d.Listen != (Listen{Linger: 30 * time.Second, ClientQueue: 4096, MaxClientTargets: 1000}) {
		t.Errorf("defaults: %+v", d.Listen)
	}
	got := mustParse(t, "listen:\n  linger: 0s\n  client_queue: 16\n  max_client_targets: 5\n").Listen
	if got != (Listen{Linger: 0, ClientQueue: 16, MaxClientTargets: 5}) {
		t.Errorf("given values: %+v", got)
	}
	for _, tc := range []struct{ yaml, key string }{
		{"listen:\n  linger: -1s\n", "listen.linger"},
		{"listen:\n  client_queue: 0\n", "listen.client_queue"},
		{"listen:\n  max_client_targets: 0\n", "listen.max_client_targets"},
	} {
		_, err := Parse("test.yaml", []byte(tc.yaml), nil)
		if err == nil || !strings.Contains(err.Error(), "test.yaml:2") || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%q: %v, want an error at test.yaml:2 naming %s", tc.yaml, err, tc.key)
		}
	}
}
