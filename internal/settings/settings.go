// Package settings resolves a binary's settings in the order every Harvest Hub command
// documents: a flag given on the command line, then its environment variable, then
// rules.yaml, then the built-in default.
package settings

import (
	"flag"
	"net/url"
	"os"
)

// Resolver answers which value wins for each flag of one FlagSet, after Parse.
type Resolver struct {
	set    map[string]bool
	lookup func(string) (string, bool)
}

// New records which flags of fs were given explicitly. lookup reads the environment
// (os.LookupEnv when nil).
func New(fs *flag.FlagSet, lookup func(string) (string, bool)) *Resolver {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	r := &Resolver{set: map[string]bool{}, lookup: lookup}
	fs.Visit(func(f *flag.Flag) { r.set[f.Name] = true })
	return r
}

// Pick returns the flag's value when it was given, else the environment variable's when
// set and not empty, else the first non-empty fallback (rules.yaml, then the default).
func (r *Resolver) Pick(name, flagValue, env string, fallbacks ...string) string {
	if r.set[name] {
		return flagValue
	}
	if env != "" {
		if v, ok := r.lookup(env); ok && v != "" {
			return v
		}
	}
	for _, f := range fallbacks {
		if f != "" {
			return f
		}
	}
	return ""
}

// Env returns an environment variable's value ("" when unset).
func (r *Resolver) Env(name string) string {
	v, _ := r.lookup(name)
	return v
}

// RedactURL hides a password in a URL before it is logged.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
