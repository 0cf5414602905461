package webchannel

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// DefaultMaxChunk bounds the chunk a Splitter holds while it waits for the rest of it
// (in UTF-16 code units, as the length prefix counts). A longer prefix is taken for a
// broken frame and the stream passes through from there.
const DefaultMaxChunk = 64 << 20

// Segment is a run of backchannel bytes to forward, in order.
type Segment struct {
	// Raw is the bytes exactly as the upstream sent them: a whole chunk (its length
	// line included) or, once the framing is broken, whatever came.
	Raw []byte
	// Chunk is the JSON text of a whole chunk (Raw without its length line); nil for
	// passthrough bytes.
	Chunk []byte
}

// Splitter cuts a backchannel byte stream into its length-prefixed chunks. Bytes come
// in reads of any size: a chunk split across reads is held until it is complete, reads
// holding several chunks yield several segments. When a length line is not one (not
// decimal, too long, a chunk larger than MaxChunk, a length that ends inside a
// character) the Splitter breaks: what it held and everything after passes through as
// Raw segments with no Chunk. The zero value is ready to use.
//
// A Splitter is not safe for concurrent use. The slices it returns are valid until the
// next call.
type Splitter struct {
	// MaxChunk overrides DefaultMaxChunk when > 0.
	MaxChunk int
	held     []byte
	out      []Segment
	broken   bool
}

// Broken reports whether the framing broke: from then on bytes pass through uncut.
func (s *Splitter) Broken() bool { return s.broken }

// Held is how many bytes wait for the rest of their chunk.
func (s *Splitter) Held() int { return len(s.held) }

// Feed adds the next bytes of the stream and returns the segments now complete. The
// segments may alias p and the Splitter's buffer: use them before the next Feed and
// before p is reused.
func (s *Splitter) Feed(p []byte) []Segment {
	s.out = s.out[:0]
	if s.broken {
		if len(p) > 0 {
			s.out = append(s.out, Segment{Raw: p})
		}
		return s.out
	}
	if len(s.held) == 0 {
		// The common case: whole chunks in one read, cut from p without a copy.
		if rest := s.cut(p); len(rest) > 0 {
			s.held = append(s.held, rest...)
		}
		return s.out
	}
	s.held = append(s.held, p...)
	rest := s.cut(s.held)
	switch {
	case s.broken || len(rest) == 0:
		s.held = nil // the segments own the old buffer now
	case len(s.out) > 0:
		s.held = append([]byte(nil), rest...)
	}
	return s.out
}

// cut appends the complete chunks at the front of b to s.out and returns the torn rest
// (or breaks, appending the rest as passthrough).
func (s *Splitter) cut(b []byte) []byte {
	for len(b) > 0 {
		n, body, ok, bad := s.next(b)
		if bad {
			s.broken = true
			s.out = append(s.out, Segment{Raw: b})
			return nil
		}
		if !ok {
			return b
		}
		s.out = append(s.out, Segment{Raw: b[:n:n], Chunk: body})
		b = b[n:]
	}
	return nil
}

// next reads one chunk at the front of b: its whole length n and its JSON body, or
// ok=false when b holds only part of it, or bad when b's front is not a chunk.
func (s *Splitter) next(b []byte) (n int, body []byte, ok, bad bool) {
	const maxDigits = 10
	nl := bytes.IndexByte(b[:min(len(b), maxDigits+1)], '\n')
	if nl < 0 {
		if len(b) > maxDigits || !isDigits(string(b)) {
			return 0, nil, false, true
		}
		return 0, nil, false, false // the length line is still coming
	}
	if !isDigits(string(b[:nl])) {
		return 0, nil, false, true
	}
	units, _ := strconv.Atoi(string(b[:nl]))
	limit := s.MaxChunk
	if limit <= 0 {
		limit = DefaultMaxChunk
	}
	if units > limit {
		return 0, nil, false, true
	}
	start := nl + 1
	end, complete, torn := skipUTF16(b[start:], units)
	if torn {
		return 0, nil, false, true
	}
	if !complete {
		return 0, nil, false, false
	}
	return start + end, b[start : start+end], true, false
}

// skipUTF16 returns how many bytes of the UTF-8 text p hold its first units UTF-16 code
// units (JavaScript's string length): complete=false when p ends first, torn when the
// count ends inside a surrogate pair. An invalid byte counts as one unit, as a decoder
// replaces it by U+FFFD.
func skipUTF16(p []byte, units int) (n int, complete, torn bool) {
	for units > 0 {
		if n >= len(p) {
			return n, false, false
		}
		c := p[n]
		if c < utf8.RuneSelf {
			n++
			units--
			continue
		}
		if !utf8.FullRune(p[n:]) {
			return n, false, false // the rest of the character is still coming
		}
		r, size := utf8.DecodeRune(p[n:])
		u := 1
		if r > 0xFFFF {
			u = 2
		}
		if u > units {
			return n, false, true
		}
		n += size
		units -= u
	}
	return n, true, false
}

// AppendChunk appends text (JSON) framed as one backchannel chunk: its length in UTF-16
// code units (what the client's JavaScript counts), "\n", then the text. text must be
// valid UTF-8.
func AppendChunk(dst, text []byte) []byte {
	dst = strconv.AppendInt(dst, int64(UTF16Len(text)), 10)
	dst = append(dst, '\n')
	return append(dst, text...)
}

// UTF16Len is the length of the UTF-8 text p in UTF-16 code units (JavaScript's string
// length): one per character, two for a character beyond U+FFFF, one per invalid byte
// (which a decoder replaces by U+FFFD).
func UTF16Len(p []byte) int {
	n := 0
	for i := 0; i < len(p); {
		if p[i] < utf8.RuneSelf {
			i++
			n++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		i += size
		n++
		if r > 0xFFFF {
			n++
		}
	}
	return n
}

// Rest returns the bytes still held at the end of the stream (a torn chunk the
// upstream never finished), to forward as they are.
func (s *Splitter) Rest() []byte {
	r := s.held
	s.held = nil
	return r
}

// Entry is one [arrayId, payload] element of a chunk.
type Entry struct {
	ArrayID int64
	// Payload is the array after the id: [message] for data, ["noop"] and the like for
	// control.
	Payload []json.RawMessage
}

// ErrChunk is wrapped by every error of ParseChunk.
var ErrChunk = errors.New("webchannel: a backchannel chunk is not an array of [arrayId, payload]")

// ParseChunk parses a chunk's JSON text into its entries.
func ParseChunk(chunk []byte) ([]Entry, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(chunk, &raw); err != nil {
		return nil, ErrChunk
	}
	entries := make([]Entry, 0, len(raw))
	for _, r := range raw {
		var pair []json.RawMessage
		if err := json.Unmarshal(r, &pair); err != nil || len(pair) != 2 {
			return nil, ErrChunk
		}
		var id int64
		if err := json.Unmarshal(pair[0], &id); err != nil || id < 0 {
			return nil, ErrChunk
		}
		var payload []json.RawMessage
		if err := json.Unmarshal(pair[1], &payload); err != nil {
			return nil, ErrChunk
		}
		entries = append(entries, Entry{ArrayID: id, Payload: payload})
	}
	return entries, nil
}

// Control returns the name of a control payload (["noop"], ["stop"], ["close"],
// ["c",...]) and true; false for data.
func (e Entry) Control() (string, bool) {
	if len(e.Payload) == 0 {
		return "", false
	}
	var name string
	if json.Unmarshal(e.Payload[0], &name) != nil {
		return "", false
	}
	return name, true
}

// Message returns a data payload's message (a JSON object), and false for control or
// anything else.
func (e Entry) Message() (json.RawMessage, bool) {
	if len(e.Payload) != 1 {
		return nil, false
	}
	m := bytes.TrimLeft(e.Payload[0], " \t\r\n")
	if len(m) == 0 || m[0] != '{' && m[0] != '[' {
		return nil, false
	}
	return e.Payload[0], true
}

// SessionID returns the SID a session-opening answer announces (["c", SID, ...]).
func SessionID(entries []Entry) (string, bool) {
	for _, e := range entries {
		if name, ok := e.Control(); ok && name == "c" && len(e.Payload) >= 2 {
			var sid string
			if json.Unmarshal(e.Payload[1], &sid) == nil && sid != "" {
				return sid, true
			}
		}
	}
	return "", false
}
