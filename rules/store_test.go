package rules

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const goodRules = "rules:\n  - match: /products/{id}\n    ttl: 30m\n"

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNewStoreRefusesBadFirstLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, "rules:\n  - ttl: 1m\n")
	if _, err := NewStore(path, nil); err == nil || !strings.Contains(err.Error(), path+":2: rule: missing match") {
		t.Fatalf("err %v, want the file's line and reason", err)
	}
	if _, err := NewStore(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func TestStoreReloadKeepsOldRulesOnBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, path, goodRules)
	var logBuf bytes.Buffer
	s, err := NewStore(path, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var got []*Config
	s.OnReload(func(c *Config) { got = append(got, c) })
	old := s.Current()

	writeFile(t, path, goodRules+"  - match: /products/p1\n    ttl: 1m\n")
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("bad file accepted: %v", err)
	}
	if s.Current() != old || s.Current().ForDocument("products/p1") == nil {
		t.Fatal("a refused reload replaced the rules in force")
	}
	st := s.Stats()
	if st.Failures != 1 || st.Reloads != 0 || !strings.Contains(st.LastError, ":4: unreachable") {
		t.Errorf("stats after failure: %+v", st)
	}
	if !strings.Contains(logBuf.String(), "unreachable") {
		t.Errorf("refusal not logged with its reason: %s", logBuf.String())
	}
	if len(got) != 0 {
		t.Error("subscribers told of a refused reload")
	}

	writeFile(t, path, "rules:\n  - match: /farmers/{id}\n    ttl: 1m\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	cur := s.Current()
	if cur.ForDocument("farmers/f1") == nil || cur.ForDocument("products/p1") != nil {
		t.Fatal("good reload not in force")
	}
	if len(got) != 1 || got[0] != cur {
		t.Errorf("subscriber calls: %v", got)
	}
	st = s.Stats()
	if st.Reloads != 1 || st.Failures != 1 || st.LastError != "" {
		t.Errorf("stats after success: %+v", st)
	}
}

// Watch picks up a change made by a Kubernetes-style symlink swap, refuses a bad
// one, and keeps the good rules.
func TestStoreWatch(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "rules.yaml")
	v1 := filepath.Join(dir, "v1.yaml")
	writeFile(t, v1, goodRules)
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(link, nil)
	if err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan *Config, 1)
	s.OnReload(func(c *Config) { reloaded <- c })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Watch(ctx, 5*time.Millisecond) }()
	defer func() { cancel(); wg.Wait() }()

	// A bad version: refused, counted once however many polls see it.
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "rules: [\n")
	swap(t, dir, bad, link)
	for s.Stats().Failures == 0 {
		time.Sleep(time.Millisecond)
	}
	if s.Current().ForDocument("products/p1") == nil {
		t.Fatal("bad file replaced the rules")
	}

	v2 := filepath.Join(dir, "v2.yaml")
	writeFile(t, v2, "rules:\n  - match: /farmers/{id}\n    ttl: 1m\n")
	swap(t, dir, v2, link)
	c := <-reloaded
	if c.ForDocument("farmers/f1") == nil || s.Current() != c {
		t.Fatal("watch did not install the new rules")
	}
	if st := s.Stats(); st.Failures != 1 || st.Reloads != 1 {
		t.Errorf("stats: %+v (a bad file is refused once, not every poll)", st)
	}
}

// swap points link at target atomically, as kubelet does for ConfigMaps.
func swap(t *testing.T, dir, target, link string) {
	t.Helper()
	tmp := filepath.Join(dir, "tmp-link")
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, path, goodRules)
	s, err := NewStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 200 {
				if s.Current().ForDocument("products/p1") == nil {
					t.Error("no rule during reloads")
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 20 {
				_ = s.Reload()
				_ = s.Stats()
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.Reloads != 80 || st.Failures != 0 {
		t.Errorf("stats: %+v", st)
	}
}
