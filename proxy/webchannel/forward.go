package webchannel

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// MaxMapsPerPost bounds count in a forward-channel POST. closure-library sends at most
// 1000 maps a request; a larger count is not the wire.
const MaxMapsPerPost = 1000

// Forward is one forward-channel POST body.
type Forward struct {
	// Headers are the HTTP headers the client asks the server to apply for the session
	// ("headers" field of the session-opening POST), nil when absent.
	Headers http.Header
	// Maps are the messages, in map id order.
	Maps []Map
}

// Map is one message of a forward-channel POST.
type Map struct {
	// ID is the message's map id (ofs + its index): the session's sequence number, the
	// same when a failed POST is sent again.
	ID int64
	// Data is the __data__ field, the message as JSON text; nil when the map has only
	// other fields (closure's key/value maps, which Firestore's SDK never sends).
	Data []byte
}

// ErrForward is wrapped by every error of ParseForward.
var ErrForward = errors.New("webchannel: malformed forward-channel body")

func forwardErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrForward}, a...)...)
}

// ParseForward parses a forward-channel POST body (application/x-www-form-urlencoded).
// Its errors describe the shape, never the content.
func ParseForward(body []byte) (*Forward, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, forwardErr("not form-encoded")
	}
	f := &Forward{}
	if hs, ok := vals["headers"]; ok {
		if len(hs) != 1 {
			return nil, forwardErr("headers given %d times", len(hs))
		}
		if f.Headers, err = ParseHeaders(hs[0]); err != nil {
			return nil, err
		}
	}
	count, err := single(vals, "count", MaxMapsPerPost)
	if err != nil {
		return nil, err
	}
	var ofs int64
	if count > 0 || vals.Has("ofs") {
		if ofs, err = single(vals, "ofs", 1<<53); err != nil {
			return nil, err
		}
	}
	f.Maps = make([]Map, count)
	seen := make([]bool, count)
	for i := range f.Maps {
		f.Maps[i].ID = ofs + int64(i)
	}
	for key, vs := range vals {
		rest, ok := strings.CutPrefix(key, "req")
		if !ok {
			continue // count, ofs, headers, or a field a newer client adds
		}
		num, field, ok := strings.Cut(rest, "_")
		if !ok || !isDigits(num) || len(num) > 4 || field == "" {
			return nil, forwardErr("a req field is not reqN_name")
		}
		i, _ := strconv.Atoi(num)
		if int64(i) >= count {
			return nil, forwardErr("a req field's index is not below count")
		}
		if len(vs) != 1 {
			return nil, forwardErr("a req field is given %d times", len(vs))
		}
		seen[i] = true
		if field == "__data__" {
			f.Maps[i].Data = []byte(vs[0])
		}
	}
	for i, ok := range seen {
		if !ok {
			return nil, forwardErr("message %d of %d is missing", i, count)
		}
	}
	return f, nil
}

func single(vals url.Values, name string, limit int64) (int64, error) {
	vs, ok := vals[name]
	if !ok {
		return 0, forwardErr("%s is missing", name)
	}
	if len(vs) != 1 {
		return 0, forwardErr("%s given %d times", name, len(vs))
	}
	if !isDigits(vs[0]) || len(vs[0]) > 16 {
		return 0, forwardErr("%s is not a count", name)
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	if err != nil || n > limit {
		return 0, forwardErr("%s is out of range", name)
	}
	return n, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseHeaders parses closure's encoded header block: "Name:value" lines, each ended by
// CRLF (a bare LF is accepted too). Names are canonicalised as net/http does; a name may
// repeat (the caller decides what a repeated Authorization means).
func ParseHeaders(block string) (http.Header, error) {
	h := http.Header{}
	for line := range strings.SplitSeq(block, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || !validHeaderName(name) {
			return nil, forwardErr("a header line is not Name:value")
		}
		h.Add(textproto.CanonicalMIMEHeaderKey(name), strings.TrimSpace(value))
	}
	return h, nil
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
