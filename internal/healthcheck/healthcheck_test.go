package healthcheck

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	gone := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	gone.Close()

	cases := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"2xx is healthy", []string{healthy.URL}, 0, ""},
		{"503 is unhealthy", []string{sick.URL}, 1, "503"},
		{"no listener is unhealthy", []string{gone.URL}, 1, "unhealthy"},
		{"no URL is a usage error", nil, 2, "usage"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		if code := Run(c.args, &stderr); code != c.code || !strings.Contains(stderr.String(), c.says) {
			t.Errorf("%s: exit %d stderr %q, want exit %d mentioning %q", c.name, code, stderr.String(), c.code, c.says)
		}
	}
}
