package deploytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The real harvest-proxy and harvest-worker, started once for the whole run, so the
// health checks and probes are asked of the admin listeners themselves.
var (
	adminOnce  sync.Once
	adminErr   error
	adminAddrs map[string]string // binary -> admin HOST:PORT
	statusMu   sync.Mutex
	statusSeen = map[string]int{}
)

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// closedPort is an address nothing listens on: a broker or Redis that is down.
func closedPort() (string, error) { return freePort() }

// startAdmins starts harvest-proxy (no Redis, no broker: L1 and the outbox) and
// harvest-worker (broker and Redis unreachable) with the repository's rules.yaml, and
// waits until both admin listeners answer.
func startAdmins() (map[string]string, error) {
	tmp, err := os.MkdirTemp("", "deploytest-run-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(tmp) })
	listen, err1 := freePort()
	proxyAdmin, err2 := freePort()
	workerAdmin, err3 := freePort()
	deadAMQP, err4 := closedPort()
	deadRedis, err5 := closedPort()
	for _, e := range []error{err1, err2, err3, err4, err5} {
		if e != nil {
			return nil, e
		}
	}
	rules := filepath.Join(root, "rules.yaml")
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp}
	start := func(name string, env []string, args ...string) error {
		cmd := exec.Command(bin(name), args...)
		cmd.Dir = tmp
		cmd.Env = append(base, env...)
		log, err := os.Create(filepath.Join(tmp, name+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		go func() { _ = cmd.Wait(); log.Close() }()
		cleanups = append(cleanups, func() { _ = cmd.Process.Kill() })
		return nil
	}
	if err := start("harvest-proxy", []string{
		"HARVEST_OUTBOX_DIR=" + filepath.Join(tmp, "outbox"),
		"FIRESTORE_UPSTREAM=http://" + deadAMQP,
	}, "-config", rules, "-listen", listen, "-admin-listen", proxyAdmin); err != nil {
		return nil, err
	}
	if err := start("harvest-worker", []string{
		"RABBITMQ_URL=amqp://guest:guest@" + deadAMQP + "/",
		"REDIS_URL=redis://" + deadRedis + "/0",
		"HARVEST_WORKER_ADMIN_LISTEN=" + workerAdmin,
	}, "-config", rules); err != nil {
		return nil, err
	}
	addrs := map[string]string{"harvest-proxy": proxyAdmin, "harvest-worker": workerAdmin}
	deadline := time.Now().Add(20 * time.Second)
	for name, addr := range addrs {
		for {
			if status(addr, "/metrics") == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(tmp, name+".log"))
				return nil, fmt.Errorf("%s's admin listener %s did not answer /metrics within 20s; its log:\n%s", name, addr, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return addrs, nil
}

// cleanups stop what startAdmins started; TestMain runs them, last first.
var cleanups []func()

func status(addr, path string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// adminStatus returns a function that answers the HTTP status the real binary's admin
// listener gives for GET path (404: not served).
func adminStatus(t testing.TB) func(binary, path string) int {
	t.Helper()
	adminOnce.Do(func() { adminAddrs, adminErr = startAdmins() })
	if adminErr != nil {
		t.Fatalf("starting the real binaries: %v", adminErr)
	}
	return func(binary, path string) int {
		addr, ok := adminAddrs[binary]
		if !ok {
			return 404
		}
		key := binary + " " + path
		statusMu.Lock()
		defer statusMu.Unlock()
		if s, ok := statusSeen[key]; ok {
			return s
		}
		s := status(addr, path)
		statusSeen[key] = s
		return s
	}
}

// The probe must tell served from unserved paths, or every check built on it passes.
func TestAdminStatusTellsServedFromUnserved(t *testing.T) {
	st := adminStatus(t)
	for _, c := range []struct {
		binary, path string
		served       bool
	}{
		{"harvest-proxy", "/healthz", true},
		{"harvest-proxy", "/readyz", true},
		{"harvest-proxy", "/metrics", true},
		{"harvest-proxy", "/no-such-path", false},
		{"harvest-worker", "/healthz", true},
		{"harvest-worker", "/metrics", true},
		{"harvest-worker", "/readyz", false},
	} {
		got := st(c.binary, c.path)
		if (got != 404 && got != 0) != c.served {
			t.Errorf("%s GET %s: status %d, want served=%v", c.binary, c.path, got, c.served)
		}
	}
	// The proxy is up and not draining: its probes must pass, not merely exist.
	for _, p := range []string{"/healthz", "/readyz"} {
		if got := st("harvest-proxy", p); got != http.StatusOK {
			t.Errorf("harvest-proxy GET %s = %d, want 200", p, got)
		}
	}
}

// TestHealthcheckSubcommand runs each compose health check that uses a harvest binary
// (the images have no shell and no curl) against the real admin listener: it must exit
// 0 while the listener answers 200, and non-zero when the path answers an error or
// nothing listens.
func TestHealthcheckSubcommand(t *testing.T) {
	c := loadCompose(t)
	adminStatus(t) // starts the binaries
	ran := 0
	for name, s := range c.Services {
		b, raw, ok := healthcheckURL(s)
		if !ok {
			continue
		}
		ran++
		u, err := url.Parse(raw)
		if err != nil {
			t.Errorf("service %s: healthcheck URL %q: %v", name, raw, err)
			continue
		}
		run := func(target string) (int, string) {
			cmd := exec.Command(bin(b), "healthcheck", target)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			switch {
			case err == nil:
				return 0, string(out)
			case errors.As(err, &ee):
				return ee.ExitCode(), string(out)
			}
			return -1, err.Error()
		}
		healthy := "http://" + adminAddrs["harvest-proxy"] + "/healthz" // answers 200
		if code, out := run(healthy); code != 0 {
			t.Errorf("service %s: `%s healthcheck %s` exited %d against a listener answering 200, want 0. "+
				"The image has no shell or curl, so compose.yaml's healthcheck needs this subcommand: "+
				"GET the URL with a 2s timeout, exit 0 on 2xx, else print why and exit 1.\n%s", name, b, healthy, code, out)
		}
		missing := "http://" + adminAddrs["harvest-proxy"] + "/no-such-path" // 404
		if code, _ := run(missing); code == 0 {
			t.Errorf("service %s: `%s healthcheck` exited 0 for a 404: it cannot detect an unhealthy service", name, b)
		}
		dead, _ := closedPort()
		if code, _ := run("http://" + dead + u.Path); code == 0 {
			t.Errorf("service %s: `%s healthcheck` exited 0 with nothing listening", name, b)
		}
	}
	if ran == 0 {
		t.Error("no compose health check runs a harvest binary: nothing was checked")
	}
}
