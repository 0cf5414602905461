package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// The Listen fan-out proof on the WebChannel (issue 11), driven by fanout.mjs. Built
// only with -tags fanout until the hub serves Listen: with the proxy relaying the
// Listen channel, the equality proof passes and the meter bound fails.

// fanoutStep is what fanout.mjs recorded for one step.
type fanoutStep struct {
	Name     string              `json:"name"`
	Expected string              `json:"expected"`
	Seen     map[string][]string `json:"seen"`
	TimedOut []string            `json:"timedOut"`
}

// runFanoutPages runs fanout.mjs: pages full-SDK pages listening through proxied, one
// directly against direct, in project.
func runFanoutPages(t *testing.T, project, direct, proxied string, pages int) []fanoutStep {
	t.Helper()
	node := Ready(t)
	dh, dp := hostPort(t, direct)
	ph, pp := hostPort(t, proxied)
	cfg, err := json.Marshal(map[string]any{"chromium": Chromium(t), "projectId": project, "pages": pages,
		"direct": map[string]any{"host": dh, "port": dp}, "proxied": map[string]any{"host": ph, "port": pp}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "fanout.mjs", string(cfg))
	cmd.Dir = Dir()
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node fanout.mjs: %v\nstderr:\n%s", err, clip(stderr.String(), 6000))
	}
	var out struct {
		Steps          []fanoutStep `json:"steps"`
		FailedRequests []string     `json:"failedRequests"`
		ConsoleErrors  []string     `json:"consoleErrors"`
		Error          string       `json:"error"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("fanout.mjs printed no JSON (%v): %s\nstderr:\n%s", err, clip(stdout.String(), 2000), clip(stderr.String(), 4000))
	}
	if out.Error != "" {
		t.Fatalf("fanout.mjs failed: %s\nstderr:\n%s", clip(out.Error, 3000), clip(stderr.String(), 4000))
	}
	for _, f := range out.FailedRequests {
		t.Errorf("request failed in the browser: %s", f)
	}
	for _, c := range out.ConsoleErrors {
		t.Errorf("console error: %s", clip(c, 500))
	}
	return out.Steps
}

// TestFanOutBrowserPagesShareOneUpstreamListener: 5 Chromium pages of the full SDK
// listen through the proxy's WebChannel to one query under a scope: shared rule
// (products), beside a page listening directly; a writer page changes a matching
// document, takes one out of the query, deletes one and adds one. Every page sees,
// step by step, exactly the direct page's snapshots, and the upstream streams what it
// streams for one page through the proxy (measured first), within 1.2x.
func TestFanOutBrowserPagesShareOneUpstreamListener(t *testing.T) {
	emu := testbed.Emulator(t)
	meter := testbed.NewMeter(t, emu.URL)
	addr, _ := proxied(t, meter.URL())
	run := func(pages int) ([]fanoutStep, testbed.Counts) {
		meter.Reset()
		steps := runFanoutPages(t, emu.NewProject(t), emu.Addr, addr, pages)
		return steps, meter.Snapshot()
	}
	oneSteps, one := run(1)
	const pages = 5
	manySteps, many := run(pages)

	t.Run("every page sees what the direct page sees", func(t *testing.T) {
		for what, steps := range map[string][]fanoutStep{"1 page": oneSteps, "5 pages": manySteps} {
			if len(steps) != 5 {
				t.Fatalf("%s: %d steps recorded, want 5", what, len(steps))
			}
			for _, s := range steps {
				if len(s.TimedOut) > 0 {
					t.Errorf("%s, step %q: never settled: %v", what, s.Name, s.TimedOut)
				}
				want := s.Seen["direct"]
				if len(want) == 0 || want[len(want)-1] != s.Expected {
					t.Errorf("%s, step %q: the direct page ended in %q, want the model's %q", what, s.Name, want, s.Expected)
				}
				for name, seen := range s.Seen {
					if strings.Join(seen, "\n") != strings.Join(want, "\n") {
						t.Errorf("%s, step %q: %s saw\n  %s\nwhere the direct page saw\n  %s", what, s.Name, name,
							clip(strings.Join(seen, "\n  "), 1500), clip(strings.Join(want, "\n  "), 1500))
					}
				}
			}
		}
		if n := len(manySteps[0].Seen); n != pages+1 {
			t.Errorf("%d pages reported, want %d and the direct one", n, pages)
		}
	})
	t.Run("the upstream streams one listener's documents", func(t *testing.T) {
		t.Logf("Listen documents streamed upstream: 1 page %d, %d pages %d (%.2fx); targets added upstream: %d and %d",
			one.ListenDocuments, pages, many.ListenDocuments, float64(many.ListenDocuments)/float64(max(one.ListenDocuments, 1)),
			one.ListenTargets, many.ListenTargets)
		if one.ListenDocuments == 0 || one.ListenTargets == 0 {
			t.Fatalf("one page through the proxy streamed %d documents on %d targets through the meter: the proxy's upstream Listen does not go through the meter, so this test proves nothing",
				one.ListenDocuments, one.ListenTargets)
		}
		const bound = 1.2
		if float64(many.ListenDocuments) > bound*float64(one.ListenDocuments) {
			t.Errorf("%d pages listening to one shared query cost the upstream %d documents, one page %d; want at most %.1fx",
				pages, many.ListenDocuments, one.ListenDocuments, bound)
		}
		if float64(many.ListenTargets) > bound*float64(one.ListenTargets) {
			t.Errorf("%d pages listening to one shared query added %d targets upstream, one page %d; want at most %.1fx",
				pages, many.ListenTargets, one.ListenTargets, bound)
		}
	})
}
