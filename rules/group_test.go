package rules

import "testing"

func TestCollectionGroupRulesNamesEveryRuleForTheID(t *testing.T) {
	cfg, err := Parse("rules.yaml", []byte(`
rules:
  - match: /public/{p}/comments/{c}
    ttl: 10m
    scope: shared
  - match: /users/{u}/comments/{c}
    ttl: 1m
  - match: /products/{id}
    ttl: 30m
    scope: shared
  - match: /{document=**}
    ttl: 0
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	match := func(rs []*Rule) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Match)
		}
		return out
	}
	cases := []struct {
		parent, id string
		want       []string
	}{
		{"", "comments", []string{"/public/{p}/comments/{c}", "/users/{u}/comments/{c}", "/{document=**}"}},
		{"users/u1", "comments", []string{"/users/{u}/comments/{c}", "/{document=**}"}},
		{"public/x", "comments", []string{"/public/{p}/comments/{c}", "/{document=**}"}},
		{"", "products", []string{"/products/{id}", "/{document=**}"}},
		{"", "orders", []string{"/{document=**}"}},
	}
	for _, c := range cases {
		rs, _ := cfg.CollectionGroupRules(c.parent, c.id)
		got := match(rs)
		if len(got) != len(c.want) {
			t.Errorf("CollectionGroupRules(%q, %q) = %v, want %v", c.parent, c.id, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("CollectionGroupRules(%q, %q) = %v, want %v", c.parent, c.id, got, c.want)
			}
		}
	}
}
