package rules

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads, expands (with the process environment), decodes and validates the rules
// file at path. On failure the error is an ErrorList naming path and lines.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ErrorList{{File: path, Msg: fmt.Sprintf("read rules: %v", err)}}
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates data, the contents of the rules file called name (used
// only in messages). env looks up variables for ${VAR} references; nil means none is
// set. Defaults are applied first and the file decoded over them, so a key given
// explicitly wins even when it is zero. A scalar that is empty after expansion keeps
// its default. The error, when not nil, is an ErrorList holding every problem found.
func Parse(name string, data []byte, env func(string) (string, bool)) (cfg *Config, err error) {
	d := &decoder{file: name, env: env}
	var root yaml.Node
	if perr := safeUnmarshal(data, &root); perr != nil {
		return nil, ErrorList{yamlError(name, perr)}
	}
	cfg = Defaults()
	cfg.Source = name
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "top level")
	}
	d.validate(cfg)
	if len(d.errs) > 0 {
		d.errs.sortByLine()
		return nil, d.errs
	}
	cfg.index = buildIndex(cfg.Rules)
	return cfg, nil
}

// safeUnmarshal turns a panic inside the YAML parser into an error: a rules file,
// however broken, must never take the proxy down on reload.
func safeUnmarshal(data []byte, root *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return yaml.Unmarshal(data, root)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlError(file string, err error) *Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Msg: "bad YAML: " + m[2]}
	}
	return &Error{File: file, Msg: "bad YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decoder walks the YAML node tree into the Config structs by their yaml tags,
// collecting every problem rather than stopping at the first.
type decoder struct {
	file string
	env  func(string) (string, bool)
	errs ErrorList
	// keyLines records, per decoded struct, the line of each key, for checks that
	// span fields (a webhook without url) to point at the right line.
	keyLines map[any]map[string]int
}

func (d *decoder) errorf(line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	ruleType     = reflect.TypeFor[Rule]()
	handlerType  = reflect.TypeFor[Handler]()
)

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// decode sets v from n. what names the key, for messages.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, what string) {
	n = resolve(n)
	if n == nil || isNull(n) {
		return // absent or empty: keep the default
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, what)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		d.decodeStructList(n, v, what)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		d.decodeStringList(n, v, what)
	default:
		s, ok := d.scalar(n, what)
		if !ok || s == "" {
			return
		}
		d.setScalar(n.Line, v, s, what)
	}
}

// scalar returns n's value with ${VAR} references expanded.
func (d *decoder) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n.Line, "%s: want a single value, not a %s", what, kindName(n))
		return "", false
	}
	s, err := expand(n.Value, d.env)
	if err != nil {
		d.errorf(n.Line, "%s: %v", what, err)
		return "", false
	}
	return s, true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func (d *decoder) setScalar(line int, v reflect.Value, s, what string) {
	switch {
	case v.Type() == durationType:
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(line, "%s: bad duration %q: want a number with a unit, e.g. 30s, 5m, 1h30m", what, s)
			return
		}
		if dur < 0 {
			d.errorf(line, "%s: negative duration %s", what, s)
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		num, err := parseCount(s, strings.HasSuffix(what, "_bytes"))
		if err != nil {
			d.errorf(line, "%s: %v", what, err)
			return
		}
		if v.OverflowInt(num) {
			d.errorf(line, "%s: %s is too large", what, s)
			return
		}
		v.SetInt(num)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			d.errorf(line, "%s: want true or false, not %q", what, s)
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.String:
		v.SetString(s)
	default:
		d.errorf(line, "%s: unsupported field type %s", what, v.Type()) // a bug in this package
	}
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}}

// parseCount reads a non-negative integer; sizes (keys ending _bytes) also accept
// KiB, MiB, GiB and TiB suffixes: "64MiB".
func parseCount(s string, size bool) (int64, error) {
	mult := int64(1)
	num := s
	if size {
		for _, u := range sizeUnits {
			if strings.HasSuffix(s, u.suffix) {
				num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
				break
			}
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		if size {
			return 0, fmt.Errorf("bad size %q: want a whole number of bytes, optionally with KiB, MiB or GiB", s)
		}
		return 0, fmt.Errorf("bad number %q: want a whole number", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("negative number %s", s)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("%s is too large", s)
	}
	return n * mult, nil
}

// fieldsByKey maps yaml keys to field indexes of struct type t.
func fieldsByKey(t reflect.Type) (map[string]int, []string) {
	byKey := map[string]int{}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		key, _, _ := strings.Cut(tag, ",")
		byKey[key] = i
		keys = append(keys, key)
	}
	if t == ruleType {
		byKey["events"] = -1 // decoded by hand: true, false or a list
		keys = append(keys, "events")
	}
	sort.Strings(keys)
	return byKey, keys
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, "%s: want a mapping of keys, not a %s", what, kindName(n))
		return
	}
	byKey, keys := fieldsByKey(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			d.errorf(kn.Line, "%s: keys must be plain names", what)
			continue
		}
		key := kn.Value
		if first, dup := seen[key]; dup {
			d.errorf(kn.Line, "%s: duplicate key %q (first at line %d)", what, key, first)
			continue
		}
		seen[key] = kn.Line
		idx, ok := byKey[key]
		if !ok {
			d.errorf(kn.Line, "%s: unknown key %q (known: %s)", what, key, strings.Join(keys, ", "))
			continue
		}
		if idx < 0 {
			d.decodeEvents(resolve(vn), v.Addr().Interface().(*Rule), what+".events")
			continue
		}
		child := key
		if what != "top level" {
			child = what + "." + key
		}
		d.decode(vn, v.Field(idx), child)
	}
	if d.keyLines == nil {
		d.keyLines = map[any]map[string]int{}
	}
	if v.CanAddr() {
		d.keyLines[v.Addr().Interface()] = seen
	}
}

func (d *decoder) decodeStructList(n *yaml.Node, v reflect.Value, what string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, "%s: want a list, not a %s", what, kindName(n))
		return
	}
	elemType := v.Type().Elem()
	list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		elem := list.Index(i)
		switch elemType {
		case ruleType:
			elem.Set(reflect.ValueOf(defaultRule()))
		case handlerType:
			elem.Set(reflect.ValueOf(defaultHandler()))
		}
		item = resolve(item)
		if f := elem.FieldByName("Line"); f.IsValid() {
			f.SetInt(int64(item.Line))
		}
		if isNull(item) {
			d.errorf(item.Line, "%s: empty list item", what)
			continue
		}
		d.decode(item, elem, fmt.Sprintf("%s[%d]", what, i))
	}
	v.Set(list)
	// keyLines holds pointers into list's backing array, which v now shares.
}

func (d *decoder) decodeStringList(n *yaml.Node, v reflect.Value, what string) {
	items := n.Content
	if n.Kind == yaml.ScalarNode {
		items = []*yaml.Node{n} // one pattern written without brackets
	} else if n.Kind != yaml.SequenceNode {
		d.errorf(n.Line, "%s: want a list, not a %s", what, kindName(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(items))
	for _, item := range items {
		item = resolve(item)
		s, ok := d.scalar(item, what)
		if !ok {
			continue
		}
		out = reflect.Append(out, reflect.ValueOf(s).Convert(v.Type().Elem()))
	}
	v.Set(out)
}

// decodeEvents reads a rule's events: true (all), false (none), or a list of
// created, updated, deleted, written (written means all four).
func (d *decoder) decodeEvents(n *yaml.Node, r *Rule, what string) {
	if n == nil || isNull(n) {
		return
	}
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	} else if n.Kind == yaml.ScalarNode {
		s, ok := d.scalar(n, what)
		if !ok {
			return
		}
		if b, err := strconv.ParseBool(s); err == nil {
			if b {
				r.Events = AllEvents
			}
			return
		}
	}
	var set EventTypes
	for _, item := range items {
		item = resolve(item)
		s, ok := d.scalar(item, what)
		if !ok {
			continue
		}
		kind, found := EventTypes(0), false
		for _, e := range eventNames {
			if e.name == s {
				kind, found = e.kind, true
			}
		}
		if !found {
			d.errorf(item.Line, "%s: unknown event %q: want true, false, or a list of created, updated, deleted, written", what, s)
			continue
		}
		set |= kind
	}
	if set&Written != 0 {
		set = AllEvents // like onDocumentWritten: every change
	}
	r.Events = set
}
