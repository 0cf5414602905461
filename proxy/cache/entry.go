package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"time"
	"unsafe"
)

// Entry is one cached answer.
type Entry struct {
	// Status is the upstream's HTTP status: 200, or 404 for negative caching.
	Status int
	// Body is the response body, served as is.
	Body []byte
	// ContentType is the upstream's Content-Type.
	ContentType string
	// StoredAt is when the answer was received from the upstream (for Age).
	StoredAt time.Time
	// FreshUntil: served as a plain hit until then.
	FreshUntil time.Time
	// StaleUntil: past FreshUntil and before StaleUntil the entry may be served under
	// stale-while-revalidate or stale-if-error; after it the entry is dead. L2 keys
	// expire at StaleUntil.
	StaleUntil time.Time
	// Docs is how many billed document reads one hit on this entry saves.
	Docs int
	// Tags the answer depends on, and Gens, the generation of each tag (same index)
	// as seen when the read BEGAN (Stamp.Gens).
	Tags []string
	Gens []uint64
	// Epoch is the local table's epoch of the Stamp the Gens came from. It is local to
	// one replica and is not encoded: entries decoded from L2 are re-stamped by Tiers.
	Epoch uint64

	// tagHashes caches hashTag(Tags[i]) for the hot path; set only before the entry is
	// shared (Tiers.Fill, UnmarshalBinary), never after.
	tagHashes []uint64
}

// Fresh reports whether the entry may be served as a plain hit at now.
func (e *Entry) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// Usable reports whether the entry may be served at all at now (fresh, or within
// its stale window).
func (e *Entry) Usable(now time.Time) bool { return now.Before(e.StaleUntil) }

// Age is how old the answer is at now, in whole seconds, for the Age header.
func (e *Entry) Age(now time.Time) int64 {
	a := now.Sub(e.StoredAt) / time.Second
	if a < 0 {
		return 0
	}
	return int64(a)
}

// entryOverhead approximates the fixed memory of an Entry and its L1 bookkeeping
// (struct, slice headers, LRU element, map slot), so that many tiny entries are still
// charged for what they really cost.
const entryOverhead = 256

// Size is the number of bytes the entry is charged in L1's byte budget.
func (e *Entry) Size() int64 {
	n := entryOverhead + len(e.Body) + len(e.ContentType) + 16*len(e.Gens)
	for _, t := range e.Tags {
		n += 16 + len(t)
	}
	return int64(n)
}

// prepare caches tag hashes. Call only while the entry is not yet shared.
func (e *Entry) prepare() {
	if len(e.tagHashes) == len(e.Tags) {
		return
	}
	h := make([]uint64, len(e.Tags))
	for i, t := range e.Tags {
		h[i] = hashTag(t)
	}
	e.tagHashes = h
}

// tagSeed seeds the tag hash. It is set once at start and never changes: the local
// table and the hashes cached in entries must agree within one process.
var tagSeed = maphash.MakeSeed()

func hashTag(tag string) uint64 { return maphash.String(tagSeed, tag) }

// Current reports whether the entry depends on exactly tags and recorded exactly
// gens (the current generations, as L2.Get returns them).
func (e *Entry) Current(tags []string, gens []uint64) bool {
	if len(e.Tags) != len(tags) || len(e.Gens) != len(gens) || len(tags) != len(gens) {
		return false
	}
	for i := range tags {
		if e.Tags[i] != tags[i] || e.Gens[i] != gens[i] {
			return false
		}
	}
	return true
}

// entryVersion is the first byte of the binary encoding; bump it when the layout
// changes so that replicas running different versions miss instead of misreading.
const entryVersion = 1

// Limits that reject garbage before allocating for it.
const (
	maxTags   = 1 << 16
	maxStatus = 599
	minStatus = 100
)

// ErrCorrupt is wrapped by UnmarshalBinary's errors.
var ErrCorrupt = errors.New("cache: corrupt entry")

// MarshalBinary encodes the entry (without Epoch):
//
//	version(1) status ctLen ct storedAt freshUntil staleUntil docs
//	nTags {len tag gen}… bodyLen body
//
// with unsigned varints, and times as zigzag varints of Unix nanoseconds (0 = zero time).
func (e *Entry) MarshalBinary() ([]byte, error) {
	if len(e.Tags) != len(e.Gens) {
		return nil, fmt.Errorf("cache: marshal entry: %d tags but %d gens", len(e.Tags), len(e.Gens))
	}
	n := 1 + 5*binary.MaxVarintLen64 + len(e.ContentType) + len(e.Body) + 3*binary.MaxVarintLen64
	for _, t := range e.Tags {
		n += len(t) + 2*binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = append(b, entryVersion)
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendUvarint(b, uint64(len(e.ContentType)))
	b = append(b, e.ContentType...)
	b = binary.AppendVarint(b, timeToNanos(e.StoredAt))
	b = binary.AppendVarint(b, timeToNanos(e.FreshUntil))
	b = binary.AppendVarint(b, timeToNanos(e.StaleUntil))
	b = binary.AppendUvarint(b, uint64(e.Docs))
	b = binary.AppendUvarint(b, uint64(len(e.Tags)))
	for i, t := range e.Tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
		b = binary.AppendUvarint(b, e.Gens[i])
	}
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	b = append(b, e.Body...)
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary produced. Any other input yields an
// error wrapping ErrCorrupt, never a panic. It does not retain data. Epoch is 0.
func (e *Entry) UnmarshalBinary(data []byte) error { return e.unmarshal(data, false) }

// decodeEntryString decodes an entry from s (an L2 reply) without copying: Body,
// ContentType and Tags alias s's memory. That is safe because strings are immutable
// and so are entries: nobody writes to an Entry's Body.
func decodeEntryString(s string) (*Entry, error) {
	e := new(Entry)
	if err := e.unmarshal(unsafe.Slice(unsafe.StringData(s), len(s)), true); err != nil {
		return nil, err
	}
	return e, nil
}

// unmarshal decodes data; with alias, data is immutable and may be retained by the
// entry (no copies are made).
func (e *Entry) unmarshal(data []byte, alias bool) error {
	str := func(b []byte) string {
		if alias && len(b) > 0 {
			return unsafe.String(&b[0], len(b))
		}
		return string(b)
	}
	d := decoder{b: data}
	if v := d.byte(); v != entryVersion {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("%w: version %d, want %d", ErrCorrupt, v, entryVersion)
	}
	var out Entry
	status := d.uvarint()
	if d.err == nil && (status < minStatus || status > maxStatus) {
		return fmt.Errorf("%w: status %d", ErrCorrupt, status)
	}
	out.Status = int(status)
	out.ContentType = str(d.bytes())
	out.StoredAt = nanosToTime(d.varint())
	out.FreshUntil = nanosToTime(d.varint())
	out.StaleUntil = nanosToTime(d.varint())
	docs := d.uvarint()
	if docs > 1<<31 {
		return fmt.Errorf("%w: docs %d", ErrCorrupt, docs)
	}
	out.Docs = int(docs)
	nTags := d.uvarint()
	// Each tag takes at least two bytes, so a count beyond what is left is garbage.
	if d.err == nil && (nTags > maxTags || nTags > uint64(len(d.b))/2) {
		return fmt.Errorf("%w: %d tags", ErrCorrupt, nTags)
	}
	if d.err == nil && nTags > 0 {
		// One allocation for the gens and the tag hashes.
		nums := make([]uint64, 2*nTags)
		out.Tags = make([]string, nTags)
		out.Gens = nums[:nTags:nTags]
		out.tagHashes = nums[nTags:]
		for i := range out.Tags {
			out.Tags[i] = str(d.bytes())
			out.Gens[i] = d.uvarint()
			out.tagHashes[i] = hashTag(out.Tags[i])
		}
	}
	body := d.bytes()
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if alias {
		out.Body = body[:len(body):len(body)]
	} else {
		out.Body = append([]byte(nil), body...)
	}
	*e = out
	return nil
}

func timeToNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func nanosToTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// decoder reads varints and length-prefixed bytes, remembering the first error so
// that callers check once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("version")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns a length-prefixed slice aliasing the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length")
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}
