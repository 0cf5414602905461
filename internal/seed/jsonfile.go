package seed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FileFormat describes the -file format of harvest-seed; ParseJSON implements it.
const FileFormat = `A seed file is one JSON object mapping document paths to plain JSON objects:

  {
    "farmers/f1":               {"name": "Green Acres", "rating": 4.5},
    "products/p1":              {"name": "Apples", "price": 2.5, "stock": 40,
                                 "tags": ["fruit", "local"], "organic": true,
                                 "createdAt": {"__time__": "2026-05-01T08:00:00Z"},
                                 "farmer": {"__ref__": "farmers/f1"}},
    "users/u1/orders/o1":       {"items": [{"productId": "p1", "qty": 3}], "total": 7.5}
  }

Values map to Firestore types naturally:
  "text" -> string      true/false -> boolean     null -> null
  3, -7 (no fraction or exponent) -> integer       2.5, 1e3 -> double
  [ ... ] -> array      { ... } -> map
  {"__time__": "RFC 3339 time"} -> timestamp
  {"__ref__": "collection/document"} -> reference to that document
Each document is overwritten with exactly the given fields.`

// ParseJSON reads a seed file (see FileFormat) into Docs.
func ParseJSON(data []byte) (Docs, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, describeJSONError(data, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: unexpected data after the top-level object", lineOf(data, dec.InputOffset()))
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the file must hold one JSON object mapping document paths to objects, not %s", jsonKind(raw))
	}
	docs := make(Docs, len(top))
	paths := make([]string, 0, len(top))
	for p := range top {
		paths = append(paths, p)
	}
	slices.Sort(paths) // report the first bad document in a stable order
	for _, p := range paths {
		if err := checkDocPath(p); err != nil {
			return nil, err
		}
		obj, ok := top[p].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("document %s: its value must be a JSON object of fields, not %s", p, jsonKind(top[p]))
		}
		fields, err := convertMap(obj, "")
		if err != nil {
			return nil, fmt.Errorf("document %s: %w", p, err)
		}
		docs[p] = fields
	}
	return docs, nil
}

func convertMap(obj map[string]any, at string) (map[string]any, error) {
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		if k == "" {
			return nil, fmt.Errorf("field %q: empty field name", at)
		}
		c, err := convertValue(v, join(at, k))
		if err != nil {
			return nil, err
		}
		out[k] = c
	}
	return out, nil
}

func join(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

func convertValue(v any, at string) (any, error) {
	switch v := v.(type) {
	case nil, bool, string:
		return v, nil
	case json.Number:
		return convertNumber(v, at)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			if _, nested := e.([]any); nested {
				return nil, fmt.Errorf("field %s[%d]: Firestore does not allow an array directly inside an array", at, i)
			}
			c, err := convertValue(e, fmt.Sprintf("%s[%d]", at, i))
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		if s, ok := v["__time__"]; ok {
			return convertTime(v, s, at)
		}
		if s, ok := v["__ref__"]; ok {
			return convertRef(v, s, at)
		}
		return convertMap(v, at)
	}
	return nil, fmt.Errorf("field %s: unsupported JSON value %T", at, v)
}

func convertNumber(n json.Number, at string) (any, error) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("field %s: integer %s does not fit in 64 bits", at, s)
		}
		return i, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, fmt.Errorf("field %s: number %s is not a finite double", at, s)
	}
	return f, nil
}

func convertTime(v map[string]any, s any, at string) (any, error) {
	str, ok := s.(string)
	if !ok || len(v) != 1 {
		return nil, fmt.Errorf(`field %s: a timestamp is written {"__time__": "2026-05-01T08:00:00Z"} with nothing else`, at)
	}
	t, err := time.Parse(time.RFC3339Nano, str)
	if err != nil {
		return nil, fmt.Errorf("field %s: timestamp %q is not RFC 3339 (2026-05-01T08:00:00Z): %w", at, str, err)
	}
	return t, nil
}

func convertRef(v map[string]any, s any, at string) (any, error) {
	str, ok := s.(string)
	if !ok || len(v) != 1 {
		return nil, fmt.Errorf(`field %s: a reference is written {"__ref__": "collection/document"} with nothing else`, at)
	}
	if err := checkDocPath(str); err != nil {
		return nil, fmt.Errorf("field %s: reference: %w", at, err)
	}
	return Ref(str), nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case []any:
		return "an array"
	}
	return "an object"
}

// describeJSONError adds the line and column to a decoding error.
func describeJSONError(data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("line %d: invalid JSON: %w", lineOf(data, syn.Offset), err)
	case errors.As(err, &typ):
		return fmt.Errorf("line %d: %w", lineOf(data, typ.Offset), err)
	case errors.Is(err, io.EOF):
		return errors.New("the file is empty; it must hold one JSON object mapping document paths to objects")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("line %d: the JSON ends too early: %w", lineOf(data, int64(len(data))), err)
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

func lineOf(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}
