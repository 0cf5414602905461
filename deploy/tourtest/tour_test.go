package tourtest

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ownVhost creates a RabbitMQ vhost for this test and deletes it afterwards, so the
// worker's queues and the proxy's exchange live only there.
func ownVhost(t *testing.T) string {
	t.Helper()
	vhost := "harvest-tour-" + testbed.RandomHex(4)
	ctl := func(args ...string) {
		t.Helper()
		out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("rabbitmqctl %s: %v\n%s\n(RabbitMQ must run on this machine: deploy/dev-services.sh)", strings.Join(args, " "), err, out)
		}
	}
	ctl("add_vhost", vhost)
	t.Cleanup(func() { exec.Command("rabbitmqctl", "delete_vhost", vhost).Run() })
	ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
	return vhost
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// tourCommands are the shell commands the script prints between "A short tour" and
// "Ctrl-C", with backslash continuations joined.
func tourCommands(out string) []string {
	start := strings.Index(out, "A short tour")
	end := strings.Index(out, "Ctrl-C stops")
	if start < 0 || end < start {
		return nil
	}
	var cmds []string
	var cur strings.Builder
	for _, line := range strings.Split(out[start:end], "\n")[1:] {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmds = append(cmds, cur.String())
		cur.Reset()
	}
	return cmds
}

func TestTheTourOfMakeRun(t *testing.T) {
	root := repoRoot(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/harvest-proxy", "./cmd/harvest-worker", "./cmd/harvest-seed")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the binaries: %v\n%s", err, out)
	}

	prefix := testbed.RedisPrefix(t, "tour")
	vhost := ownVhost(t)

	// The sample rules send order events to a webhook: this one records them.
	var hookMu sync.Mutex
	var hooks []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hooks = append(hooks, r.Header.Get("X-Harvest-Signature")+" "+string(body))
		hookMu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)

	runDir := t.TempDir()
	emu := freeAddr(t)
	proxyAddr, admin, workerAdmin := freeAddr(t), freeAddr(t), freeAddr(t)
	cmd := exec.Command("bash", "deploy/run.sh")
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FIRESTORE_EMULATOR_HOST=") && !strings.HasPrefix(kv, "REDIS_URL=") && !strings.HasPrefix(kv, "RABBITMQ_URL=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"HARVEST_BIN="+bin,
		"HARVEST_RUN_DIR="+runDir,
		"HARVEST_EMULATOR_PORT="+emu[strings.LastIndexByte(emu, ':')+1:],
		"HARVEST_LISTEN="+proxyAddr,
		"HARVEST_ADMIN_LISTEN="+admin,
		"HARVEST_WORKER_ADMIN_LISTEN="+workerAdmin,
		"HARVEST_OUTBOX_DIR="+filepath.Join(runDir, "outbox"),
		"HARVEST_KEY_PREFIX="+prefix,
		"REDIS_URL=redis://127.0.0.1:6379/0",
		"RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/"+url.PathEscape(vhost),
		"ORDER_WEBHOOK_URL="+hook.URL,
		"WEBHOOK_SECRET=tour-secret",
	)
	var out testbed.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) // Ctrl-C, as a newcomer stops it
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("run.sh did not stop within 30 s of Ctrl-C")
		}
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), "Ctrl-C stops") {
		select {
		case err := <-exited:
			t.Fatalf("run.sh exited before the stack was up: %v\n%s", err, out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stack was not up within 3 minutes:\n%s", out.String())
		}
	}
	for _, says := range []string{"L2 cache and cross-replica invalidation on", "events are published to the RabbitMQ", "seeding project"} {
		if !strings.Contains(out.String(), says) {
			t.Errorf("run.sh did not say %q:\n%s", says, out.String())
		}
	}

	cmds := tourCommands(out.String())
	// What each tour command must print, in order.
	expect := []struct {
		contains []string
		retry    bool // the event reaches the worker asynchronously
	}{
		{contains: []string{"X-Cache: MISS"}},
		{contains: []string{"X-Cache: HIT-L1"}},
		{contains: []string{`"doubleValue": 1.99`}},
		{contains: []string{"X-Cache: MISS", "1.99"}},
		{contains: []string{"users/user-01/orders/tour-1", "placed"}},
		{contains: []string{"firestore event", "documents/users/user-01/orders/tour-1"}, retry: true},
		{contains: []string{`"HIT-L1": 1`, `"billed_reads_avoided": 1`}},
	}
	if len(cmds) != len(expect) {
		t.Fatalf("the tour has %d commands, the test knows %d:\n%s", len(cmds), len(expect), strings.Join(cmds, "\n"))
	}
	for i, c := range cmds {
		var got string
		for attempt := 0; ; attempt++ {
			b, _ := exec.Command("bash", "-c", c).CombinedOutput()
			got = string(b)
			ok := true
			for _, want := range expect[i].contains {
				ok = ok && strings.Contains(got, want)
			}
			if ok {
				break
			}
			if !expect[i].retry || attempt == 100 {
				t.Fatalf("tour command %d\n  %s\nprinted\n%s\nwant it to contain %q\nrun.sh output:\n%s", i+1, c, got, expect[i].contains, out.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// The order's event also reached the sample's signed webhook.
	for attempt := 0; ; attempt++ {
		hookMu.Lock()
		n := len(hooks)
		var first string
		if n > 0 {
			first = hooks[0]
		}
		hookMu.Unlock()
		if n > 0 {
			if !strings.HasPrefix(first, "sha256=") || !strings.Contains(first, "orders/tour-1") {
				t.Errorf("webhook got %q; want a signed CloudEvent for the order", first)
			}
			break
		}
		if attempt == 100 {
			t.Fatal("the order's event never reached the webhook")
		}
		time.Sleep(200 * time.Millisecond)
	}

	stop()
	if c, err := net.DialTimeout("tcp", emu, time.Second); err == nil {
		c.Close()
		t.Errorf("the emulator still listens on %s after Ctrl-C: run.sh left it running", emu)
	}
}
