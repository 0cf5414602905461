package deploytest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type stage struct {
	base, name string
	lines      []string // instructions, continuation lines joined
}

// dockerStages splits a Dockerfile into its stages.
func dockerStages(src string) []*stage {
	var stages []*stage
	var cur *stage
	joined := strings.ReplaceAll(src, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			cur = &stage{}
			args := slices.DeleteFunc(f[1:], func(s string) bool { return strings.HasPrefix(s, "--") })
			cur.base = args[0]
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				cur.name = args[2]
			}
			stages = append(stages, cur)
			continue
		}
		if cur != nil {
			cur.lines = append(cur.lines, line)
		}
	}
	return stages
}

var envInstr = regexp.MustCompile(`([A-Z_][A-Z0-9_]*)=`)

// TestDockerfile: the targets compose.yaml builds exist, run their binary as a non-root
// user on a small base without a shell, are built static with -trimpath, and set only
// environment variables the binary reads.
func TestDockerfile(t *testing.T) {
	stages := dockerStages(string(readRepoFile(t, "deploy/Dockerfile")))
	var problems []string
	byName := map[string]*stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	build := byName["build"]
	if build == nil {
		t.Fatal("deploy/Dockerfile has no stage named build")
	}
	all := strings.Join(build.lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
		if !strings.Contains(all, want) {
			problems = append(problems, fmt.Sprintf("build stage lacks %s", want))
		}
	}
	if !strings.HasPrefix(build.base, "golang:") {
		problems = append(problems, fmt.Sprintf("build stage is FROM %s, want golang:", build.base))
	}
	for _, target := range []string{"proxy", "worker", "seed"} {
		s := byName[target]
		if s == nil {
			problems = append(problems, fmt.Sprintf("no target %s", target))
			continue
		}
		b := "harvest-" + target
		if !strings.Contains(s.base, "distroless/static") && s.base != "scratch" {
			problems = append(problems, fmt.Sprintf("target %s is FROM %s: want distroless static or scratch", target, s.base))
		}
		var entry, user string
		for _, l := range s.lines {
			f := strings.Fields(l)
			switch strings.ToUpper(f[0]) {
			case "ENTRYPOINT":
				entry = strings.TrimSpace(strings.TrimPrefix(l, f[0]))
			case "USER":
				user = f[1]
			case "ENV":
				for _, m := range envInstr.FindAllStringSubmatch(l, -1) {
					if !acceptedBy(t, b).env[m[1]] {
						problems = append(problems, fmt.Sprintf("target %s sets %s, which %s does not read", target, m[1], b))
					}
				}
			}
		}
		if entry != `["/`+b+`"]` {
			problems = append(problems, fmt.Sprintf("target %s: ENTRYPOINT %s, want [\"/%s\"]", target, entry, b))
		}
		if user == "" || user == "root" || strings.HasPrefix(user, "0") {
			problems = append(problems, fmt.Sprintf("target %s: USER %q, want a non-root user", target, user))
		}
	}
	report(t, "deploy/Dockerfile", problems)
}
