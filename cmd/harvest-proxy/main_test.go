package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harvest-hub/edge/internal/testbed"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/rules"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRulesCheckSampleFile(t *testing.T) {
	code, out, errs := runCmd(t, "rules", "check", "../../rules.yaml")
	if code != 0 {
		t.Fatalf("rules check on the sample rules.yaml: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if !strings.Contains(out, "ok") {
		t.Errorf("rules check output %q does not say ok", out)
	}
}

func TestRulesCheckBrokenFileNamesTheLine(t *testing.T) {
	sample, err := os.ReadFile("../../rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Break the first rule's ttl: the error must name this file and that line.
	lines := strings.Split(string(sample), "\n")
	broken := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "ttl:") {
			lines[i] = strings.Replace(l, strings.TrimSpace(l), "ttl: thirty minutes", 1)
			broken = i + 1
			break
		}
	}
	if broken < 0 {
		t.Fatal("the sample rules.yaml has no ttl line to break")
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "rules", "check", path)
	if code == 0 {
		t.Fatalf("rules check accepted a broken file\nstdout: %s", out)
	}
	want := fmt.Sprintf("%s:%d:", path, broken)
	if !strings.Contains(out+errs, want) {
		t.Errorf("rules check output does not name %q:\nstdout: %s\nstderr: %s", want, out, errs)
	}

	// The proxy itself refuses to start on it, naming the same place.
	code, _, errs = runCmd(t, "-config", path, "-listen", "127.0.0.1:0", "-admin-listen", "")
	if code == 0 || !strings.Contains(errs, "refusing to start") || !strings.Contains(errs, want) {
		t.Errorf("harvest-proxy on a broken rules file: exit %d, stderr %q; want a refusal naming %s", code, errs, want)
	}
}

func TestRulesExplainNamesTheRule(t *testing.T) {
	code, out, errs := runCmd(t, "rules", "explain", "../../rules.yaml", "/farmers/f1/products/p1")
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	if !strings.Contains(out, "/farmers/{farmerId}/products/{productId}") {
		t.Errorf("explain output does not name the farmers' products rule:\n%s", out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCmd(t, "-version")
	if code != 0 || !strings.HasPrefix(out, "harvest-proxy ") {
		t.Errorf("-version: exit %d, output %q", code, out)
	}
	code, _, errs := runCmd(t, "-h")
	if code != 0 {
		t.Errorf("-h: exit %d", code)
	}
	for _, want := range []string{"-upstream", "FIRESTORE_UPSTREAM", "-redis", "REDIS_URL", "-amqp", "RABBITMQ_URL",
		"-outbox", "HARVEST_OUTBOX_DIR", "-admin-token", "HARVEST_ADMIN_TOKEN", "-listen", "HARVEST_LISTEN",
		"-admin-listen", "HARVEST_ADMIN_LISTEN", "-config", "HARVEST_CONFIG", "rules check", "rules explain", "SIGHUP"} {
		if !strings.Contains(errs, want) {
			t.Errorf("-h does not mention %q", want)
		}
	}
}

func TestStartupErrorsAreClear(t *testing.T) {
	code, _, errs := runCmd(t, "-config", filepath.Join(t.TempDir(), "missing.yaml"))
	if code == 0 || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("missing rules file: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCmd(t, "-config", "../../rules.yaml", "-upstream", "ftp://example", "-admin-listen", "",
		"-outbox", t.TempDir())
	if code == 0 || !strings.Contains(errs, "upstream") {
		t.Errorf("bad upstream URL: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCmd(t, "stray")
	if code != 2 || !strings.Contains(errs, "stray") {
		t.Errorf("stray argument: exit %d, stderr %q", code, errs)
	}
}

// Without a broker URL the emitter keeps events in the outbox directory it was given
// and says so; with one it says events go to RabbitMQ.
func TestEmitterWiring(t *testing.T) {
	dir := t.TempDir()
	var logs testbed.Output // the publisher logs from its own goroutine
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	em, err := newEmitter(rules.Events{Exchange: "firestore.events", OutboxDir: "./elsewhere"}, "", dir, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	name := "projects/p/databases/(default)/documents/orders/o1"
	evs, err := event.Build(event.BuildInput{Writes: []classify.DocWrite{{Name: name,
		Write: &firestorepb.Write{Operation: &firestorepb.Write_Delete{Delete: name}}}}, SeenAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(context.Background(), evs); err != nil {
		t.Fatalf("Emit without a broker: %v", err)
	}
	if em.Pending() != 1 {
		t.Errorf("outbox holds %d events, want 1", em.Pending())
	}
	if err := em.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) == 0 {
		t.Errorf("nothing written to the -outbox directory %s", dir)
	}
	if !strings.Contains(logs.String(), "events stay in the outbox") {
		t.Errorf("log does not say events stay in the outbox: %s", logs.String())
	}

	logs.Reset()
	em, err = newEmitter(rules.Events{}, "amqp://guest:secret@127.0.0.1:5672/", t.TempDir(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close()
	if !strings.Contains(logs.String(), "events go to RabbitMQ") || strings.Contains(logs.String(), "secret") {
		t.Errorf("log should say events go to RabbitMQ, without the password: %s", logs.String())
	}
}
