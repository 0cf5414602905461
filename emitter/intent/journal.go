// Package intent is the write-ahead half of the transactional outbox: before a write
// whose events matter is forwarded, its intent (what it writes, as whom, what the
// documents were) is fsynced here, so that a crash at any point between the upstream's
// answer and the events being kept loses nothing: on restart every intent still open
// is resolved against the upstream (Resolve) and the writes that landed get their
// events.
//
// A journal is a directory holding an outbox.Outbox of three kinds of record:
//
//	intent  (fsynced before the write is forwarded)
//	landed  the events of a write the upstream confirmed, written before they are
//	        published (not fsynced: it survives the process being killed)
//	done    the events are confirmed or in the event outbox, or the write failed
//
// An intent with a done record is finished. One with a landed record but no done
// record is replayed from its landed events (the same bytes, so the same ids). One with
// neither is resolved against the upstream. Finished intents are compacted away.
//
// Concurrency: Begin, Landed, Done and Open are safe for concurrent use.
package intent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"

	"github.com/harvest-hub/edge/classify"
	"github.com/harvest-hub/edge/emitter/outbox"
)

// Intent is one write the proxy is about to forward.
type Intent struct {
	// ID is assigned by Journal.Begin (the record's sequence number).
	ID uint64
	// At is when the intent was recorded, by the proxy's clock: the write reached the
	// upstream after it.
	At       time.Time
	Op       classify.Op
	Database string
	// AuthHash is the caller's identity hash (the events' authhash).
	AuthHash string
	// Writes are the request's document writes (classify.Request.Writes).
	Writes []classify.DocWrite
	// Old holds the documents as read before the write (events.old_value), nil for
	// one that did not exist; a nil map: unknown.
	Old map[string]*firestorepb.Document
}

// Open is an intent not finished by the process that recorded it.
type Open struct {
	Intent *Intent
	// Landed holds the events (as the emitter encoded them) recorded after the
	// upstream confirmed the write; nil: the outcome is not known to the journal.
	Landed [][]byte
}

const (
	kindIntent = 1
	kindLanded = 2
	kindDone   = 3

	// compactEvery: after this many finished intents the journal drops the records
	// below its oldest open intent.
	compactEvery = 256
	segmentBytes = 4 << 20
)

// Journal is an open intent journal.
type Journal struct {
	box *outbox.Outbox

	mu       sync.Mutex
	open     map[uint64]bool // ids of intents begun and not done
	begins   map[uint64]int  // Begins in progress, by the End() they started at
	finished int             // since the last compaction
}

// OpenJournal opens (creating) the journal in dir and returns the intents a previous
// process left open, oldest first. They stay open until Done.
func OpenJournal(dir string) (*Journal, []Open, error) {
	box, err := outbox.Open(dir, 0, outbox.Options{SegmentBytes: segmentBytes})
	if err != nil {
		return nil, nil, fmt.Errorf("intent journal: %w", err)
	}
	j := &Journal{box: box, open: map[uint64]bool{}, begins: map[uint64]int{}}
	byID := map[uint64]*Open{}
	var order []uint64
	for {
		recs, err := box.Next(1024, 16<<20)
		if err != nil {
			box.Close()
			return nil, nil, fmt.Errorf("intent journal: read: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if len(r.Data) == 0 {
				continue
			}
			switch r.Data[0] {
			case kindIntent:
				in, err := decodeIntent(r.Data[1:])
				if err != nil {
					box.Close()
					return nil, nil, fmt.Errorf("intent journal: record %d: %w", r.Seq, err)
				}
				in.ID = r.Seq
				byID[r.Seq] = &Open{Intent: in}
				order = append(order, r.Seq)
			case kindLanded:
				id, evs, err := decodeLanded(r.Data[1:])
				if err != nil {
					box.Close()
					return nil, nil, fmt.Errorf("intent journal: record %d: %w", r.Seq, err)
				}
				if o := byID[id]; o != nil {
					o.Landed = evs
				}
			case kindDone:
				id, n := binary.Uvarint(r.Data[1:])
				if n <= 0 {
					box.Close()
					return nil, nil, fmt.Errorf("intent journal: record %d: bad done record", r.Seq)
				}
				delete(byID, id)
			}
		}
	}
	var open []Open
	for _, id := range order {
		if o := byID[id]; o != nil {
			open = append(open, *o)
			j.open[id] = true
		}
	}
	j.mu.Lock()
	err = j.compactLocked()
	j.mu.Unlock()
	if err != nil {
		box.Close()
		return nil, nil, err
	}
	return j, open, nil
}

// Begin records in durably (fsynced) and sets in.ID. Its error (a full or failing
// disk) means the write must not be forwarded.
func (j *Journal) Begin(in *Intent) error {
	rec, err := encodeIntent(in)
	if err != nil {
		return err
	}
	// The id is the record's sequence number, known only once added. Until it is in
	// open, the mark (at most the id) keeps compaction from confirming past it.
	j.mu.Lock()
	mark := j.box.End()
	j.begins[mark]++
	j.mu.Unlock()
	id, err := j.box.Add([][]byte{rec}, true)
	j.mu.Lock()
	if j.begins[mark]--; j.begins[mark] == 0 {
		delete(j.begins, mark)
	}
	if err == nil {
		j.open[id] = true
	}
	j.mu.Unlock()
	if err != nil {
		return fmt.Errorf("intent journal: %w", err)
	}
	in.ID = id
	return nil
}

// Size is the bytes Begin would write for in (admission estimates from it).
func Size(in *Intent) int {
	rec, err := encodeIntent(in)
	if err != nil {
		return 0
	}
	return len(rec)
}

// Landed records the events of intent id, whose write the upstream confirmed, before
// they are published. Not fsynced: it survives the process, not the machine.
func (j *Journal) Landed(id uint64, events [][]byte) error {
	rec := binary.AppendUvarint([]byte{kindLanded}, id)
	rec = binary.AppendUvarint(rec, uint64(len(events)))
	for _, e := range events {
		rec = binary.AppendUvarint(rec, uint64(len(e)))
		rec = append(rec, e...)
	}
	if _, err := j.box.Add([][]byte{rec}, false); err != nil {
		return fmt.Errorf("intent journal: %w", err)
	}
	return nil
}

// Done finishes intent id: its events are kept, or it emits none. Not fsynced: if it
// is lost with the machine, the intent is replayed or resolved again, and its events,
// having the same ids, are dropped by consumers as duplicates.
func (j *Journal) Done(id uint64) error {
	rec := binary.AppendUvarint([]byte{kindDone}, id)
	if _, err := j.box.Add([][]byte{rec}, false); err != nil {
		return fmt.Errorf("intent journal: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.open, id)
	j.finished++
	if j.finished >= compactEvery {
		return j.compactLocked()
	}
	return nil
}

// OpenCount is the number of intents begun and not done.
func (j *Journal) OpenCount() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.open)
}

// compactLocked drops every record below the oldest open intent (all of them belong
// to finished intents).
func (j *Journal) compactLocked() error {
	j.finished = 0
	upTo := j.box.End()
	for id := range j.open {
		upTo = min(upTo, id)
	}
	for mark := range j.begins {
		upTo = min(upTo, mark)
	}
	if err := j.box.Confirm(upTo); err != nil {
		return fmt.Errorf("intent journal: compact: %w", err)
	}
	return nil
}

// Close closes the journal; open intents stay for the next OpenJournal.
func (j *Journal) Close() error { return j.box.Close() }

// errBad is a record that does not decode.
var errBad = errors.New("malformed intent record")

func encodeIntent(in *Intent) ([]byte, error) {
	b := []byte{kindIntent}
	b = binary.AppendVarint(b, in.At.UnixNano())
	b = binary.AppendUvarint(b, uint64(in.Op))
	b = appendString(b, in.Database)
	b = appendString(b, in.AuthHash)
	b = binary.AppendUvarint(b, uint64(len(in.Writes)))
	for _, w := range in.Writes {
		wb, err := proto.Marshal(w.Write)
		if err != nil {
			return nil, fmt.Errorf("intent: encode write: %w", err)
		}
		b = appendString(b, w.Name)
		b = binary.AppendUvarint(b, uint64(w.Index))
		b = appendString(b, string(wb))
	}
	if in.Old == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(in.Old)))
	for name, doc := range in.Old {
		b = appendString(b, name)
		if doc == nil {
			b = append(b, 0)
			continue
		}
		db, err := proto.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("intent: encode old document: %w", err)
		}
		b = append(b, 1)
		b = appendString(b, string(db))
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBad
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errBad
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.err = errBad
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errBad
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func decodeIntent(b []byte) (*Intent, error) {
	r := &reader{b: b}
	in := &Intent{At: time.Unix(0, r.varint()).UTC()}
	in.Op = classify.Op(r.uvarint())
	in.Database = string(r.bytes())
	in.AuthHash = string(r.bytes())
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		name := string(r.bytes())
		index := int(r.uvarint())
		w := &firestorepb.Write{}
		if err := proto.Unmarshal(r.bytes(), w); err != nil && r.err == nil {
			r.err = err
		}
		in.Writes = append(in.Writes, classify.DocWrite{Name: name, Index: index, Write: w})
	}
	if r.byte1() == 1 {
		in.Old = map[string]*firestorepb.Document{}
		n := r.uvarint()
		for i := uint64(0); i < n && r.err == nil; i++ {
			name := string(r.bytes())
			if r.byte1() == 0 {
				in.Old[name] = nil
				continue
			}
			d := &firestorepb.Document{}
			if err := proto.Unmarshal(r.bytes(), d); err != nil && r.err == nil {
				r.err = err
			}
			in.Old[name] = d
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", errBad, r.err)
	}
	return in, nil
}

func decodeLanded(b []byte) (uint64, [][]byte, error) {
	r := &reader{b: b}
	id := r.uvarint()
	n := r.uvarint()
	var evs [][]byte
	for i := uint64(0); i < n && r.err == nil; i++ {
		evs = append(evs, append([]byte(nil), r.bytes()...))
	}
	if r.err != nil {
		return 0, nil, r.err
	}
	return id, evs, nil
}
