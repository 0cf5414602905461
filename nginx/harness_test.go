package nginx

// The harness: the real nginx binary on loopback ports with the rendered shipped
// configuration, an in-process harvest-proxy in front of the shared Firestore emulator,
// and a stub Next.js app (an httptest server).

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/proxy"
	"github.com/harvest-hub/edge/proxy/proxytest"
	"github.com/harvest-hub/edge/rules"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// nginxBinary is the nginx the tests run; a missing one fails the test.
func nginxBinary(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	t.Fatal("nginx binary not found (looked for /usr/sbin/nginx and nginx on PATH): run deploy/dev-services.sh")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// makeCerts runs deploy/make-certs.sh into a fresh directory and returns it.
func makeCerts(t testing.TB) (dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "certs")
	out, err := exec.Command("bash", "../deploy/make-certs.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/make-certs.sh: %v\n%s", err, out)
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Fatalf("deploy/make-certs.sh did not write %s: %v\n%s", f, err, out)
		}
	}
	return dir
}

// prefix is one nginx instance's directory: conf/ (rendered), tmp/, logs/.
type prefix struct {
	dir, conf, accessLog string
}

// render renders the shipped configuration into a fresh prefix. Paths always point
// into the prefix; vars override the rest of defaults.env.
func render(t testing.TB, vars map[string]string) prefix {
	t.Helper()
	dir := t.TempDir()
	p := prefix{dir: dir, conf: filepath.Join(dir, "conf", "nginx.conf"), accessLog: filepath.Join(dir, "logs", "access.log")}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]string{
		"NGINX_TEMP_DIR":   filepath.Join(dir, "tmp"),
		"NGINX_ACCESS_LOG": p.accessLog,
	}
	for k, v := range vars {
		all[k] = v
	}
	if err := Render(".", filepath.Join(dir, "conf"), all); err != nil {
		t.Fatal(err)
	}
	return p
}

// globals are the -g directives of every nginx run: the pid file in the prefix, in the
// foreground, and workers as root when the tests run as root (the compiled default
// user could not enter the test's private temporary directories).
func (p prefix) globals(daemon bool) string {
	g := "pid " + filepath.Join(p.dir, "nginx.pid") + ";"
	if !daemon {
		g += " daemon off;"
	}
	if os.Geteuid() == 0 {
		g += " user root;"
	}
	return g
}

// check runs `nginx -t` on the prefix and returns its output; a failure fails the test.
func (p prefix) check(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(nginxBinary(t), "-t", "-p", p.dir+"/", "-c", p.conf, "-g", p.globals(true)).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t failed: %v\n%s", err, out)
	}
	return string(out)
}

// server is a running nginx.
type server struct {
	prefix
	cmd    *exec.Cmd
	output *testbed.Output
	exited chan struct{}
}

// startNginx renders, checks and starts nginx, waits until every listen address in
// addrs accepts connections, and stops it (master and workers) when the test ends.
func startNginx(t *testing.T, vars map[string]string, addrs ...string) *server {
	t.Helper()
	p := render(t, vars)
	p.check(t)
	s := &server{prefix: p, output: &testbed.Output{}, exited: make(chan struct{})}
	s.cmd = exec.Command(nginxBinary(t), "-p", p.dir+"/", "-c", p.conf, "-g", p.globals(false))
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	// Own process group (the workers join it), and SIGTERM to the master, which stops
	// its workers, when the thread that forked it dies: no orphans even if the test
	// binary is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // Pdeathsig follows the forking thread: keep it alive
		if err := s.cmd.Start(); err != nil {
			started <- err
			close(s.exited)
			return
		}
		started <- nil
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() { s.stop(t) })
	for _, a := range addrs {
		s.waitListening(t, a)
	}
	return s
}

func (s *server) waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.exited:
			t.Fatalf("nginx exited before listening on %s:\n%s", addr, s.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening on %s after 30s:\n%s", addr, s.output)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop asks the master for a fast shutdown, kills the process group if that does
// not end it, and fails the test if nginx logged an alert, a critical error or an
// emergency while it ran.
func (s *server) stop(t *testing.T) {
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("nginx did not stop on SIGTERM within 15s; killing its process group")
	}
	// Workers share the master's process group; anything left of it goes.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill nginx process group %d: %v", pid, err)
	}
	<-s.exited
	for _, line := range strings.Split(s.output.String(), "\n") {
		for _, level := range []string{"[alert]", "[crit]", "[emerg]"} {
			if strings.Contains(line, level) {
				t.Errorf("nginx logged %s", line)
			}
		}
	}
}

// harvestProxy is an in-process harvest-proxy with the sample rules.yaml in front of
// the emulator, serving until the test ends.
type harvestProxy struct {
	addr, admin, project string
}

func startProxy(t *testing.T) harvestProxy {
	t.Helper()
	emu := testbed.Emulator(t)
	outbox := t.TempDir()
	t.Setenv("HARVEST_OUTBOX_DIR", outbox) // rules.yaml's events.outbox_dir
	store, err := rules.NewStore("../rules.yaml", nil)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	s := proxytest.Start(t, proxy.Options{
		AdminListen: "127.0.0.1:0",
		Upstream:    emu.URL,
		OutboxDir:   outbox,
		Rules:       store,
	})
	hp := harvestProxy{addr: s.Addr, admin: s.AdminAddr, project: emu.NewProject(t)}
	return hp
}

// docs is the REST path of the project's documents.
func (p harvestProxy) docs() string {
	return "/v1/projects/" + p.project + "/databases/(default)/documents"
}

// stubApp stands in for the Next.js app: it answers /_next/static/chunks/app.js with
// its own Cache-Control (which nginx must replace), 404 with "no-store" for other
// static paths, an HTML page elsewhere, and remembers the last request's headers.
type stubApp struct {
	URL  string
	addr string
	mu   sync.Mutex
	last http.Header
}

const stubJS = "console.log('harvest hub');\n"

func startApp(t *testing.T) *stubApp {
	a := &stubApp{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.last = r.Header.Clone()
		a.last.Set("Host", r.Host)
		a.mu.Unlock()
		switch {
		case r.URL.Path == "/_next/static/chunks/app.js":
			w.Header().Set("Content-Type", "application/javascript; charset=utf-8")
			w.Header().Set("Cache-Control", "public, max-age=0")
			fmt.Fprint(w, stubJS)
		case strings.HasPrefix(r.URL.Path, "/_next/static/"):
			w.Header().Set("Cache-Control", "no-store")
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("X-Powered-By", "Next.js")
			fmt.Fprint(w, "<!doctype html><title>Harvest Hub</title>")
		}
	}))
	t.Cleanup(srv.Close)
	a.URL, a.addr = srv.URL, srv.Listener.Addr().String()
	return a
}

func (a *stubApp) lastHeaders() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}
