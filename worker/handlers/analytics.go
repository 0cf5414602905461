package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/worker"
)

// Analytics counts events per day (UTC, from the event's time), collection and
// operation in Redis, and distinct writers per collection and day:
//
//	<prefix>stats:<yyyy-mm-dd>:<collection>:<operation>   INCR counter
//	<prefix>stats:<yyyy-mm-dd>:<collection>:users         HyperLogLog of authhash (≈0.8% error)
//	<prefix>stats:<yyyy-mm-dd>:collections                set of collections seen that day
//
// operation is created, updated, deleted or written; any other event type counts as
// "other". Every key expires after the retention (default 90 days). One event's
// updates are applied in one MULTI, so a failure counts nothing and the retry counts
// once; the consumer's claim keeps a redelivery from counting twice.
type Analytics struct {
	rdb       redis.UniversalClient
	prefix    string
	retention time.Duration
	now       func() time.Time
}

// Operations counted, in the order Stats reports them.
var Operations = []string{"created", "updated", "deleted", "written", "other"}

// NewAnalytics counts in rdb under prefix (e.g. "harvest:"); retention 0 means 90 days.
func NewAnalytics(rdb redis.UniversalClient, prefix string, retention time.Duration) *Analytics {
	if retention <= 0 {
		retention = 90 * 24 * time.Hour
	}
	return &Analytics{rdb: rdb, prefix: prefix, retention: retention, now: time.Now}
}

const dayLayout = "2006-01-02"

func (a *Analytics) dayKey(day string) string { return a.prefix + "stats:" + day }

// Handle counts ev.
func (a *Analytics) Handle(ctx context.Context, ev worker.Event) error {
	t := ev.Time
	if t.IsZero() {
		t = a.now()
	}
	day := t.UTC().Format(dayLayout)
	coll := ev.Collection
	if coll == "" {
		coll = "(none)"
	}
	op := ev.Operation()
	if !slices.Contains(Operations, op) {
		op = "other"
	}
	base := a.dayKey(day)
	counter := base + ":" + coll + ":" + op
	_, err := a.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, counter)
		p.Expire(ctx, counter, a.retention)
		p.SAdd(ctx, base+":collections", coll)
		p.Expire(ctx, base+":collections", a.retention)
		if ev.AuthHash != "" {
			p.PFAdd(ctx, base+":"+coll+":users", ev.AuthHash)
			p.Expire(ctx, base+":"+coll+":users", a.retention)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("analytics: count %s: %w", counter, err)
	}
	return nil
}

// DayStats is one day's counts, as /stats serves them.
type DayStats struct {
	Day         string                     `json:"day"`
	Collections map[string]CollectionStats `json:"collections"`
}

// CollectionStats is one collection's counts for a day. Operations with no events are 0.
type CollectionStats struct {
	Events        map[string]int64 `json:"events"`
	DistinctUsers int64            `json:"distinct_users"`
}

// Stats reads back the counts of day (its UTC date).
func (a *Analytics) Stats(ctx context.Context, day time.Time) (DayStats, error) {
	d := day.UTC().Format(dayLayout)
	base := a.dayKey(d)
	out := DayStats{Day: d, Collections: map[string]CollectionStats{}}
	colls, err := a.rdb.SMembers(ctx, base+":collections").Result()
	if err != nil {
		return out, fmt.Errorf("analytics: read collections of %s: %w", d, err)
	}
	type reads struct {
		counts []*redis.StringCmd
		users  *redis.IntCmd
	}
	pending := make(map[string]reads, len(colls))
	_, err = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range colls {
			r := reads{users: p.PFCount(ctx, base+":"+c+":users")}
			for _, op := range Operations {
				r.counts = append(r.counts, p.Get(ctx, base+":"+c+":"+op))
			}
			pending[c] = r
		}
		return nil
	})
	if err != nil && err != redis.Nil { // Nil: some operation never happened, read as 0
		return out, fmt.Errorf("analytics: read counters of %s: %w", d, err)
	}
	for c, r := range pending {
		cs := CollectionStats{Events: map[string]int64{}, DistinctUsers: r.users.Val()}
		for i, op := range Operations {
			n, _ := r.counts[i].Int64() // redis.Nil reads as 0
			cs.Events[op] = n
		}
		out.Collections[c] = cs
	}
	return out, nil
}

// StatsHandler serves Stats as JSON: GET /stats?day=yyyy-mm-dd (default today, UTC).
func (a *Analytics) StatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		day := a.now()
		if q := r.URL.Query().Get("day"); q != "" {
			t, err := time.Parse(dayLayout, q)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": "day must be yyyy-mm-dd"})
				return
			}
			day = t
		}
		st, err := a.Stats(r.Context(), day)
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	})
}
