package conformance

// The Listen fan-out proofs (issue 11) with the Firebase SDK's Node build (gRPC), driven
// by js/fanout.mjs: many clients listening to one target through the proxy see exactly
// what a direct listener sees, and the upstream meter shows the work of one listener.
//
// Built only with -tags fanout until the hub serves Listen: with the proxy relaying
// Listen, the equality proofs pass and the meter bounds fail (20 clients cost 20x).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

// fanoutBound is how much more upstream work N clients of one shared target may cost
// than one client: the 1.2x.
const fanoutBound = 1.2

// fanoutStep is what js/fanout.mjs recorded for one step: each listener's distinct
// server states during it (or "error:<code>"), the model's state after it, and the
// listeners that never settled.
type fanoutStep struct {
	Name     string              `json:"name"`
	Expected string              `json:"expected"`
	Seen     map[string][]string `json:"seen"`
	TimedOut []string            `json:"timedOut"`
}

// runFanout runs `node js/fanout.mjs CONFIG` and decodes its output into out.
func runFanout(t *testing.T, node string, cfg map[string]any, out any) {
	t.Helper()
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "fanout.mjs", string(arg))
	cmd.Dir = jsDir()
	cmd.Env = append(os.Environ(), "NODE_NO_WARNINGS=1", "METADATA_SERVER_DETECTION=none")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node fanout.mjs %s: %v\nstderr:\n%s", arg, err, clip(stderr.String(), 4000))
	}
	var failed struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &failed); err != nil {
		t.Fatalf("fanout.mjs printed no JSON (%v): %s\nstderr:\n%s", err, clip(stdout.String(), 2000), clip(stderr.String(), 4000))
	}
	if failed.Error != "" {
		t.Fatalf("fanout.mjs %s failed: %s\nstderr:\n%s", cfg["mode"], clip(failed.Error, 3000), clip(stderr.String(), 4000))
	}
	// FANOUT_DUMP=/tmp/x keeps the driver's whole output (/tmp/x-MODE-CLIENTS.json), to
	// read what every listener saw when a proof fails.
	if d := os.Getenv("FANOUT_DUMP"); d != "" {
		os.WriteFile(d+"-"+fmt.Sprint(cfg["mode"])+"-"+fmt.Sprint(cfg["clients"])+".json", stdout.Bytes(), 0o644)
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("fanout.mjs output: %v", err)
	}
}

// checkSteps fails the test for a listener that never settled, a direct listener
// that did not end a step in the model's state (the harness's own premise), and any
// listener whose states during a step differ from those of the listener named
// reference (for listeners named with a via-suffix, the same name with "via direct").
func checkSteps(t *testing.T, what string, steps []fanoutStep, reference func(listener string) string) {
	t.Helper()
	if len(steps) == 0 {
		t.Fatalf("%s: no steps recorded", what)
	}
	for _, s := range steps {
		if len(s.TimedOut) > 0 {
			t.Errorf("%s, step %q: never settled: %v", what, s.Name, s.TimedOut)
		}
		for name, seen := range s.Seen {
			ref := reference(name)
			if ref == name {
				if s.Expected != "" && (len(seen) == 0 || seen[len(seen)-1] != s.Expected) {
					t.Errorf("%s, step %q: the direct listener %q ended in %q, want the model's %q", what, s.Name, name, seen, s.Expected)
				}
				continue
			}
			want, ok := s.Seen[ref]
			if !ok {
				t.Fatalf("%s, step %q: no reference listener %q for %q", what, s.Name, ref, name)
			}
			if strings.Join(seen, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s, step %q: %s saw\n  %s\nwhere %s saw\n  %s", what, s.Name, name,
					clip(strings.Join(seen, "\n  "), 1500), ref, clip(strings.Join(want, "\n  "), 1500))
			}
		}
	}
}

func directListener(string) string { return "direct" }

// control serves what js/fanout.mjs may ask of the test while it runs: the meter's
// counts (/counts) and, with a relay, cutting and restoring the upstream (/cut,
// /restore). Its base URL is returned.
func control(t *testing.T, meter *testbed.Meter, relay *testbed.Relay) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/counts", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(meter.Snapshot())
	})
	if relay != nil {
		mux.HandleFunc("/cut", func(w http.ResponseWriter, _ *http.Request) { relay.Cut(); w.Write([]byte("{}")) })
		mux.HandleFunc("/restore", func(w http.ResponseWriter, _ *http.Request) { relay.Restore(); w.Write([]byte("{}")) })
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// checkBound fails the test unless many clients' upstream Listen work is within
// fanoutBound of one client's, and says the figures either way.
func checkBound(t *testing.T, clients int, one, many testbed.Counts) {
	t.Helper()
	t.Logf("Listen documents streamed upstream: 1 client %d, %d clients %d (%.2fx); targets added upstream: %d and %d",
		one.ListenDocuments, clients, many.ListenDocuments, ratio(many.ListenDocuments, one.ListenDocuments),
		one.ListenTargets, many.ListenTargets)
	if one.ListenDocuments == 0 || one.ListenTargets == 0 {
		t.Fatalf("one client through the proxy streamed %d documents on %d targets through the meter: the proxy's upstream Listen does not go through the meter, so this test proves nothing",
			one.ListenDocuments, one.ListenTargets)
	}
	if float64(many.ListenDocuments) > fanoutBound*float64(one.ListenDocuments) {
		t.Errorf("%d clients listening to one shared query cost the upstream %d documents, %.2fx one client's %d; want at most %.1fx",
			clients, many.ListenDocuments, ratio(many.ListenDocuments, one.ListenDocuments), one.ListenDocuments, fanoutBound)
	}
	if float64(many.ListenTargets) > fanoutBound*float64(one.ListenTargets) {
		t.Errorf("%d clients listening to one shared query added %d targets upstream, one client %d; want at most %.1fx",
			clients, many.ListenTargets, one.ListenTargets, fanoutBound)
	}
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TestFanOutNodeClientsShareOneUpstreamListener: 20 Node SDK clients, each its own app,
// listen through the proxy to one query under a scope: shared rule (products, in the
// sample rules.yaml), beside a direct listener; a writer changes a matching document,
// takes one out of the query, deletes one and adds one. Every client sees, step by
// step, exactly the direct listener's snapshots, and the upstream streams what it
// streams for one client through the proxy (measured first, on a project of its own
// seeded alike), within 1.2x.
func TestFanOutNodeClientsShareOneUpstreamListener(t *testing.T) {
	node := nodeReady(t)
	st := newStack(t)
	run := func(clients int) ([]fanoutStep, testbed.Counts) {
		st.meter.Reset()
		var out struct {
			Steps []fanoutStep `json:"steps"`
		}
		runFanout(t, node, map[string]any{"mode": "steps", "projectId": st.emu.NewProject(t),
			"direct": st.emu.Addr, "proxied": st.addr, "clients": clients}, &out)
		return out.Steps, st.meter.Snapshot()
	}
	oneSteps, one := run(1)
	const clients = 20
	manySteps, many := run(clients)

	t.Run("every client sees what the direct listener sees", func(t *testing.T) {
		checkSteps(t, "1 client", oneSteps, directListener)
		checkSteps(t, fmt.Sprintf("%d clients", clients), manySteps, directListener)
		if n := len(manySteps[0].Seen); n != clients+1 {
			t.Errorf("%d listeners reported, want %d clients and the direct one", n, clients)
		}
	})
	t.Run("the upstream streams one listener's documents", func(t *testing.T) {
		checkBound(t, clients, one, many)
	})
}

// TestFanOutNodeReadsAnsweredFromLiveView: while one client listens through the proxy
// to a shared query and a document, another client's getDocs and getDoc of the same
// query and document (the full SDK reads through Listen) answer what they answer
// directly, and the upstream meter does not move.
func TestFanOutNodeReadsAnsweredFromLiveView(t *testing.T) {
	node := nodeReady(t)
	st := newStack(t)
	type reads struct {
		Query json.RawMessage `json:"query"`
		Doc   json.RawMessage `json:"doc"`
	}
	var out struct {
		Listened fanoutStep                `json:"listened"`
		Direct   reads                     `json:"direct"`
		Proxied  reads                     `json:"proxied"`
		Meter    map[string]testbed.Counts `json:"meter"`
	}
	runFanout(t, node, map[string]any{"mode": "reads", "projectId": st.emu.NewProject(t),
		"direct": st.emu.Addr, "proxied": st.addr, "control": control(t, st.meter, nil)}, &out)

	t.Run("the reads answer what they answer directly", func(t *testing.T) {
		if len(out.Listened.TimedOut) > 0 {
			t.Fatalf("the listeners never settled: %v", out.Listened.TimedOut)
		}
		if string(out.Direct.Query) == "[]" || string(out.Direct.Doc) == "null" {
			t.Fatalf("the direct reads found nothing (query %s, document %s): the test's premise is broken", out.Direct.Query, out.Direct.Doc)
		}
		if string(out.Proxied.Query) != string(out.Direct.Query) {
			t.Errorf("getDocs through the proxy: %s\ndirectly: %s", out.Proxied.Query, out.Direct.Query)
		}
		if string(out.Proxied.Doc) != string(out.Direct.Doc) {
			t.Errorf("getDoc through the proxy: %s\ndirectly: %s", out.Proxied.Doc, out.Direct.Doc)
		}
	})
	t.Run("the meter does not move", func(t *testing.T) {
		b, a := out.Meter["before"], out.Meter["after"]
		requests := map[string]int64{}
		for m, n := range a.Requests {
			if d := n - b.Requests[m]; d != 0 {
				requests[m] = d
			}
		}
		t.Logf("upstream during the reads: %d requests %v, %d Listen documents, %d Listen targets, %d billed reads",
			a.Total-b.Total, requests, a.ListenDocuments-b.ListenDocuments, a.ListenTargets-b.ListenTargets, a.BilledReads-b.BilledReads)
		if b.ListenDocuments == 0 {
			t.Fatalf("the listening client streamed nothing through the meter: the proxy's upstream Listen does not go through it, so this test proves nothing")
		}
		if a.Total != b.Total || a.ListenDocuments != b.ListenDocuments || a.ListenTargets != b.ListenTargets || a.BilledReads != b.BilledReads {
			t.Errorf("getDocs and getDoc of targets a client already listens to reached the upstream: %d requests, %d Listen documents, %d Listen targets, %d billed reads; want none",
				a.Total-b.Total, a.ListenDocuments-b.ListenDocuments, a.ListenTargets-b.ListenTargets, a.BilledReads-b.BilledReads)
		}
	})
}

// ownSessionsRules let a signed-in user read only the sessions whose owner is their uid.
const ownSessionsRules = `rules_version = '2';
service cloud.firestore {
  match /databases/{database}/documents {
    match /sessions/{id} {
      allow read: if request.auth != null && resource.data.owner == request.auth.uid;
    }
  }
}`

// TestFanOutNodeUserScopeKeepsUsersApart: alice and bob, with different tokens, each
// listen to alice's sessions and to bob's (a scope: user rule in the sample rules.yaml),
// with the emulator's security rules letting each read only their own. Through the
// proxy, each sees exactly what they see directly: their own sessions, and a refusal
// for the other's; and no target of theirs reached the upstream with the proxy's
// credentials.
func TestFanOutNodeUserScopeKeepsUsersApart(t *testing.T) {
	node := nodeReady(t)
	st := newStack(t)
	project := st.emu.NewProject(t)
	st.emu.SetSecurityRules(t, project, ownSessionsRules)
	var out struct {
		Steps []fanoutStep `json:"steps"`
	}
	runFanout(t, node, map[string]any{"mode": "users", "projectId": project, "direct": st.emu.Addr, "proxied": st.addr}, &out)

	t.Run("each user sees only their own documents, as directly", func(t *testing.T) {
		viaDirect := func(name string) string { return strings.Replace(name, " via proxy", " via direct", 1) }
		checkSteps(t, "users", out.Steps, viaDirect)
		// The harness's premise: directly, the emulator's rules keep the users apart.
		first := out.Steps[0].Seen
		for _, user := range []string{"alice", "bob"} {
			other := map[string]string{"alice": "bob", "bob": "alice"}[user]
			if got := first[user+" reads "+other+"'s via direct"]; len(got) != 1 || got[0] != "error:permission-denied" {
				t.Errorf("directly, %s reading %s's sessions saw %q, want a permission-denied refusal: the emulator's rules are not in force", user, other, got)
			}
			if got := first[user+" reads "+user+"'s via direct"]; len(got) != 1 || !strings.Contains(got[0], `"owner":{"string":"`+user+`"}`) {
				t.Errorf("directly, %s reading their own sessions saw %q, want their documents", user, got)
			}
		}
	})
	t.Run("no user's target rides the proxy's credentials", func(t *testing.T) {
		c := st.meter.Snapshot()
		t.Logf("Listen targets added upstream, by Authorization: %d in all; %s", c.ListenTargets, authSummary(c.ListenTargetsByAuth))
		if n := c.ListenTargetsByAuth["Bearer owner"]; n > 0 {
			t.Errorf("%d targets of user-scoped listeners were added upstream with the proxy's credentials (Bearer owner)", n)
		}
		if n := c.ListenTargetsByAuth[""]; n > 0 {
			t.Errorf("%d targets of user-scoped listeners were added upstream with no credentials", n)
		}
		byUser := map[string]int64{}
		for a, n := range c.ListenTargetsByAuth {
			byUser[mockUser(a)] += n
		}
		if byUser["alice"] == 0 || byUser["bob"] == 0 {
			t.Errorf("Listen targets reached the upstream through the meter as %v; want some with alice's token and some with bob's", byUser)
		}
	})
}

// authSummary names each Authorization by the user of its mock token.
func authSummary(byAuth map[string]int64) string {
	var parts []string
	for a, n := range byAuth {
		parts = append(parts, fmt.Sprintf("%s: %d", mockUser(a), n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// mockUser is the user_id of an emulator mock token ("Bearer <unsigned JWT>"), or the
// Authorization itself when it is not one ("Bearer owner", "").
func mockUser(auth string) string {
	parts := strings.Split(strings.TrimPrefix(auth, "Bearer "), ".")
	if len(parts) != 3 {
		return fmt.Sprintf("%q", auth)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "an unreadable token"
	}
	var claims struct {
		UserID string `json:"user_id"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.UserID == "" {
		return "a token without user_id"
	}
	return claims.UserID
}

// TestFanOutNodeUpstreamCutRecovers: 5 clients listen through the proxy, whose
// upstream runs through a TCP relay; the relay is cut right after a write is sent and
// stays cut while a removal, a delete and an add are made, then restored. The clients
// recover to the direct listener's final state, and no snapshot any of them showed on
// the way (from cache or not) is a state the data was never in.
func TestFanOutNodeUpstreamCutRecovers(t *testing.T) {
	node := nodeReady(t)
	var relay *testbed.Relay
	st := newStackVia(t, func(meterURL string) string {
		relay = testbed.NewRelay(t, strings.TrimPrefix(meterURL, "http://"))
		return "http://" + relay.Addr()
	})
	var out struct {
		Valid  []string                     `json:"valid"`
		Steps  []fanoutStep                 `json:"steps"`
		Events map[string][]json.RawMessage `json:"events"`
	}
	runFanout(t, node, map[string]any{"mode": "cut", "projectId": st.emu.NewProject(t), "direct": st.emu.Addr,
		"proxied": st.addr, "clients": 5, "control": control(t, st.meter, relay), "stepTimeoutMs": 45000}, &out)

	if len(out.Steps) != 2 {
		t.Fatalf("cut: %d steps recorded, want the initial one and the one after the restore", len(out.Steps))
	}
	checkSteps(t, "cut", out.Steps[:1], directListener)
	// After the restore the clients may skip states the direct listener saw one by one
	// while they were cut off; what must hold is where they end (here) and that every
	// snapshot on the way was a real state (below).
	after := out.Steps[1]
	if len(after.TimedOut) > 0 {
		t.Errorf("cut: never recovered to the direct listener's final state: %v", after.TimedOut)
	}
	for name, seen := range after.Seen {
		if name != "direct" && (len(seen) == 0 || seen[len(seen)-1] != after.Expected) {
			t.Errorf("cut: %s ended in %q, want the final state %q", name, seen, after.Expected)
		}
	}
	h := newHistory(t, out.Valid)
	for name, events := range out.Events {
		for i, raw := range events {
			var e struct {
				Error     string `json:"error"`
				FromCache bool   `json:"fromCache"`
				State     string `json:"state"`
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if e.Error != "" {
				t.Errorf("%s: snapshot %d: the listener failed (%s) instead of recovering", name, i, e.Error)
				continue
			}
			if why := h.wrong(e.State, e.FromCache); why != "" {
				t.Errorf("%s: snapshot %d (from cache: %v) %s:\n  %s", name, i, e.FromCache, why, clip(e.State, 1500))
			}
		}
	}
}

// history is the states a query's result went through, to judge a listener's snapshot.
type history struct {
	states   map[string]bool // every state, as js/fanout.mjs keys it
	versions map[string]bool // every [id, data] document version any state held
	always   []string        // the versions every state held
}

func newHistory(t *testing.T, states []string) *history {
	t.Helper()
	h := &history{states: map[string]bool{}, versions: map[string]bool{}}
	count := map[string]int{}
	for _, st := range states {
		if h.states[st] {
			continue
		}
		h.states[st] = true
		docs, err := stateDocs(st)
		if err != nil {
			t.Fatalf("state %q: %v", st, err)
		}
		for _, d := range docs {
			h.versions[d] = true
			count[d]++
		}
	}
	for d, n := range count {
		if n == len(h.states) {
			h.always = append(h.always, d)
		}
	}
	if len(h.states) < 5 || len(h.always) == 0 {
		t.Fatalf("the data went through %d distinct states, %d documents unchanged throughout; want 5 and some: the test's premise is broken", len(h.states), len(h.always))
	}
	return h
}

// wrong says what is wrong with a snapshot's state, or "". A snapshot from the server
// must be a state the query was in. One from the SDK's cache may mix states (after a
// resume the SDK shows documents it is not yet sure of, from its cache, until it has
// resolved them: its documented limbo), but never a document version the query did
// not hold, nor lack a document the query held throughout.
func (h *history) wrong(state string, fromCache bool) string {
	if !fromCache && !h.states[state] {
		return "is a server snapshot of a state the data was never in"
	}
	docs, err := stateDocs(state)
	if err != nil {
		return err.Error()
	}
	have := map[string]bool{}
	for _, d := range docs {
		if !h.versions[d] {
			return "shows a document version the query never held: " + clip(d, 300)
		}
		have[d] = true
	}
	for _, d := range h.always {
		if !have[d] {
			return "lacks a document the query held throughout: " + clip(d, 300)
		}
	}
	return ""
}

// stateDocs splits a state ([[id, data], ...]) into its documents, each as compact JSON.
func stateDocs(state string) ([]string, error) {
	var docs []json.RawMessage
	if err := json.Unmarshal([]byte(state), &docs); err != nil {
		return nil, fmt.Errorf("not a state: %v", err)
	}
	out := make([]string, len(docs))
	for i, d := range docs {
		var b bytes.Buffer
		if err := json.Compact(&b, d); err != nil {
			return nil, err
		}
		out[i] = b.String()
	}
	return out, nil
}
