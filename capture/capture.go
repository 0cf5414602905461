// Package capture is change capture: for every rule with capture: true it watches the
// rule's documents upstream (package watch) and turns each change it sees, whoever made
// it, into the same effects a write through the proxy has: the document's cache tags are
// bumped on every replica, and for rules with events the change becomes one CloudEvent.
//
// Promises:
//   - One watch per distinct target (a collection, or a collection group, of the
//     configured project's (default) database), however many rules share it. With Redis,
//     one replica at a time runs it: a lease (SET NX PX, renewed by a compare-and-extend
//     script) that another replica takes over within LeaseTTL plus a poll when its
//     holder dies or is cut off.
//   - A change seen at a consistent snapshot bumps the document's tags
//     (classify.WriteTags) and waits for every replica to apply them; then, if its
//     rule's events keep the type, its event (event.FromCaptured: the id a write
//     through the proxy of the same version gets) is emitted through the Emitter, so it
//     is confirmed by the broker or in the outbox; only then is the snapshot persisted.
//     Delivery is at least once; a repeat has the same id.
//   - Persisted in Redis per watch: the resume token and read time of the last
//     snapshot whose effects are done, and the membership (name and update_time of every
//     document of the target). A new holder resumes from them: a change made while no
//     replica was watching is reported when the watch resumes, a change already
//     reported is not reported again (its update_time is the one remembered), and a
//     document gone since is reported deleted.
//   - The first watch of a target (nothing persisted) takes the documents it finds as
//     they are: no events and no bumps for them; changes after that snapshot are
//     reported.
//   - Without Redis there is no lease and nothing is persisted: one replica, and changes
//     made while it was down are not reported.
//
// Documents the target returns that the rules do not decide with capture (a collection
// group shared with other rules) are remembered but cause nothing.
package capture

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter"
	"github.com/harvest-hub/edge/emitter/event"
	"github.com/harvest-hub/edge/proxy/cache"
	"github.com/harvest-hub/edge/rules"
	"github.com/harvest-hub/edge/watch"
)

// Config wires a Runner.
type Config struct {
	// Rules is the live configuration: its capture rules and upstream.project.
	Rules *rules.Store
	// Conn is the upstream gRPC connection (watch.Dial).
	Conn grpc.ClientConnInterface
	// Gens bumps generations on every replica.
	Gens *cache.Generations
	// Emitter publishes events; nil: changes only invalidate.
	Emitter *emitter.Emitter
	// Redis holds leases and watch state; nil: no lease, nothing persisted.
	Redis *redis.Client
	// Prefix namespaces Redis keys (rules.Cache.KeyPrefix). Default "harvest:".
	Prefix string
	// Replica identifies this process in leases. Default: host name and a random suffix.
	Replica string
	// LeaseTTL is how long a lease lasts without renewal; it is renewed every third of
	// it. Default 5s.
	LeaseTTL time.Duration
	// MinBackoff and MaxBackoff of each watch's reconnects. Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Registerer receives the metrics (nil: not registered); Log the logs.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Runner runs the watches of the capture rules in force.
type Runner struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	mu      sync.Mutex
	targets map[string]*target // by key
	reload  chan struct{}
}

// New returns a Runner; Run starts it.
func New(cfg Config) (*Runner, error) {
	if cfg.Rules == nil || cfg.Conn == nil || cfg.Gens == nil {
		return nil, errors.New("capture: Rules, Conn and Gens are required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "harvest:"
	}
	if cfg.Replica == "" {
		host, _ := os.Hostname()
		cfg.Replica = host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{cfg: cfg, log: cfg.Log.With("component", "capture"), targets: map[string]*target{}, reload: make(chan struct{}, 1)}
	r.m = newMetrics(r)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.m); err != nil {
			return nil, fmt.Errorf("capture: register metrics: %w", err)
		}
	}
	cfg.Rules.OnReload(func(*rules.Config) {
		select {
		case r.reload <- struct{}{}:
		default:
		}
	})
	return r, nil
}

// Run watches until ctx ends, following rule reloads; it returns once every watch has
// stopped and released its lease.
func (r *Runner) Run(ctx context.Context) error {
	running := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range running {
			cancel()
		}
		wg.Wait()
	}()
	for {
		want := wanted(r.cfg.Rules.Current())
		for key, cancel := range running {
			if _, ok := want[key]; !ok {
				cancel()
				delete(running, key)
				r.mu.Lock()
				delete(r.targets, key)
				r.mu.Unlock()
			}
		}
		for key, spec := range want {
			if _, ok := running[key]; ok {
				continue
			}
			t := &target{spec: spec, key: key}
			r.mu.Lock()
			r.targets[key] = t
			r.mu.Unlock()
			tctx, cancel := context.WithCancel(ctx)
			running[key] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.runTarget(tctx, t)
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.reload:
		}
	}
}

// spec is one watched query.
type spec struct {
	database string // projects/{p}/databases/{d}
	target   rules.CaptureTarget
}

func (s spec) label() string { return s.target.String() }

func (s spec) listenTarget() *firestorepb.Target {
	parent := s.database + "/documents"
	if !s.target.Group && s.target.Parent != "" {
		parent += "/" + s.target.Parent
	}
	return &firestorepb.Target{TargetType: &firestorepb.Target_Query{Query: &firestorepb.Target_QueryTarget{
		Parent: parent,
		QueryType: &firestorepb.Target_QueryTarget_StructuredQuery{StructuredQuery: &firestorepb.StructuredQuery{
			From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: s.target.CollectionID, AllDescendants: s.target.Group}},
		}},
	}}}
}

// wanted is the set of watches cfg's capture rules need, by key.
func wanted(cfg *rules.Config) map[string]spec {
	out := map[string]spec{}
	if cfg.Upstream.Project == "" {
		return out
	}
	db := "projects/" + cfg.Upstream.Project + "/databases/" + rules.CaptureDatabase
	for i := range cfg.Rules {
		rule := &cfg.Rules[i]
		if !rule.Capture {
			continue
		}
		t, ok := rule.CaptureTarget()
		if !ok {
			continue
		}
		s := spec{database: db, target: t}
		out[db+" "+s.label()] = s
	}
	return out
}

// target is the state of one watch on this replica.
type target struct {
	spec spec
	key  string

	mu    sync.Mutex
	held  bool
	w     *watch.Watch // the running watch, while held
	base  watch.Stats  // counts of watches that ended
	reads time.Time    // read time of the last snapshot done
}

func (t *target) stats() (st watch.Stats, held bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st = t.base
	if t.w != nil {
		cur := t.w.Stats()
		st.Documents += cur.Documents
		st.Resets += cur.Resets
		st.Reconnects += cur.Reconnects
	}
	st.ReadTime = t.reads
	return st, t.held
}

func (t *target) setWatch(w *watch.Watch, held bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w != nil {
		cur := t.w.Stats()
		t.base.Documents += cur.Documents
		t.base.Resets += cur.Resets
		t.base.Reconnects += cur.Reconnects
	}
	t.w, t.held = w, held
}

// keys are the Redis keys of a watch: its lease, state and membership.
type keys struct{ lease, state, members string }

func (r *Runner) keysOf(t *target) keys {
	h := sha256.Sum256([]byte(t.key))
	base := r.cfg.Prefix + "capture:" + hex.EncodeToString(h[:8])
	return keys{lease: base + ":lease", state: base + ":state", members: base + ":members"}
}

// runTarget holds the target's lease whenever it can and watches while it does.
func (r *Runner) runTarget(ctx context.Context, t *target) {
	log := r.log.With("watch", t.spec.label())
	poll := r.cfg.LeaseTTL / 3
	for ctx.Err() == nil {
		if r.cfg.Redis == nil {
			r.watchHeld(ctx, t, nil, log)
			return
		}
		k := r.keysOf(t)
		ok, err := r.cfg.Redis.SetNX(ctx, k.lease, r.cfg.Replica, r.cfg.LeaseTTL).Result()
		if err != nil && ctx.Err() == nil {
			log.Warn("capture lease: Redis failed", "err", err)
		}
		if ok {
			log.Info("capture lease acquired")
			r.watchHeld(ctx, t, &k, log)
			// Let go at once, so another replica takes over without waiting for expiry.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			releaseScript.Run(rctx, r.cfg.Redis, []string{k.lease}, r.cfg.Replica)
			cancel()
			log.Info("capture lease released")
		}
		select {
		case <-ctx.Done():
		case <-time.After(poll):
		}
	}
}

var (
	// renewScript extends the lease only if this replica still holds it.
	renewScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	// releaseScript deletes the lease only if this replica holds it.
	releaseScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
	// saveScript records a snapshot's state, fenced by the lease: nothing is written by
	// a replica that lost it. ARGV: owner, token, read time, n, then n name/update_time
	// pairs to set, then names to delete.
	saveScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[4])
local i = 5
while i < 5 + 2*n do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i+1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 1
end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'read_time', ARGV[3])
return 1`)
)

// errLeaseLost stops a watch whose lease another replica now holds.
var errLeaseLost = errors.New("capture: lease lost")

// watchHeld runs the watch while the lease (k; nil without Redis) is held.
func (r *Runner) watchHeld(ctx context.Context, t *target, k *keys, log *slog.Logger) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var resume watch.Position
	var known []*firestorepb.Document
	if k != nil {
		var err error
		if resume, known, err = r.load(ctx, k); err != nil {
			log.Warn("capture: cannot load the watch's state; retrying", "err", err)
			return
		}
		go r.renew(ctx, cancel, k, log)
	}
	baseline := len(resume.ResumeToken) == 0
	w, err := watch.New(watch.Config{
		Conn: r.cfg.Conn, Database: t.spec.database, Target: t.spec.listenTarget(),
		Resume: resume, Known: known,
		MinBackoff: r.cfg.MinBackoff, MaxBackoff: r.cfg.MaxBackoff, Log: log,
		OnSnapshot: func(ctx context.Context, s *watch.Snapshot) error {
			if err := r.apply(ctx, t, k, s, baseline); err != nil {
				log.Warn("capture: snapshot not applied; it will be seen again", "err", err)
				return err
			}
			baseline = false
			t.mu.Lock()
			t.reads = s.ReadTime
			t.mu.Unlock()
			return nil
		},
	})
	if err != nil {
		log.Error("capture: cannot start the watch", "err", err)
		return
	}
	t.setWatch(w, true)
	defer t.setWatch(nil, false)
	w.Run(ctx)
	if errors.Is(context.Cause(ctx), errLeaseLost) {
		log.Warn("capture lease lost to another replica; watch stopped")
	}
}

// renew extends the lease every third of its TTL and cancels the watch when it is lost
// (or Redis cannot confirm it before it would have expired).
func (r *Runner) renew(ctx context.Context, cancel context.CancelCauseFunc, k *keys, log *slog.Logger) {
	tick := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer tick.Stop()
	confirmed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := renewScript.Run(ctx, r.cfg.Redis, []string{k.lease}, r.cfg.Replica, r.cfg.LeaseTTL.Milliseconds()).Int()
		switch {
		case err == nil && n == 1:
			confirmed = time.Now()
		case err == nil:
			cancel(errLeaseLost)
			return
		case time.Since(confirmed) > r.cfg.LeaseTTL*2/3:
			log.Warn("capture lease: cannot renew before it expires; stopping the watch", "err", err)
			cancel(errLeaseLost)
			return
		}
	}
}

// load reads a watch's persisted position and membership.
func (r *Runner) load(ctx context.Context, k *keys) (watch.Position, []*firestorepb.Document, error) {
	st, err := r.cfg.Redis.HGetAll(ctx, k.state).Result()
	if err != nil {
		return watch.Position{}, nil, err
	}
	if st["token"] == "" {
		return watch.Position{}, nil, nil
	}
	pos := watch.Position{ResumeToken: []byte(st["token"])}
	if pos.ReadTime, err = time.Parse(time.RFC3339Nano, st["read_time"]); err != nil {
		return watch.Position{}, nil, fmt.Errorf("capture: persisted read time: %w", err)
	}
	members, err := r.cfg.Redis.HGetAll(ctx, k.members).Result()
	if err != nil {
		return watch.Position{}, nil, err
	}
	known := make([]*firestorepb.Document, 0, len(members))
	for name, ut := range members {
		at, err := time.Parse(time.RFC3339Nano, ut)
		if err != nil {
			continue // unreadable: treated as unknown, reported again if present
		}
		known = append(known, &firestorepb.Document{Name: name, UpdateTime: timestamppb.New(at)})
	}
	return pos, known, nil
}

// apply does what a snapshot's changes call for, then persists it.
func (r *Runner) apply(ctx context.Context, t *target, k *keys, s *watch.Snapshot, baseline bool) error {
	cfg := r.cfg.Rules.Current()
	var tags []string
	var evs []event.Event
	for _, c := range s.Changes {
		if baseline {
			break
		}
		rel := c.Name
		if _, after, ok := strings.Cut(c.Name, "/documents/"); ok {
			rel = after
		}
		rule := cfg.ForDocument(rel)
		if rule == nil || !rule.Capture {
			continue
		}
		tags = append(tags, classify.WriteTags(t.spec.database, c.Name)...)
		r.m.changes.WithLabelValues(t.spec.label(), c.Kind.String()).Inc()
		if rule.Events == 0 || r.cfg.Emitter == nil {
			continue
		}
		cc := event.Captured{Name: c.Name, Old: c.Old, ReadTime: s.ReadTime}
		if c.Kind == watch.Changed {
			cc.Doc = c.Doc
		}
		ev, err := event.FromCaptured(cc)
		if err != nil {
			r.log.Error("capture: a change's event cannot be built; it is LOST", "document", rel, "err", err)
			r.cfg.Emitter.Lost(1)
			continue
		}
		if rule.Events.Allows(typeBit(ev.Type)) {
			evs = append(evs, ev)
		}
	}
	if len(tags) > 0 {
		if err := r.cfg.Gens.Bump(ctx, tags, cache.WaitApplied); err != nil && !errors.Is(err, cache.ErrAckTimeout) {
			return fmt.Errorf("invalidate: %w", err)
		}
	}
	if len(evs) > 0 {
		if err := r.cfg.Emitter.Emit(ctx, evs); err != nil {
			return fmt.Errorf("emit %d events: %w", len(evs), err)
		}
		for _, ev := range evs {
			r.m.events.WithLabelValues(t.spec.label(), strings.TrimPrefix(ev.Type, "google.cloud.firestore.document.v1.")).Inc()
		}
	}
	if k == nil {
		return nil
	}
	// The view before this snapshot is what is persisted, so its changes (a reset's
	// included: they are the difference with that view) bring the membership up to date.
	args := []any{r.cfg.Replica, string(s.ResumeToken), s.ReadTime.Format(time.RFC3339Nano), 0}
	var dels []any
	n := 0
	for _, c := range s.Changes {
		if c.Kind == watch.Changed {
			args = append(args, c.Name, c.Doc.GetUpdateTime().AsTime().UTC().Format(time.RFC3339Nano))
			n++
		} else {
			dels = append(dels, c.Name)
		}
	}
	args[3] = n
	args = append(args, dels...)
	// Events are out: save even if the watch is being stopped, or its successor repeats them.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ok, err := saveScript.Run(sctx, r.cfg.Redis, []string{k.lease, k.state, k.members}, args...).Int()
	if err != nil {
		return fmt.Errorf("persist the snapshot: %w", err)
	}
	if ok != 1 {
		return errLeaseLost
	}
	return nil
}

func typeBit(typ string) rules.EventTypes {
	switch typ {
	case event.TypeCreated:
		return rules.Created
	case event.TypeUpdated:
		return rules.Updated
	case event.TypeDeleted:
		return rules.Deleted
	}
	return rules.Written
}
