package emitter

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter/intent"
	"github.com/harvest-hub/edge/rules"
)

// bigIntent writes one document with a field of size bytes.
func bigIntent(size int) *intent.Intent {
	name := "projects/p/databases/(default)/documents/items/big"
	return &intent.Intent{Op: classify.PatchDocument, Database: "projects/p/databases/(default)",
		Writes: []classify.DocWrite{{Name: name, Write: &firestorepb.Write{Operation: &firestorepb.Write_Update{
			Update: &firestorepb.Document{Name: name, Fields: map[string]*firestorepb.Value{
				"blob": {ValueType: &firestorepb.Value_StringValue{StringValue: strings.Repeat("x", size)}}}}}}}}}
}

// With the disk nearly full, Begin refuses before anything is recorded (the proxy then
// answers 503 without forwarding); with room again it admits.
func TestBeginRefusesWithoutDiskSpace(t *testing.T) {
	e, _ := newEmitter(t, rules.Events{OutboxDir: t.TempDir()})
	free := uint64(10 << 10)
	e.SetFreeSpaceFunc(func() (uint64, error) { return free, nil })
	if _, err := e.Begin(bigIntent(100)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Begin with 10 KiB free: %v, want ErrNoSpace", err)
	}
	if n := e.in.journal.OpenCount(); n != 0 {
		t.Fatalf("a refused write left %d intents recorded", n)
	}
	if n := counterValue(t, e.metrics.refused); n != 1 {
		t.Errorf("harvest_events_refused_writes_total = %v, want 1", n)
	}
	free = 1 << 30
	p, err := e.Begin(bigIntent(100))
	if err != nil {
		t.Fatalf("Begin with room: %v", err)
	}
	p.Failed()
	if n := e.in.journal.OpenCount(); n != 0 {
		t.Fatalf("a settled write left %d intents open", n)
	}
}

const envTmpfsChild = "HARVEST_TEST_TMPFS_CHILD"

// On a real, small file system (a 256 KiB tmpfs in a private mount namespace): the
// measured free space refuses writes before the disk is full, and when the disk does
// fill (free space not measured), the write's ENOSPC is Begin's error: the write is
// refused before it is forwarded, never answered with its events lost.
func TestBeginOnAFullFileSystem(t *testing.T) {
	if dir := os.Getenv(envTmpfsChild); dir != "" {
		fullFileSystemChild(t, dir)
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("this test needs unshare(1) (util-linux) to mount a private tmpfs: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(unshare, "-rm", "sh", "-c", `mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"`,
		"sh", dir, os.Args[0], "-test.run=^TestBeginOnAFullFileSystem$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envTmpfsChild+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child on a 256 KiB tmpfs: %v\n%s", err, out)
	}
}

func fullFileSystemChild(t *testing.T, dir string) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Blocks*uint64(st.Bsize) > 1<<20 {
		t.Fatalf("%s is not the small tmpfs (statfs %v, %d bytes)", dir, err, st.Blocks*uint64(st.Bsize))
	}
	e, _ := newEmitter(t, rules.Events{OutboxDir: filepath.Join(dir, "outbox")})
	admitted := 0
	var err error
	for admitted < 1000 {
		var p *Pending
		if p, err = e.Begin(bigIntent(4 << 10)); err != nil {
			break
		}
		admitted++
		_ = p // left open: its intent takes space, as a write in flight does
	}
	if !errors.Is(err, ErrNoSpace) || admitted == 0 {
		t.Fatalf("measured: %d writes admitted, then %v; want some, then ErrNoSpace", admitted, err)
	}
	open := e.in.journal.OpenCount()

	e.SetFreeSpaceFunc(func() (uint64, error) { return 1 << 40, nil }) // pretend: let the disk fill
	for i := 0; i < 1000; i++ {
		if _, err = e.Begin(bigIntent(4 << 10)); err != nil {
			break
		}
		open++
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("with the disk full, Begin: %v; want the disk's ENOSPC", err)
	}
	if n := e.in.journal.OpenCount(); n != open {
		t.Fatalf("the refused write left an intent: %d open, want %d", n, open)
	}
}
