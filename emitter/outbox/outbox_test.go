package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string, maxBytes int64, opt Options) *Outbox {
	t.Helper()
	o, err := Open(dir, maxBytes, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func appendN(t *testing.T, o *Outbox, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := o.Append([][]byte{[]byte(fmt.Sprintf("record-%04d", i))}); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

// readAll reads every record Next hands out.
func readAll(t *testing.T, o *Outbox) []Record {
	t.Helper()
	var all []Record
	for {
		recs, err := o.Next(7, 1<<20)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
	}
}

func wantRecords(t *testing.T, got []Record, from, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d records, want %d", len(got), n)
	}
	for i, r := range got {
		want := fmt.Sprintf("record-%04d", from+i)
		if string(r.Data) != want || r.Seq != uint64(from+i) {
			t.Fatalf("record %d = seq %d %q, want seq %d %q", i, r.Seq, r.Data, from+i, want)
		}
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReopenKeepsUnconfirmedAndCursor(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0, Options{})
	appendN(t, o, 0, 10)
	recs, err := o.Next(4, 1<<20)
	if err != nil || len(recs) != 4 {
		t.Fatalf("Next: %d records, %v", len(recs), err)
	}
	if err := o.Confirm(recs[3].Seq + 1); err != nil {
		t.Fatal(err)
	}
	// Read further without confirming: a restart must hand these out again.
	if _, err := o.Next(3, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}

	o2 := open(t, dir, 0, Options{})
	if p := o2.Pending(); p != 6 {
		t.Fatalf("Pending after reopen = %d, want 6", p)
	}
	wantRecords(t, readAll(t, o2), 4, 6)
	appendN(t, o2, 10, 2)
	wantRecords(t, readAll(t, o2), 10, 2)
}

func TestCrashWithoutCloseLosesNothing(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, 0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 0, 5)
	// No Close: the process "dies" here; Append's fsync is all there is. Its death
	// releases the lock.
	o.lock.Close()
	o2 := open(t, dir, 0, Options{})
	wantRecords(t, readAll(t, o2), 0, 5)
}

func TestTornTailIsTruncated(t *testing.T) {
	for name, damage := range map[string]func(t *testing.T, path string){
		"partial header": func(t *testing.T, path string) { appendBytes(t, path, []byte{9, 0}) },
		"partial payload": func(t *testing.T, path string) {
			appendBytes(t, path, []byte{50, 0, 0, 0, 1, 2, 3, 4, 'x', 'y'})
		},
		"bad checksum": func(t *testing.T, path string) {
			appendBytes(t, path, []byte{2, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 'h', 'i'})
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, dir, 0, Options{})
			appendN(t, o, 0, 3)
			o.Close()
			segs := segments(t, dir)
			if len(segs) != 1 {
				t.Fatalf("segments: %v", segs)
			}
			before := fileSize(t, segs[0])
			damage(t, segs[0])

			o2 := open(t, dir, 0, Options{})
			if got := fileSize(t, segs[0]); got != before {
				t.Fatalf("segment is %d bytes after open, want the torn tail cut back to %d", got, before)
			}
			if p := o2.Pending(); p != 3 {
				t.Fatalf("Pending = %d, want 3", p)
			}
			// Appends after the repair land on clean ground and read back.
			appendN(t, o2, 3, 1)
			o2.Close()
			o3 := open(t, dir, 0, Options{})
			wantRecords(t, readAll(t, o3), 0, 4)
		})
	}
}

func TestCorruptSealedSegmentRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0, Options{SegmentBytes: 64})
	appendN(t, o, 0, 20)
	o.Close()
	segs := segments(t, dir)
	if len(segs) < 2 {
		t.Fatalf("want several segments, got %v", segs)
	}
	b, _ := os.ReadFile(segs[0])
	b[len(b)-1] ^= 0xff
	os.WriteFile(segs[0], b, 0o644)
	if _, err := Open(dir, 0, Options{}); err == nil {
		t.Fatal("Open accepted a corrupt record in a sealed segment (it would drop confirmed-durable data)")
	}
}

func TestSegmentsDeletedOnlyWhenConfirmed(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0, Options{SegmentBytes: 100})
	appendN(t, o, 0, 30) // 19 bytes a record: 6 per segment
	n := len(segments(t, dir))
	if n < 4 {
		t.Fatalf("want several segments, got %d", n)
	}
	all := readAll(t, o)
	wantRecords(t, all, 0, 30)
	if err := o.Confirm(8); err != nil { // covers the first segment (0-5) only
		t.Fatal(err)
	}
	if got := len(segments(t, dir)); got != n-1 {
		t.Fatalf("after confirming 8 records: %d segments, want %d", got, n-1)
	}
	o.Rewind()
	wantRecords(t, readAll(t, o), 8, 22)
	if err := o.Confirm(30); err != nil {
		t.Fatal(err)
	}
	if got := segments(t, dir); len(got) != 0 || o.Bytes() != 0 || o.Pending() != 0 {
		t.Fatalf("all confirmed: segments %v, bytes %d, pending %d", got, o.Bytes(), o.Pending())
	}
	appendN(t, o, 30, 2)
	o.Close()
	o2 := open(t, dir, 0, Options{})
	wantRecords(t, readAll(t, o2), 30, 2)
}

func TestConcurrentAppendsKeepEachAppendersOrder(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 0, Options{SegmentBytes: 4096})
	const writers, each = 16, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := o.Append([][]byte{[]byte(fmt.Sprintf("%02d:%03d", w, i))}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	// The consumer reads (and confirms) while appenders append.
	next := make([]int, writers)
	total := 0
	for total < writers*each {
		recs, err := o.Next(50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			var w, i int
			fmt.Sscanf(string(r.Data), "%d:%d", &w, &i)
			if i != next[w] {
				t.Fatalf("writer %d: got record %d, want %d", w, i, next[w])
			}
			next[w]++
			total++
		}
		if len(recs) > 0 {
			if err := o.Confirm(recs[len(recs)-1].Seq + 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if o.Pending() != 0 {
		t.Fatalf("Pending = %d after reading and confirming everything", o.Pending())
	}
}

func TestFull(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, 200, Options{})
	for i := 0; !o.Full(); i++ {
		if i > 100 {
			t.Fatal("never became full")
		}
		appendN(t, o, i, 1)
	}
	// Still accepts: events of an admitted write are never refused for size.
	appendN(t, o, 1000, 1)
	readAll(t, o)
	if err := o.Confirm(uint64(o.Pending())); err != nil {
		t.Fatal(err)
	}
	if o.Full() {
		t.Fatalf("still Full after everything was confirmed (bytes %d)", o.Bytes())
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A second Outbox on a directory in use is refused, naming the holder; once the first
// closes, the directory can be opened again.
func TestOneOwnerPerDirectory(t *testing.T) {
	dir := t.TempDir()
	first := open(t, dir, 0, Options{})
	_, err := Open(dir, 0, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open of a directory in use: %v, want ErrLocked", err)
	}
	host, _ := os.Hostname()
	if want := fmt.Sprintf("pid %d on host %s", os.Getpid(), host); !strings.Contains(err.Error(), want) {
		t.Errorf("refusal %q does not name the holder (%s)", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, dir, 0, Options{}).Close()
}
