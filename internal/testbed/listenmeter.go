package testbed

import (
	"bytes"
	"io"
	"net/http"
	"sync"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
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
}

// channelSessions remembers, per WebChannel session id, the last backchannel array
// and forward-channel map counted.
type channelSessions struct {
	mu        sync.Mutex
	lastArray map[string]int64
	lastMap   map[string]int64
}

func (m *Meter) addListen(documents, targets int64) {
	if documents == 0 && targets == 0 {
		return
	}
	m.mu.Lock()
	m.listen.documents += documents
	m.listen.targets += targets
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
			s.m.addListen(0, 1)
		}
	}
	return err
}

// countListenResponse counts one gRPC ListenResponse the upstream sent.
func (m *Meter) countListenResponse(_ string, msg []byte) {
	var r firestorepb.ListenResponse
	if proto.Unmarshal(msg, &r) == nil {
		m.addListen(listenResponseDocuments(&r), 0)
	}
}

// countListenForward counts the add_target requests of a WebChannel forward-channel
// POST body sent on session sid ("" for the session-opening POST).
func (m *Meter) countListenForward(sid string, body []byte) {
	fwd, err := webchannel.ParseForward(body)
	if err != nil {
		m.log.Warn("Listen channel: cannot parse a forward-channel body; its targets are not counted", "err", err)
		return
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
	m.addListen(0, targets)
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
	split webchannel.Splitter
}

func (m *Meter) countingListenChannel(resp *http.Response, sid string) {
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		// Never seen from the emulator; a meter that silently counted nothing would let
		// a fan-out bound pass, so say it loudly.
		m.log.Error("Listen channel answer is encoded; its documents are NOT counted", "encoding", enc)
		return
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, m: m, sid: sid}
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
	b.m.addListen(docs, 0)
}
