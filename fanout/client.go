package fanout

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// clientTarget is one target of one client stream.
type clientTarget struct {
	id     int32
	client *client
	mode   Mode
	once   bool
	resume *resumePoint // what the client asked to resume from, if anything

	view        *view // nil for Passthrough; set by subscribe
	subscribed  bool  // subscribe returned; guarded by client.mu
	initialized bool  // the initial set was sent; guarded by view.mu
}

// client is one client Listen stream being served.
type client struct {
	hub      *Hub
	s        Stream
	caller   Caller
	database string
	ctx      context.Context
	end      context.CancelCauseFunc
	wake     chan struct{}
	written  chan struct{} // the writer returned

	mu       sync.Mutex
	queue    []*firestorepb.ListenResponse
	stopped  bool // Serve is returning: nothing more is queued or sent
	sending  bool // the writer is inside Send
	readTime time.Time
	targets  map[int32]*clientTarget
	passIDs  map[int32]bool // targets on the passthrough stream

	pass *passthrough // opened on the first Passthrough target
}

// Serve serves one client Listen stream until the client ends it, the stream's context
// ends, the client sends something invalid (INVALID_ARGUMENT) or falls too far behind
// (RESOURCE_EXHAUSTED). It is a Handler.
func (h *Hub) Serve(s Stream, c Caller) error {
	ctx, end := context.WithCancelCause(s.Context())
	defer end(nil)
	cl := &client{
		hub: h, s: s, caller: c, database: c.Database, ctx: ctx, end: end,
		wake: make(chan struct{}, 1), written: make(chan struct{}),
		targets: map[int32]*clientTarget{}, passIDs: map[int32]bool{},
	}
	h.clients.Add(1)
	defer h.clients.Add(-1)
	go cl.write()
	read := make(chan error, 1)
	go func() { read <- cl.read() }()
	var err error
	select {
	case err = <-read:
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	end(err)
	cl.close()
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		return status.FromContextError(s.Context().Err()).Err()
	}
	return err
}

// read handles the client's requests until it half-closes (nil) or fails.
func (c *client) read() error {
	for {
		req, err := c.s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.handle(req); err != nil {
			return err
		}
	}
}

func invalid(msg string) error { return status.Error(codes.InvalidArgument, msg) }

func (c *client) handle(req *firestorepb.ListenRequest) error {
	db := req.GetDatabase()
	if c.database == "" {
		if !validDatabase(db) {
			return invalid("the request does not name a valid database")
		}
		c.database = db
	}
	if db != c.database {
		return invalid("the request's database does not match the stream's")
	}
	switch tc := req.GetTargetChange().(type) {
	case *firestorepb.ListenRequest_AddTarget:
		return c.add(tc.AddTarget, req.GetLabels())
	case *firestorepb.ListenRequest_RemoveTarget:
		return c.remove(tc.RemoveTarget)
	}
	return invalid("the request neither adds nor removes a target")
}

func (c *client) add(t *firestorepb.Target, labels map[string]string) error {
	if t.GetTargetId() < 0 {
		return invalid("target ids must be positive")
	}
	if !validTarget(c.database, t) {
		return invalid("the target is not a query or documents of the stream's database")
	}
	c.mu.Lock()
	id := t.GetTargetId()
	if id == 0 { // the server assigns one, as Firestore does
		for id = 1; c.targets[id] != nil; id++ {
		}
	}
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	if c.targets[id] != nil {
		c.mu.Unlock()
		return invalid("a target with this id is already on the stream")
	}
	if len(c.targets) >= c.hub.cfg.MaxClientTargets {
		c.mu.Unlock()
		return status.Error(codes.ResourceExhausted, "too many targets on one Listen stream")
	}
	mode := c.hub.cfg.Policy(c.database, t)
	ct := &clientTarget{id: id, client: c, mode: mode, once: t.GetOnce()}
	c.targets[id] = ct
	if mode == Passthrough {
		c.passIDs[id] = true
	}
	c.mu.Unlock()
	c.hub.clientTargets[mode].Add(1)

	if mode == Passthrough {
		fwd := proto.Clone(t).(*firestorepb.Target)
		fwd.TargetId = id
		if _, _, ours := parseToken(fwd.GetResumeToken()); ours {
			fwd.ResumeType = nil // a token of the hub's means nothing upstream
		}
		return c.passthroughAdd(fwd, labels)
	}
	if tok := t.GetResumeToken(); len(tok) > 0 {
		ct.resume = &resumePoint{token: tok}
	} else if rt := t.GetReadTime(); rt != nil {
		ct.resume = &resumePoint{readTime: rt.AsTime()}
	}
	if err := c.hub.subscribe(c.database, mode, c.caller, canonical(t), ct); err != nil {
		c.drop(ct)
		return err
	}
	// close unsubscribes the targets subscribed before it ran; one subscribed after is
	// this goroutine's to undo.
	c.mu.Lock()
	ct.subscribed = true
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		ct.view.unsubscribe(ct)
	}
	return nil
}

func (c *client) remove(id int32) error {
	c.mu.Lock()
	ct := c.targets[id]
	if ct == nil {
		c.mu.Unlock()
		return nil // unknown or already removed by the server: Firestore says nothing
	}
	if ct.mode == Passthrough {
		c.mu.Unlock()
		return c.pass.send(&firestorepb.ListenRequest{Database: c.database,
			TargetChange: &firestorepb.ListenRequest_RemoveTarget{RemoveTarget: id}})
	}
	delete(c.targets, id)
	c.mu.Unlock()
	c.hub.clientTargets[ct.mode].Add(-1)
	ct.view.unsubscribe(ct)
	c.push([]*firestorepb.ListenResponse{targetChange(firestorepb.TargetChange_REMOVE, id, nil)}, time.Time{})
	return nil
}

// drop forgets a target the client holds no more.
func (c *client) drop(ct *clientTarget) {
	c.mu.Lock()
	mine := c.targets[ct.id] == ct
	if mine {
		delete(c.targets, ct.id)
		delete(c.passIDs, ct.id)
	}
	c.mu.Unlock()
	if mine {
		c.hub.clientTargets[ct.mode].Add(-1)
	}
}

// serverRemoved ends a target from the view's side (a once target served, or the
// upstream refused it: cause): the client gets TargetChange REMOVE. The view's mu is
// held.
func (c *client) serverRemoved(ct *clientTarget, cause *status.Status) {
	c.mu.Lock()
	mine := c.targets[ct.id] == ct
	if mine {
		delete(c.targets, ct.id)
	}
	c.mu.Unlock()
	if !mine {
		return
	}
	c.hub.clientTargets[ct.mode].Add(-1)
	msg := targetChange(firestorepb.TargetChange_REMOVE, ct.id, nil)
	if cause != nil {
		msg.GetTargetChange().Cause = cause.Proto()
	}
	c.push([]*firestorepb.ListenResponse{msg}, time.Time{})
}

// push queues msgs for the client, then, when readTime is set, a global NO_CHANGE at
// the latest read time the stream was sent (never one going backwards). A client whose
// queue is full is ended with RESOURCE_EXHAUSTED: it cannot hold a view back.
func (c *client) push(msgs []*firestorepb.ListenResponse, readTime time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	if len(c.queue) > c.hub.cfg.ClientQueue {
		c.stopped = true
		c.queue = nil
		c.hub.slowClients.Add(1)
		c.hub.m.slowClients.Inc()
		c.hub.log.Warn("fan-out: ending a Listen stream too slow to follow its targets")
		c.end(status.Error(codes.ResourceExhausted, "the client is too slow to follow its listen targets"))
		return
	}
	c.queue = append(c.queue, msgs...)
	if !readTime.IsZero() {
		if readTime.Before(c.readTime) {
			readTime = c.readTime
		}
		c.readTime = readTime
		c.queue = append(c.queue, &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_TargetChange{
			TargetChange: &firestorepb.TargetChange{TargetChangeType: firestorepb.TargetChange_NO_CHANGE, ReadTime: timestamppb.New(readTime)},
		}})
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// write sends the queue to the client, a batch at a time.
func (c *client) write() {
	defer close(c.written)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 {
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.ctx.Done():
				return
			}
			c.mu.Lock()
		}
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()
		for _, m := range batch {
			c.mu.Lock()
			if c.stopped || c.ctx.Err() != nil {
				c.mu.Unlock()
				return
			}
			c.sending = true
			c.mu.Unlock()
			err := c.s.Send(m)
			c.mu.Lock()
			c.sending = false
			c.mu.Unlock()
			if err != nil {
				c.end(err)
				return
			}
			c.countSent(m)
		}
	}
}

func (c *client) countSent(m *firestorepb.ListenResponse) {
	switch m.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange, *firestorepb.ListenResponse_DocumentDelete, *firestorepb.ListenResponse_DocumentRemove:
	default:
		return
	}
	if c.passthroughMessage(m) {
		c.hub.m.sent.WithLabelValues(Passthrough.String()).Inc()
		return
	}
	c.hub.sent.Add(1)
	c.hub.m.sent.WithLabelValues("view").Inc()
}

// passthroughMessage: the document message is for a Passthrough target (they never
// share a message with view targets).
func (c *client) passthroughMessage(m *firestorepb.ListenResponse) bool {
	var ids []int32
	switch r := m.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange:
		ids = append(r.DocumentChange.GetTargetIds(), r.DocumentChange.GetRemovedTargetIds()...)
	case *firestorepb.ListenResponse_DocumentDelete:
		ids = r.DocumentDelete.GetRemovedTargetIds()
	case *firestorepb.ListenResponse_DocumentRemove:
		ids = r.DocumentRemove.GetRemovedTargetIds()
	}
	if len(ids) == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passIDs[ids[0]]
}

// close frees everything the stream held: its view subscriptions, its passthrough
// stream, and the writer (waited for unless it is inside a Send the front has yet to
// fail: that Send returns once the front ends the stream).
func (c *client) close() {
	c.mu.Lock()
	c.stopped = true
	c.queue = nil
	busy := c.sending
	targets := c.targets
	c.targets = map[int32]*clientTarget{}
	var subscribed []*clientTarget
	for _, ct := range targets {
		if ct.subscribed {
			subscribed = append(subscribed, ct)
		}
	}
	pass := c.pass
	c.mu.Unlock()
	for _, ct := range targets {
		c.hub.clientTargets[ct.mode].Add(-1)
	}
	for _, ct := range subscribed {
		ct.view.unsubscribe(ct)
	}
	if pass != nil {
		pass.close()
	}
	if !busy {
		<-c.written
	}
}
