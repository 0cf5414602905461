package fanout

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/watch"
)

// maxTombstones bounds the removals a view remembers to resume clients exactly; a
// client whose token predates the oldest forgotten one gets a reset instead.
const maxTombstones = 1024

// view is one upstream target and its live view, shared by every client target with
// the same key. It is built on watch.Watch, which already gives what a view needs:
// consistent snapshots, resume after a broken stream, and a reset reported as the
// difference with the view it had (so clients never see a wrong or missing document).
type view struct {
	hub      *Hub
	key      string
	database string
	scope    Scope
	mode     Mode
	target   *firestorepb.Target // canonical
	epoch    uint64              // this incarnation, in the tokens it mints
	w        *watch.Watch
	cancel   context.CancelFunc
	done     chan struct{} // Run returned

	mu         sync.Mutex
	docs       map[string]*firestorepb.Document // the view at readTime; documents are never mutated
	changedAt  map[string]time.Time             // read time of the snapshot that last changed each doc
	tombstones []tombstone                      // removals, oldest first, at most maxTombstones
	forgotten  time.Time                        // the latest removal no longer in tombstones
	current    bool                             // a snapshot was taken
	readTime   time.Time
	subs       map[*clientTarget]struct{}
	lingerGen  uint64 // bumped by each subscribe, so a stale linger timer does nothing
	linger     *time.Timer
	closed     bool   // failed or expired: no new subscribers
	received   uint64 // upstream documents already counted in the hub's metrics
}

type tombstone struct {
	name string
	kind watch.Kind // Deleted or Removed
	at   time.Time
}

// stopOn are the upstream errors after which a view closes instead of reconnecting:
// credentials refused, or a target the upstream will never serve. Its clients get
// TargetChange REMOVE with the cause, as Firestore would send.
func stopOn(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound:
		return true
	}
	return false
}

// newView makes and starts the view of key; the caller holds h.mu.
func (h *Hub) newView(key, database string, mode Mode, scope Scope, target *firestorepb.Target, md metadata.MD) (*view, error) {
	v := &view{
		hub: h, key: key, database: database, scope: scope, mode: mode, target: target,
		epoch: rand.Uint64(), done: make(chan struct{}),
		docs: map[string]*firestorepb.Document{}, changedAt: map[string]time.Time{},
		subs: map[*clientTarget]struct{}{},
	}
	w, err := watch.New(watch.Config{
		Conn: h.cfg.Conn, Database: database, Target: target,
		OnSnapshot: v.onSnapshot, Stop: stopOn,
		MinBackoff: h.cfg.MinBackoff, MaxBackoff: h.cfg.MaxBackoff,
		Log: h.log.With("view", mode.String()),
	})
	if err != nil {
		return nil, err
	}
	v.w = w
	ctx, cancel := context.WithCancel(h.ctx)
	if mode == PerCaller {
		ctx = watch.WithCallerCredentials(metadata.NewOutgoingContext(ctx, upstreamMetadata(md)))
	}
	v.cancel = cancel
	h.m.upstreamTargets.WithLabelValues(mode.String()).Inc()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(v.done)
		err := w.Run(ctx)
		v.countReceived()
		h.m.upstreamTargets.WithLabelValues(mode.String()).Dec()
		if ctx.Err() == nil {
			v.fail(err)
		}
	}()
	return v, nil
}

// upstreamMetadata is what a caller presents upstream: its credentials, without the
// routing headers the Watch sets itself.
func upstreamMetadata(md metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, vs := range md {
		switch k {
		case "google-cloud-resource-prefix", "x-goog-request-params", "content-type", "user-agent", "te":
			continue
		}
		if len(k) > 0 && k[0] == ':' {
			continue
		}
		out[k] = slices.Clone(vs)
	}
	return out
}

// countReceived adds the documents the Watch streamed since the last count.
func (v *view) countReceived() {
	n := v.w.Stats().Documents
	v.mu.Lock()
	d := n - v.received
	v.received = n
	v.mu.Unlock()
	v.hub.m.received.WithLabelValues(v.mode.String()).Add(float64(d))
	v.hub.received.Add(d)
}

// onSnapshot applies a consistent snapshot to the view and sends each subscriber its
// part: the initial set to those that joined before the view was current, the changes
// to the others.
func (v *view) onSnapshot(_ context.Context, s *watch.Snapshot) error {
	v.countReceived()
	v.mu.Lock()
	first := !v.current
	changes := s.Changes
	if s.Reset && !first {
		// After a reset the Watch reports a document gone from the target as Deleted, but
		// it may only have stopped matching: tell clients it left the target, never that
		// it was deleted (an SDK would hide it from its other queries too).
		changes = slices.Clone(changes)
		for i := range changes {
			if changes[i].Kind == watch.Deleted {
				changes[i].Kind = watch.Removed
			}
		}
	}
	for _, c := range changes {
		if c.Kind == watch.Changed {
			v.docs[c.Name] = c.Doc
			v.changedAt[c.Name] = s.ReadTime
			continue
		}
		delete(v.docs, c.Name)
		delete(v.changedAt, c.Name)
		if !first {
			v.tombstones = append(v.tombstones, tombstone{name: c.Name, kind: c.Kind, at: s.ReadTime})
		}
	}
	if n := len(v.tombstones) - maxTombstones; n > 0 {
		v.forgotten = v.tombstones[n-1].at
		v.tombstones = slices.Delete(v.tombstones, 0, n)
	}
	v.current = true
	v.readTime = s.ReadTime
	token := mintToken(v.epoch, s.ReadTime)
	var once []*clientTarget
	for ct := range v.subs {
		if !ct.initialized {
			v.sendInitial(ct, token)
			if ct.once {
				once = append(once, ct)
			}
			continue
		}
		ct.client.push(changeMessages(ct.id, changes, s.ReadTime, token), s.ReadTime)
	}
	for _, ct := range once {
		v.unsubscribeLocked(ct)
		ct.client.serverRemoved(ct, nil)
	}
	v.mu.Unlock()
	if !first && len(s.Changes) > 0 && v.hub.cfg.OnChange != nil {
		names := make([]string, len(s.Changes))
		for i, c := range s.Changes {
			names[i] = c.Name
		}
		v.hub.cfg.OnChange(v.database, names)
	}
	return nil
}

// sendInitial sends ct what a client adding the target gets once the view is current
// (ADD was sent when it subscribed): a reset if it asked to resume from a point the
// view cannot serve exactly, the documents (all, or those changed since its token),
// CURRENT with a token, and the global snapshot read time. v.mu is held.
func (v *view) sendInitial(ct *clientTarget, token []byte) {
	ct.initialized = true
	var msgs []*firestorepb.ListenResponse
	if since, ok := v.resumable(ct.resume); ok {
		msgs = v.changesSince(ct.id, since)
	} else {
		if ct.resume != nil {
			msgs = append(msgs, targetChange(firestorepb.TargetChange_RESET, ct.id, nil))
		}
		names := make([]string, 0, len(v.docs))
		for name := range v.docs {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			msgs = append(msgs, docChange(ct.id, v.docs[name]))
		}
	}
	msgs = append(msgs, targetChange(firestorepb.TargetChange_CURRENT, ct.id, token))
	ct.client.push(msgs, v.readTime)
}

// resumePoint is what a client's addTarget asked to resume from.
type resumePoint struct {
	token    []byte
	readTime time.Time
}

// resumable says whether the view can send a client that had its state at r exactly
// what changed since: r must be a token this incarnation minted, not older than the
// removals it forgot.
func (v *view) resumable(r *resumePoint) (time.Time, bool) {
	if r == nil || !v.current {
		return time.Time{}, false
	}
	epoch, at, ok := parseToken(r.token)
	if !ok || epoch != v.epoch || at.Before(v.forgotten) || at.After(v.readTime) {
		return time.Time{}, false
	}
	return at, true
}

// changesSince are the messages that bring a client's view at since to the current one.
func (v *view) changesSince(id int32, since time.Time) []*firestorepb.ListenResponse {
	var msgs []*firestorepb.ListenResponse
	var names []string
	for name, at := range v.changedAt {
		if at.After(since) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		msgs = append(msgs, docChange(id, v.docs[name]))
	}
	seen := map[string]bool{}
	for i := len(v.tombstones) - 1; i >= 0 && v.tombstones[i].at.After(since); i-- {
		t := v.tombstones[i]
		if _, back := v.docs[t.name]; back || seen[t.name] {
			continue
		}
		seen[t.name] = true
		msgs = append(msgs, removal(id, t.kind, t.name, t.at))
	}
	return msgs
}

// subscribe adds ct to the view and sends it ADD, and the initial set at once when the
// view is current. The caller holds v.mu.
func (v *view) subscribeLocked(ct *clientTarget) {
	v.lingerGen++
	if v.linger != nil {
		v.linger.Stop()
		v.linger = nil
	}
	v.subs[ct] = struct{}{}
	ct.view = v
	ct.client.push([]*firestorepb.ListenResponse{targetChange(firestorepb.TargetChange_ADD, ct.id, nil)}, time.Time{})
	if v.current {
		v.sendInitial(ct, mintToken(v.epoch, v.readTime))
		if ct.once {
			v.unsubscribeLocked(ct)
			ct.client.serverRemoved(ct, nil)
		}
	}
}

// unsubscribe removes ct; the last one out starts the linger. The caller holds v.mu.
func (v *view) unsubscribeLocked(ct *clientTarget) {
	if _, ok := v.subs[ct]; !ok {
		return
	}
	delete(v.subs, ct)
	if len(v.subs) > 0 || v.closed {
		return
	}
	gen := v.lingerGen
	v.linger = time.AfterFunc(v.hub.cfg.Linger, func() { v.hub.expire(v, gen) })
}

func (v *view) unsubscribe(ct *clientTarget) {
	v.mu.Lock()
	v.unsubscribeLocked(ct)
	v.mu.Unlock()
}

// fail closes a view whose upstream refused it for good: each client target gets
// TargetChange REMOVE with the upstream's cause. A PerCaller view refused as
// UNAUTHENTICATED (its callers' token expired: Firebase ID tokens last an hour) ends
// its client streams with that status instead, as Firestore ends a stream whose token
// expired: the SDKs then refresh the token and listen again, and their listeners live
// on, where a REMOVE would end them with an error.
func (v *view) fail(err error) {
	cause := status.New(codes.Unavailable, "the upstream listen ended")
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		cause = se.GRPCStatus()
	}
	v.hub.log.Warn("fan-out view closed by the upstream", "database", v.database, "mode", v.mode.String(), "code", cause.Code())
	v.mu.Lock()
	v.closed = true
	subs := v.subs
	v.subs = map[*clientTarget]struct{}{}
	if v.linger != nil {
		v.linger.Stop()
	}
	expired := v.mode == PerCaller && cause.Code() == codes.Unauthenticated
	for ct := range subs {
		if expired {
			ct.client.end(cause.Err())
			continue
		}
		ct.client.serverRemoved(ct, cause)
	}
	v.mu.Unlock()
	v.hub.forget(v)
}

// Message builders. Every message is the client's own (its target ids); documents are
// shared with the view and never mutated.

func targetChange(t firestorepb.TargetChange_TargetChangeType, id int32, token []byte) *firestorepb.ListenResponse {
	return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_TargetChange{TargetChange: &firestorepb.TargetChange{
		TargetChangeType: t, TargetIds: []int32{id}, ResumeToken: token,
	}}}
}

func docChange(id int32, d *firestorepb.Document) *firestorepb.ListenResponse {
	return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_DocumentChange{DocumentChange: &firestorepb.DocumentChange{
		Document: d, TargetIds: []int32{id},
	}}}
}

func removal(id int32, kind watch.Kind, name string, at time.Time) *firestorepb.ListenResponse {
	rt := timestamppb.New(at)
	if kind == watch.Deleted {
		return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_DocumentDelete{DocumentDelete: &firestorepb.DocumentDelete{
			Document: name, RemovedTargetIds: []int32{id}, ReadTime: rt,
		}}}
	}
	return &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_DocumentRemove{DocumentRemove: &firestorepb.DocumentRemove{
		Document: name, RemovedTargetIds: []int32{id}, ReadTime: rt,
	}}}
}

// changeMessages are one snapshot's changes for client target id, then a NO_CHANGE
// with its new token.
func changeMessages(id int32, changes []watch.Change, at time.Time, token []byte) []*firestorepb.ListenResponse {
	msgs := make([]*firestorepb.ListenResponse, 0, len(changes)+1)
	for _, c := range changes {
		if c.Kind == watch.Changed {
			msgs = append(msgs, docChange(id, c.Doc))
		} else {
			msgs = append(msgs, removal(id, c.Kind, c.Name, at))
		}
	}
	return append(msgs, targetChange(firestorepb.TargetChange_NO_CHANGE, id, token))
}
