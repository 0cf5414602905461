package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// nodeHint says what to install when Node or npm is missing.
const nodeHint = "install Node.js 20 or newer with npm (Debian: apt-get install nodejs npm)"

// TestFirebaseJSTransparent runs js/scenarios.mjs (the Firebase JS SDK, lite) against
// the emulator and through the proxy, in two projects seeded alike, and requires the
// two normalised outputs to be identical, scenario by scenario.
func TestFirebaseJSTransparent(t *testing.T) {
	t.Parallel()
	node := nodeReady(t)
	st := newStack(t)
	type side struct {
		addr string
		out  map[string]outcome
		err  error
	}
	sides := []*side{{addr: st.emu.Addr}, {addr: st.addr}}
	var wg sync.WaitGroup
	for _, s := range sides {
		project := st.emu.NewProject(t)
		seedDirect(t, st.emu, project)
		wg.Go(func() { s.out, s.err = runNodeScenarios(node, s.addr, project) })
	}
	wg.Wait()
	for i, s := range sides {
		if s.err != nil {
			t.Fatalf("%s run: %v", []string{"direct", "proxied"}[i], s.err)
		}
	}
	names := make([]string, 0, len(sides[0].out))
	for name := range sides[0].out {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) < 15 {
		t.Errorf("the Node script reported only %d scenarios: %q", len(names), names)
	}
	for name := range sides[1].out {
		if _, ok := sides[0].out[name]; !ok {
			t.Errorf("%s: only in the proxied run", name)
		}
	}
	compareRuns(t, names, sides[0].out, sides[1].out)
	if c := st.meter.Snapshot(); c.Total == 0 {
		t.Errorf("the proxied run never reached the upstream meter: the test is not testing the proxy")
	}
	stats := st.proxy.Stats()
	if stats.Requests["HIT-L1"]+stats.Requests["HIT-L2"] == 0 || stats.Requests["MISS"] == 0 {
		t.Errorf("the proxied run should both fill and hit the cache; proxy results: %v", stats.Requests)
	}
}

// runNodeScenarios runs the script against addr and parses its output.
func runNodeScenarios(node, addr, project string) (map[string]outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "scenarios.mjs", addr, project)
	cmd.Dir = jsDir()
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("node scenarios.mjs %s %s: %v\nstderr:\n%s", addr, project, err, clip(stderr.String(), 4000))
	}
	var raw map[string]struct {
		Result json.RawMessage `json:"result"`
		Failed string          `json:"failed"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		return nil, fmt.Errorf("node output is not the expected JSON (%v): %s\nstderr:\n%s", err, clip(stdout.String(), 2000), clip(stderr.String(), 4000))
	}
	out := map[string]outcome{}
	for name, r := range raw {
		out[name] = outcome{Result: string(r.Result), Failed: r.Failed}
	}
	return out, nil
}

func jsDir() string {
	d, err := filepath.Abs("js")
	if err != nil {
		panic(err)
	}
	return d
}

// nodeReady finds node (20 or newer) and makes sure js/node_modules matches
// js/package-lock.json, running `npm ci` only when it does not. It fails, naming what to
// install, when Node or npm is missing.
func nodeReady(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found on PATH: %s", nodeHint)
	}
	v, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v; %s", node, err, nodeHint)
	}
	m := regexp.MustCompile(`^v(\d+)\.`).FindStringSubmatch(strings.TrimSpace(string(v)))
	if m == nil {
		t.Fatalf("node --version said %q; %s", v, nodeHint)
	}
	if major, _ := strconv.Atoi(m[1]); major < 20 {
		t.Fatalf("node %s is too old; %s", bytes.TrimSpace(v), nodeHint)
	}
	testbed.NodeModules(t, jsDir())
	return node
}
