// Package outbox is a durable, append-only queue of records on local disk: the place
// events wait while the broker cannot confirm them.
//
// It is hand-written on purpose: no maintained Go library offers an fsynced,
// segment-file outbox with a persisted consumer cursor (the embedded databases that
// could host one bring far more than this needs).
//
// Layout: a directory of segment files named by the sequence number of their first
// record (00000000000000000042.seg), plus a "cursor" file. A record on disk is
//
//	uint32 length | uint32 CRC-32C of the payload | payload     (little endian)
//
// Promises:
//   - Append returns only after its records are fsynced. Concurrent appenders share
//     fsyncs (group commit): whoever syncs, syncs everything written so far.
//   - Records are read back in append order, each exactly once per Next call sequence,
//     from the oldest unconfirmed one after Open or Rewind.
//   - Confirm(seq) persists (fsync + rename) that every record below seq was
//     delivered; a restart resumes there. Delivery is at least once: records read but
//     not confirmed before a crash are read again. A record is never lost once
//     Append returned nil.
//   - A segment file is deleted only when every record in it is confirmed.
//   - Open detects a torn or corrupt record at the tail of the last segment (a crash
//     mid-append, which Append never acknowledged) and truncates it.
//   - Full reports when the files on disk reach the size cap. The cap is an admission
//     threshold for the caller, not a hard limit: Append never refuses a record for
//     size, because the write it belongs to has already happened.
//   - One Outbox at a time owns a directory: Open takes an exclusive lock (flock on
//     the LOCK file, which names the holder's pid and host) and refuses with
//     ErrLocked, naming the holder, while another holds it. The kernel releases the
//     lock when the holder exits, however it dies.
//
// Concurrency: Append, Full, Pending and Bytes are safe for concurrent use. Next,
// Rewind and Confirm belong to a single consumer (one goroutine at a time).
package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrFull is the answer to work refused because the outbox reached its size cap.
var ErrFull = errors.New("outbox: full")

// ErrLocked: another Outbox (in this process or another) owns the directory.
var ErrLocked = errors.New("outbox: directory in use")

// ErrClosed is returned by operations on a closed Outbox.
var ErrClosed = errors.New("outbox: closed")

const (
	headerLen      = 8
	segSuffix      = ".seg"
	cursorFile     = "cursor"
	lockFile       = "LOCK"
	maxRecordBytes = 64 << 20 // a length above this is corruption, not a record
	// DefaultSegmentBytes is the size after which appends start a new segment.
	DefaultSegmentBytes = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one stored payload and its sequence number.
type Record struct {
	Seq  uint64
	Data []byte
}

type segment struct {
	first uint64 // sequence of its first record
	count uint64 // records in it
	size  int64  // bytes of whole records
	path  string
}

// Outbox is an open outbox directory.
type Outbox struct {
	dir      string
	lock     *os.File // holds the directory's flock while open
	maxBytes int64
	segMax   int64

	// syncMu serialises fsyncs and segment changes; taken before mu, never after.
	syncMu sync.Mutex
	synced uint64 // every record below this is on disk

	mu       sync.Mutex
	closed   bool
	segs     []*segment // oldest first; the last is where appends go
	active   *os.File   // open for append on segs[len-1], nil until the first Append
	next     uint64     // sequence of the next appended record
	confirmd uint64     // every record below this is confirmed (persisted in cursor)
	bytes    int64      // sum of segment sizes

	// consumer state (single consumer)
	readSeq uint64
	readF   *os.File
	readSeg uint64 // first seq of the segment readF reads
	readOff int64
}

// Options tunes an Outbox; the zero value is the defaults.
type Options struct {
	// SegmentBytes: appends start a new segment once the current one is this big.
	// Default DefaultSegmentBytes.
	SegmentBytes int64
}

// Open opens (creating if needed) the outbox in dir with a size cap of maxBytes
// (<= 0: no cap). It truncates a torn tail record and positions the reader at the
// oldest unconfirmed record.
func Open(dir string, maxBytes int64, opt Options) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("outbox: create %s: %w", dir, err)
	}
	lock, err := LockDir(dir)
	if err != nil {
		return nil, err
	}
	o, err := load(dir, maxBytes, opt)
	if err != nil {
		lock.Close()
		return nil, err
	}
	o.lock = lock
	return o, nil
}

// LockDir takes the exclusive lock on dir (a flock on dir/LOCK, not waiting) and
// writes who holds it (pid, host, time) into the file. While another open file holds
// the lock it returns an error wrapping ErrLocked that names the holder. Closing the
// returned file releases the lock.
func LockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("outbox: lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 512))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "a process that has not written its name yet"
			}
			return nil, fmt.Errorf("%w: %s is locked by %s (%s); one process owns an outbox directory: "+
				"give each replica its own", ErrLocked, dir, who, path)
		}
		return nil, fmt.Errorf("outbox: lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	who := fmt.Sprintf("pid %d on host %s since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(who), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("outbox: write %s: %w", path, err)
	}
	return f, nil
}

// load reads the directory's state; the caller holds its lock.
func load(dir string, maxBytes int64, opt Options) (*Outbox, error) {
	o := &Outbox{dir: dir, maxBytes: maxBytes, segMax: opt.SegmentBytes}
	if o.segMax <= 0 {
		o.segMax = DefaultSegmentBytes
	}
	cur, err := readCursor(filepath.Join(dir, cursorFile))
	if err != nil {
		return nil, err
	}
	o.confirmd = cur

	names, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		return nil, fmt.Errorf("outbox: list %s: %w", dir, err)
	}
	for _, p := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), segSuffix), 10, 64)
		if err != nil {
			continue // not ours
		}
		o.segs = append(o.segs, &segment{first: first, path: p})
	}
	sort.Slice(o.segs, func(i, j int) bool { return o.segs[i].first < o.segs[j].first })
	for i, s := range o.segs {
		last := i == len(o.segs)-1
		if err := scanSegment(s, last); err != nil {
			return nil, err
		}
		if i > 0 {
			prev := o.segs[i-1]
			if prev.first+prev.count != s.first {
				return nil, fmt.Errorf("outbox: %s: gap or overlap after %s", s.path, prev.path)
			}
		}
		o.bytes += s.size
	}
	o.next = o.confirmd
	if n := len(o.segs); n > 0 {
		o.next = max(o.next, o.segs[n-1].first+o.segs[n-1].count)
		if o.segs[0].first > o.confirmd {
			// Older segments were deleted after being confirmed but the cursor file
			// lags (crash between delete and cursor write cannot happen: the cursor is
			// written first), so this is a foreign or damaged directory.
			return nil, fmt.Errorf("outbox: %s: cursor %d is before the oldest segment %d", dir, o.confirmd, o.segs[0].first)
		}
	}
	if o.confirmd > o.next {
		return nil, fmt.Errorf("outbox: %s: cursor %d is past the last record %d", dir, o.confirmd, o.next)
	}
	o.synced = o.next
	o.readSeq = o.confirmd
	o.mu.Lock()
	err = o.dropConfirmedLocked()
	o.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return o, nil
}

// scanSegment counts the whole records of s; in the last segment a torn or corrupt
// tail is truncated, elsewhere it is an error.
func scanSegment(s *segment, last bool) error {
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("outbox: open %s: %w", s.path, err)
	}
	defer f.Close()
	r := &offsetReader{r: f}
	var hdr [headerLen]byte
	var buf []byte
	for {
		start := r.off
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			return truncateTail(f, s, start, last, "torn header")
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		if n > maxRecordBytes {
			return truncateTail(f, s, start, last, "bad length")
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return truncateTail(f, s, start, last, "torn payload")
		}
		if crc32.Checksum(buf, castagnoli) != sum {
			return truncateTail(f, s, start, last, "checksum mismatch")
		}
		s.count++
		s.size = r.off
	}
	return nil
}

func truncateTail(f *os.File, s *segment, at int64, last bool, why string) error {
	if !last {
		return fmt.Errorf("outbox: %s: %s at offset %d in a sealed segment", s.path, why, at)
	}
	// Append never acknowledged this record (it acknowledges after fsync, and a torn
	// write means the fsync did not complete), so cutting it loses nothing promised.
	if err := f.Truncate(at); err != nil {
		return fmt.Errorf("outbox: truncate %s (%s at %d): %w", s.path, why, at, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("outbox: sync %s: %w", s.path, err)
	}
	s.size = at
	return nil
}

type offsetReader struct {
	r   io.Reader
	off int64
}

func (o *offsetReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.off += int64(n)
	return n, err
}

// Append stores records durably, in order, after everything appended before it, and
// returns once they are fsynced.
func (o *Outbox) Append(records [][]byte) error {
	_, err := o.Add(records, true)
	return err
}

// Add is Append that returns the sequence number of the first record, and fsyncs
// only when sync is set. Without sync the records survive the process being killed
// (they are in the kernel's page cache) but not the machine losing power; a later
// synced Add (or Close) makes them durable too.
func (o *Outbox) Add(records [][]byte, sync bool) (first uint64, err error) {
	if len(records) == 0 {
		return 0, nil
	}
	size := 0
	for _, r := range records {
		if len(r) > maxRecordBytes {
			return 0, fmt.Errorf("outbox: record of %d bytes exceeds %d", len(r), maxRecordBytes)
		}
		size += headerLen + len(r)
	}
	buf := make([]byte, 0, size)
	for _, r := range records {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(r)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(r, castagnoli))
		buf = append(buf, r...)
	}

	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return 0, ErrClosed
	}
	if o.active == nil || o.segs[len(o.segs)-1].size >= o.segMax {
		// Starting a segment must not race a group fsync of the old one.
		o.mu.Unlock()
		o.syncMu.Lock()
		o.mu.Lock()
		var err error
		if o.closed {
			err = ErrClosed
		} else if o.active == nil || o.segs[len(o.segs)-1].size >= o.segMax {
			err = o.startSegmentLocked()
		}
		o.syncMu.Unlock()
		if err != nil {
			o.mu.Unlock()
			return 0, err
		}
	}
	seg := o.segs[len(o.segs)-1]
	if _, err := o.active.Write(buf); err != nil {
		// Cut the partial write so later appends do not land behind garbage.
		_ = o.active.Truncate(seg.size)
		o.mu.Unlock()
		return 0, fmt.Errorf("outbox: write %s: %w", seg.path, err)
	}
	seg.size += int64(len(buf))
	seg.count += uint64(len(records))
	o.bytes += int64(len(buf))
	first = o.next
	o.next += uint64(len(records))
	end := o.next
	o.mu.Unlock()
	if !sync {
		return first, nil
	}
	return first, o.syncThrough(end)
}

// syncThrough returns once every record below end is on disk. The first waiter
// fsyncs for everyone who wrote before it started.
func (o *Outbox) syncThrough(end uint64) error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	if o.synced >= end {
		return nil
	}
	o.mu.Lock()
	f, upto, confirmed, closed := o.active, o.next, o.confirmd, o.closed
	o.mu.Unlock()
	if confirmed >= end {
		// Already delivered and confirmed (the consumer may read records before their
		// fsync); their segment may even be gone. Nothing left to make durable.
		return nil
	}
	if f == nil || closed {
		return ErrClosed
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("outbox: fsync: %w", err)
	}
	o.synced = upto
	return nil
}

// startSegmentLocked seals the active segment (fsync) and opens a new one at next.
// Callers hold syncMu and mu.
func (o *Outbox) startSegmentLocked() error {
	if o.active != nil {
		if err := o.active.Sync(); err != nil {
			return fmt.Errorf("outbox: fsync sealed segment: %w", err)
		}
		o.synced = o.next
		if err := o.active.Close(); err != nil {
			return fmt.Errorf("outbox: close sealed segment: %w", err)
		}
		o.active = nil
	}
	// Reuse an empty last segment (left by Open) rather than creating a sibling
	// starting at the same sequence.
	if n := len(o.segs); n > 0 && o.segs[n-1].first+o.segs[n-1].count == o.next && o.segs[n-1].size < o.segMax {
		f, err := os.OpenFile(o.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("outbox: open %s: %w", o.segs[n-1].path, err)
		}
		o.active = f
		return nil
	}
	p := filepath.Join(o.dir, fmt.Sprintf("%020d%s", o.next, segSuffix))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("outbox: create segment: %w", err)
	}
	if err := syncDir(o.dir); err != nil {
		f.Close()
		return err
	}
	o.active = f
	o.segs = append(o.segs, &segment{first: o.next, path: p})
	return nil
}

// Next returns up to max records after the last one it returned (from the oldest
// unconfirmed one after Open or Rewind), up to roughly maxBytes of payload. It returns
// no records when it is caught up. Single consumer.
func (o *Outbox) Next(max int, maxBytes int) ([]Record, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil, ErrClosed
	}
	if o.readSeq >= o.next {
		o.mu.Unlock()
		return nil, nil
	}
	// Find the segment holding readSeq and how many of its records are written.
	var seg segment
	for _, s := range o.segs {
		if o.readSeq >= s.first && o.readSeq < s.first+s.count {
			seg = *s
			break
		}
	}
	o.mu.Unlock()
	if seg.path == "" {
		return nil, fmt.Errorf("outbox: record %d not found in any segment", o.readSeq)
	}

	if o.readF == nil || o.readSeg != seg.first {
		if o.readF != nil {
			o.readF.Close()
			o.readF = nil
		}
		f, err := os.Open(seg.path)
		if err != nil {
			return nil, fmt.Errorf("outbox: open %s: %w", seg.path, err)
		}
		o.readF, o.readSeg, o.readOff = f, seg.first, 0
		// Skip to readSeq (after Open or Rewind it may be mid-segment).
		for s := seg.first; s < o.readSeq; s++ {
			n, err := o.readRecordLen()
			if err != nil {
				return nil, err
			}
			o.readOff += headerLen + int64(n)
		}
	}

	var out []Record
	total := 0
	end := seg.first + seg.count
	for o.readSeq < end && len(out) < max && (len(out) == 0 || total < maxBytes) {
		n, err := o.readRecordLen()
		if err != nil {
			return out, err
		}
		data := make([]byte, n+headerLen)
		if _, err := o.readF.ReadAt(data, o.readOff); err != nil {
			return out, fmt.Errorf("outbox: read %s at %d: %w", seg.path, o.readOff, err)
		}
		payload := data[headerLen:]
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(data[4:8]) {
			return out, fmt.Errorf("outbox: %s: checksum mismatch at %d", seg.path, o.readOff)
		}
		out = append(out, Record{Seq: o.readSeq, Data: payload})
		total += int(n)
		o.readOff += headerLen + int64(n)
		o.readSeq++
	}
	return out, nil
}

func (o *Outbox) readRecordLen() (uint32, error) {
	var hdr [4]byte
	if _, err := o.readF.ReadAt(hdr[:], o.readOff); err != nil {
		return 0, fmt.Errorf("outbox: read header at %d: %w", o.readOff, err)
	}
	return binary.LittleEndian.Uint32(hdr[:]), nil
}

// Rewind makes Next start again at the oldest unconfirmed record: after a failed
// delivery, whatever was read but not confirmed is read again.
func (o *Outbox) Rewind() {
	o.mu.Lock()
	o.readSeq = o.confirmd
	o.mu.Unlock()
	if o.readF != nil {
		o.readF.Close()
		o.readF = nil
	}
}

// Confirm records durably that every record with a sequence below upTo was
// delivered, and deletes segments that hold only such records.
func (o *Outbox) Confirm(upTo uint64) error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	if upTo <= o.confirmd {
		return nil
	}
	if upTo > o.next {
		return fmt.Errorf("outbox: confirm %d beyond last record %d", upTo, o.next)
	}
	// The cursor goes to disk before any segment is deleted, so a crash in between
	// leaves extra confirmed records (skipped on open), never a missing one.
	if err := writeCursor(o.dir, upTo); err != nil {
		return err
	}
	o.confirmd = upTo
	o.synced = max(o.synced, upTo)
	if o.readSeq < upTo {
		o.readSeq = upTo
		if o.readF != nil {
			o.readF.Close()
			o.readF = nil
		}
	}
	return o.dropConfirmedLocked()
}

// dropConfirmedLocked deletes segments whose records are all confirmed. The active
// segment goes too once it is fully confirmed: appends then start a fresh one, so a
// drained outbox takes no disk space. Callers hold mu (and syncMu if active exists).
func (o *Outbox) dropConfirmedLocked() error {
	kept := o.segs[:0]
	for i, s := range o.segs {
		last := i == len(o.segs)-1
		if s.first+s.count <= o.confirmd && !(last && s.count == 0 && o.active != nil) {
			if last && o.active != nil {
				if err := o.active.Close(); err != nil {
					return fmt.Errorf("outbox: close %s: %w", s.path, err)
				}
				o.active = nil
			}
			if o.readF != nil && o.readSeg == s.first {
				o.readF.Close()
				o.readF = nil
			}
			if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("outbox: delete confirmed segment: %w", err)
			}
			o.bytes -= s.size
			continue
		}
		kept = append(kept, s)
	}
	o.segs = kept
	return nil
}

// End is the sequence number the next appended record will get.
func (o *Outbox) End() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.next
}

// Pending is the number of appended records not yet confirmed.
func (o *Outbox) Pending() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.next - o.confirmd
}

// Bytes is the size of the segment files on disk.
func (o *Outbox) Bytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// Full reports whether the segment files reached the size cap.
func (o *Outbox) Full() bool {
	if o.maxBytes <= 0 {
		return false
	}
	return o.Bytes() >= o.maxBytes
}

// Close syncs and closes the files. Records not confirmed stay for the next Open.
func (o *Outbox) Close() error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	defer o.lock.Close() // last: the directory is released once everything is synced
	var err error
	if o.active != nil {
		if e := o.active.Sync(); e != nil {
			err = fmt.Errorf("outbox: fsync on close: %w", e)
		}
		o.active.Close()
		o.active = nil
	}
	if o.readF != nil {
		o.readF.Close()
		o.readF = nil
	}
	return err
}

// CloseWithoutSync releases the directory as a killed process would: nothing more is
// synced. For crash tests.
func (o *Outbox) CloseWithoutSync() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	if o.active != nil {
		o.active.Close()
	}
	if o.readF != nil {
		o.readF.Close()
	}
	o.lock.Close()
}

func readCursor(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("outbox: read cursor: %w", err)
	}
	if len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		// The cursor is replaced by rename, so it is never torn; damage is real.
		return 0, fmt.Errorf("outbox: cursor file %s is corrupt", path)
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// writeCursor replaces the cursor atomically: write a temporary file, fsync, rename,
// fsync the directory.
func writeCursor(dir string, seq uint64) error {
	b := binary.LittleEndian.AppendUint64(nil, seq)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := filepath.Join(dir, cursorFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("outbox: write cursor: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("outbox: write cursor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("outbox: fsync cursor: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("outbox: close cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, cursorFile)); err != nil {
		return fmt.Errorf("outbox: install cursor: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("outbox: open dir for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("outbox: fsync dir %s: %w", dir, err)
	}
	return nil
}
