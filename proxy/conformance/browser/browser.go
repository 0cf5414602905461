// Package browser runs the Firebase web SDK (firebase 12.19.0, the full
// firebase/firestore and the lite firebase/firestore/lite) in headless Chromium against
// Firestore endpoints, and compares what the page saw: the proof that a browser app
// works through the proxy (and through nginx in front of it) exactly as against the
// emulator.
//
// It is test support: the suite of this directory and nginx's use it. Run starts one
// Chromium (Debian's chromium-headless-shell, found by Chromium) driven by
// puppeteer-core from run.mjs; the page (page/*.mjs, bundled by esbuild from
// node_modules, nothing fetched) is served from its own loopback origin, so every
// Firestore call is cross-origin and CORS is exercised as in production. Each Run gets
// its own browser context (its own socket pool: Chromium's six connections per host
// would otherwise starve several full-SDK pages) and its own project.
//
// To add scenarios (the Write channel as a write path, say), add them to
// page/scenarios.mjs: every Run executes every scenario, and Compare checks them all.
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// SDKs are the page variants: the lite SDK (REST), the full SDK (WebChannel, streaming
// backchannel) and the full SDK forced to long-poll (TYPE=xmlhttp backchannel GETs).
var SDKs = []string{"lite", "full", "full-longpoll"}

// Run is one page: an SDK pointed at host:port (what connectFirestoreEmulator gets)
// with a project of its own. MeterURL, when set, is read before and after each phase
// (MeterHandler serves it).
type Run struct {
	Name      string `json:"name"`
	SDK       string `json:"sdk"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	ProjectID string `json:"projectId"`
	MeterURL  string `json:"meterURL,omitempty"`
}

// Outcome is what one scenario returned ({result}) or how it failed ({failed}).
type Outcome struct {
	Result json.RawMessage `json:"result,omitempty"`
	Failed string          `json:"failed,omitempty"`
}

// MeterReading is an upstream meter's counts before and after a phase.
type MeterReading struct {
	Before testbed.Counts `json:"before"`
	After  testbed.Counts `json:"after"`
}

// Result is what a page saw.
type Result struct {
	SDK string `json:"sdk"`
	// Phases: "main", "warm", "repeat" (page/scenarios.mjs), scenario name -> outcome.
	Phases map[string]map[string]Outcome `json:"phases"`
	// FailedRequests the browser could not complete (CORS refusals, resets; not the
	// requests the SDK aborted itself).
	FailedRequests []string `json:"failedRequests"`
	// ErrorResponses are answers with a 5xx status; ClientErrors those with a 4xx.
	ErrorResponses []string `json:"errorResponses"`
	ClientErrors   []string `json:"clientErrors"`
	// ConsoleErrors the page logged (uncaught exceptions included).
	ConsoleErrors []string                `json:"consoleErrors"`
	Meter         map[string]MeterReading `json:"meter"`
	Error         string                  `json:"error"`
}

// Dir is this package's directory (package.json, run.mjs, page/).
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

const chromiumHint = "install Debian's chromium-headless-shell (deploy/dev-services.sh does: apt-get install chromium-headless-shell)"

// Chromium is the browser binary: $HARVEST_CHROMIUM, else Debian's
// chromium-headless-shell, else chromium. A missing one fails the test.
func Chromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HARVEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium-headless-shell", "chromium-headless-shell", "/usr/bin/chromium", "chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found: %s", chromiumHint)
	return ""
}

// Ready makes sure node_modules matches package-lock.json (running `npm ci` when it
// does not) and returns the node binary.
func Ready(t testing.TB) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found on PATH: install Node.js 20 or newer with npm (deploy/dev-services.sh)")
	}
	testbed.NodeModules(t, Dir())
	return node
}

// Execute runs every page in one Chromium, in parallel, and returns their results by
// name. pagePort is the page's port (0: any free one; nginx's CORS allow-list needs
// to know it in advance). A run that could not execute at all fails the test.
func Execute(t testing.TB, pagePort int, runs []Run) map[string]*Result {
	t.Helper()
	node := Ready(t)
	cfg, err := json.Marshal(map[string]any{"chromium": Chromium(t), "pagePort": pagePort, "runs": runs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "run.mjs", string(cfg))
	cmd.Dir = Dir()
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node run.mjs: %v\nstderr:\n%s", err, clip(stderr.String(), 6000))
	}
	var out struct {
		Runs map[string]*Result `json:"runs"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("run.mjs output is not the expected JSON (%v): %s\nstderr:\n%s", err, clip(stdout.String(), 2000), clip(stderr.String(), 4000))
	}
	for _, r := range runs {
		res := out.Runs[r.Name]
		if res == nil {
			t.Fatalf("run.mjs reported nothing for %s", r.Name)
		}
		if res.Error != "" {
			t.Fatalf("%s: the page could not run: %s", r.Name, clip(res.Error, 3000))
		}
	}
	return out.Runs
}

// RetryFailedDirect runs once more, on a fresh project, each direct run (its name ends
// in "/direct": the SDK against the emulator, no proxy) that had a failed scenario, and
// puts its result and project in place of the first. The emulator itself now and then
// loses a listen or closes a kept-alive connection under a request; such a failure of
// the reference run is the test bed's, and compared with the proxied run it would read
// as the proxy's. The proxied runs are never run again.
func RetryFailedDirect(t testing.TB, pagePort int, runs []Run, results map[string]*Result, newProject func(testing.TB) string) {
	t.Helper()
	var again []Run
	at := map[string]int{}
	for i, r := range runs {
		if !strings.HasSuffix(r.Name, "/direct") || !anyFailed(results[r.Name]) {
			continue
		}
		t.Logf("%s: a scenario failed against the emulator itself; running it once more", r.Name)
		r.ProjectID = newProject(t)
		at[r.Name] = i
		again = append(again, r)
	}
	if len(again) == 0 {
		return
	}
	for name, res := range Execute(t, pagePort, again) {
		if i, ok := at[name]; ok {
			results[name] = res
			runs[i].ProjectID = again[slices.IndexFunc(again, func(r Run) bool { return r.Name == name })].ProjectID
		}
	}
}

func anyFailed(r *Result) bool {
	for _, outcomes := range r.Phases {
		for _, o := range outcomes {
			if o.Failed != "" {
				return true
			}
		}
	}
	return false
}

// CheckClean fails the test for anything a user would see go wrong on the page: a
// scenario that failed, a request the browser could not complete (a CORS refusal, a
// reset), any 5xx answer (the proxy's 503s included), an error in the console.
func CheckClean(t testing.TB, name string, r *Result) {
	t.Helper()
	for phase, outcomes := range r.Phases {
		for scenario, o := range outcomes {
			if o.Failed != "" {
				t.Errorf("%s: %s/%s failed: %s", name, phase, scenario, o.Failed)
			}
		}
	}
	if len(r.Phases["main"]) < 15 {
		t.Errorf("%s: only %d scenarios ran in phase main", name, len(r.Phases["main"]))
	}
	for _, f := range r.FailedRequests {
		t.Errorf("%s: request failed in the browser: %s", name, f)
	}
	for _, f := range r.ErrorResponses {
		t.Errorf("%s: server error answer: %s", name, f)
	}
	for _, c := range r.ConsoleErrors {
		t.Errorf("%s: console error: %s", name, clip(c, 500))
	}
}

// Compare fails the test where two runs of the same SDK saw different results, scenario
// by scenario. Projects differ, so project ids are normalised away.
func Compare(t testing.TB, wantName string, want *Result, gotName string, got *Result, wantProject, gotProject string) {
	t.Helper()
	for _, phase := range []string{"main", "warm", "repeat"} {
		names := make([]string, 0, len(want.Phases[phase]))
		for n := range want.Phases[phase] {
			names = append(names, n)
		}
		sort.Strings(names)
		for n := range got.Phases[phase] {
			if _, ok := want.Phases[phase][n]; !ok {
				t.Errorf("%s/%s: only in %s", phase, n, gotName)
			}
		}
		for _, n := range names {
			w, g := want.Phases[phase][n], got.Phases[phase][n]
			ws := strings.ReplaceAll(string(w.Result)+w.Failed, wantProject, "<project>")
			gs := strings.ReplaceAll(string(g.Result)+g.Failed, gotProject, "<project>")
			if ws != gs {
				t.Errorf("%s/%s differs:\n  %s: %s\n  %s: %s", phase, n, wantName, clip(ws, 600), gotName, clip(gs, 600))
			}
		}
	}
}

// MeterHandler serves meter's counts as JSON, for Run.MeterURL; its URL is returned.
// It stops when the test ends.
func MeterHandler(t testing.TB, meter *testbed.Meter) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(meter.Snapshot())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/counts"
}

// FreePort is a loopback port nobody listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
