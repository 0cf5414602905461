// Package watch is an upstream Firestore Listen client: a Watch keeps the live view of
// one target (a query or a set of documents) and reports it, one consistent snapshot
// at a time. Change capture builds on it, and so can the Listen fan-out.
//
// Promises:
//   - Snapshots are consistent: OnSnapshot is called only when the upstream says the
//     whole stream reached a consistent read_time (TargetChange NO_CHANGE with no target
//     ids and a read_time) and the target is CURRENT. Between two calls nothing is
//     reported: a document changed twice in between is reported once, as it is at the
//     later snapshot.
//   - Each snapshot carries the changes since the previous one (document changed,
//     deleted, or no longer matching), the snapshot's read_time and a resume token that
//     resumes right after it.
//   - The view advances only when OnSnapshot returns nil. On an error the stream is
//     dropped and resumed from the last accepted snapshot, so its changes are reported
//     again: delivery is at least once.
//   - A broken stream reconnects with backoff and the last accepted resume token, unless
//     Config.Stop says the error is final (a refused credential): Run then returns it. When
//     the upstream cannot resume (it refuses the token, sends RESET, or an
//     ExistenceFilter count disagrees with the view) the Watch listens again from
//     scratch and reports the difference between the view it had and the complete new
//     one (Snapshot.Reset), including deletions.
//
// Concurrency: Run is called once; OnSnapshot runs on Run's goroutine, one at a time.
// Stats is safe for concurrent use.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// targetID is the id the Watch gives its one target on the stream.
const targetID = 1

// Kind says what happened to a document between two snapshots.
type Kind uint8

const (
	// Changed: created or updated (Change.Doc holds the new version).
	Changed Kind = iota + 1
	// Deleted: the document was deleted (or, after a reset, is gone from the target).
	Deleted
	// Removed: the document still exists but no longer matches the target.
	Removed
)

func (k Kind) String() string {
	switch k {
	case Changed:
		return "changed"
	case Deleted:
		return "deleted"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Change is one document's change between two snapshots.
type Change struct {
	Kind Kind
	// Name is the document's full resource name.
	Name string
	// Doc is the document at the snapshot; nil unless Kind is Changed.
	Doc *firestorepb.Document
	// Old is the document as the view last knew it; nil when it was not in the view.
	// It may carry only a name and update_time (a view seeded from Config.Known).
	Old *firestorepb.Document
}

// Snapshot is one consistent state of the target.
type Snapshot struct {
	// ReadTime is the snapshot's consistent read time.
	ReadTime time.Time
	// ResumeToken resumes the target right after this snapshot.
	ResumeToken []byte
	// Changes since the previous snapshot (or, after a reset, since the view before it).
	Changes []Change
	// Reset: the view was rebuilt from a complete listen (the first, or one that could
	// not resume); Changes is then the full difference with the previous view, and
	// every document of the target is in View.
	Reset bool
	// View is, on a Reset snapshot only, every document of the target at ReadTime, by
	// name. Read-only, and only valid during OnSnapshot.
	View map[string]*firestorepb.Document
}

// Position is where a Watch resumes: the token and read time of an accepted snapshot.
type Position struct {
	ResumeToken []byte
	ReadTime    time.Time
}

// Config configures a Watch.
type Config struct {
	// Conn is the upstream gRPC connection (see Dial).
	Conn grpc.ClientConnInterface
	// Database is "projects/{p}/databases/{d}".
	Database string
	// Target to listen to: its query or documents. TargetId and the resume fields are
	// the Watch's to set.
	Target *firestorepb.Target
	// Resume, when it has a token, resumes after an earlier snapshot instead of
	// reading every document again.
	Resume Position
	// Known is the view at Resume (documents with at least a name and update_time).
	// With it a resumed stream can check the upstream's existence filter and report
	// deletions a reset reveals. Without it a resumed Watch starts with an empty view.
	Known []*firestorepb.Document
	// OnSnapshot receives each consistent snapshot. A non-nil error drops the stream
	// and resumes from the previous accepted snapshot after a backoff.
	OnSnapshot func(ctx context.Context, s *Snapshot) error
	// Stop, when set, is asked about each error that ends a stream (the stream's
	// status, or a TargetChange REMOVE's cause, wrapped): true ends Run with that error
	// instead of reconnecting. The fan-out stops on UNAUTHENTICATED and
	// PERMISSION_DENIED; change capture keeps retrying.
	Stop func(error) bool
	// MinBackoff and MaxBackoff bound reconnection delays. Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Log receives reconnects and resets; nil discards.
	Log *slog.Logger
}

// Stats counts what a Watch did; read with Watch.Stats.
type Stats struct {
	// Documents is the number of document messages streamed (changes, deletes, removes).
	Documents uint64
	// Resets is the number of times the view was rebuilt from scratch after a stream
	// that could not resume (a refused token, RESET, an existence filter mismatch).
	Resets uint64
	// Reconnects counts streams opened after the first.
	Reconnects uint64
	// ReadTime is the last accepted snapshot's read time (zero before the first).
	ReadTime time.Time
}

// Watch is one upstream Listen target and its view.
type Watch struct {
	cfg Config
	log *slog.Logger

	// Owned by Run's goroutine.
	view map[string]*firestorepb.Document
	pos  Position

	documents, resets, reconnects atomic.Uint64
	readTime                      atomic.Int64 // unix nanoseconds; 0 before the first snapshot
	live                          atomic.Bool  // see Live
}

// Live reports whether the view follows the upstream now: the stream that brought the
// last accepted snapshot is still open. It is false before the first snapshot, and
// from the moment a stream ends until its successor reaches a consistent snapshot:
// while the upstream is away, the view may miss changes.
func (w *Watch) Live() bool { return w.live.Load() }

// New validates cfg and returns a Watch that Run starts.
func New(cfg Config) (*Watch, error) {
	if cfg.Conn == nil || cfg.Database == "" || cfg.Target == nil || cfg.OnSnapshot == nil {
		return nil, errors.New("watch: Conn, Database, Target and OnSnapshot are required")
	}
	if cfg.Target.GetQuery() == nil && cfg.Target.GetDocuments() == nil {
		return nil, errors.New("watch: the target needs a query or documents")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watch{cfg: cfg, log: cfg.Log, view: map[string]*firestorepb.Document{}, pos: cfg.Resume}
	if len(cfg.Resume.ResumeToken) > 0 {
		for _, d := range cfg.Known {
			w.view[d.GetName()] = d
		}
	}
	if !cfg.Resume.ReadTime.IsZero() {
		w.readTime.Store(cfg.Resume.ReadTime.UnixNano())
	}
	return w, nil
}

// Stats returns the Watch's counters.
func (w *Watch) Stats() Stats {
	s := Stats{Documents: w.documents.Load(), Resets: w.resets.Load(), Reconnects: w.reconnects.Load()}
	if n := w.readTime.Load(); n != 0 {
		s.ReadTime = time.Unix(0, n).UTC()
	}
	return s
}

// errReset ends a stream whose view cannot be trusted: listen again from scratch.
var errReset = errors.New("watch: reset")

// Run listens until ctx ends, reconnecting as needed; it returns ctx's error, or the
// error Config.Stop found final.
func (w *Watch) Run(ctx context.Context) error {
	backoff := w.cfg.MinBackoff
	for first := true; ; first = false {
		if !first {
			w.reconnects.Add(1)
		}
		began := time.Now()
		err := w.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errReset) {
			w.resets.Add(1)
			w.pos.ResumeToken = nil
			w.log.Warn("watch reset: listening again from scratch", "database", w.cfg.Database, "reason", errors.Unwrap(err))
			backoff = w.cfg.MinBackoff
			continue // at once: the stream itself is fine
		}
		if w.cfg.Stop != nil && w.cfg.Stop(err) {
			return err
		}
		if time.Since(began) > 10*w.cfg.MinBackoff {
			backoff = w.cfg.MinBackoff // it ran a while: a fresh failure
		}
		w.log.Warn("watch stream ended; reconnecting", "database", w.cfg.Database, "err", err, "in", backoff)
		delay := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

// pass is one stream's state: changes seen since the last snapshot.
type pass struct {
	reset   bool // the stream started from scratch or the upstream sent RESET
	current bool // CURRENT seen since the start or the last RESET
	token   []byte
	pending map[string]pendingDoc
}

type pendingDoc struct {
	kind Kind
	doc  *firestorepb.Document
}

// stream runs one Listen stream until it fails.
func (w *Watch) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer w.live.Store(false)
	ctx = metadata.AppendToOutgoingContext(ctx,
		"google-cloud-resource-prefix", w.cfg.Database,
		"x-goog-request-params", "database="+w.cfg.Database)
	client := firestorepb.NewFirestoreClient(w.cfg.Conn)
	st, err := client.Listen(ctx)
	if err != nil {
		return fmt.Errorf("open listen: %w", err)
	}
	target := proto.Clone(w.cfg.Target).(*firestorepb.Target)
	target.TargetId = targetID
	p := &pass{pending: map[string]pendingDoc{}}
	if len(w.pos.ResumeToken) > 0 {
		target.ResumeType = &firestorepb.Target_ResumeToken{ResumeToken: w.pos.ResumeToken}
	} else {
		p.reset = true
	}
	if err := st.Send(&firestorepb.ListenRequest{
		Database:     w.cfg.Database,
		TargetChange: &firestorepb.ListenRequest_AddTarget{AddTarget: target},
	}); err != nil {
		return fmt.Errorf("send target: %w", err)
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			if err == io.EOF {
				return errors.New("upstream closed the stream")
			}
			if len(w.pos.ResumeToken) > 0 && refusesResume(err) {
				return fmt.Errorf("%w: %v", errReset, status.Code(err))
			}
			return err
		}
		if err := w.handle(ctx, p, resp); err != nil {
			return err
		}
	}
}

// refusesResume: errors with which the upstream says it cannot resume from a token.
func refusesResume(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.DataLoss:
		return true
	}
	return false
}

func (w *Watch) handle(ctx context.Context, p *pass, resp *firestorepb.ListenResponse) error {
	switch r := resp.GetResponseType().(type) {
	case *firestorepb.ListenResponse_DocumentChange:
		dc := r.DocumentChange
		w.documents.Add(1)
		switch {
		case contains(dc.GetTargetIds(), targetID):
			p.pending[dc.GetDocument().GetName()] = pendingDoc{kind: Changed, doc: dc.GetDocument()}
		case contains(dc.GetRemovedTargetIds(), targetID):
			p.pending[dc.GetDocument().GetName()] = pendingDoc{kind: Removed}
		}
	case *firestorepb.ListenResponse_DocumentDelete:
		w.documents.Add(1)
		if contains(r.DocumentDelete.GetRemovedTargetIds(), targetID) {
			p.pending[r.DocumentDelete.GetDocument()] = pendingDoc{kind: Deleted}
		}
	case *firestorepb.ListenResponse_DocumentRemove:
		w.documents.Add(1)
		if contains(r.DocumentRemove.GetRemovedTargetIds(), targetID) {
			p.pending[r.DocumentRemove.GetDocument()] = pendingDoc{kind: Removed}
		}
	case *firestorepb.ListenResponse_Filter:
		f := r.Filter
		if f.GetTargetId() != targetID || p.reset && !p.current {
			return nil
		}
		if n := w.countAfter(p); int32(n) != f.GetCount() {
			return fmt.Errorf("%w: existence filter counts %d documents, the view %d", errReset, f.GetCount(), n)
		}
	case *firestorepb.ListenResponse_TargetChange:
		return w.targetChange(ctx, p, r.TargetChange)
	}
	return nil
}

func (w *Watch) targetChange(ctx context.Context, p *pass, tc *firestorepb.TargetChange) error {
	ours := len(tc.GetTargetIds()) == 0 || contains(tc.GetTargetIds(), targetID)
	if !ours {
		return nil
	}
	switch tc.GetTargetChangeType() {
	case firestorepb.TargetChange_REMOVE:
		if c := tc.GetCause(); c != nil {
			err := status.ErrorProto(c)
			if len(w.pos.ResumeToken) > 0 && refusesResume(err) {
				return fmt.Errorf("%w: target removed: %v", errReset, status.Code(err))
			}
			return fmt.Errorf("target removed: %w", err)
		}
		return errors.New("target removed by the upstream")
	case firestorepb.TargetChange_RESET:
		// The upstream could not resume (the emulator never does): the complete state
		// follows, and is compared with the view.
		w.resets.Add(1)
		p.reset, p.current = true, false
		clear(p.pending)
	case firestorepb.TargetChange_CURRENT:
		p.current = true
	}
	if len(tc.GetResumeToken()) > 0 {
		p.token = tc.GetResumeToken()
	}
	if tc.GetTargetChangeType() == firestorepb.TargetChange_NO_CHANGE && len(tc.GetTargetIds()) == 0 &&
		tc.GetReadTime() != nil && p.current {
		return w.snapshot(ctx, p, tc.GetReadTime())
	}
	return nil
}

// countAfter is the number of documents the view would hold with p applied.
func (w *Watch) countAfter(p *pass) int {
	if p.reset {
		n := 0
		for _, pd := range p.pending {
			if pd.kind == Changed {
				n++
			}
		}
		return n
	}
	n := len(w.view)
	for name, pd := range p.pending {
		_, had := w.view[name]
		switch {
		case pd.kind == Changed && !had:
			n++
		case pd.kind != Changed && had:
			n--
		}
	}
	return n
}

// snapshot builds the changes of p, hands them to OnSnapshot and, once accepted,
// makes them the view.
func (w *Watch) snapshot(ctx context.Context, p *pass, rt *timestamppb.Timestamp) error {
	var next map[string]*firestorepb.Document // the new view, on a reset
	var changes []Change
	if p.reset {
		next = make(map[string]*firestorepb.Document, len(p.pending))
		for name, pd := range p.pending {
			if pd.kind == Changed {
				next[name] = pd.doc
				if old := w.view[name]; old == nil || !sameVersion(old, pd.doc) {
					changes = append(changes, Change{Kind: Changed, Name: name, Doc: pd.doc, Old: old})
				}
			}
		}
		for name, old := range w.view {
			if _, ok := next[name]; !ok {
				changes = append(changes, Change{Kind: Deleted, Name: name, Old: old})
			}
		}
	} else {
		for name, pd := range p.pending {
			old, had := w.view[name]
			switch {
			case pd.kind == Changed:
				if had && sameVersion(old, pd.doc) {
					continue // a resumed stream repeating what the view has
				}
				changes = append(changes, Change{Kind: Changed, Name: name, Doc: pd.doc, Old: old})
			case had:
				changes = append(changes, Change{Kind: pd.kind, Name: name, Old: old})
			}
		}
	}
	token := p.token
	if len(token) == 0 {
		token = w.pos.ResumeToken
	}
	snap := &Snapshot{ReadTime: rt.AsTime().UTC(), ResumeToken: token, Changes: changes, Reset: p.reset}
	if p.reset {
		snap.View = next
	}
	if err := w.cfg.OnSnapshot(ctx, snap); err != nil {
		return fmt.Errorf("snapshot not accepted: %w", err)
	}
	if p.reset {
		w.view = next
	} else {
		for name, pd := range p.pending {
			if pd.kind == Changed {
				w.view[name] = pd.doc
			} else {
				delete(w.view, name)
			}
		}
	}
	w.pos = Position{ResumeToken: token, ReadTime: snap.ReadTime}
	w.readTime.Store(snap.ReadTime.UnixNano())
	w.live.Store(true)
	p.reset = false
	clear(p.pending)
	return nil
}

// sameVersion: both name the same update of the document.
func sameVersion(a, b *firestorepb.Document) bool {
	return a.GetUpdateTime() != nil && proto.Equal(a.GetUpdateTime(), b.GetUpdateTime())
}

func contains(ids []int32, id int32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
