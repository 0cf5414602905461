package cache

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func entryOfSize(body int) *Entry {
	return &Entry{Status: 200, Body: make([]byte, body), Tags: []string{"doc:x"}, Gens: []uint64{1}}
}

func randKey(r *rand.Rand) Key {
	var k Key
	binary.LittleEndian.PutUint64(k[:8], r.Uint64())
	binary.LittleEndian.PutUint64(k[8:], r.Uint64())
	return k
}

// The byte bound holds after every insert, whatever the mix of sizes, and the byte
// count is exact: it is the sum of the sizes of what is stored.
func TestL1ByteBoundHolds(t *testing.T) {
	const maxBytes = 4 << 20
	c := NewL1(maxBytes, 0, NewMetrics(nil))
	r := rand.New(rand.NewPCG(1, 2))
	keys := make([]Key, 0, 20000)
	for i := 0; i < 20000; i++ {
		k := randKey(r)
		if i%5 == 0 && len(keys) > 0 { // some replacements of existing keys
			k = keys[r.IntN(len(keys))]
		}
		keys = append(keys, k)
		size := []int{10, 300, 4 << 10, 60 << 10, 200 << 10}[r.IntN(5)]
		c.Add(k, entryOfSize(size))
		if b := c.Bytes(); b > maxBytes {
			t.Fatalf("after %d inserts L1 holds %d bytes, bound %d", i+1, b, maxBytes)
		}
	}
	// keys may repeat: count each stored key once
	seen := map[Key]bool{}
	var sum int64
	for _, k := range keys {
		if e := c.Get(k); e != nil && !seen[k] {
			seen[k] = true
			sum += e.Size()
		}
	}
	if sum != c.Bytes() || len(seen) != c.Len() {
		t.Fatalf("accounting: stored %d entries of %d bytes, L1 says %d entries, %d bytes", len(seen), sum, c.Len(), c.Bytes())
	}
	if c.Bytes() < maxBytes/2 {
		t.Errorf("L1 uses only %d of %d bytes: evicting too eagerly", c.Bytes(), maxBytes)
	}
	c.Purge()
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Fatalf("after Purge: %d entries, %d bytes", c.Len(), c.Bytes())
	}
}

// Concurrent writers, readers and removers: bounds hold and accounting stays exact
// (run with -race).
func TestL1ConcurrentBounds(t *testing.T) {
	const maxBytes, maxEntries = 8 << 20, 3000
	c := NewL1(maxBytes, maxEntries, nil)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, seed))
			keys := make([]Key, 64)
			for i := range keys {
				keys[i] = randKey(r)
			}
			for i := 0; i < 5000; i++ {
				k := keys[r.IntN(len(keys))]
				switch r.IntN(4) {
				case 0, 1:
					c.Add(randKey(r), entryOfSize(r.IntN(16<<10)))
				case 2:
					c.Add(k, entryOfSize(r.IntN(2<<10)))
				case 3:
					if e := c.Get(k); e != nil && e.Status != 200 {
						t.Error("corrupt entry")
					}
					if i%7 == 0 {
						c.Remove(k)
					}
				}
			}
		}(uint64(w))
	}
	wg.Wait()
	if c.Bytes() > maxBytes || c.Len() > maxEntries {
		t.Fatalf("bounds broken: %d bytes (max %d), %d entries (max %d)", c.Bytes(), maxBytes, c.Len(), maxEntries)
	}
	c.Purge()
	if c.Bytes() != 0 {
		t.Fatalf("accounting drifted: %d bytes after Purge", c.Bytes())
	}
}

func TestL1EntryBound(t *testing.T) {
	c := NewL1(64<<20, 100, nil)
	for i := 0; i < 1000; i++ {
		c.Add(key(fmt.Sprint(i)), entryOfSize(10))
		if c.Len() > 100 {
			t.Fatalf("after %d inserts L1 holds %d entries, bound 100", i+1, c.Len())
		}
	}
	if c.Len() < 50 {
		t.Errorf("only %d entries kept of a bound of 100", c.Len())
	}
}

func TestL1EvictsLeastRecentlyUsed(t *testing.T) {
	c := NewL1(1<<20, 0, nil) // one shard
	size := entryOfSize(100 << 10).Size()
	n := int((1 << 20) / size) // how many fit
	for i := 0; i < n; i++ {
		c.Add(key(fmt.Sprint(i)), entryOfSize(100<<10))
	}
	c.Get(key("0")) // 0 is now the most recently used; 1 the least
	c.Add(key("new"), entryOfSize(100<<10))
	if c.Get(key("0")) == nil {
		t.Error("recently used entry was evicted")
	}
	if c.Get(key("1")) != nil {
		t.Error("least recently used entry survived")
	}
}

func TestL1RefusesEntryLargerThanShard(t *testing.T) {
	c := NewL1(1<<20, 0, nil)
	k := key("big")
	c.Add(k, entryOfSize(10))
	if c.Add(k, entryOfSize(2<<20)) {
		t.Fatal("entry larger than the whole budget was stored")
	}
	if c.Get(k) != nil {
		t.Fatal("older answer under the key survived a refused replacement")
	}
	if c.Bytes() != 0 {
		t.Fatalf("%d bytes accounted for nothing", c.Bytes())
	}
}

func TestL1DisabledWithZeroBytes(t *testing.T) {
	c := NewL1(0, 1000, nil)
	k := key("k")
	if c.Add(k, entryOfSize(1)) {
		t.Fatal("disabled L1 stored an entry")
	}
	if c.Get(k) != nil || c.Len() != 0 || c.Bytes() != 0 || c.MaxBytes() != 0 {
		t.Fatal("disabled L1 is not empty")
	}
	c.Remove(k)
	c.Purge()
}
