package testbed

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// EnvEmulator names an already running emulator ("host:port") to use instead of
// starting one; handy for fast local iterations.
const EnvEmulator = "HARVEST_TEST_EMULATOR"

// shared is the one emulator of this test binary: the only global state of the package,
// because starting the emulator costs seconds and every test of a binary can share it.
var shared struct {
	once sync.Once
	emu  *Emu
	proc *EmulatorProcess // nil when EnvEmulator was used or the start failed
	err  error
}

// projectSeq makes project ids unique within the test binary.
var projectSeq atomic.Int64

// Main runs the tests of a package and stops the emulator if one was started. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }
func Main(m *testing.M) int {
	defer stopShared()
	return m.Run()
}

func stopShared() {
	if shared.proc != nil {
		shared.proc.Stop()
	}
}

// Emu is a running Firestore emulator reachable on loopback.
type Emu struct {
	// Addr is "127.0.0.1:port" (or whatever HARVEST_TEST_EMULATOR named).
	Addr string
	// URL is "http://" + Addr.
	URL string

	http *http.Client
}

// Emulator returns the test binary's emulator, starting it on the first call. It fails
// the test, naming what to install, when the emulator cannot be started.
func Emulator(t testing.TB) *Emu {
	t.Helper()
	shared.once.Do(func() {
		if addr := os.Getenv(EnvEmulator); addr != "" {
			shared.emu, shared.err = attach(addr)
			return
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		proc, err := StartEmulator(context.Background(), 0, log)
		if err != nil {
			shared.err = err
			return
		}
		shared.proc = proc
		shared.emu = newEmu(proc.Addr)
	})
	if shared.err != nil {
		t.Fatalf("testbed: firestore emulator unavailable: %v", shared.err)
	}
	return shared.emu
}

func newEmu(addr string) *Emu {
	return &Emu{Addr: addr, URL: "http://" + addr, http: &http.Client{Timeout: 30 * time.Second}}
}

func attach(addr string) (*Emu, error) {
	emu := newEmu(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !answersOk(ctx, emu.http, emu.URL+"/") {
		return nil, fmt.Errorf("%s=%s does not answer GET / with Ok; start it with "+
			"`gcloud emulators firestore start --host-port=%s` or unset %s", EnvEmulator, addr, addr, EnvEmulator)
	}
	return emu, nil
}

// NewProject returns a project id that no other test uses, and wipes its data when the
// test ends. Ids are valid Firestore project ids: lowercase, at most 30 characters.
func (e *Emu) NewProject(t testing.TB) string {
	t.Helper()
	p := projectID(t.Name(), os.Getpid(), projectSeq.Add(1))
	t.Cleanup(func() {
		if err := e.Wipe(p); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	return p
}

// projectID builds "t-<name>-<pid><seq>": the pid keeps two test binaries apart when they
// share one emulator through HARVEST_TEST_EMULATOR, seq keeps the tests of one apart.
func projectID(testName string, pid int, seq int64) string {
	suffix := "-" + strconv.FormatInt(int64(pid), 36) + "x" + strconv.FormatInt(seq, 36)
	var b strings.Builder
	dash := true // no leading dash, no double dashes
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	name := b.String()
	if room := 30 - len("t-") - len(suffix); len(name) > room {
		name = name[:room]
	}
	name = strings.TrimRight(name, "-")
	if name == "" {
		return "t" + suffix
	}
	return "t-" + name + suffix
}

// Wipe deletes every document of project's default database. The emulator now and
// then refuses a wipe that races a Listen call just cancelled (499 "call already
// cancelled"): such a refusal is tried again.
func (e *Emu) Wipe(project string) error {
	var err error
	for range 5 {
		if err = e.wipeOnce(project); !errors.Is(err, errWipeCancelled) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// errWipeCancelled marks the emulator's 499 to a wipe.
var errWipeCancelled = errors.New("the emulator cancelled the call")

func (e *Emu) wipeOnce(project string) error {
	u := e.URL + "/emulator/v1/projects/" + url.PathEscape(project) + "/databases/(default)/documents"
	req, err := http.NewRequest(http.MethodDelete, u, nil)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", project, err)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", project, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == 499 {
		return fmt.Errorf("wipe %s: %w: %s", project, errWipeCancelled, body)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("wipe %s: emulator answered %s: %s", project, resp.Status, body)
	}
	return nil
}

// IDToken is an unsigned Firebase ID token for uid in project, as the SDKs'
// mockUserToken makes them: the emulator takes it as that user signed in (it checks
// no signature), so security rules see request.auth.uid == uid.
func IDToken(project, uid string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://securetoken.google.com/" + project, "aud": project,
		"iat": 1700000000, "exp": 4000000000, "auth_time": 1700000000,
		"sub": uid, "user_id": uid,
		"firebase": map[string]any{"sign_in_provider": "custom", "identities": map[string]any{}},
	})
	return enc([]byte(`{"alg":"none","type":"JWT"}`)) + "." + enc(claims) + "."
}

// SetSecurityRules loads Firestore security rules (the rules language's source) for
// project; the emulator enforces them on every caller but its owner.
func (e *Emu) SetSecurityRules(t testing.TB, project, rules string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"rules": map[string]any{"files": []map[string]string{{"name": "firestore.rules", "content": rules}}}})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, e.URL+"/emulator/v1/projects/"+url.PathEscape(project)+":securityRules", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("security rules: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		t.Fatalf("security rules: the emulator answered %s: %s", resp.Status, out)
	}
}

// DocumentsURL is the REST base of project's default database on the emulator:
// ".../v1/projects/{p}/databases/(default)/documents".
func (e *Emu) DocumentsURL(project string) string {
	return e.URL + "/v1/projects/" + project + "/databases/(default)/documents"
}
