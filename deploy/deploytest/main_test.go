package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// The binaries the deployment files run, by name.
var binaryNames = []string{"harvest-proxy", "harvest-worker", "harvest-seed"}

var (
	root   string            // the repository root
	binDir string            // where TestMain built the binaries
	helps  map[string]string // binary name -> its -h output
)

func TestMain(m *testing.M) {
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploytest:", err)
		os.Exit(1)
	}
	if code >= 0 {
		os.Exit(code)
	}
	code = m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

func setup() (int, error) {
	wd, err := os.Getwd()
	if err != nil {
		return 0, err
	}
	root = filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return 0, fmt.Errorf("repository root not found at %s: %w", root, err)
	}
	binDir, err = os.MkdirTemp("", "deploytest-bin-")
	if err != nil {
		return 0, err
	}
	args := []string{"build", "-o", binDir + string(os.PathSeparator)}
	for _, b := range binaryNames {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build of the binaries failed: %v\n%s", err, out)
	}
	helps = map[string]string{}
	for _, b := range binaryNames {
		var out bytes.Buffer
		cmd := exec.Command(bin(b), "-h")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("%s -h: %v\n%s", b, err, out.String())
		}
		helps[b] = out.String()
	}
	return -1, nil
}

func bin(name string) string { return filepath.Join(binDir, name) }

func readRepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return data
}

// report fails t with every problem, one a line, sorted for stable output.
func report(t *testing.T, what string, problems []string) {
	t.Helper()
	if len(problems) == 0 {
		return
	}
	sort.Strings(problems)
	t.Errorf("%s: %d problem(s):\n  %s", what, len(problems), strings.Join(problems, "\n  "))
}

// ---- what the binaries accept ------------------------------------------------------

// flagLine matches a flag in flag.PrintDefaults output: "  -name value" or "  -name".
var flagLine = regexp.MustCompile(`(?m)^\s{2}-([A-Za-z0-9][\w.-]*)`)

// envName matches an environment variable's name in help text: upper case words joined
// by underscores (HARVEST_CONFIG, REDIS_URL, FIRESTORE_EMULATOR_HOST).
var envName = regexp.MustCompile(`\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b`)

// rulesVar matches a ${VAR} or ${VAR:-default} reference in rules.yaml.
var rulesVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)

// goRuntimeEnv are read by every Go program's runtime, whatever its flags.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG", "GOTRACEBACK", "TZ"}

// readsRules says which binaries load rules.yaml (and so expand its ${VAR}s).
var readsRules = map[string]bool{"harvest-proxy": true, "harvest-worker": true}

type accepted struct {
	flags map[string]bool
	env   map[string]bool
}

var (
	acceptOnce sync.Once
	acceptMap  map[string]accepted
)

// acceptedBy returns the flags and environment variables binary b accepts: those its -h
// output names, the ${VAR}s of rules.yaml when it reads that file, and the Go runtime's.
func acceptedBy(t testing.TB, b string) accepted {
	t.Helper()
	acceptOnce.Do(func() {
		rulesEnv := map[string]bool{}
		data, err := os.ReadFile(filepath.Join(root, "rules.yaml"))
		if err == nil {
			for _, m := range rulesVar.FindAllStringSubmatch(string(data), -1) {
				rulesEnv[m[1]] = true
			}
		}
		acceptMap = map[string]accepted{}
		for _, name := range binaryNames {
			a := accepted{flags: map[string]bool{}, env: map[string]bool{}}
			for _, m := range flagLine.FindAllStringSubmatch(helps[name], -1) {
				a.flags[m[1]] = true
			}
			a.flags["h"], a.flags["help"] = true, true
			for _, e := range envName.FindAllString(helps[name], -1) {
				a.env[e] = true
			}
			if readsRules[name] {
				for e := range rulesEnv {
					a.env[e] = true
				}
			}
			for _, e := range goRuntimeEnv {
				a.env[e] = true
			}
			acceptMap[name] = a
		}
	})
	a, ok := acceptMap[b]
	if !ok {
		t.Fatalf("unknown binary %q", b)
	}
	return a
}

// flagProblems checks command-line arguments against the flags binary b accepts.
func flagProblems(where, b string, args []string, a accepted) []string {
	var problems []string
	for _, arg := range args {
		if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
			continue
		}
		name := strings.TrimLeft(arg, "-")
		if i := strings.IndexByte(name, '='); i >= 0 {
			name = name[:i]
		}
		if !a.flags[name] {
			problems = append(problems, fmt.Sprintf("%s: %s has no flag %q (see %s -h)", where, b, arg, b))
		}
	}
	return problems
}

// ---- YAML helpers --------------------------------------------------------------------

// yamlDocs decodes every document of a multi-document YAML file into nodes.
func yamlDocs(t testing.TB, rel string) []*yaml.Node {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, rel)))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: not valid YAML: %v", rel, err)
		}
		if len(n.Content) > 0 && !(n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			docs = append(docs, &n)
		}
	}
	return docs
}

func statRepo(rel string) (os.FileInfo, error) { return os.Stat(filepath.Join(root, rel)) }
