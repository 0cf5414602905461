package webchannel

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Kind is what a channel request asks of the server, told by its method and query.
type Kind uint8

const (
	// Open is the session-opening forward POST (no SID).
	Open Kind = iota + 1
	// ForwardPost is a forward-channel POST of an open session: messages for the server.
	ForwardPost
	// Backchannel is the hanging GET (RID=rpc) that carries the server's arrays.
	Backchannel
	// Terminate is TYPE=terminate: the client closed the channel (a GET from an image,
	// or a POST from navigator.sendBeacon).
	Terminate
)

// Request is a channel request's protocol parameters.
type Request struct {
	Kind Kind
	// SID is the session id (ForwardPost, Backchannel, Terminate).
	SID string
	// AID is the last array id the client received, which acknowledges every array up
	// to it; -1 when the request carries none.
	AID int64
	// Streaming is CI=0 on a Backchannel: the answer stays open, chunk after chunk;
	// false is CI=1 (buffered, long-poll: one answer per GET).
	Streaming bool
	// LongPoll is TO (milliseconds) on a long-poll Backchannel: how long the client
	// lets the server hold an empty GET; 0 when absent.
	LongPoll time.Duration
}

// ProtocolVersion is the WebChannel wire version this package speaks (VER).
const ProtocolVersion = 8

// ErrRequest is wrapped by every error of ParseRequest.
var ErrRequest = errors.New("webchannel: not a WebChannel request")

func requestErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRequest}, a...)...)
}

// maxArrayID bounds array ids: JavaScript numbers are exact up to 2^53.
const maxArrayID = 1 << 53

// ParseRequest reads a channel request's method and raw query. It returns the query's
// parameters too (for a session's opening request, what the client put there:
// database, ...). Its errors describe the shape, never the content.
func ParseRequest(method, rawQuery string) (Request, url.Values, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return Request{}, nil, requestErr("the query is not form-encoded")
	}
	for name, vs := range q {
		switch name {
		case "SID", "RID", "AID", "CI", "TYPE", "TO", "VER":
			if len(vs) != 1 {
				return Request{}, nil, requestErr("%s given %d times", name, len(vs))
			}
		}
	}
	if v, ok := q["VER"]; ok && v[0] != strconv.Itoa(ProtocolVersion) {
		return Request{}, nil, requestErr("unsupported VER (this server speaks %d)", ProtocolVersion)
	}
	r := Request{AID: -1}
	if aid, ok := q["AID"]; ok {
		n, err := strconv.ParseInt(aid[0], 10, 64)
		if err != nil || n < -1 || n > maxArrayID {
			return Request{}, nil, requestErr("AID is not an array id")
		}
		r.AID = n
	}
	sid, hasSID := q["SID"]
	if hasSID {
		r.SID = sid[0]
		if r.SID == "" || len(r.SID) > 128 {
			return Request{}, nil, requestErr("SID is not a session id")
		}
	}
	typ := q.Get("TYPE")
	switch {
	case typ == "terminate":
		if !hasSID {
			return Request{}, nil, requestErr("terminate without SID")
		}
		r.Kind = Terminate // GET from an image, POST from sendBeacon
	case method == "POST" && !hasSID:
		if typ != "" && typ != "init" || q.Has("$req") {
			return Request{}, nil, requestErr("unsupported handshake (fastHandshake or TYPE)")
		}
		r.Kind = Open
	case method == "POST":
		if typ != "" {
			return Request{}, nil, requestErr("unexpected TYPE on a forward request")
		}
		r.Kind = ForwardPost
	case method == "GET" && hasSID && q.Get("RID") == "rpc":
		if typ != "xmlhttp" {
			return Request{}, nil, requestErr("backchannel TYPE is not xmlhttp")
		}
		switch q.Get("CI") {
		case "0", "":
			r.Streaming = true
		case "1":
		default:
			return Request{}, nil, requestErr("CI is neither 0 nor 1")
		}
		if to, ok := q["TO"]; ok {
			ms, err := strconv.ParseInt(to[0], 10, 64)
			if err != nil || ms <= 0 || ms > int64(24*time.Hour/time.Millisecond) {
				return Request{}, nil, requestErr("TO is not a timeout in milliseconds")
			}
			r.LongPoll = time.Duration(ms) * time.Millisecond
		}
		r.Kind = Backchannel
	default:
		return Request{}, nil, requestErr("neither a handshake, a forward POST, a backchannel nor a terminate")
	}
	return r, q, nil
}
