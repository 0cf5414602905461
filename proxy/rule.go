package proxy

import (
	"encoding/json"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/rules"
)

// ruleFor is the rule that decides a read: a rule no looser than any that governs a
// document it may return: the shortest TTL and stale windows, scope user and
// consistency strong if any asks for them. A read of one document has its rule; a
// batchGet has one per document; a list or query of a collection, and a collection-
// group query, have every rule that is the first match of some document they may
// return (rules.Config.CollectionRules, CollectionGroupRules: recursive wildcards of
// any depth and rules for single ids included), so public comments and a user's
// private ones under one collection id are cached as strictly as the private ones. A
// read that may return something no rule caches (no rule, or ttl 0) is not cached
// (nil). A Privileged read (listCollectionIds) is scope user whatever its rules say:
// a shared rule cannot vouch that every caller holds the privilege it needs.
func ruleFor(cfg *rules.Config, req *classify.Request) *rules.Rule {
	var merged *rules.Rule
	ok := true
	add := func(r *rules.Rule) {
		switch {
		case !ok:
		case r == nil || r.TTL <= 0:
			ok = false
		case merged == nil || merged == r:
			merged = r
		default:
			m := *merged
			m.TTL = min(m.TTL, r.TTL)
			m.StaleWhileRevalidate = min(m.StaleWhileRevalidate, r.StaleWhileRevalidate)
			m.StaleIfError = min(m.StaleIfError, r.StaleIfError)
			m.NegativeTTL = min(m.NegativeTTL, r.NegativeTTL)
			if r.Scope == rules.ScopeUser {
				m.Scope = rules.ScopeUser
			}
			if r.Consistency == rules.Strong {
				m.Consistency = rules.Strong
			}
			merged = &m
		}
	}
	// addAll weighs every rule that governs some document of a collection or group;
	// a document no rule governs makes the read uncached.
	addAll := func(rs []*rules.Rule, complete bool) {
		if !complete || len(rs) == 0 {
			ok = false
		}
		for _, r := range rs {
			add(r)
		}
	}
	for _, t := range req.Targets {
		switch t.Kind {
		case classify.TargetDocument:
			add(cfg.ForDocument(t.Path))
		case classify.TargetCollection:
			addAll(cfg.CollectionRules(t.Path))
		case classify.TargetGroup:
			addAll(cfg.CollectionGroupRules(t.Path, t.CollectionID))
		default:
			ok = false
		}
	}
	if !ok || merged == nil {
		return nil
	}
	if req.Privileged && merged.Scope != rules.ScopeUser {
		m := *merged
		m.Scope = rules.ScopeUser
		merged = &m
	}
	return merged
}

// billedDocs is how many billed document reads one answer costs Firestore (one per
// document returned, one for an answer with none), so a hit on it saves as many. ok is
// false when a 200 answer does not parse as the method's response: such an answer (an
// error inside a stream) is not cached.
func billedDocs(op classify.Op, status int, body []byte) (n int, ok bool) {
	if status != 200 {
		return 1, true // a single document's 404 is billed as one read
	}
	switch op {
	case classify.GetDocument:
		return 1, true
	case classify.ListDocuments:
		var r firestorepb.ListDocumentsResponse
		if !unmarshal(body, &r) {
			return 0, false
		}
		return max(1, len(r.Documents)), true
	case classify.RunQuery:
		return countStream(body, func() proto.Message { return &firestorepb.RunQueryResponse{} },
			func(m proto.Message) int {
				if m.(*firestorepb.RunQueryResponse).Document != nil {
					return 1
				}
				return 0
			})
	case classify.BatchGetDocuments:
		return countStream(body, func() proto.Message { return &firestorepb.BatchGetDocumentsResponse{} },
			func(m proto.Message) int {
				r := m.(*firestorepb.BatchGetDocumentsResponse)
				if r.GetFound() != nil || r.GetMissing() != "" {
					return 1
				}
				return 0
			})
	case classify.RunAggregationQuery:
		return countStream(body, func() proto.Message { return &firestorepb.RunAggregationQueryResponse{} },
			func(proto.Message) int { return 0 })
	}
	return 1, true
}

// lenient ignores fields these types do not know: the emulator adds "done" to
// runAggregationQuery answers, and Firestore may add fields newer than these types;
// refusing them would make such answers uncacheable. An error element is recognised
// by its "error" member instead (hasError).
var lenient = protojson.UnmarshalOptions{DiscardUnknown: true}

// unmarshal parses one response message; false for a message that is not one (not
// JSON, or an error element inside a stream).
func unmarshal(b []byte, m proto.Message) bool {
	return !hasError(b) && lenient.Unmarshal(b, m) == nil
}

// hasError reports whether a JSON object has an "error" member: how Firestore reports
// a failure inside a streamed answer whose status was already 200.
func hasError(b []byte) bool {
	var probe struct {
		Error json.RawMessage `json:"error"`
	}
	return json.Unmarshal(b, &probe) != nil || probe.Error != nil
}

// countStream counts billed documents in a streamed answer (a JSON array of response
// messages), at least one.
func countStream(body []byte, newMsg func() proto.Message, docs func(proto.Message) int) (int, bool) {
	var parts []json.RawMessage
	if err := json.Unmarshal(body, &parts); err != nil {
		return 0, false
	}
	n := 0
	for _, p := range parts {
		m := newMsg()
		if !unmarshal(p, m) {
			return 0, false
		}
		n += docs(m)
	}
	return max(1, n), true
}
