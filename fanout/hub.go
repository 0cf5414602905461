package fanout

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config configures a Hub.
type Config struct {
	// Conn is the upstream gRPC connection, from watch.Dial: it presents the proxy's own
	// credentials, except on calls the hub marks watch.WithCallerCredentials.
	Conn grpc.ClientConnInterface
	// Policy decides how each client target is served. Nil serves every target
	// Passthrough.
	Policy func(database string, t *firestorepb.Target) Mode
	// Linger keeps a view listened after its last client target left, so that a client
	// arriving meanwhile (a page navigation) is served with no upstream read. Zero means
	// 30s; negative closes views at once.
	Linger time.Duration
	// ClientQueue bounds the messages waiting for one slow client stream (beyond the
	// batch being sent); a stream that falls further behind is ended with
	// RESOURCE_EXHAUSTED, so it never holds a shared view back. Default 4096.
	ClientQueue int
	// MaxClientTargets bounds the targets one client stream may hold at once; one more
	// ends the stream with RESOURCE_EXHAUSTED. Default 1000.
	MaxClientTargets int
	// OnChange, when set, is told the documents a view saw change (created, updated,
	// deleted, or leaving its target), after each snapshot but the view's first, so
	// the proxy can invalidate cached reads of them. It runs on the view's goroutine:
	// keep it short.
	OnChange func(database string, names []string)
	// MinBackoff and MaxBackoff bound upstream reconnection delays (watch defaults when
	// zero).
	MinBackoff, MaxBackoff time.Duration
	// Log receives view failures and slow clients; nil discards.
	Log *slog.Logger
	// Registerer receives the hub's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Hub serves clients' Listen streams from shared views. Create it with New; Serve is a
// Handler. Close stops every view once the fronts stopped calling Serve.
//
// Promises:
//   - One upstream Listen target (a view) per canonical target, database and scope
//     (Shared: the proxy's credentials; PerCaller: per Caller.Identity, with that
//     caller's metadata). It lives while any client target uses it, plus Linger; a
//     client arriving meanwhile is served from it with no upstream read.
//   - Each client target gets what Firestore sends: ADD; once the view is current its
//     documents, CURRENT with a resume token, a global NO_CHANGE with a read time; then
//     per upstream snapshot the changes, a NO_CHANGE with a new token, the global read
//     time. Global read times never go backwards on a client stream. REMOVE answers
//     removeTarget; a once target is removed after its first snapshot.
//   - Resume tokens are the hub's own. A client resuming with one the view minted gets
//     exactly what changed since (changes, deletions, removals); any other token or a
//     read time gets RESET then the full set, so nothing deleted meanwhile lingers.
//   - Upstream breaks are resumed (watch.Watch); an upstream reset reaches clients as
//     the difference, documents that left the target as removals, never a wrong or
//     missing document. A target the upstream refuses for good (UNAUTHENTICATED,
//     PERMISSION_DENIED, INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND) reaches each
//     of its clients as REMOVE with the upstream's cause, and the view closes.
//   - Bad client input ends the stream with INVALID_ARGUMENT, never echoing it.
//   - Bounded: a client stream that ends frees its targets and goroutines; a client
//     more than ClientQueue messages behind is ended with RESOURCE_EXHAUSTED, so a
//     view never waits for a client.
//
// Consistency across targets: each view is consistent on its own; a client stream
// holding targets of several views gets each view's snapshots as they come, with a
// global read time that is the latest the stream was sent.
//
// Serve may return while a Send to a client that stopped reading is still blocked in
// the front; that Send must fail once the front ends the stream (gRPC does).
type Hub struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // view goroutines

	mu      sync.Mutex
	closed  bool
	views   map[string]*view
	byScope map[string]map[*view]struct{} // database + scope → its views, for lookups

	nviews        atomic.Int64 // len(views), for lookups that find none without the lock
	clients       atomic.Int64
	sent          atomic.Uint64 // documents sent to clients from views
	received      atomic.Uint64 // documents received upstream by views
	slowClients   atomic.Uint64
	clientTargets [3]atomic.Int64 // by Mode
}

// New validates cfg and returns a Hub.
func New(cfg Config) (*Hub, error) {
	if cfg.Conn == nil {
		return nil, errors.New("fanout: Config.Conn is required")
	}
	if cfg.Policy == nil {
		cfg.Policy = func(string, *firestorepb.Target) Mode { return Passthrough }
	}
	if cfg.Linger == 0 {
		cfg.Linger = 30 * time.Second
	}
	if cfg.Linger < 0 {
		cfg.Linger = 0
	}
	if cfg.ClientQueue <= 0 {
		cfg.ClientQueue = 4096
	}
	if cfg.MaxClientTargets <= 0 {
		cfg.MaxClientTargets = 1000
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, log: cfg.Log, views: map[string]*view{}, byScope: map[string]map[*view]struct{}{}}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	m, err := newMetrics(h, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	h.m = m
	return h, nil
}

// Close stops every view and waits for their goroutines. Call it after the fronts
// stopped serving Listen streams.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

func scopeIndex(database string, scope Scope) string { return database + "\x00" + string(scope) }

// subscribe finds or starts the view of ct's target and subscribes ct to it.
func (h *Hub) subscribe(database string, mode Mode, caller Caller, target *firestorepb.Target, ct *clientTarget) error {
	scope := scopeOf(mode, caller.Identity)
	key := viewKey(database, scope, target)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return status.Error(codes.Unavailable, "the proxy is shutting down")
	}
	v := h.views[key]
	for {
		if v == nil {
			var err error
			if v, err = h.newView(key, database, mode, scope, target, caller.Metadata); err != nil {
				h.mu.Unlock()
				h.log.Error("fan-out: cannot start a view", "err", err)
				return status.Error(codes.Internal, "the proxy cannot listen to this target")
			}
			h.views[key] = v
			h.nviews.Store(int64(len(h.views)))
			idx := scopeIndex(database, scope)
			if h.byScope[idx] == nil {
				h.byScope[idx] = map[*view]struct{}{}
			}
			h.byScope[idx][v] = struct{}{}
		}
		v.mu.Lock()
		if !v.closed {
			break
		}
		v.mu.Unlock()
		v = nil // failed or expiring: start another
	}
	h.mu.Unlock()
	v.subscribeLocked(ct)
	v.mu.Unlock()
	return nil
}

// forget drops a closed view from the hub's maps.
func (h *Hub) forget(v *view) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgetLocked(v)
}

func (h *Hub) forgetLocked(v *view) {
	if h.views[v.key] == v {
		delete(h.views, v.key)
		h.nviews.Store(int64(len(h.views)))
	}
	idx := scopeIndex(v.database, v.scope)
	delete(h.byScope[idx], v)
	if len(h.byScope[idx]) == 0 {
		delete(h.byScope, idx)
	}
}

// expire closes a view whose linger ran out with no client target back (gen tells a
// timer from an earlier linger apart).
func (h *Hub) expire(v *view, gen uint64) {
	h.mu.Lock()
	v.mu.Lock()
	expired := gen == v.lingerGen && len(v.subs) == 0 && !v.closed
	if expired {
		v.closed = true
	}
	v.mu.Unlock()
	if expired {
		h.forgetLocked(v)
	}
	h.mu.Unlock()
	if expired {
		v.cancel()
	}
}
