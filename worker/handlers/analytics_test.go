package handlers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/harvest-hub/edge/worker"
)

func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis must be running at 127.0.0.1:6379: %v", err)
	}
	var b [5]byte
	_, _ = rand.Read(b[:])
	prefix := "test:handlers:" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb, prefix
}

func TestAnalyticsCountsMatchTheEvents(t *testing.T) {
	rdb, prefix := testRedis(t)
	a := NewAnalytics(rdb, prefix, time.Hour)
	day := time.Date(2031, 5, 6, 23, 59, 0, 0, time.UTC)
	ev := func(id, op, coll, user string, at time.Time) worker.Event {
		return worker.Event{ID: id, Type: "google.cloud.firestore.document.v1." + op, Collection: coll, AuthHash: user, Time: at}
	}
	events := []worker.Event{
		ev("1", "created", "orders", "alice", day),
		ev("2", "created", "orders", "bob", day),
		ev("3", "created", "orders", "alice", day),
		ev("4", "updated", "orders", "", day),
		ev("5", "deleted", "products", "", day),
		ev("6", "deleted", "products", "", day),
		ev("7", "written", "products", "carol", day),
		ev("8", "created", "orders", "dave", day.Add(2*time.Minute)), // the next day, UTC
	}
	ctx := context.Background()
	for _, e := range events {
		if err := a.Handle(ctx, e); err != nil {
			t.Fatalf("Handle %s: %v", e.ID, err)
		}
	}
	got, err := a.Stats(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	want := DayStats{Day: "2031-05-06", Collections: map[string]CollectionStats{
		"orders":   {Events: map[string]int64{"created": 3, "updated": 1, "deleted": 0, "written": 0, "other": 0}, DistinctUsers: 2},
		"products": {Events: map[string]int64{"created": 0, "updated": 0, "deleted": 2, "written": 1, "other": 0}, DistinctUsers: 1},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Stats = %+v\nwant   %+v", got, want)
	}
	if ttl := rdb.TTL(ctx, prefix+"stats:2031-05-06:orders:created").Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("counter TTL = %v, want the retention (1h)", ttl)
	}

	// /stats serves the same numbers.
	rec := httptest.NewRecorder()
	a.StatsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/stats?day=2031-05-07", nil))
	var next DayStats
	if err := json.Unmarshal(rec.Body.Bytes(), &next); err != nil || rec.Code != 200 {
		t.Fatalf("/stats: %d %s", rec.Code, rec.Body)
	}
	if next.Collections["orders"].Events["created"] != 1 || next.Collections["orders"].DistinctUsers != 1 {
		t.Errorf("/stats for the next day = %s", rec.Body)
	}
	rec = httptest.NewRecorder()
	a.StatsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/stats?day=May", nil))
	if rec.Code != 400 {
		t.Errorf("/stats?day=May answered %d, want 400", rec.Code)
	}
}
