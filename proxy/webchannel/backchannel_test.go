package webchannel

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"
)

// A backchannel of the Write channel as the Firestore emulator streamed it, plus an
// error with non-ASCII text and a control entry.
var writeStream = []string{
	"45\n[[1,[{\"streamId\":\"0\",\"streamToken\":\"MA==\"}]]]",
	"14\n[[2,[\"noop\"]]]",
	"135\n[[3,[{\"streamToken\":\"MQ==\",\"writeResults\":[{\"updateTime\":\"2026-12-05T07:40:18.878601Z\"}],\"commitTime\":\"2026-12-05T07:40:18.878601Z\"}]]]",
	frame(`[[4,[{"error":{"message":"é😀"}}]]]`),
	frame(`[[5,["c","SID","",8]]]`),
}

// frame prefixes s with its length in UTF-16 code units.
func frame(s string) string {
	return fmt.Sprintf("%d\n%s", len(utf16.Encode([]rune(s))), s)
}

func TestSplitterCountsUTF16Units(t *testing.T) {
	// "é😀" is 6 bytes and 3 UTF-16 units; the emulator's lengths count units.
	var s Splitter
	segs := s.Feed([]byte("5\n\"é😀\"3\n[1]"))
	if len(segs) != 2 || string(segs[0].Chunk) != `"é😀"` || string(segs[1].Chunk) != "[1]" || s.Broken() {
		t.Fatalf("segments %q, broken %v", segs, s.Broken())
	}
}

func feedAll(s *Splitter, in []byte, cuts []int) (raw []byte, chunks []string) {
	prev := 0
	for _, c := range append(cuts, len(in)) {
		for _, seg := range s.Feed(in[prev:c]) {
			raw = append(raw, seg.Raw...)
			if seg.Chunk != nil {
				chunks = append(chunks, string(seg.Chunk))
			}
		}
		prev = c
	}
	return append(raw, s.Rest()...), chunks
}

func wantChunks(frames []string) []string {
	var out []string
	for _, f := range frames {
		_, body, _ := strings.Cut(f, "\n")
		out = append(out, body)
	}
	return out
}

func TestSplitterEveryTwoWayCut(t *testing.T) {
	in := []byte(strings.Join(writeStream, ""))
	want := wantChunks(writeStream)
	for cut := 0; cut <= len(in); cut++ {
		var s Splitter
		raw, chunks := feedAll(&s, in, []int{cut})
		if !bytes.Equal(raw, in) {
			t.Fatalf("cut %d: bytes changed", cut)
		}
		if fmt.Sprint(chunks) != fmt.Sprint(want) || s.Broken() {
			t.Fatalf("cut %d: chunks %q (broken %v), want %q", cut, chunks, s.Broken(), want)
		}
	}
}

func TestSplitterByteByByte(t *testing.T) {
	in := []byte(strings.Join(writeStream, ""))
	cuts := make([]int, len(in))
	for i := range cuts {
		cuts[i] = i
	}
	var s Splitter
	raw, chunks := feedAll(&s, in, cuts)
	if !bytes.Equal(raw, in) || fmt.Sprint(chunks) != fmt.Sprint(wantChunks(writeStream)) {
		t.Fatalf("chunks %q", chunks)
	}
}

func TestSplitterHoldsATornChunk(t *testing.T) {
	var s Splitter
	in := []byte(writeStream[0])
	if segs := s.Feed(in[:10]); len(segs) != 0 {
		t.Fatalf("a torn chunk yielded %d segments", len(segs))
	}
	if s.Held() != 10 {
		t.Fatalf("held %d", s.Held())
	}
	segs := s.Feed(in[10:])
	if len(segs) != 1 || string(segs[0].Raw) != writeStream[0] {
		t.Fatalf("segments %q", segs)
	}
}

func TestSplitterPassesBrokenFramingThrough(t *testing.T) {
	for name, tail := range map[string]string{
		"not a length":          "<html>oops</html>",
		"length with a sign":    "+5\n[[1]]",
		"length too long":       "12345678901\n[]",
		"larger than max":       "99999\n[]",
		"ends inside surrogate": "2\n\"😀\"",
	} {
		var s Splitter
		s.MaxChunk = 1000
		in := []byte(writeStream[0] + tail + writeStream[1])
		raw, chunks := feedAll(&s, in, []int{len(writeStream[0]) + 1})
		if !bytes.Equal(raw, in) {
			t.Errorf("%s: bytes changed: %q", name, raw)
		}
		if !s.Broken() || len(chunks) != 1 {
			t.Errorf("%s: broken %v, chunks %q", name, s.Broken(), chunks)
		}
	}
}

func TestSplitterKeepsATornTailAtTheEnd(t *testing.T) {
	var s Splitter
	in := []byte(writeStream[0] + "135\n[[3,")
	raw, chunks := feedAll(&s, in, nil)
	if !bytes.Equal(raw, in) || len(chunks) != 1 {
		t.Fatalf("raw %q chunks %q", raw, chunks)
	}
}

func TestParseChunk(t *testing.T) {
	var all []Entry
	for _, body := range wantChunks(writeStream) {
		es, err := ParseChunk([]byte(body))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		all = append(all, es...)
	}
	type view struct {
		id      int64
		control string
		data    bool
	}
	var got []view
	for _, e := range all {
		c, _ := e.Control()
		_, d := e.Message()
		got = append(got, view{e.ArrayID, c, d})
	}
	want := []view{{1, "", true}, {2, "noop", false}, {3, "", true}, {4, "", true}, {5, "c", false}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	if sid, ok := SessionID(all); !ok || sid != "SID" {
		t.Fatalf("SessionID = %q %v", sid, ok)
	}
	// Several entries in one chunk, and the old server's error wrapped in an array.
	es, err := ParseChunk([]byte(`[[7,[{"a":1}]],[8,[[{"error":{}}]]]]`))
	if err != nil || len(es) != 2 || es[1].ArrayID != 8 {
		t.Fatalf("%v %v", es, err)
	}
	if m, ok := es[1].Message(); !ok || string(m) != `[{"error":{}}]` {
		t.Fatalf("wrapped error message %q %v", m, ok)
	}
}

func TestParseChunkRejects(t *testing.T) {
	for _, body := range []string{``, `{}`, `[1,2,7]`, `[[1]]`, `[["x",[]]]`, `[[-1,[]]]`, `[[1,{}]]`, `[[1.5,[]]]`} {
		if _, err := ParseChunk([]byte(body)); err == nil {
			t.Errorf("%q parsed", body)
		}
	}
}

func FuzzBackchannel(f *testing.F) {
	f.Add([]byte(strings.Join(writeStream, "")), uint16(7), uint16(100))
	f.Add([]byte("3\n[1]x"), uint16(1), uint16(2))
	f.Add([]byte("2\n\"😀\""), uint16(3), uint16(4))
	f.Fuzz(func(t *testing.T, in []byte, c1, c2 uint16) {
		a, b := int(c1)%(len(in)+1), int(c2)%(len(in)+1)
		if a > b {
			a, b = b, a
		}
		var split, whole Splitter
		raw, chunks := feedAll(&split, in, []int{a, b})
		if !bytes.Equal(raw, in) {
			t.Fatalf("bytes changed")
		}
		_, wholeChunks := feedAll(&whole, in, nil)
		// However the reads fall, the chunks are the same, except that framing broken
		// while a read was torn may be noticed later: never a different chunk.
		if !split.Broken() && !whole.Broken() && fmt.Sprint(chunks) != fmt.Sprint(wholeChunks) {
			t.Fatalf("chunks differ by read boundaries: %q vs %q", chunks, wholeChunks)
		}
		for i := 0; i < len(chunks) && i < len(wholeChunks); i++ {
			if chunks[i] != wholeChunks[i] {
				t.Fatalf("chunk %d differs", i)
			}
		}
		for _, c := range chunks {
			ParseChunk([]byte(c)) // must not panic
		}
	})
}
