package fanout

import (
	"bytes"
	"encoding/binary"
	"time"
)

// The hub mints its own resume tokens: a client's target is served from a view, not
// from an upstream target of its own, so an upstream token would mean nothing to the
// hub (and resume another stream's target upstream). A token names the view's
// incarnation (a random epoch) and the read time of the snapshot the client had.
//
//	"hh1" | epoch (8 bytes, big endian) | read time (unix nanoseconds, 8 bytes)
var tokenMagic = []byte("hh1")

const tokenLen = 3 + 8 + 8

func mintToken(epoch uint64, readTime time.Time) []byte {
	b := make([]byte, 0, tokenLen)
	b = append(b, tokenMagic...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	return binary.BigEndian.AppendUint64(b, uint64(readTime.UnixNano()))
}

// parseToken reads a token the hub minted; ok is false for anything else (an upstream
// token, another proxy's, garbage).
func parseToken(b []byte) (epoch uint64, readTime time.Time, ok bool) {
	if len(b) != tokenLen || !bytes.HasPrefix(b, tokenMagic) {
		return 0, time.Time{}, false
	}
	epoch = binary.BigEndian.Uint64(b[3:])
	return epoch, time.Unix(0, int64(binary.BigEndian.Uint64(b[11:]))).UTC(), true
}
