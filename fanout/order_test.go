package fanout

import (
	"math"
	"slices"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/genproto/googleapis/type/latlng"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func vNull() *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_NullValue{NullValue: structpb.NullValue_NULL_VALUE}}
}
func vBool(b bool) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_BooleanValue{BooleanValue: b}}
}
func vInt(i int64) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_IntegerValue{IntegerValue: i}}
}
func vDouble(d float64) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_DoubleValue{DoubleValue: d}}
}
func vTime(s int64, n int32) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_TimestampValue{TimestampValue: &timestamppb.Timestamp{Seconds: s, Nanos: n}}}
}
func vString(s string) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_StringValue{StringValue: s}}
}
func vBytes(b string) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_BytesValue{BytesValue: []byte(b)}}
}
func vRef(p string) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_ReferenceValue{ReferenceValue: "projects/p/databases/(default)/documents/" + p}}
}
func vGeo(lat, lng float64) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_GeoPointValue{GeoPointValue: &latlng.LatLng{Latitude: lat, Longitude: lng}}}
}
func vArray(vs ...*firestorepb.Value) *firestorepb.Value {
	return &firestorepb.Value{ValueType: &firestorepb.Value_ArrayValue{ArrayValue: &firestorepb.ArrayValue{Values: vs}}}
}
func vMap(kv ...any) *firestorepb.Value {
	m := map[string]*firestorepb.Value{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(*firestorepb.Value)
	}
	return &firestorepb.Value{ValueType: &firestorepb.Value_MapValue{MapValue: &firestorepb.MapValue{Fields: m}}}
}
func vVector(xs ...float64) *firestorepb.Value {
	var vs []*firestorepb.Value
	for _, x := range xs {
		vs = append(vs, vDouble(x))
	}
	return vMap("__type__", vString("__vector__"), "value", vArray(vs...))
}

// Firestore's documented order of values, each group strictly before the next and
// equal within a group.
var ordered = [][]*firestorepb.Value{
	{vNull()},
	{vBool(false)}, {vBool(true)},
	{vDouble(math.NaN())},
	{vDouble(math.Inf(-1))}, {vInt(math.MinInt64)}, {vDouble(-1.5)}, {vInt(-1), vDouble(-1)},
	{vInt(0), vDouble(0), vDouble(math.Copysign(0, -1))}, {vDouble(0.5)}, {vInt(1), vDouble(1)},
	{vInt(math.MaxInt64 - 1)}, {vInt(math.MaxInt64)}, {vDouble(9223372036854775808.0)}, {vDouble(math.Inf(1))},
	{vTime(1, 0)}, {vTime(1, 1)}, {vTime(2, 0)},
	{vString("")}, {vString("A")}, {vString("a")}, {vString("ab")}, {vString("é")}, {vString("中")}, {vString("😀")},
	{vBytes("")}, {vBytes("\x00")}, {vBytes("a")},
	{vRef("a/b")}, {vRef("a/b/c/d")}, {vRef("a-x/b")}, {vRef("b/a")},
	{vGeo(-10, 5)}, {vGeo(0, -5)}, {vGeo(0, 5)},
	{vArray()}, {vArray(vNull())}, {vArray(vInt(1))}, {vArray(vInt(1), vInt(2))}, {vArray(vInt(2))},
	{vVector(9, 9)}, {vVector(1, 2, 3)}, {vVector(1, 2, 4)},
	{vMap()}, {vMap("a", vInt(1))}, {vMap("a", vInt(1), "b", vInt(0))}, {vMap("a", vInt(2))}, {vMap("b", vInt(0))},
}

func TestCompareValuesFollowsFirestoresOrder(t *testing.T) {
	for i, gi := range ordered {
		for j, gj := range ordered {
			for _, a := range gi {
				for _, b := range gj {
					c, ok := compareValues(a, b)
					if !ok {
						t.Fatalf("compare %v %v: not ordered", a, b)
					}
					if want := cmpInt(i, j); c != want {
						t.Errorf("compare(%v, %v) = %d, want %d", a, b, c, want)
					}
				}
			}
		}
	}
	if _, ok := compareValues(vMap("__max__", vNull()), vInt(1)); ok {
		t.Error("a special map type was ordered as a map")
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestParseFieldPath(t *testing.T) {
	for in, want := range map[string][]string{
		"a":         {"a"},
		"a.b":       {"a", "b"},
		"`x.y`.z":   {"x.y", "z"},
		"`a\\`b`.c": {"a`b", "c"},
		"__name__":  {"__name__"},
	} {
		got, ok := parseFieldPath(in)
		if !ok || !slices.Equal(got, want) {
			t.Errorf("parseFieldPath(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "a.", ".a", "`a", "a..b"} {
		if got, ok := parseFieldPath(bad); ok {
			t.Errorf("parseFieldPath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestQueryOrdersAddImplicitOrders(t *testing.T) {
	ref := func(p string) *firestorepb.StructuredQuery_FieldReference {
		return &firestorepb.StructuredQuery_FieldReference{FieldPath: p}
	}
	ff := func(p string, op firestorepb.StructuredQuery_FieldFilter_Operator) *firestorepb.StructuredQuery_Filter {
		return &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_FieldFilter{FieldFilter: &firestorepb.StructuredQuery_FieldFilter{
			Field: ref(p), Op: op, Value: vInt(1)}}}
	}
	q := &firestorepb.StructuredQuery{
		Where: &firestorepb.StructuredQuery_Filter{FilterType: &firestorepb.StructuredQuery_Filter_CompositeFilter{CompositeFilter: &firestorepb.StructuredQuery_CompositeFilter{
			Op: firestorepb.StructuredQuery_CompositeFilter_AND,
			Filters: []*firestorepb.StructuredQuery_Filter{
				ff("z", firestorepb.StructuredQuery_FieldFilter_GREATER_THAN), ff("b", firestorepb.StructuredQuery_FieldFilter_NOT_EQUAL),
				ff("e", firestorepb.StructuredQuery_FieldFilter_EQUAL), ff("a", firestorepb.StructuredQuery_FieldFilter_LESS_THAN),
			}}}},
		OrderBy: []*firestorepb.StructuredQuery_Order{{Field: ref("a"), Direction: firestorepb.StructuredQuery_DESCENDING}},
	}
	got, ok := queryOrders(q)
	if !ok {
		t.Fatal("not ordered")
	}
	var s []string
	for _, o := range got {
		name := "__name__"
		if !o.name {
			name = o.path[0]
		}
		if o.desc {
			name += " desc"
		}
		s = append(s, name)
	}
	if want := []string{"a desc", "b desc", "z desc", "__name__ desc"}; !slices.Equal(s, want) {
		t.Errorf("orders %q, want %q", s, want)
	}
}
