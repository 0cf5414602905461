package fanout

import (
	"bytes"
	"cmp"
	"math"
	"slices"
	"strings"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
)

// Firestore's ordering of values and query results, for answering queries from a view
// in the order Firestore would. Where the order is not certain (types this code does
// not know, a filter whose implicit ordering it does not model) the functions say so,
// and the lookup answers unknown rather than a wrong order.

// typeRank is each value type's place in Firestore's cross-type order; ok is false for
// values this code cannot order.
func typeRank(v *firestorepb.Value) (int, bool) {
	switch x := v.GetValueType().(type) {
	case *firestorepb.Value_NullValue:
		return 0, true
	case *firestorepb.Value_BooleanValue:
		return 1, true
	case *firestorepb.Value_IntegerValue, *firestorepb.Value_DoubleValue:
		return 2, true
	case *firestorepb.Value_TimestampValue:
		return 3, true
	case *firestorepb.Value_StringValue:
		return 4, true
	case *firestorepb.Value_BytesValue:
		return 5, true
	case *firestorepb.Value_ReferenceValue:
		return 6, true
	case *firestorepb.Value_GeoPointValue:
		return 7, true
	case *firestorepb.Value_ArrayValue:
		return 8, true
	case *firestorepb.Value_MapValue:
		fields := x.MapValue.GetFields()
		if t, ok := fields["__type__"]; ok {
			if t.GetStringValue() == "__vector__" {
				return 9, true
			}
			return 0, false
		}
		for k := range fields {
			if strings.HasPrefix(k, "__") && strings.HasSuffix(k, "__") {
				return 0, false // a special type (max key, BSON values, ...) with its own place
			}
		}
		return 10, true
	}
	return 0, false
}

// compareValues orders a and b as Firestore does: by type, then within the type.
func compareValues(a, b *firestorepb.Value) (int, bool) {
	ra, ok1 := typeRank(a)
	rb, ok2 := typeRank(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	if ra != rb {
		return cmp.Compare(ra, rb), true
	}
	switch ra {
	case 0:
		return 0, true
	case 1:
		return compareBool(a.GetBooleanValue(), b.GetBooleanValue()), true
	case 2:
		return compareNumbers(a, b), true
	case 3:
		ta, tb := a.GetTimestampValue(), b.GetTimestampValue()
		if c := cmp.Compare(ta.GetSeconds(), tb.GetSeconds()); c != 0 {
			return c, true
		}
		return cmp.Compare(ta.GetNanos(), tb.GetNanos()), true
	case 4:
		return strings.Compare(a.GetStringValue(), b.GetStringValue()), true // UTF-8 byte order
	case 5:
		return bytes.Compare(a.GetBytesValue(), b.GetBytesValue()), true
	case 6:
		return compareNames(a.GetReferenceValue(), b.GetReferenceValue()), true
	case 7:
		ga, gb := a.GetGeoPointValue(), b.GetGeoPointValue()
		if c := compareFloats(ga.GetLatitude(), gb.GetLatitude()); c != 0 {
			return c, true
		}
		return compareFloats(ga.GetLongitude(), gb.GetLongitude()), true
	case 8:
		return compareArrays(a.GetArrayValue().GetValues(), b.GetArrayValue().GetValues())
	case 9: // vectors: shorter first, then element by element
		va := a.GetMapValue().GetFields()["value"].GetArrayValue().GetValues()
		vb := b.GetMapValue().GetFields()["value"].GetArrayValue().GetValues()
		if c := cmp.Compare(len(va), len(vb)); c != 0 {
			return c, true
		}
		return compareArrays(va, vb)
	default:
		return compareMaps(a.GetMapValue().GetFields(), b.GetMapValue().GetFields())
	}
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// compareFloats orders NaN before every number, and -0 equal to 0.
func compareFloats(a, b float64) int {
	switch {
	case math.IsNaN(a) && math.IsNaN(b):
		return 0
	case math.IsNaN(a):
		return -1
	case math.IsNaN(b):
		return 1
	}
	return cmp.Compare(a, b)
}

// compareNumbers compares integers and doubles by numeric value, exactly.
func compareNumbers(a, b *firestorepb.Value) int {
	ai, aInt := a.GetValueType().(*firestorepb.Value_IntegerValue)
	bi, bInt := b.GetValueType().(*firestorepb.Value_IntegerValue)
	switch {
	case aInt && bInt:
		return cmp.Compare(ai.IntegerValue, bi.IntegerValue)
	case aInt:
		return -compareDoubleInt(b.GetDoubleValue(), ai.IntegerValue)
	case bInt:
		return compareDoubleInt(a.GetDoubleValue(), bi.IntegerValue)
	}
	return compareFloats(a.GetDoubleValue(), b.GetDoubleValue())
}

// compareDoubleInt compares d with i without losing precision on either.
func compareDoubleInt(d float64, i int64) int {
	switch {
	case math.IsNaN(d):
		return -1
	case d >= 9223372036854775808.0: // 2^63: beyond every int64
		return 1
	case d < -9223372036854775808.0:
		return -1
	}
	whole := math.Trunc(d)
	if c := cmp.Compare(int64(whole), i); c != 0 {
		return c
	}
	return cmp.Compare(d-whole, 0)
}

func compareArrays(a, b []*firestorepb.Value) (int, bool) {
	for i := 0; i < len(a) && i < len(b); i++ {
		if c, ok := compareValues(a[i], b[i]); !ok || c != 0 {
			return c, ok
		}
	}
	return cmp.Compare(len(a), len(b)), true
}

func compareMaps(a, b map[string]*firestorepb.Value) (int, bool) {
	ka, kb := sortedKeys(a), sortedKeys(b)
	for i := 0; i < len(ka) && i < len(kb); i++ {
		if c := strings.Compare(ka[i], kb[i]); c != 0 {
			return c, true
		}
		if c, ok := compareValues(a[ka[i]], b[kb[i]]); !ok || c != 0 {
			return c, ok
		}
	}
	return cmp.Compare(len(ka), len(kb)), true
}

func sortedKeys(m map[string]*firestorepb.Value) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// compareNames orders document names (and references) segment by segment, as
// Firestore orders keys: "a/b" sorts before "a-x/c" although '-' < '/'.
func compareNames(a, b string) int {
	for a != "" && b != "" {
		sa, ra, _ := strings.Cut(a, "/")
		sb, rb, _ := strings.Cut(b, "/")
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
		a, b = ra, rb
	}
	return cmp.Compare(len(a), len(b))
}

// parseFieldPath splits a field path ("a.b", "`x.y`.z", "`a\`b`") into its segments.
func parseFieldPath(p string) ([]string, bool) {
	var segs []string
	var cur strings.Builder
	quoted, started := false, false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case quoted && c == '\\':
			if i+1 == len(p) {
				return nil, false
			}
			i++
			cur.WriteByte(p[i])
		case c == '`':
			if started && !quoted && cur.Len() > 0 {
				return nil, false
			}
			quoted = !quoted
			started = true
		case c == '.' && !quoted:
			if cur.Len() == 0 && !started {
				return nil, false
			}
			segs = append(segs, cur.String())
			cur.Reset()
			started = false
		default:
			cur.WriteByte(c)
			started = true
		}
	}
	if quoted || (cur.Len() == 0 && !started) {
		return nil, false
	}
	return append(segs, cur.String()), true
}

// fieldValue is the value at path in d; ok is false when d lacks it.
func fieldValue(d *firestorepb.Document, path []string) (*firestorepb.Value, bool) {
	fields := d.GetFields()
	for i, seg := range path {
		v, ok := fields[seg]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return v, true
		}
		fields = v.GetMapValue().GetFields()
	}
	return nil, false
}

// order is one ordering of a query's results; name orders by document name.
type order struct {
	path []string
	name bool
	desc bool
}

// queryOrders are the orderings Firestore applies to q: its order_by, then the
// fields of inequality filters it does not order by (sorted by field path), then the
// document name, these implicit ones in the direction of the last explicit one.
func queryOrders(q *firestorepb.StructuredQuery) ([]order, bool) {
	var out []order
	seen := map[string]bool{}
	dir := false
	for _, o := range q.GetOrderBy() {
		fp := o.GetField().GetFieldPath()
		path, ok := parseFieldPath(fp)
		if !ok {
			return nil, false
		}
		key := strings.Join(path, "\x00")
		if seen[key] {
			continue
		}
		seen[key] = true
		dir = o.GetDirection() == firestorepb.StructuredQuery_DESCENDING
		out = append(out, order{path: path, name: fp == "__name__", desc: dir})
	}
	ineq, ok := inequalityFields(q.GetWhere())
	if !ok {
		return nil, false
	}
	slices.SortFunc(ineq, func(a, b []string) int { return slices.Compare(a, b) })
	for _, path := range ineq {
		key := strings.Join(path, "\x00")
		if seen[key] || key == "__name__" {
			continue
		}
		seen[key] = true
		out = append(out, order{path: path, desc: dir})
	}
	if !seen["__name__"] {
		out = append(out, order{name: true, desc: dir})
	}
	return out, true
}

// inequalityFields are the fields f filters with <, <=, >, >=, != or not-in, in any
// composite; ok is false for filters whose implicit ordering this code does not model
// (is-not-null, is-not-NaN).
func inequalityFields(f *firestorepb.StructuredQuery_Filter) ([][]string, bool) {
	if f == nil {
		return nil, true
	}
	switch x := f.GetFilterType().(type) {
	case *firestorepb.StructuredQuery_Filter_CompositeFilter:
		var out [][]string
		for _, sub := range x.CompositeFilter.GetFilters() {
			fs, ok := inequalityFields(sub)
			if !ok {
				return nil, false
			}
			out = append(out, fs...)
		}
		return out, true
	case *firestorepb.StructuredQuery_Filter_FieldFilter:
		switch x.FieldFilter.GetOp() {
		case firestorepb.StructuredQuery_FieldFilter_LESS_THAN, firestorepb.StructuredQuery_FieldFilter_LESS_THAN_OR_EQUAL,
			firestorepb.StructuredQuery_FieldFilter_GREATER_THAN, firestorepb.StructuredQuery_FieldFilter_GREATER_THAN_OR_EQUAL,
			firestorepb.StructuredQuery_FieldFilter_NOT_EQUAL, firestorepb.StructuredQuery_FieldFilter_NOT_IN:
			path, ok := parseFieldPath(x.FieldFilter.GetField().GetFieldPath())
			if !ok {
				return nil, false
			}
			return [][]string{path}, true
		}
		return nil, true
	case *firestorepb.StructuredQuery_Filter_UnaryFilter:
		switch x.UnaryFilter.GetOp() {
		case firestorepb.StructuredQuery_UnaryFilter_IS_NAN, firestorepb.StructuredQuery_UnaryFilter_IS_NULL:
			return nil, true
		}
		return nil, false
	}
	return nil, false
}

// sortDocs orders docs as q's results; ok is false when some document lacks an
// ordered field or holds a value this code cannot order.
func sortDocs(docs []*firestorepb.Document, q *firestorepb.StructuredQuery) bool {
	orders, ok := queryOrders(q)
	if !ok {
		return false
	}
	failed := false
	slices.SortStableFunc(docs, func(a, b *firestorepb.Document) int {
		for _, o := range orders {
			var c int
			if o.name {
				c = compareNames(a.GetName(), b.GetName())
			} else {
				va, okA := fieldValue(a, o.path)
				vb, okB := fieldValue(b, o.path)
				if !okA || !okB {
					failed = true
					return 0
				}
				var ok bool
				if c, ok = compareValues(va, vb); !ok {
					failed = true
					return 0
				}
			}
			if o.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	return !failed
}
