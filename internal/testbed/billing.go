package testbed

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// restVerbs are the custom methods of the Firestore REST API (".../documents:runQuery")
// that the meter counts by name; other verbs count as "other".
var restVerbs = map[string]bool{
	"batchGet": true, "runQuery": true, "runAggregationQuery": true, "listCollectionIds": true,
	"commit": true, "batchWrite": true, "beginTransaction": true, "rollback": true,
	"listen": true, "write": true,
}

// Method names the Firestore REST method of a request from its HTTP method and decoded
// URL path: "get", "list", "create", "patch", "delete", one of the custom verbs
// ("batchGet", "runQuery", "runAggregationQuery", "listCollectionIds", "commit",
// "batchWrite", "beginTransaction", "rollback", "listen", "write"), or "other".
// The WebChannel streams of the Firebase JS SDK (".../Listen/channel",
// ".../Write/channel") count as "listen" and "write".
func Method(httpMethod, path string) string {
	switch {
	case strings.HasSuffix(path, "/Listen/channel"):
		return "listen"
	case strings.HasSuffix(path, "/Write/channel"):
		return "write"
	}
	// /v1/projects/{p}/databases/{d}/documents[/{path...}][:verb]
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) < 6 || segs[0] != "v1" || segs[1] != "projects" || segs[3] != "databases" {
		return "other"
	}
	rest := segs[5:]
	if len(rest) == 0 {
		return "other"
	}
	// A verb hangs off the last segment; a colon elsewhere is part of a document id.
	last := rest[len(rest)-1]
	if i := strings.LastIndexByte(last, ':'); i >= 0 && restVerbs[last[i+1:]] {
		if httpMethod != http.MethodPost {
			return "other"
		}
		verb := last[i+1:]
		rest[len(rest)-1] = last[:i]
		if rest[0] != "documents" {
			return "other"
		}
		return verb
	}
	if rest[0] != "documents" {
		return "other"
	}
	docPath := rest[1:] // segments below .../documents
	if len(docPath) == 0 {
		return "other"
	}
	isDocument := len(docPath)%2 == 0
	switch httpMethod {
	case http.MethodGet:
		if isDocument {
			return "get"
		}
		return "list"
	case http.MethodPost:
		if !isDocument {
			return "create"
		}
	case http.MethodPatch:
		if isDocument {
			return "patch"
		}
	case http.MethodDelete:
		if isDocument {
			return "delete"
		}
	}
	return "other"
}

func isMeteredRead(method string) bool {
	switch method {
	case "get", "list", "runQuery", "batchGet", "runAggregationQuery", "listCollectionIds":
		return true
	}
	return false
}

var lenient = protojson.UnmarshalOptions{DiscardUnknown: true}

// billedReads is the number of document reads Firestore bills for an answer of a read
// method: one per document returned, and at least one for a query or list that returns
// none. Failed requests are not billed, except a single document's 404.
func billedReads(method string, status int, body []byte, countAliases map[string]bool) (int64, error) {
	if method == "get" && (status == http.StatusOK || status == http.StatusNotFound) {
		return 1, nil
	}
	if status != http.StatusOK {
		return 0, nil
	}
	switch method {
	case "listCollectionIds":
		return 1, nil
	case "list":
		var resp firestorepb.ListDocumentsResponse
		if err := lenient.Unmarshal(body, &resp); err != nil {
			return 0, fmt.Errorf("parse list answer: %w", err)
		}
		return atLeastOne(int64(len(resp.GetDocuments()))), nil
	case "runQuery":
		var n int64
		err := eachMessage(body, func() proto.Message { return &firestorepb.RunQueryResponse{} }, func(m proto.Message) {
			if m.(*firestorepb.RunQueryResponse).GetDocument() != nil {
				n++
			}
		})
		return atLeastOne(n), err
	case "batchGet":
		var n int64
		err := eachMessage(body, func() proto.Message { return &firestorepb.BatchGetDocumentsResponse{} }, func(m proto.Message) {
			r := m.(*firestorepb.BatchGetDocumentsResponse)
			if r.GetFound() != nil || r.GetMissing() != "" {
				n++
			}
		})
		return n, err
	case "runAggregationQuery":
		// Firestore bills one read per 1000 index entries counted, at least one.
		var counted int64
		err := eachMessage(body, func() proto.Message { return &firestorepb.RunAggregationQueryResponse{} }, func(m proto.Message) {
			for alias, v := range m.(*firestorepb.RunAggregationQueryResponse).GetResult().GetAggregateFields() {
				if countAliases[alias] {
					counted = max(counted, v.GetIntegerValue())
				}
			}
		})
		return atLeastOne((counted + 999) / 1000), err
	}
	return 0, nil
}

func atLeastOne(n int64) int64 { return max(n, 1) }

// eachMessage parses a REST streaming answer: a JSON array of response messages (a
// single object is accepted too).
func eachMessage(body []byte, newMsg func() proto.Message, visit func(proto.Message)) error {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		var one json.RawMessage
		if err2 := json.Unmarshal(body, &one); err2 != nil {
			return fmt.Errorf("parse answer: %w", err)
		}
		raws = []json.RawMessage{one}
	}
	for i, raw := range raws {
		msg := newMsg()
		if err := lenient.Unmarshal(raw, msg); err != nil {
			return fmt.Errorf("parse answer message %d: %w", i, err)
		}
		visit(msg)
	}
	return nil
}

// countAliases returns the aliases of the count() aggregations of a
// runAggregationQuery request body (nil if it cannot be parsed).
func countAliases(body []byte) map[string]bool {
	var req firestorepb.RunAggregationQueryRequest
	if err := lenient.Unmarshal(body, &req); err != nil {
		return nil
	}
	aliases := map[string]bool{}
	for i, a := range req.GetStructuredAggregationQuery().GetAggregations() {
		if a.GetCount() == nil {
			continue
		}
		alias := a.GetAlias()
		if alias == "" {
			// Firestore names unaliased aggregations field_1, field_2, ... by position.
			alias = fmt.Sprintf("field_%d", i+1)
		}
		aliases[alias] = true
	}
	return aliases
}
