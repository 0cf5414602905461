package testbed_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// call makes one REST call and returns the status and body; admin adds the emulator's
// owner credentials that list and listCollectionIds need.
func call(t *testing.T, client *http.Client, method, url, body string, admin bool) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if admin {
		req.Header.Set("Authorization", "Bearer owner")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// mustCall is call that fails the test unless the answer is 200.
func mustCall(t *testing.T, client *http.Client, method, url, body string, admin bool) string {
	t.Helper()
	status, b := call(t, client, method, url, body, admin)
	if status != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, url, status, b)
	}
	return b
}
