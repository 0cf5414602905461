package testbed_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

func TestEmulatorAnswers(t *testing.T) {
	emu := testbed.Emulator(t)
	if !strings.HasPrefix(emu.Addr, "127.0.0.1:") && !strings.Contains(emu.Addr, "localhost") {
		t.Errorf("Addr = %q, want a loopback address", emu.Addr)
	}
	if emu.URL != "http://"+emu.Addr {
		t.Errorf("URL = %q, want http://%s", emu.URL, emu.Addr)
	}
	if got := mustCall(t, http.DefaultClient, "GET", emu.URL+"/", "", false); strings.TrimSpace(got) != "Ok" {
		t.Errorf("GET / = %q, want Ok", got)
	}
	if again := testbed.Emulator(t); again != emu {
		t.Errorf("second Emulator call gave another emulator: %v vs %v", again.Addr, emu.Addr)
	}
}

func TestProjectsAreIsolated(t *testing.T) {
	emu := testbed.Emulator(t)
	a, b := emu.NewProject(t), emu.NewProject(t)
	if a == b {
		t.Fatalf("NewProject gave %q twice", a)
	}
	mustCall(t, http.DefaultClient, "PATCH", emu.DocumentsURL(a)+"/farmers/f1", `{"fields":{"name":{"stringValue":"Ada"}}}`, false)
	mustCall(t, http.DefaultClient, "GET", emu.DocumentsURL(a)+"/farmers/f1", "", false)
	if status, body := call(t, http.DefaultClient, "GET", emu.DocumentsURL(b)+"/farmers/f1", "", false); status != http.StatusNotFound {
		t.Errorf("document of project %s visible in %s: %d %s", a, b, status, body)
	}
}

func TestWipeEmptiesProject(t *testing.T) {
	emu := testbed.Emulator(t)
	p := emu.NewProject(t)
	for _, id := range []string{"a", "b"} {
		mustCall(t, http.DefaultClient, "PATCH", emu.DocumentsURL(p)+"/products/"+id, `{"fields":{"n":{"integerValue":"1"}}}`, false)
	}
	if err := emu.Wipe(p); err != nil {
		t.Fatal(err)
	}
	if got := mustCall(t, http.DefaultClient, "GET", emu.DocumentsURL(p)+"/products", "", true); strings.Contains(got, `"name"`) {
		t.Errorf("after Wipe the collection still lists documents: %s", got)
	}
	if status, _ := call(t, http.DefaultClient, "GET", emu.DocumentsURL(p)+"/products/a", "", false); status != http.StatusNotFound {
		t.Errorf("after Wipe GET products/a = %d, want 404", status)
	}
}

var validProjectID = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)

func TestNewProjectIDsAreValidAndUnique(t *testing.T) {
	emu := testbed.Emulator(t)
	seen := map[string]bool{}
	for _, name := range []string{"Short", "A_very/Long Test Name With Many Words and CAPS 123", "__", "x"} {
		t.Run(name, func(t *testing.T) {
			p := emu.NewProject(t)
			if !validProjectID.MatchString(p) {
				t.Errorf("project id %q is not a valid Firestore project id", p)
			}
			if seen[p] {
				t.Errorf("project id %q given twice", p)
			}
			seen[p] = true
		})
	}
}

// TestStopKillsEmulator starts a second emulator (the shared one stays up) and proves
// Stop leaves nothing answering on its port.
func TestStopKillsEmulator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	proc, err := testbed.StartEmulator(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustCall(t, http.DefaultClient, "GET", "http://"+proc.Addr+"/", "", false)
	proc.Stop()
	proc.Stop() // idempotent
	client := &http.Client{Timeout: 2 * time.Second}
	if resp, err := client.Get("http://" + proc.Addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("emulator on %s still answers after Stop", proc.Addr)
	}
}

func TestStartEmulatorWithoutJavaNamesWhatToInstall(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no java, no gcloud
	t.Setenv("JAVA_HOME", "")
	_, err := testbed.StartEmulator(context.Background(), 0, nil)
	if err == nil || !strings.Contains(err.Error(), testbed.InstallHint) {
		t.Errorf("StartEmulator without java: %v; want an error naming %q", err, testbed.InstallHint)
	}
}
