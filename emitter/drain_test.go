package emitter

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/emitter/outbox"
	"github.com/harvest-hub/edge/internal/testbed"
	"github.com/harvest-hub/edge/rules"
)

// A record that passes its checksum but does not decode is set aside (quarantine/,
// counted, logged), and the events behind it are delivered: it neither blocks the
// outbox forever nor disappears without a trace.
func TestUndecodableRecordIsQuarantined(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	dir := t.TempDir()
	box, err := outbox.Open(dir, 0, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var recs [][]byte
	for s := 1; s <= 3; s++ {
		recs = append(recs, encode(docEvent(t, "q", s)))
	}
	bad := []byte{99, 1, 2, 3} // a format version this build does not know
	recs = append(recs[:1], append([][]byte{bad}, recs[1:]...)...)
	if err := box.Append(recs); err != nil {
		t.Fatal(err)
	}
	box.Close()

	deliveries := subscribe(t, exchange)
	e, _ := newEmitter(t, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: dir})
	got := collect(t, deliveries, 3)
	for s := 1; s <= 3; s++ {
		if _, ok := got[docEvent(t, "q", s).ID]; !ok {
			t.Errorf("event %d behind the bad record was not delivered", s)
		}
	}
	waitFor(t, "the outbox to empty", func() bool { return e.Pending() == 0 })
	kept, err := os.ReadFile(filepath.Join(dir, "quarantine", "00000000000000000001.rec"))
	if err != nil || string(kept) != string(bad) {
		t.Errorf("quarantined record: %q, %v; want the bad record's bytes", kept, err)
	}
	if n := counterValue(t, e.metrics.quarantined); n != 1 {
		t.Errorf("harvest_events_quarantined_total = %v, want 1", n)
	}
}

// Close publishes what the outbox holds while the broker is connected, rather than
// leaving it for a next start that may never come.
func TestCloseDrainsTheOutbox(t *testing.T) {
	exchange := testbed.UniqueName("test.events")
	dir := t.TempDir()
	deliveries := subscribe(t, exchange)
	e, _ := newEmitter(t, rules.Events{AMQPURL: brokerURL, Exchange: exchange, OutboxDir: dir})
	waitConnected(t, e)
	var want []event.Event
	for s := 1; s <= 50; s++ {
		want = append(want, docEvent(t, "c", s))
	}
	// Straight into the outbox, behind the drainer's back (it is idle and not nudged).
	recs := make([][]byte, len(want))
	for i := range want {
		recs[i] = encode(want[i])
	}
	if err := e.box.Append(recs); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	box, err := outbox.Open(dir, 0, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	if p := box.Pending(); p != 0 {
		t.Fatalf("Close left %d events in the outbox with the broker connected", p)
	}
	collect(t, deliveries, len(want))
}

// waitFor polls cond (the bound only keeps a broken test from hanging).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
