package classify

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// invalidArgument is the Firestore-shaped 400 for a request the proxy cannot accept.
// Its arguments are numbers only (positions, counts): an error never echoes client
// input (ids, names, values), so no attacker-chosen text reaches a client or a log.
func invalidArgument(format string, args ...int) *Error {
	a := make([]any, len(args))
	for i, v := range args {
		a[i] = v
	}
	return &Error{HTTPStatus: 400, Status: "INVALID_ARGUMENT", Message: fmt.Sprintf(format, a...)}
}

// decodeBody parses a JSON body into m with protojson, which accepts enums as names
// or numbers, camelCase or proto field names, int64 as strings or numbers. An empty (or
// all-whitespace) body leaves m empty. Unknown fields are not an error of the request:
// they may be a Firestore feature newer than this proxy, so unknownFields is set (m then
// holds the known fields) and the caller decides; a body that is not valid JSON for m is
// an *Error 400.
func decodeBody(body []byte, m proto.Message) (unknownFields bool, err error) {
	if isBlank(body) {
		return false, nil
	}
	strictErr := protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(body, m)
	if strictErr == nil {
		return false, nil
	}
	if lenientErr := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, m); lenientErr == nil {
		return true, nil
	}
	// protojson's message quotes the offending input: name the expected message instead.
	return false, &Error{HTTPStatus: 400, Status: "INVALID_ARGUMENT",
		Message: "Invalid JSON payload received: the body is not a valid " + string(m.ProtoReflect().Descriptor().FullName())}
}

func isBlank(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}

// canonicalBytes is the cache-key form of a parsed request: deterministic protobuf wire
// bytes, identical for equivalent JSON whatever its field order, whitespace or enum style.
func canonicalBytes(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("canonical body: %w", err)
	}
	return b, nil
}
