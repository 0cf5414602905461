package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// runSeed runs the command in-process. run sets FIRESTORE_EMULATOR_HOST for the Go
// client; t.Setenv puts the old value back when the test ends.
func runSeed(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("FIRESTORE_EMULATOR_HOST", "")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestSeedFileIntoEmulator(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	file := filepath.Join(t.TempDir(), "seed.json")
	content := `{"products/p1": {"name": "Apples", "price": 2.0, "stock": 4, "at": {"__time__": "2026-05-01T08:00:00Z"}}}`
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runSeed(t, "-emulator", emu.Addr, "-project", project, "-file", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "Wrote 1 documents") {
		t.Errorf("stdout %q does not report the document written", out)
	}
	got := mustGet(t, emu.DocumentsURL(project)+"/products/p1")
	for _, want := range []string{`"doubleValue": 2`, `"integerValue": "4"`, `"timestampValue": "2026-05-01T08:00:00Z"`} {
		if !strings.Contains(got, want) {
			t.Errorf("stored document lacks %s: %s", want, got)
		}
	}
}

func TestSeedSampleIntoEmulator(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	code, out, errOut := runSeed(t, "-emulator", emu.Addr, "-project", project)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "Harvest Hub sample") {
		t.Errorf("stdout %q does not name the sample", out)
	}
	if got := mustGet(t, emu.DocumentsURL(project)+"/farmers/farmer-08/products/prod-008"); !strings.Contains(got, `"farmerId"`) {
		t.Errorf("sample product missing: %s", got)
	}
}

func TestBadFileFailsClearlyAndWritesNothing(t *testing.T) {
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	file := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(file, []byte("{\n  \"products/p1\": {\"a\": 1},\n  \"products\": {\"b\": 2}\n}"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runSeed(t, "-emulator", emu.Addr, "-project", project, "-file", file)
	if code == 0 {
		t.Fatal("a bad file exited 0")
	}
	if !strings.Contains(errOut, "bad.json") || !strings.Contains(errOut, `"products" is not a document path`) {
		t.Errorf("stderr %q does not name the file and the fault", errOut)
	}
	status, _ := get(t, emu.DocumentsURL(project)+"/products/p1")
	if status != 404 {
		t.Errorf("the valid document of a bad file was written (status %d)", status)
	}
}

func TestUnreachableEmulatorFailsClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	code, _, errOut := runSeed(t, "-emulator", addr)
	if code == 0 || !strings.Contains(errOut, "no Firestore emulator answers at "+addr) || !strings.Contains(errOut, "gcloud emulators firestore start") {
		t.Errorf("exit %d, stderr %q; want a failure saying how to start the emulator", code, errOut)
	}
}

func TestMissingFileFails(t *testing.T) {
	code, _, errOut := runSeed(t, "-emulator", "127.0.0.1:1", "-file", filepath.Join(t.TempDir(), "nope.json"))
	if code == 0 || !strings.Contains(errOut, "nope.json") {
		t.Errorf("exit %d, stderr %q; want a failure naming the file", code, errOut)
	}
}

func TestHelpExplainsFlagsAndFileFormat(t *testing.T) {
	code, _, errOut := runSeed(t, "-h")
	if code != 0 {
		t.Errorf("-h exited %d", code)
	}
	for _, want := range []string{"-project", "-emulator", "-file", "harvest-hub-dev", "__time__", "__ref__", "Application Default Credentials"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestVersionAndBadFlags(t *testing.T) {
	if code, out, _ := runSeed(t, "-version"); code != 0 || !strings.HasPrefix(out, "harvest-seed ") {
		t.Errorf("-version: exit %d, %q", code, out)
	}
	if code, _, _ := runSeed(t, "-nope"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code, _, errOut := runSeed(t, "stray"); code != 2 || !strings.Contains(errOut, "stray") {
		t.Errorf("stray argument: exit %d, %q", code, errOut)
	}
}
