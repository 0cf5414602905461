package emitter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/harvest-hub/edge/emitter/event"
)

// recordV1 tags the outbox record format: version byte, then ID, Type, RoutingKey,
// Document and Body as uvarint-length-prefixed bytes, with Time as varint Unix nanos.
const recordV1 = 1

func encode(ev event.Event) []byte {
	b := make([]byte, 0, 1+len(ev.ID)+len(ev.Type)+len(ev.RoutingKey)+len(ev.Document)+len(ev.Body)+6*binary.MaxVarintLen64)
	b = append(b, recordV1)
	for _, s := range []string{ev.ID, ev.Type, ev.RoutingKey, ev.Document} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, ev.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(ev.Body)))
	return append(b, ev.Body...)
}

var errBadRecord = errors.New("malformed outbox record")

func decode(b []byte) (event.Event, error) {
	if len(b) == 0 || b[0] != recordV1 {
		return event.Event{}, fmt.Errorf("%w: unknown version", errBadRecord)
	}
	b = b[1:]
	next := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errBadRecord
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, nil
	}
	var f [4][]byte
	for i := range f {
		v, err := next()
		if err != nil {
			return event.Event{}, err
		}
		f[i] = v
	}
	ns, k := binary.Varint(b)
	if k <= 0 {
		return event.Event{}, errBadRecord
	}
	b = b[k:]
	body, err := next()
	if err != nil {
		return event.Event{}, err
	}
	return event.Event{
		ID: string(f[0]), Type: string(f[1]), RoutingKey: string(f[2]), Document: string(f[3]),
		Time: time.Unix(0, ns).UTC(), Body: body,
	}, nil
}
