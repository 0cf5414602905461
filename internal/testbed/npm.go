package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// NodeModules makes sure dir/node_modules holds exactly the versions of
// dir/package-lock.json, running `npm ci` there when it does not, and fails the test
// naming what is missing otherwise. Tests in one binary and in several (the browser
// suite runs from proxy/conformance/browser and nginx/ at once) may call it together:
// an exclusive flock on dir/.npm-install.lock lets one install while the others wait,
// since concurrent npm ci runs delete each other's files.
func NodeModules(t testing.TB, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, ".npm-install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("npm install lock: %v", err)
	}
	defer f.Close() // closing releases the lock
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("npm install lock: %v", err)
	}
	stale := staleModules(dir)
	if stale == "" {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("%s/node_modules needs installing (%s) but npm is not on PATH (deploy/dev-services.sh installs it)", dir, stale)
	}
	t.Logf("%s/node_modules: %s; running npm ci", dir, stale)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if stale := staleModules(dir); stale != "" {
		t.Fatalf("after npm ci, %s/node_modules still does not match the lock: %s", dir, stale)
	}
}

// staleModules returns why dir/node_modules does not hold exactly the versions of
// dir/package-lock.json, or "" when it does.
func staleModules(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return "no package-lock.json: " + err.Error()
	}
	var lock struct {
		Packages map[string]struct {
			Version  string `json:"version"`
			Optional bool   `json:"optional"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(data, &lock); err != nil {
		return "unreadable package-lock.json: " + err.Error()
	}
	for path, p := range lock.Packages {
		if path == "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, path, "package.json"))
		if err != nil {
			if p.Optional {
				continue
			}
			return path + " is missing"
		}
		var got struct {
			Version string `json:"version"`
		}
		if json.Unmarshal(b, &got) != nil || got.Version != p.Version {
			return fmt.Sprintf("%s is %q, the lock wants %q", path, got.Version, p.Version)
		}
	}
	return ""
}
