package proxytest

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/rules"
)

func TestStartServesBothListeners(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("rules: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := rules.NewStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The upstream is never called: only the admin listener is asked.
	s := Start(t, proxy.Options{AdminListen: "127.0.0.1:0", Upstream: "http://127.0.0.1:1", Rules: store,
		OutboxDir: t.TempDir()})
	if s.Addr == "" || s.AdminAddr == "" || s.AdminAddr == "127.0.0.1:0" {
		t.Fatalf("addresses not resolved: %+v", s)
	}
	resp, err := http.Get("http://" + s.AdminAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
}
