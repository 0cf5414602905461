package deploytest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// envExample parses .env.example: variable -> value, and which have a comment above.
func envExample(t testing.TB) (vals map[string]string, explained map[string]bool, order []string) {
	t.Helper()
	vals, explained = map[string]string{}, map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, ".env.example")))
	commented := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			commented = false
		case strings.HasPrefix(line, "#"):
			commented = true
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf(".env.example: %q is not NAME=value", line)
			}
			vals[k] = v
			explained[k] = commented
			order = append(order, k)
		}
	}
	return vals, explained, order
}

// composeVar matches ${VAR...} in compose.yaml ($$ is a literal dollar).
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}`)

// TestEnvExampleCoversCompose: every variable compose.yaml interpolates is in
// .env.example with a comment explaining it; none there is unused; credentials are
// empty there (no default passwords anywhere).
func TestEnvExampleCoversCompose(t *testing.T) {
	vals, explained, order := envExample(t)
	used := map[string]bool{}
	for _, m := range composeVar.FindAllStringSubmatch(string(readRepoFile(t, "compose.yaml")), -1) {
		used[m[1]] = true
	}
	var problems []string
	for v := range used {
		if _, ok := vals[v]; !ok {
			problems = append(problems, fmt.Sprintf("compose.yaml uses ${%s}, which .env.example does not list", v))
		}
	}
	composeOwn := map[string]bool{"COMPOSE_PROFILES": true, "COMPOSE_PROJECT_NAME": true}
	for _, v := range order {
		if !used[v] && !composeOwn[v] {
			problems = append(problems, fmt.Sprintf(".env.example lists %s, which compose.yaml does not use", v))
		}
		if !explained[v] {
			problems = append(problems, fmt.Sprintf(".env.example: %s has no comment explaining it", v))
		}
		if secretKey.MatchString(v) && vals[v] != "" {
			problems = append(problems, fmt.Sprintf(".env.example: %s has a value; credentials must be empty there", v))
		}
	}
	report(t, ".env.example", problems)
}

// composeChecker finds a Compose implementation that can run `config` without an engine.
func composeChecker(t testing.TB) []string {
	t.Helper()
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Fatal("no Compose checker: install Debian's docker-compose package " +
		"(apt-get install --no-install-recommends docker-compose) or the Docker Compose v2 plugin " +
		"(docker-compose-plugin), so `docker compose config` or `docker-compose config` can check compose.yaml")
	return nil
}

// runComposeConfig runs `config` on compose.yaml with envFile as its .env, with none of
// the caller's variables (they would override the file).
func runComposeConfig(t *testing.T, envFile string) (string, error) {
	t.Helper()
	checker := composeChecker(t)
	args := append(checker[1:], "--project-directory", root, "-f", filepath.Join(root, "compose.yaml"),
		"--env-file", envFile, "config")
	cmd := exec.Command(checker[0], args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestComposeConfigWithEnvExample runs the real Compose checker: with .env.example as it
// is (empty passwords) compose must refuse, naming a missing password; with the
// passwords filled in it must accept the file and put them where they belong.
func TestComposeConfigWithEnvExample(t *testing.T) {
	example := readRepoFile(t, ".env.example")
	dir := t.TempDir()

	asIs := filepath.Join(dir, "as-is.env")
	if err := os.WriteFile(asIs, example, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runComposeConfig(t, asIs)
	if err == nil {
		t.Errorf("compose config accepted .env.example with empty passwords; it must refuse to start without them:\n%s", out)
	} else if !strings.Contains(out, "PASSWORD") && !strings.Contains(out, "SECRET") {
		t.Errorf("compose config refused .env.example, but not for a missing password:\n%s", out)
	}

	vals, _, order := envExample(t)
	filled := map[string]string{}
	var b strings.Builder
	for _, k := range order {
		v := vals[k]
		if v == "" && secretKey.MatchString(k) {
			v = "test-" + strings.ToLower(strings.ReplaceAll(k, "_", "-"))
			filled[k] = v
		}
		if k == "NEXTJS_APP_DIR" {
			v = t.TempDir() // Debian's docker-compose checks that build contexts exist
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	full := filepath.Join(dir, "filled.env")
	if err := os.WriteFile(full, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runComposeConfig(t, full)
	if err != nil {
		t.Fatalf("compose config rejected compose.yaml with .env.example's passwords filled in: %v\n%s", err, out)
	}
	keys := make([]string, 0, len(filled))
	for k := range filled {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.Contains(out, filled[k]) {
			t.Errorf("compose config output does not contain %s's value: it is set in .env but used nowhere", k)
		}
	}
	if !strings.Contains(out, "amqp://harvest:"+filled["RABBITMQ_PASSWORD"]+"@rabbitmq:5672/") {
		t.Errorf("RABBITMQ_URL was not built from RABBITMQ_USER and RABBITMQ_PASSWORD:\n%s", out)
	}
}
