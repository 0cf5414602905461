package cache

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleEntry() *Entry {
	t0 := time.Unix(1_700_000_000, 123456789)
	return &Entry{
		Status: 200, Body: []byte(`{"name":"projects/p/databases/(default)/documents/products/p1"}`),
		ContentType: "application/json; charset=UTF-8",
		StoredAt:    t0, FreshUntil: t0.Add(30 * time.Second), StaleUntil: t0.Add(90 * time.Second),
		Docs: 3,
		Tags: []string{"doc:projects/p/databases/(default)/documents/products/p1", "all:projects/p/databases/(default)"},
		Gens: []uint64{1_700_000_000_123_456, 0},
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for name, e := range map[string]*Entry{
		"full":     sampleEntry(),
		"negative": {Status: 404, Body: []byte(`{"error":{}}`), StaleUntil: time.Unix(5, 0)},
		"empty":    {Status: 200},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := e.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Entry
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if got.Status != e.Status || !bytes.Equal(got.Body, e.Body) || got.ContentType != e.ContentType ||
				!got.StoredAt.Equal(e.StoredAt) || !got.FreshUntil.Equal(e.FreshUntil) || !got.StaleUntil.Equal(e.StaleUntil) ||
				got.Docs != e.Docs || !reflect.DeepEqual(got.Tags, e.Tags) || !reflect.DeepEqual(got.Gens, e.Gens) {
				t.Fatalf("round trip changed the entry:\n got %+v\nwant %+v", got, *e)
			}
			if got.Size() != e.Size() {
				t.Errorf("Size %d after round trip, %d before", got.Size(), e.Size())
			}
			b[len(b)-1] ^= 0xff // decoded body must not alias the input
			if len(e.Body) > 0 && !bytes.Equal(got.Body, e.Body) {
				t.Error("decoded Body aliases the input buffer")
			}
		})
	}
}

func TestEntryUnmarshalRejectsGarbage(t *testing.T) {
	good, err := sampleEntry().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Every strict prefix of a valid encoding is truncated, hence an error.
	for n := 0; n < len(good); n++ {
		var e Entry
		if err := e.UnmarshalBinary(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: err %v, want ErrCorrupt", n, len(good), err)
		}
	}
	cases := map[string][]byte{
		"wrong version":   append([]byte{9}, good[1:]...),
		"trailing bytes":  append(append([]byte(nil), good...), 0),
		"status 0":        {1, 0},
		"huge tag count":  {1, 200, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge body len":   {1, 200, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"overlong varint": {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	for name, b := range cases {
		var e Entry
		if err := e.UnmarshalBinary(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	var e Entry
	if _, err := (&Entry{Tags: []string{"a"}}).MarshalBinary(); err == nil {
		t.Error("marshal with tags but no gens succeeded")
	}
	_ = e
}

func FuzzEntryUnmarshal(f *testing.F) {
	good, _ := sampleEntry().MarshalBinary()
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1, 200, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Entry
		if err := e.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		// Whatever decodes must encode back to an equivalent entry.
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var again Entry
		if err := again.UnmarshalBinary(b); err != nil {
			t.Fatalf("re-encoding does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("unstable round trip:\n%+v\n%+v", e, again)
		}
	})
}
