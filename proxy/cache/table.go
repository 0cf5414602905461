package cache

import (
	"sync"
	"sync/atomic"
)

// table is a replica's local view of tag generations, bounded in tags. It is keyed
// by the tag's 64-bit hash for a cheap hot path, and stores the tag itself so that a
// hash collision reads as "unknown" (a miss), never as another tag's generation.
//
// Generations only move forward within the table (raise keeps the maximum): a
// Snapshot answer that arrives after a newer bump message must not roll it back.
type table struct {
	shards   [tableShards]tableShard
	perShard int
	// drops counts tags forgotten to stay within bounds (or displaced by a hash
	// collision). A Snapshot that saw it change must not re-learn unknown tags: the
	// value it read may predate a bump the table had applied and then forgotten.
	drops atomic.Uint64
}

const tableShards = 64

type tableShard struct {
	mu sync.RWMutex
	m  map[uint64]tagGen
	_  [32]byte
}

type tagGen struct {
	tag string
	gen uint64
}

func newTable(maxTags int) *table {
	t := &table{perShard: max(1, maxTags/tableShards)}
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]tagGen)
	}
	return t
}

func (t *table) shard(h uint64) *tableShard { return &t.shards[h>>58] }

// get returns tag's generation, if known.
func (t *table) get(h uint64, tag string) (uint64, bool) {
	s := t.shard(h)
	s.mu.RLock()
	tg, ok := s.m[h]
	s.mu.RUnlock()
	if !ok || tg.tag != tag {
		return 0, false
	}
	return tg.gen, true
}

// raise sets tag's generation to gen unless the table knows a higher one. Bumps use
// it: a bump's value is the truth at the time it was made, in any epoch.
func (t *table) raise(h uint64, tag string, gen uint64) {
	s := t.shard(h)
	s.mu.Lock()
	t.raiseLocked(s, h, tag, gen)
	s.mu.Unlock()
}

// learn is raise for a value a Snapshot (or L2.Get) read from Redis, made under
// constraints checked under the shard lock, so that a concurrent epoch reset or drop
// cannot slip in between check and store:
//   - the epoch (state>>1) must still be the one the read began in: values read
//     before a subscription gap must not enter the table of the next epoch;
//   - an unknown tag is learned only if no tag was dropped since the read began
//     (drops): the table might have applied a newer bump for it and then forgotten it.
func (t *table) learn(h uint64, tag string, gen uint64, state *atomic.Uint64, epoch, drops uint64) {
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if state.Load()>>1 != epoch {
		return
	}
	if tg, ok := s.m[h]; (!ok || tg.tag != tag) && t.drops.Load() != drops {
		return
	}
	t.raiseLocked(s, h, tag, gen)
}

func (t *table) raiseLocked(s *tableShard, h uint64, tag string, gen uint64) {
	tg, ok := s.m[h]
	if ok && tg.tag == tag {
		if gen > tg.gen {
			s.m[h] = tagGen{tag: tag, gen: gen}
		}
		return
	}
	t.makeRoomLocked(s, h, ok)
	s.m[h] = tagGen{tag: tag, gen: gen}
}

// makeRoomLocked forgets a tag if inserting at h needs it: the colliding one, or a
// random one when the shard is full.
func (t *table) makeRoomLocked(s *tableShard, h uint64, collision bool) {
	if collision {
		t.drops.Add(1)
		return
	}
	if len(s.m) >= t.perShard {
		for k := range s.m { // map iteration starts at a random key: random eviction
			delete(s.m, k)
			break
		}
		t.drops.Add(1)
	}
}

// getOrInsert returns tag's generation, inserting next() when unknown (the
// in-process mode, where the table is the truth; clock never repeats a value).
func (t *table) getOrInsert(h uint64, tag string, clock *atomic.Uint64) uint64 {
	if g, ok := t.get(h, tag); ok {
		return g
	}
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	tg, ok := s.m[h]
	if ok && tg.tag == tag {
		return tg.gen
	}
	t.makeRoomLocked(s, h, ok)
	g := clock.Add(1)
	s.m[h] = tagGen{tag: tag, gen: g}
	return g
}

// clear forgets every tag.
func (t *table) clear() {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// forget drops tag, counting a drop so that a read which began before cannot learn it
// again (table.learn): a bump of it failed, and Redis may still answer the value the
// bump should have replaced.
func (t *table) forget(h uint64, tag string) {
	s := t.shard(h)
	s.mu.Lock()
	if tg, ok := s.m[h]; ok && tg.tag == tag {
		delete(s.m, h)
	}
	t.drops.Add(1)
	s.mu.Unlock()
}
