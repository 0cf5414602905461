package settings

import (
	"flag"
	"testing"
)

func TestPickOrder(t *testing.T) {
	env := map[string]string{"FROM_ENV": "env", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	given := fs.String("given", "dflt", "")
	notGiven := fs.String("notgiven", "dflt", "")
	if err := fs.Parse([]string{"-given", "flag"}); err != nil {
		t.Fatal(err)
	}
	r := New(fs, lookup)
	cases := []struct {
		name, got, want string
	}{
		{"flag beats env and file", r.Pick("given", *given, "FROM_ENV", "file", "default"), "flag"},
		{"env beats file", r.Pick("notgiven", *notGiven, "FROM_ENV", "file", "default"), "env"},
		{"empty env falls through to file", r.Pick("notgiven", *notGiven, "EMPTY", "file", "default"), "file"},
		{"unset env, empty file: default", r.Pick("notgiven", *notGiven, "UNSET", "", "default"), "default"},
		{"nothing at all", r.Pick("notgiven", *notGiven, "UNSET"), ""},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestRedactURLHidesPasswords(t *testing.T) {
	got := RedactURL("amqp://user:s3cret@127.0.0.1:5672/")
	if got != "amqp://user:xxxxx@127.0.0.1:5672/" {
		t.Errorf("RedactURL = %q", got)
	}
	if got := RedactURL(""); got != "" {
		t.Errorf("RedactURL(\"\") = %q", got)
	}
}
