package testbed

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/proxy/grpcrelay"
	"github.com/harvest-hub/edge/proxy/webchannel"
)

// The Listen meter: what the upstream streams to Listen clients, which is what Firestore
// bills a listener for (one read per document in a target's initial result, one per
// document that changes, enters or leaves it). It counts the upstream's ListenResponse
// messages that carry a document (document_change, document_delete, document_remove;
// not document_delete's and document_remove's billing subtleties, a message is a
// message) and the targets the client asked the upstream to add, on both wires the
// meter carries:
//
//   - gRPC: the Listen method's messages, both ways (listenStream);
//   - WebChannel (/google.firestore.v1.Firestore/Listen/channel): the add_target requests
//     of forward-channel POSTs and the ListenResponses of the answers' chunks
//     (countingBody), read with proxy/webchannel's Splitter and ParseChunk. A
//     backchannel reopened with AID=n is sent the arrays after n again, and a forward
//     POST that failed is sent again with the same map ids: each session remembers the
//     last array id and map id it counted, so nothing is counted twice.
//
// Counted before the bytes go on to the client, as billed reads are: a client that has
// seen a snapshot may trust Snapshot for the documents in it.

// listenCounts are the Listen counters of a Meter, guarded by Meter.mu.
type listenCounts struct {
	documents int64
	targets   int64
	byAuth    map[string]int64 // targets by the Authorization they were added with
}

// channelSessions remembers, per WebChannel session id, the last backchannel array
// and forward-channel map counted, and the Authorization the session was opened with
// (the SDK sends it once, in the opening POST's "headers" field).
type channelSessions struct {
	mu        sync.Mutex
	lastArray map[string]int64
	lastMap   map[string]int64
	auth      map[string]string
}

func (m *Meter) addListen(documents int64) {
	if documents == 0 {
		return
	}
	m.mu.Lock()
	m.listen.documents += documents
	m.mu.Unlock()
}

func (m *Meter) addListenTargets(n int64, auth string) {
	if n == 0 {
		return
	}
	m.mu.Lock()
	m.listen.targets += n
	if m.listen.byAuth == nil {
		m.listen.byAuth = map[string]int64{}
	}
	m.listen.byAuth[auth] += n
	m.mu.Unlock()
}

// listenResponseDocuments is 1 when r carries a document, else 0.
func listenResponseDocuments(r *firestorepb.ListenResponse) int64 {
	switch r.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange, *firestorepb.ListenResponse_DocumentDelete,
		*firestorepb.ListenResponse_DocumentRemove:
		return 1
	}
	return 0
}

// listenStream is a gRPC Listen call's server stream that counts the add_target
// requests the client sends upstream through it.
type listenStream struct {
	grpc.ServerStream
	m *Meter
}

func (s listenStream) RecvMsg(v any) error {
	err := s.ServerStream.RecvMsg(v)
	if f, ok := v.(*grpcrelay.Frame); ok && err == nil {
		var req firestorepb.ListenRequest
		if proto.Unmarshal(f.Bytes, &req) == nil && req.GetAddTarget() != nil {
			auth := ""
			if md, ok := metadata.FromIncomingContext(s.Context()); ok {
				auth = strings.Join(md.Get("authorization"), ", ")
			}
			s.m.addListenTargets(1, auth)
		}
	}
	return err
}

// countListenResponse counts one gRPC ListenResponse the upstream sent.
func (m *Meter) countListenResponse(_ string, msg []byte) {
	var r firestorepb.ListenResponse
	if proto.Unmarshal(msg, &r) == nil {
		m.addListen(listenResponseDocuments(&r))
	}
}

// countListenForward counts the add_target requests of a WebChannel forward-channel
// POST body sent on session sid ("" for the session-opening POST) with HTTP header
// auth, and returns the Authorization the session presents (the opening POST's
// "headers" field, or what the session was opened with).
func (m *Meter) countListenForward(sid, auth string, body []byte) string {
	fwd, err := webchannel.ParseForward(body)
	if err != nil {
		m.log.Warn("Listen channel: cannot parse a forward-channel body; its targets are not counted", "err", err)
		return auth
	}
	if a := fwd.Headers.Get("Authorization"); a != "" {
		auth = a
	} else if sid != "" {
		auth = m.channels.authOf(sid, auth)
	}
	var targets int64
	for _, mp := range fwd.Maps {
		if sid != "" && !m.channels.firstMap(sid, mp.ID) {
			continue // a failed POST sent again
		}
		var req firestorepb.ListenRequest
		if mp.Data != nil && lenient.Unmarshal(mp.Data, &req) == nil && req.GetAddTarget() != nil {
			targets++
		}
	}
	m.addListenTargets(targets, auth)
	return auth
}

// authOf is the Authorization session sid was opened with, else fallback.
func (c *channelSessions) authOf(sid, fallback string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.auth[sid]; ok {
		return a
	}
	return fallback
}

func (c *channelSessions) opened(sid, auth string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auth[sid] = auth
}

func (c *channelSessions) firstMap(sid string, id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, seen := c.lastMap[sid]
	if seen && id <= last {
		return false
	}
	c.lastMap[sid] = id
	return true
}

func (c *channelSessions) firstArray(sid string, id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, seen := c.lastArray[sid]
	if seen && id <= last {
		return false
	}
	c.lastArray[sid] = id
	return true
}

// countingBody is the answer of a Listen channel request, counted as it is read: its
// chunks are cut by a Splitter and their ListenResponses counted once per session.
type countingBody struct {
	io.ReadCloser
	m     *Meter
	sid   string // "" until the session-opening answer names it
	auth  string // what the session presents, remembered when it opens
	split webchannel.Splitter
}

func (m *Meter) countingListenChannel(resp *http.Response, sid, auth string) {
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		// Never seen from the emulator; a meter that silently counted nothing would let
		// a fan-out bound pass, so say it loudly.
		m.log.Error("Listen channel answer is encoded; its documents are NOT counted", "encoding", enc)
		return
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, m: m, sid: sid, auth: auth}
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		for _, seg := range b.split.Feed(p[:n]) {
			if seg.Chunk != nil {
				b.count(seg.Chunk)
			}
		}
	}
	return n, err
}

func (b *countingBody) count(chunk []byte) {
	entries, err := webchannel.ParseChunk(chunk)
	if err != nil {
		// A forward POST's status answer ([1,5,0]) is not an array of entries.
		return
	}
	if b.sid == "" {
		if sid, ok := webchannel.SessionID(entries); ok {
			b.sid = sid
			b.m.channels.opened(sid, b.auth)
		}
	}
	var docs int64
	for _, e := range entries {
		if b.sid != "" && !b.m.channels.firstArray(b.sid, e.ArrayID) {
			continue // a reopened backchannel repeating what was sent
		}
		msg, ok := e.Message()
		if !ok || !bytes.HasPrefix(bytes.TrimSpace(msg), []byte("{")) {
			continue
		}
		var r firestorepb.ListenResponse
		if lenient.Unmarshal(msg, &r) == nil {
			docs += listenResponseDocuments(&r)
		}
	}
	b.m.addListen(docs)
}
