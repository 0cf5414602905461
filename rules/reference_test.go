package rules

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// yamlKeys lists every key of t's yaml tags, recursively, as "section.key".
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, prefix+tag)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != durationType {
			keys = append(keys, yamlKeys(ft, prefix+tag+".")...)
		}
	}
	if t == ruleType {
		keys = append(keys, prefix+"events") // tagged "-": decoded by hand
	}
	return keys
}

// REFERENCE.md must document every key the decoder accepts, in its section.
func TestReferenceDocumentsEveryKey(t *testing.T) {
	doc, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	if len(keys) < 40 {
		t.Fatalf("found only %d keys: %v", len(keys), keys)
	}
	for _, key := range keys {
		parts := strings.Split(key, ".")
		// The top-level section has a heading; a key a table row, or for a list of
		// structs a mention of its full name (`worker.handlers`).
		if !strings.Contains(text, "## `"+parts[0]+"`") {
			t.Errorf("REFERENCE.md has no section for %q", parts[0])
		}
		last := parts[len(parts)-1]
		if len(parts) > 1 && !strings.Contains(text, "| `"+last+"` |") && !strings.Contains(text, "`"+key+"`") {
			t.Errorf("REFERENCE.md has no table row for %s", key)
		}
	}
}
