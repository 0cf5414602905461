package rules

import (
	"strings"
	"testing"
	"time"
)

// cache.invalidation_lease: default 1s; a given value wins; 0 is refused with its
// line, since with Redis it would mean "never trust L1" without saying so.
func TestParseInvalidationLease(t *testing.T) {
	if got := mustParse(t, "").Cache.InvalidationLease; got != time.Second {
		t.Errorf("default lease %v, want 1s", got)
	}
	if got := mustParse(t, "cache:\n  invalidation_lease: 3s\n").Cache.InvalidationLease; got != 3*time.Second {
		t.Errorf("lease %v, want 3s", got)
	}
	_, err := Parse("test.yaml", []byte("cache:\n  redis_timeout: 25ms\n  invalidation_lease: 0s\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "test.yaml:3") || !strings.Contains(err.Error(), "invalidation_lease") {
		t.Fatalf("lease 0: %v, want an error naming test.yaml:3 and the key", err)
	}
}
