package main

// Crash injection: harvest-proxy processes (this test binary re-executed as a child
// that runs the real main) are killed with SIGKILL at every step of a write's event
// path, over and over on one outbox directory; each next process recovers what the
// previous left. At the end the consumer must have every applied write's event,
// exactly once by id, and no event of a write that was not applied.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/internal/testbed"
)

const (
	brokerURL = "amqp://guest:guest@127.0.0.1:5672/"
	// envChild makes this test binary a harvest-proxy killing itself at the named step
	// ("none": never); envChildArgs holds its arguments, separated by \x1f.
	envChild     = "HARVEST_CRASH_CHILD"
	envChildArgs = "HARVEST_CRASH_ARGS"
)

func TestMain(m *testing.M) {
	if step := os.Getenv(envChild); step != "" {
		if step != "none" {
			stepHook = func(s string) {
				if s == step {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {} // the signal is on its way
				}
			}
		}
		os.Exit(run(strings.Split(os.Getenv(envChildArgs), "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(testbed.Main(m))
}

// child is one harvest-proxy process.
type child struct {
	cmd    *exec.Cmd
	url    string // client listener
	admin  string // admin listener ("" when none)
	stderr *testbed.Output
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startChild starts a harvest-proxy that kills itself at step, and waits until it
// accepts connections.
func startChild(t *testing.T, step string, withAdmin bool, args ...string) *child {
	t.Helper()
	c := &child{stderr: &testbed.Output{}}
	listen := freeAddr(t)
	c.url = "http://" + listen
	admin := ""
	if withAdmin {
		admin = freeAddr(t)
		c.admin = "http://" + admin
	}
	args = append(args, "-listen", listen, "-admin-listen", admin, "-log-level", "warn")
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	var env []string
	for _, kv := range os.Environ() { // nothing of the parent's settings leaks in
		if !strings.HasPrefix(kv, "HARVEST_") && !strings.HasPrefix(kv, "REDIS_URL=") &&
			!strings.HasPrefix(kv, "RABBITMQ_URL=") && !strings.HasPrefix(kv, "FIRESTORE_") {
			env = append(env, kv)
		}
	}
	c.cmd.Env = append(env, envChild+"="+step, envChildArgs+"="+strings.Join(args, "\x1f"))
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if conn, err := net.Dial("tcp", listen); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			c.cmd.Process.Kill()
			c.cmd.Wait()
			t.Fatalf("harvest-proxy child never listened\n%s", c.stderr)
		}
	}
}

// waitKilled waits for the child to die of its own SIGKILL (the step was reached).
func (c *child) waitKilled(t *testing.T, step string) {
	t.Helper()
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child meant to die at %s exited with %v\n%s", step, err, c.stderr)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child meant to be killed at %s: %v\n%s", step, err, c.stderr)
	}
}

func (c *child) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child did not stop cleanly: %v\n%s", err, c.stderr)
	}
}

// gauge reads a metric's value from the child's admin /metrics (-1 while the admin
// listener is not up yet: it opens once the start-up resolution is done).
func (c *child) gauge(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(c.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v float64
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			fmt.Sscan(rest, &v)
			return v
		}
	}
	t.Fatalf("metric %s not exposed", name)
	return 0
}

func call(t *testing.T, method, url, body string) (int, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer owner")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return 200, nil
}

func TestCrashAtEveryStepLosesNoEvent(t *testing.T) {
	t.Setenv("METADATA_SERVER_DETECTION", "none")
	emu := testbed.Emulator(t)
	project := emu.NewProject(t)
	exchange := testbed.UniqueName("test.crash")
	deliveries := testbed.Subscribe(t, brokerURL, exchange)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	rulesYAML := fmt.Sprintf("events:\n  exchange: %q\nrules:\n  - match: /crash/{d}\n    events: true\n"+
		"  - match: /gone/{d}\n    events: true\n", exchange)
	if err := os.WriteFile(rulesPath, []byte(rulesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", rulesPath, "-upstream", emu.URL, "-amqp", brokerURL, "-outbox", filepath.Join(dir, "outbox")}
	docs := "/v1/projects/" + project + "/databases/(default)/documents"
	name := func(rel string) string { return "projects/" + project + "/databases/(default)/documents/" + rel }

	steps := []string{"none", emitter.StepBegin, emitter.StepIntent, emitter.StepAnswered,
		emitter.StepLanded, emitter.StepKept, emitter.StepDone}
	const iterations = 100
	type write struct {
		i      int
		commit bool
		step   string
	}
	var writes []write
	for i := range iterations {
		w := write{i: i, step: steps[i%len(steps)], commit: (i/len(steps))%2 == 1}
		writes = append(writes, w)
		body := fmt.Sprintf(`{"fields":{"n":{"integerValue":"%d"}}}`, i)
		url, method := fmt.Sprintf("%s/crash/d%d", docs, i), "PATCH"
		if w.commit {
			// A commit of a set and a delete of a document that exists.
			if _, err := call(t, "PATCH", fmt.Sprintf("%s%s/gone/g%d", emu.URL, docs, i), `{"fields":{}}`); err != nil {
				t.Fatalf("seeding gone/g%d: %v", i, err)
			}
			url, method = docs+":commit", "POST"
			body = fmt.Sprintf(`{"writes":[{"update":{"name":%q,"fields":{"n":{"integerValue":"%d"}}}},{"delete":%q}]}`,
				name(fmt.Sprintf("crash/d%d", i)), i, name(fmt.Sprintf("gone/g%d", i)))
		}
		c := startChild(t, w.step, false, args...)
		status, err := call(t, method, c.url+url, body)
		if w.step == "none" {
			if status != 200 {
				t.Fatalf("write %d without a crash: %v\n%s", i, err, c.stderr)
			}
			c.stop(t)
			continue
		}
		if err == nil {
			t.Fatalf("write %d was answered although the proxy was to die at %s", i, w.step)
		}
		c.waitKilled(t, w.step)
	}

	// One last process recovers the last crash and publishes everything.
	last := startChild(t, "none", true, args...)
	for deadline := time.Now().Add(60 * time.Second); last.gauge(t, "harvest_events_open_intents") != 0 ||
		last.gauge(t, "harvest_events_outbox_depth_events") != 0 ||
		last.gauge(t, "harvest_events_broker_connected") != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the last process never resolved and published everything\n%s", last.stderr)
		}
	}
	last.stop(t)

	// What landed, read straight from the emulator, and the ids its events must have.
	want := map[string]string{} // id -> what
	applied := 0
	for _, w := range writes {
		doc := readDoc(t, emu.URL+docs+fmt.Sprintf("/crash/d%d", w.i))
		gone := readDoc(t, emu.URL+docs+fmt.Sprintf("/gone/g%d", w.i))
		landed := doc != nil
		reachedUpstream := w.step == "none" || w.step == emitter.StepAnswered || w.step == emitter.StepLanded ||
			w.step == emitter.StepKept || w.step == emitter.StepDone
		if landed != reachedUpstream {
			t.Fatalf("write %d (killed at %s): landed %v", w.i, w.step, landed)
		}
		if w.commit && landed == (gone != nil) {
			t.Fatalf("commit %d: set landed %v but delete landed %v", w.i, landed, gone == nil)
		}
		if !landed {
			continue
		}
		applied++
		at := doc.GetUpdateTime().AsTime()
		want[event.ID(name(fmt.Sprintf("crash/d%d", w.i)), at)] = fmt.Sprintf("write %d (%s) set", w.i, w.step)
		if w.commit {
			want[event.DeleteID(name(fmt.Sprintf("gone/g%d", w.i)), time.Time{}, at)] = fmt.Sprintf("write %d (%s) delete", w.i, w.step)
		}
	}

	got := map[string]int{}
	take := func(body []byte) {
		var ce struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body, &ce); err != nil || ce.ID == "" {
			t.Fatalf("delivery is not a CloudEvent: %s", body)
		}
		got[ce.ID]++
	}
	guard := time.After(60 * time.Second) // against a hang, not a speed assertion
	for seen := 0; seen < len(want); {
		select {
		case d := <-deliveries:
			take(d.Body)
			seen = 0
			for id := range want {
				if got[id] > 0 {
					seen++
				}
			}
		case <-guard:
			t.Fatalf("only %d of %d expected events arrived", len(got), len(want))
		}
	}
	// Everything the processes published is queued by now; take the rest.
	for more := true; more; {
		select {
		case d := <-deliveries:
			take(d.Body)
		case <-time.After(2 * time.Second):
			more = false
		}
	}
	for id, what := range want {
		if got[id] == 0 {
			t.Errorf("no event for %s (id %s)", what, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("event %s belongs to no applied write", id)
		}
	}
	t.Logf("%d writes, %d applied, %d events expected, %d distinct ids delivered", len(writes), applied, len(want), len(got))
}

// readDoc reads a document straight from the emulator (nil when missing).
func readDoc(t *testing.T, url string) *firestorepb.Document {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer owner")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 404 {
		return nil
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	doc := &firestorepb.Document{}
	if err := protojson.Unmarshal(b, doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// Two harvest-proxy processes on one outbox directory: the second refuses to start,
// naming the first (its pid), and starts once the first is gone.
func TestSecondProxyOnOneOutboxRefuses(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte("rules:\n  - match: /a/{d}\n    events: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", rulesPath, "-upstream", "http://127.0.0.1:1", "-outbox", filepath.Join(dir, "outbox")}
	first := startChild(t, "none", false, args...)
	code, _, errs := runCmd(t, append(args, "-listen", "127.0.0.1:0", "-admin-listen", "")...)
	if code == 0 || !strings.Contains(errs, "refusing to start") ||
		!strings.Contains(errs, fmt.Sprintf("pid %d ", first.cmd.Process.Pid)) {
		t.Fatalf("second proxy on the same outbox: exit %d, stderr %q; want a refusal naming pid %d",
			code, errs, first.cmd.Process.Pid)
	}
	first.cmd.Process.Kill() // however the holder dies, the lock goes with it
	first.cmd.Wait()
	second := startChild(t, "none", false, args...)
	second.stop(t)
}
