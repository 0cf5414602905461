package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// InstallHint names the Debian packages that provide the emulator and a Java runtime.
const InstallHint = "apt-get install google-cloud-cli-firestore-emulator openjdk-17-jre-headless"

// emulatorMainClass is the entry point inside the emulator's jar; the jar has no
// main manifest, so `java -jar` does not work.
const emulatorMainClass = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"

// startTimeout bounds how long StartEmulator waits for "GET /" to answer; the emulator
// usually needs 2-6 s, more on a loaded machine.
const startTimeout = 60 * time.Second

// EmulatorProcess is a running Firestore emulator started by StartEmulator.
type EmulatorProcess struct {
	// Addr is "127.0.0.1:port".
	Addr string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has been reaped
	waitErr  error         // valid after exited is closed
	output   *tailBuffer
	stopOnce sync.Once
}

// FindEmulatorJar locates the emulator jar: under $CLOUDSDK_ROOT_DIR, then the SDK root
// that `gcloud info` reports, then the Debian package locations.
func FindEmulatorJar() (string, error) {
	const rel = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
	var roots []string
	if r := os.Getenv("CLOUDSDK_ROOT_DIR"); r != "" {
		roots = append(roots, r)
	}
	if gcloud, err := exec.LookPath("gcloud"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, gcloud, "info", "--format=value(installation.sdk_root)").Output()
		cancel()
		if r := strings.TrimSpace(string(out)); err == nil && r != "" {
			roots = append(roots, r)
		}
	}
	roots = append(roots, "/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk")
	for _, r := range roots {
		jar := filepath.Join(r, rel)
		if _, err := os.Stat(jar); err == nil {
			return jar, nil
		}
	}
	return "", fmt.Errorf("firestore emulator jar not found (looked for %s under %s); install it: %s",
		rel, strings.Join(roots, ", "), InstallHint)
}

func findJava() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if p := filepath.Join(home, "bin", "java"); isExecutable(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("java not found on PATH; install it: %s", InstallHint)
	}
	return p, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// StartEmulator starts the Firestore emulator on 127.0.0.1:port (port 0: a free port)
// and returns once it answers "GET /". The Java process runs in its own process group
// and gets SIGKILL if the calling program dies; Stop kills it. log receives the
// emulator's lifecycle (not its output, which is kept for error messages); nil discards.
func StartEmulator(ctx context.Context, port int, log *slog.Logger) (*EmulatorProcess, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	jar, err := FindEmulatorJar()
	if err != nil {
		return nil, err
	}
	java, err := findJava()
	if err != nil {
		return nil, err
	}
	// A free port found by listening and closing can be taken by someone else before
	// Java binds it; retry a couple of times with a fresh port when we picked it.
	attempts := 1
	if port == 0 {
		attempts = 3
	}
	var lastErr error
	for i := 0; i < attempts; i++ {
		p := port
		if p == 0 {
			if p, err = freePort(); err != nil {
				return nil, err
			}
		}
		proc, err := startEmulatorOnce(ctx, java, jar, p, log)
		if err == nil {
			return proc, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startEmulatorOnce(ctx context.Context, java, jar string, port int, log *slog.Logger) (*EmulatorProcess, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	proc := &EmulatorProcess{Addr: addr, exited: make(chan struct{}), output: &tailBuffer{max: 16 << 10}}
	cmd := exec.Command(java, "-Duser.language=en", "-cp", jar, emulatorMainClass,
		"start", "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	cmd.Stdout = proc.output
	cmd.Stderr = proc.output
	// Own process group, so Stop can kill Java and anything it forks; Pdeathsig so
	// the kernel kills it when the thread that forked it dies (the test binary exits
	// or is killed).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	proc.cmd = cmd

	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the forking *thread* exits, not the process: keep this
		// goroutine on its thread for as long as the emulator lives.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(proc.exited)
			return
		}
		started <- nil
		proc.waitErr = cmd.Wait()
		close(proc.exited)
		// Returning while locked terminates the thread; that is fine, the child is gone.
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start firestore emulator (%s): %w", java, err)
	}
	log.Info("firestore emulator starting", "addr", addr, "pid", cmd.Process.Pid)

	if err := waitReady(ctx, proc); err != nil {
		proc.Stop()
		return nil, fmt.Errorf("firestore emulator on %s: %w; its output:\n%s", addr, err, proc.output.String())
	}
	log.Info("firestore emulator ready", "addr", addr)
	return proc, nil
}

func waitReady(ctx context.Context, proc *EmulatorProcess) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if answersOk(ctx, client, "http://"+proc.Addr+"/") {
			return nil
		}
		select {
		case <-proc.exited:
			return fmt.Errorf("exited before answering: %v", proc.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not answering GET / after %s: %w", startTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// answersOk reports whether GET url answers 200 "Ok", the emulator's health answer.
func answersOk(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "Ok"
}

// Stop kills the emulator's process group and waits until the process is reaped.
// It is safe to call more than once and concurrently.
func (p *EmulatorProcess) Stop() {
	p.stopOnce.Do(func() {
		if p.cmd.Process != nil {
			// The emulator keeps everything in memory: nothing to flush, so SIGKILL.
			if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				_ = p.cmd.Process.Kill()
			}
		}
		<-p.exited
	})
}

// Output is the tail of what the emulator printed, for diagnostics.
func (p *EmulatorProcess) Output() string { return p.output.String() }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
