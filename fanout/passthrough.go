package fanout

import (
	"context"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/harvest-hub/edge/watch"
)

// passthrough is a client stream's private upstream Listen stream, with the caller's
// credentials, carrying its Passthrough targets under the client's own target ids.
type passthrough struct {
	c      *client
	st     firestorepb.Firestore_ListenClient
	cancel context.CancelFunc
	done   chan struct{} // the relay returned
}

// passthroughAdd forwards an addTarget, opening the private stream on first use.
func (c *client) passthroughAdd(t *firestorepb.Target, labels map[string]string) error {
	c.mu.Lock()
	p := c.pass
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return nil
	}
	if p == nil {
		md := upstreamMetadata(c.caller.Metadata)
		md.Set("google-cloud-resource-prefix", c.database)
		md.Set("x-goog-request-params", "database="+c.database)
		ctx, cancel := context.WithCancel(c.ctx)
		ctx = watch.WithCallerCredentials(metadata.NewOutgoingContext(ctx, md))
		st, err := firestorepb.NewFirestoreClient(c.hub.cfg.Conn).Listen(ctx)
		if err != nil {
			cancel()
			return upstreamStatus(err)
		}
		p = &passthrough{c: c, st: st, cancel: cancel, done: make(chan struct{})}
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			cancel()
			return nil
		}
		c.pass = p
		c.mu.Unlock()
		go p.relay()
	}
	return p.send(&firestorepb.ListenRequest{Database: c.database, Labels: labels,
		TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: t}})
}

// upstreamStatus is the upstream's status for the client, as Firestore gave it.
func upstreamStatus(err error) error {
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(codes.Unavailable, "the upstream is unavailable")
}

// send forwards one request; a stream that broke reports its status through relay.
func (p *passthrough) send(req *firestorepb.ListenRequest) error {
	if p == nil {
		return nil
	}
	_ = p.st.Send(req)
	return nil
}

func (p *passthrough) close() {
	p.cancel()
	<-p.done
}

// relay passes the upstream's responses to the client. Global target changes (no
// target ids) are narrowed to the passthrough targets, since on the client's stream
// they would also speak for the hub's: a global NO_CHANGE becomes a NO_CHANGE of the
// passthrough targets with its token, then the hub's global read time. When the
// upstream stream fails, the client stream ends with its status, as it would directly.
func (p *passthrough) relay() {
	defer close(p.done)
	c := p.c
	for {
		resp, err := p.st.Recv()
		if err != nil {
			if c.ctx.Err() == nil {
				c.end(upstreamStatus(err))
			}
			return
		}
		switch r := resp.GetResponseType().(type) {
		case *firestorepb.ListenResponse_TargetChange:
			p.targetChange(r.TargetChange)
			continue
		case *firestorepb.ListenResponse_DocumentChange, *firestorepb.ListenResponse_DocumentDelete, *firestorepb.ListenResponse_DocumentRemove:
			c.hub.m.received.WithLabelValues(Passthrough.String()).Inc()
		}
		c.push([]*firestorepb.ListenResponse{resp}, time.Time{})
	}
}

func (p *passthrough) targetChange(tc *firestorepb.TargetChange) {
	c := p.c
	if len(tc.GetTargetIds()) > 0 {
		if tc.GetTargetChangeType() == firestorepb.TargetChange_REMOVE {
			for _, id := range tc.GetTargetIds() {
				c.mu.Lock()
				ct := c.targets[id]
				c.mu.Unlock()
				if ct != nil && ct.mode == Passthrough {
					c.drop(ct)
				}
			}
		}
		c.push([]*firestorepb.ListenResponse{{ResponseType: &firestorepb.ListenResponse_TargetChange{TargetChange: tc}}}, time.Time{})
		return
	}
	c.mu.Lock()
	ids := make([]int32, 0, len(c.passIDs))
	for id := range c.passIDs {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	var msgs []*firestorepb.ListenResponse
	narrowed := &firestorepb.TargetChange{TargetChangeType: tc.GetTargetChangeType(), TargetIds: ids,
		Cause: tc.GetCause(), ResumeToken: tc.GetResumeToken()}
	global := tc.GetTargetChangeType() == firestorepb.TargetChange_NO_CHANGE && tc.GetReadTime() != nil
	if len(ids) > 0 && (!global || len(tc.GetResumeToken()) > 0) {
		msgs = append(msgs, &firestorepb.ListenResponse{ResponseType: &firestorepb.ListenResponse_TargetChange{TargetChange: narrowed}})
	}
	var rt time.Time
	if global {
		rt = tc.GetReadTime().AsTime()
	}
	if len(msgs) > 0 || !rt.IsZero() {
		c.push(msgs, rt)
	}
}
