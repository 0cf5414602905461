package cache

import (
	"encoding/binary"
	"encoding/hex"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Key identifies a cached answer: a 128-bit hash the proxy computes from method,
// decoded path, response-shaping parameters, canonical body and scope. 128 bits make
// an accidental collision (which would serve one request's answer to another)
// practically impossible; the first 8 bytes also pick the L1 shard, so the hash must
// be uniform (any good 128-bit hash, e.g. two seeded xxhash/maphash halves).
type Key [16]byte

// String is the key in lower-case hex, as used in L2 key names.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// L1 is the in-process tier: a sharded LRU bounded both in bytes and in entries.
//
// Each shard is a simplelru.LRU under its own mutex with its own share of both
// budgets (so the totals never exceed L1MaxBytes and L1MaxEntries); eviction is
// least-recently-used within a shard, an approximation of a global LRU that lets
// cores work on different shards without contention. An entry larger than one
// shard's byte budget is not stored (L2 still holds it).
//
// A nil *L1, or one made with maxBytes <= 0, is disabled: every call is a no-op and
// Get always misses.
type L1 struct {
	shards []l1Shard
	mask   uint64
	m      *Metrics
}

type l1Shard struct {
	mu       sync.Mutex
	lru      *simplelru.LRU[Key, *Entry]
	bytes    atomic.Int64 // read without the lock by Bytes()
	maxBytes int64
	_        [32]byte // keep hot shard mutexes on separate cache lines
}

// minShardBytes keeps shards big enough that ordinary answers fit in one.
const (
	maxL1Shards   = 64
	minShardBytes = 1 << 20
)

// NewL1 makes an L1 holding at most maxBytes bytes (Entry.Size) and maxEntries
// entries. maxBytes <= 0 disables it; maxEntries <= 0 means no entry bound beyond
// the byte bound. m may be nil.
func NewL1(maxBytes int64, maxEntries int, m *Metrics) *L1 {
	if maxBytes <= 0 {
		return nil
	}
	n := maxL1Shards
	for n > 1 && maxBytes/int64(n) < minShardBytes {
		n /= 2
	}
	for n > 1 && maxEntries > 0 && maxEntries/n < 16 {
		n /= 2
	}
	perEntries := int(^uint(0) >> 2)
	if maxEntries > 0 {
		perEntries = maxEntries / n
	}
	c := &L1{shards: make([]l1Shard, n), mask: uint64(n - 1), m: m}
	for i := range c.shards {
		s := &c.shards[i]
		s.maxBytes = maxBytes / int64(n)
		// The callback runs for evictions, Remove and Purge alike: it keeps the byte
		// count exact whatever removed the entry.
		lru, err := simplelru.NewLRU[Key, *Entry](perEntries, func(_ Key, e *Entry) {
			s.bytes.Add(-e.Size())
		})
		if err != nil { // only for size <= 0, excluded above
			panic("cache: " + err.Error())
		}
		s.lru = lru
	}
	return c
}

func (c *L1) shard(k Key) *l1Shard {
	return &c.shards[binary.LittleEndian.Uint64(k[:8])&c.mask]
}

// Get returns the entry stored under k, or nil. It does not judge freshness or
// generations: see Generations.Valid and Entry.Usable (Tiers.Lookup does both).
func (c *L1) Get(k Key) *Entry {
	if c == nil {
		return nil
	}
	s := c.shard(k)
	s.mu.Lock()
	e, _ := s.lru.Get(k)
	s.mu.Unlock()
	return e
}

// Add stores e under k, replacing any previous entry, and evicts least recently used
// entries of the shard until it is within its bounds. It reports whether e was
// stored (false when disabled or when e alone exceeds a shard's byte budget).
func (c *L1) Add(k Key, e *Entry) bool {
	if c == nil || e == nil {
		return false
	}
	size := e.Size()
	s := c.shard(k)
	if size > s.maxBytes {
		s.mu.Lock()
		s.lru.Remove(k) // an older, smaller answer under k is outdated anyway
		s.mu.Unlock()
		return false
	}
	evicted := 0
	s.mu.Lock()
	s.lru.Remove(k) // Add on an existing key would not call back: remove to keep bytes exact
	if s.lru.Add(k, e) {
		evicted++
	}
	s.bytes.Add(size)
	for s.bytes.Load() > s.maxBytes {
		if _, _, ok := s.lru.RemoveOldest(); !ok {
			break
		}
		evicted++
	}
	s.mu.Unlock()
	if evicted > 0 {
		c.m.l1Evicted(evicted)
	}
	return true
}

// Remove drops the entry under k, if any.
func (c *L1) Remove(k Key) {
	if c == nil {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	s.lru.Remove(k)
	s.mu.Unlock()
}

// Purge drops every entry.
func (c *L1) Purge() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.lru.Purge()
		s.mu.Unlock()
	}
}

// Len is the number of entries stored.
func (c *L1) Len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.lru.Len()
		s.mu.Unlock()
	}
	return n
}

// Bytes is the sum of Entry.Size over the entries stored.
func (c *L1) Bytes() int64 {
	if c == nil {
		return 0
	}
	var n int64
	for i := range c.shards {
		n += c.shards[i].bytes.Load()
	}
	return n
}

// MaxBytes is the byte bound (0 when disabled).
func (c *L1) MaxBytes() int64 {
	if c == nil {
		return 0
	}
	return c.shards[0].maxBytes * int64(len(c.shards))
}
