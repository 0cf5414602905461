package deploytest

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// compose is the part of compose.yaml the tests read.
type compose struct {
	Services map[string]*service `yaml:"services"`
	Volumes  map[string]any      `yaml:"volumes"`
}

type service struct {
	Image       string       `yaml:"image"`
	Build       *build       `yaml:"build"`
	Command     stringList   `yaml:"command"`
	Entrypoint  stringList   `yaml:"entrypoint"`
	Environment envMap       `yaml:"environment"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	DependsOn   dependsOn    `yaml:"depends_on"`
	Profiles    []string     `yaml:"profiles"`
	Restart     string       `yaml:"restart"`
	Volumes     []string     `yaml:"volumes"`
	Ports       []string     `yaml:"ports"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

func (b *build) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain build
	return n.Decode((*plain)(b))
}

type healthcheck struct {
	Test    stringList `yaml:"test"`
	Disable bool       `yaml:"disable"`
}

// stringList is a compose string-or-list field (command, entrypoint, healthcheck.test).
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

// envMap is a compose environment: a mapping or a list of NAME=value.
type envMap map[string]string

func (e *envMap) UnmarshalYAML(n *yaml.Node) error {
	*e = envMap{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			(*e)[k] = v
		}
		return nil
	}
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		return err
	}
	for k, v := range m {
		(*e)[k] = v
	}
	return nil
}

// dependsOn maps a dependency to its condition ("" for the short list form, which is
// service_started).
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(n *yaml.Node) error {
	*d = dependsOn{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			(*d)[s] = ""
		}
		return nil
	}
	var m map[string]struct {
		Condition string `yaml:"condition"`
	}
	if err := n.Decode(&m); err != nil {
		return err
	}
	for k, v := range m {
		(*d)[k] = v.Condition
	}
	return nil
}

func loadCompose(t testing.TB) *compose {
	t.Helper()
	var c compose
	if err := yaml.Unmarshal(readRepoFile(t, "compose.yaml"), &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml has no services")
	}
	return &c
}

// oneShot says whether a service runs once and exits (restart: "no"), like seed.
func (s *service) oneShot() bool { return s.Restart == "no" }

// binaryOf names the harvest binary a compose service runs, from its Dockerfile target.
func binaryOf(s *service) string {
	if s.Build == nil || !strings.HasSuffix(s.Build.Dockerfile, "deploy/Dockerfile") {
		return ""
	}
	return "harvest-" + s.Build.Target
}

// ---- the checks, each returning the problems it finds -------------------------------

// composeEnvAndFlagProblems: every environment variable and flag given to a harvest
// binary is one it accepts.
func composeEnvAndFlagProblems(t testing.TB, c *compose) []string {
	var problems []string
	for name, s := range c.Services {
		b := binaryOf(s)
		if b == "" {
			continue
		}
		if !slices.Contains(binaryNames, b) {
			problems = append(problems, fmt.Sprintf("service %s: build target %q is not one of proxy, worker, seed", name, s.Build.Target))
			continue
		}
		a := acceptedBy(t, b)
		for k := range s.Environment {
			if !a.env[k] {
				problems = append(problems, fmt.Sprintf("service %s: %s does not read environment variable %s (see %s -h and rules.yaml)", name, b, k, b))
			}
		}
		problems = append(problems, flagProblems("service "+name+" command", b, s.Command, a)...)
	}
	return problems
}

// composeHealthProblems: every long-running service has a health check; every
// depends_on names a service and waits for it to be healthy (or, for a one-shot
// service, to have completed); an always-on service never depends on a profiled one.
func composeHealthProblems(c *compose) []string {
	var problems []string
	for name, s := range c.Services {
		hasCheck := s.Healthcheck != nil && !s.Healthcheck.Disable && len(s.Healthcheck.Test) > 0 &&
			s.Healthcheck.Test[0] != "NONE"
		if !s.oneShot() && !hasCheck {
			problems = append(problems, fmt.Sprintf("service %s runs continuously but has no healthcheck", name))
		}
		for dep, cond := range s.DependsOn {
			d, ok := c.Services[dep]
			if !ok {
				problems = append(problems, fmt.Sprintf("service %s depends on %s, which is not a service", name, dep))
				continue
			}
			want := "service_healthy"
			if d.oneShot() {
				want = "service_completed_successfully"
			}
			if cond != want {
				problems = append(problems, fmt.Sprintf("service %s: depends_on %s has condition %q, want %s", name, dep, cond, want))
			}
			if want == "service_healthy" && (d.Healthcheck == nil || d.Healthcheck.Disable || len(d.Healthcheck.Test) == 0) {
				problems = append(problems, fmt.Sprintf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep))
			}
			if len(d.Profiles) > 0 && !slices.ContainsFunc(s.Profiles, func(p string) bool { return slices.Contains(d.Profiles, p) }) {
				problems = append(problems, fmt.Sprintf("service %s (profiles %v) depends on %s, which runs only in profiles %v: it could not start without them",
					name, s.Profiles, dep, d.Profiles))
			}
		}
	}
	return problems
}

// listenPort is the port of a HOST:PORT listen address.
func listenPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

// healthcheckURL returns the URL a harvest binary's healthcheck asks, if it is one.
func healthcheckURL(s *service) (binary, raw string, ok bool) {
	if s.Healthcheck == nil || len(s.Healthcheck.Test) < 4 || s.Healthcheck.Test[0] != "CMD" {
		return "", "", false
	}
	exe := strings.TrimPrefix(s.Healthcheck.Test[1], "/")
	if !slices.Contains(binaryNames, exe) || s.Healthcheck.Test[2] != "healthcheck" {
		return "", "", false
	}
	return exe, s.Healthcheck.Test[3], true
}

// adminAddrEnv names the variable that sets each binary's admin listener.
var adminAddrEnv = map[string]string{
	"harvest-proxy":  "HARVEST_ADMIN_LISTEN",
	"harvest-worker": "HARVEST_WORKER_ADMIN_LISTEN",
}

// composeHealthcheckTargetProblems: a harvest binary's health check asks its own admin
// listener (loopback, the port it listens on, which listens on all interfaces so
// Prometheus can scrape it) for a path that listener serves.
func composeHealthcheckTargetProblems(c *compose, served func(binary, path string) int) []string {
	var problems []string
	for name, s := range c.Services {
		b := binaryOf(s)
		envName, isServer := adminAddrEnv[b]
		if !isServer {
			continue
		}
		addr := s.Environment[envName]
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("service %s: %s=%q is not HOST:PORT", name, envName, addr))
			continue
		}
		if host != "0.0.0.0" && host != "" && host != "::" {
			problems = append(problems, fmt.Sprintf("service %s: %s=%s listens on %s only: Prometheus in another container cannot scrape it", name, envName, addr, host))
		}
		hb, raw, ok := healthcheckURL(s)
		if !ok {
			problems = append(problems, fmt.Sprintf("service %s: healthcheck %q is not [CMD, /%s, healthcheck, URL]", name, s.Healthcheck.Test, b))
			continue
		}
		if hb != b {
			problems = append(problems, fmt.Sprintf("service %s runs %s but its healthcheck runs %s, which is not in that image", name, b, hb))
		}
		u, err := url.Parse(raw)
		if err != nil {
			problems = append(problems, fmt.Sprintf("service %s: healthcheck URL %q: %v", name, raw, err))
			continue
		}
		if u.Port() != port {
			problems = append(problems, fmt.Sprintf("service %s: healthcheck asks port %s, but the admin listener is on %s", name, u.Port(), port))
		}
		if served(b, u.Path) == 404 {
			problems = append(problems, fmt.Sprintf("service %s: healthcheck path %s is not served by %s's admin listener", name, u.Path, b))
		}
	}
	return problems
}

// ---- literal secrets -------------------------------------------------------------------

// secretKey matches names that hold credentials.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|_pass$|^pass$|credential|api_?key)`)

// plainRef is a ${VAR} reference with no default: ${VAR}, ${VAR:?msg}, ${VAR?msg}, or
// ${VAR:-} (empty default).
var plainRef = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*|:-|-)?\}$`)

// embeddedKV is a `key: value` line of a YAML file held in a string (a ConfigMap).
var embeddedKV = regexp.MustCompile(`^\s*-?\s*([A-Za-z_][A-Za-z0-9_]*):\s+(\S.*)$`)

// urlPassword finds the password of a URL with user information.
var urlPassword = regexp.MustCompile(`[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@/\s]+)@`)

// secretProblems walks a YAML tree: every value under a credential-like key is a ${VAR}
// reference without a default (or empty), and every URL password is a ${VAR} reference.
func secretProblems(file string, n *yaml.Node) []string {
	var problems []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yaml.MappingNode:
			// Kubernetes env entries: {name: X_PASSWORD, value: literal} is a literal secret.
			var envNameVal, envValue *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				switch k.Value {
				case "name":
					envNameVal = v
				case "value":
					envValue = v
				}
				if v.Kind == yaml.ScalarNode && v.Tag == "!!str" && secretKey.MatchString(k.Value) && v.Value != "" && !plainRef.MatchString(v.Value) {
					problems = append(problems, fmt.Sprintf("%s:%d: %s.%s holds a literal value; use a ${VAR} reference without default", file, v.Line, path, k.Value))
				}
				walk(v, path+"."+k.Value)
			}
			if envNameVal != nil && envValue != nil && secretKey.MatchString(envNameVal.Value) && envValue.Value != "" && !plainRef.MatchString(envValue.Value) {
				problems = append(problems, fmt.Sprintf("%s:%d: env %s has a literal value; use valueFrom.secretKeyRef", file, envValue.Line, envNameVal.Value))
			}
		case yaml.ScalarNode:
			// A file inside a value (a ConfigMap's rules.yaml): its key: value lines.
			for i, line := range strings.Split(n.Value, "\n") {
				m := embeddedKV.FindStringSubmatch(line)
				if m == nil || !secretKey.MatchString(m[1]) {
					continue
				}
				val := strings.Trim(strings.TrimSpace(strings.SplitN(m[2], " #", 2)[0]), `"'`)
				if val != "" && !plainRef.MatchString(val) {
					problems = append(problems, fmt.Sprintf("%s:%d: %s: embedded %s: holds a literal or a default; use ${VAR} without default", file, n.Line+i+1, path, m[1]))
				}
			}
			for _, m := range urlPassword.FindAllStringSubmatch(n.Value, -1) {
				if !plainRef.MatchString(m[1]) {
					problems = append(problems, fmt.Sprintf("%s:%d: %s: a URL with a literal password", file, n.Line, path))
				}
			}
		case yaml.AliasNode:
			// The anchor is walked where it is defined.
		}
	}
	walk(n, "")
	return problems
}

// ---- the tests ---------------------------------------------------------------------------

func TestComposeEnvironmentAndFlagsAreAccepted(t *testing.T) {
	c := loadCompose(t)
	for _, want := range binaryNames {
		found := false
		for _, s := range c.Services {
			found = found || binaryOf(s) == want
		}
		if !found {
			t.Errorf("compose.yaml has no service built from deploy/Dockerfile for %s", want)
		}
	}
	report(t, "compose.yaml environment and flags", composeEnvAndFlagProblems(t, c))
}

func TestComposeHealthchecksAndDependencies(t *testing.T) {
	report(t, "compose.yaml health checks and depends_on", composeHealthProblems(loadCompose(t)))
}

func TestComposeHealthchecksAskServedAdminPaths(t *testing.T) {
	report(t, "compose.yaml harvest health checks", composeHealthcheckTargetProblems(loadCompose(t), adminStatus(t)))
}

func TestComposeHasNoLiteralSecrets(t *testing.T) {
	docs := yamlDocs(t, "compose.yaml")
	var problems []string
	for _, d := range docs {
		problems = append(problems, secretProblems("compose.yaml", d)...)
	}
	report(t, "compose.yaml secrets", problems)
}

// TestComposeSpecifics pins what the issue asks of individual services.
func TestComposeSpecifics(t *testing.T) {
	c := loadCompose(t)
	var problems []string
	need := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for _, name := range []string{"nginx", "proxy", "worker", "redis", "rabbitmq", "nextjs", "firestore-emulator", "seed", "prometheus", "grafana"} {
		need(c.Services[name] != nil, "no service %s", name)
	}
	if t.Failed() || len(problems) > 0 {
		report(t, "compose.yaml", problems)
		return
	}
	redis := strings.Join(c.Services["redis"].Command, " ")
	need(strings.Contains(redis, "--maxmemory 256mb") && strings.Contains(redis, "--maxmemory-policy allkeys-lru"),
		"redis must run with --maxmemory 256mb --maxmemory-policy allkeys-lru, has %q", redis)
	rmq := c.Services["rabbitmq"]
	need(strings.Contains(rmq.Image, "management"), "rabbitmq image %q is not a management image", rmq.Image)
	for _, k := range []string{"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"} {
		need(strings.Contains(rmq.Environment[k], ":?"), "rabbitmq %s=%q must be a required ${VAR:?message} reference", k, rmq.Environment[k])
	}
	profiles := map[string]string{"nextjs": "app", "firestore-emulator": "dev", "seed": "dev", "prometheus": "monitoring", "grafana": "monitoring"}
	for name, p := range profiles {
		need(slices.Contains(c.Services[name].Profiles, p), "service %s must be in profile %s, has %v", name, p, c.Services[name].Profiles)
	}
	for _, name := range []string{"nginx", "proxy", "worker", "redis", "rabbitmq"} {
		need(len(c.Services[name].Profiles) == 0, "service %s must run without a profile", name)
	}
	need(c.Services["nextjs"].Build != nil && strings.Contains(c.Services["nextjs"].Build.Context, "${NEXTJS_APP_DIR"),
		"nextjs must be built from ${NEXTJS_APP_DIR:-../app}")
	need(c.Services["firestore-emulator"].Build != nil && c.Services["firestore-emulator"].Build.Context == "deploy/emulator",
		"firestore-emulator must be built from deploy/emulator")
	need(c.Services["seed"].oneShot(), "seed must be one-shot (restart: \"no\")")
	for _, v := range []string{"rabbitmq-data", "proxy-outbox", "grafana-data"} {
		_, ok := c.Volumes[v]
		need(ok, "no named volume %s", v)
	}
	mounts := func(svc, target string) string {
		for _, v := range c.Services[svc].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == target {
				return parts[0]
			}
		}
		return ""
	}
	need(mounts("rabbitmq", "/var/lib/rabbitmq") == "rabbitmq-data", "rabbitmq data is not on the rabbitmq-data volume")
	need(mounts("proxy", c.Services["proxy"].Environment["HARVEST_OUTBOX_DIR"]) == "proxy-outbox", "the proxy's HARVEST_OUTBOX_DIR is not on the proxy-outbox volume")
	need(mounts("grafana", "/var/lib/grafana") == "grafana-data", "grafana data is not on the grafana-data volume")
	for _, svc := range []string{"proxy", "worker"} {
		cfg := c.Services[svc].Environment["HARVEST_CONFIG"]
		need(cfg != "" && mounts(svc, cfg) == "./rules.yaml", "service %s: HARVEST_CONFIG=%q is not the bind-mounted ./rules.yaml", svc, cfg)
	}
	// Every bind-mounted repository path exists.
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, "./") {
				if _, err := statRepo(src); err != nil {
					problems = append(problems, fmt.Sprintf("service %s mounts %s, which does not exist", name, src))
				}
			}
		}
	}
	report(t, "compose.yaml", problems)
}
