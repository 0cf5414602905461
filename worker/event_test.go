package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/harvest-hub/edge/rules"
)

func TestParseEventDerivesDocumentAndCollectionFromSubject(t *testing.T) {
	body := []byte(`{"specversion":"1.0","id":"e1","source":"//firestore.googleapis.com/projects/p/databases/(default)",
		"type":"google.cloud.firestore.document.v1.updated","subject":"documents/farmers/f1/products/p9",
		"time":"2031-05-06T07:08:09.123Z","authhash":"abc","data":{"value":{}}}`)
	ev, err := ParseEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Document != "farmers/f1/products/p9" || ev.Collection != "products" || ev.Operation() != "updated" ||
		ev.AuthHash != "abc" || !ev.Time.Equal(time.Date(2031, 5, 6, 7, 8, 9, 123e6, time.UTC)) || string(ev.Raw) != string(body) {
		t.Errorf("parsed %+v", ev)
	}
}

func TestParseEventRefusesWhatIsNotACloudEvent(t *testing.T) {
	for _, body := range []string{
		``, `[]`, `not json`,
		`{"id":"1","source":"s","type":"t"}`,                     // no specversion
		`{"specversion":"0.3","id":"1","source":"s","type":"t"}`, // wrong version
		`{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday"}`,
	} {
		if _, err := ParseEvent([]byte(body)); !errors.Is(err, ErrNotCloudEvent) {
			t.Errorf("ParseEvent(%q) = %v, want ErrNotCloudEvent", body, err)
		}
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	h := rules.Handler{Backoff: time.Second, MaxBackoff: 5 * time.Second, MaxAttempts: 6}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for n, w := range want {
		if got := delayFor(h, n+1); got != w {
			t.Errorf("delay after attempt %d = %v, want %v", n+1, got, w)
		}
	}
	ds := retryDelays(h)
	if len(ds) != 4 || ds[3] != 5*time.Second {
		t.Errorf("retry queues for %v, want 1s 2s 4s 5s", ds)
	}
	// Every delay ever used has a queue.
	for n := 1; n <= 10; n++ {
		d, found := delayFor(h, n), false
		for _, q := range ds {
			found = found || q == d
		}
		if !found {
			t.Errorf("delay %v after attempt %d has no queue", d, n)
		}
	}
}
