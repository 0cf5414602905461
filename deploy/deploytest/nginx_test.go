package deploytest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// upstreamBlock matches `upstream NAME { ... server ${PLACEHOLDER} ...` or a literal
// `server HOST:PORT` in nginx/'s templates and configuration.
var (
	upstreamBlock = regexp.MustCompile(`(?s)upstream\s+(\w+)\s*\{([^}]*)\}`)
	upstreamSrv   = regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)`)
	placeholderRe = regexp.MustCompile(`^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$`)
)

// nginxUpstreams reads nginx/: upstream name -> its server (a ${PLACEHOLDER} or HOST:PORT).
func nginxUpstreams(t testing.TB) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "nginx", "templates", "*.template"))
	more, _ := filepath.Glob(filepath.Join(root, "nginx", "*.conf"))
	files = append(files, more...)
	ups := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range upstreamBlock.FindAllStringSubmatch(string(data), -1) {
			if s := upstreamSrv.FindStringSubmatch(m[2]); s != nil {
				ups[m[1]] = s[1]
			}
		}
	}
	return ups
}

// nginxDefaults reads nginx/defaults.env (NAME=value).
func nginxDefaults(t testing.TB) map[string]string {
	t.Helper()
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, "nginx/defaults.env")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			vals[k] = v
		}
	}
	return vals
}

// interpolate expands compose's ${VAR}, ${VAR:-default} with vars (.env.example).
func interpolate(s string, vars map[string]string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		sm := composeVar.FindStringSubmatch(m)
		v := vars[sm[1]]
		if v == "" && strings.HasPrefix(sm[2], ":-") {
			return sm[2][2:]
		}
		return v
	})
}

// nginxUpstreamTargets says, for each upstream of nginx/, which compose service and
// which of its listen settings it must point at.
var nginxUpstreamTargets = map[string]struct{ service, env string }{
	"harvest_proxy":       {"proxy", "HARVEST_LISTEN"},
	"harvest_proxy_grpc":  {"proxy", "HARVEST_LISTEN"}, // gRPC: the same port, HTTP/2
	"harvest_proxy_admin": {"proxy", "HARVEST_ADMIN_LISTEN"},
	"nextjs":              {"nextjs", "PORT"},
}

// nginxPortProblems: in compose, each nginx upstream names the service it is for and the
// port that service listens on (or, for the optional app only, loopback: nothing).
func nginxPortProblems(c *compose, ups map[string]string, defaults, dotenv map[string]string) []string {
	var problems []string
	ng := c.Services["nginx"]
	if ng == nil {
		return []string{"compose.yaml has no nginx service"}
	}
	for k := range ng.Environment {
		if strings.HasPrefix(k, "NGINX_ENVSUBST_") {
			continue // the official image's own settings
		}
		if _, ok := defaults[k]; !ok {
			problems = append(problems, fmt.Sprintf("nginx: %s is not a placeholder of nginx/defaults.env", k))
		}
	}
	if len(ups) == 0 {
		problems = append(problems, "no upstream blocks found in nginx/")
	}
	for name, server := range ups {
		target, known := nginxUpstreamTargets[name]
		if !known {
			problems = append(problems, fmt.Sprintf("nginx upstream %s: this test does not know which service it is for; add it to nginxUpstreamTargets", name))
			continue
		}
		value := server
		if m := placeholderRe.FindStringSubmatch(server); m != nil {
			v, set := ng.Environment[m[1]]
			if !set {
				v = defaults[m[1]]
			}
			value = interpolate(v, dotenv)
		}
		host, port, err := net.SplitHostPort(value)
		if err != nil {
			problems = append(problems, fmt.Sprintf("nginx upstream %s = %q is not HOST:PORT", name, value))
			continue
		}
		svc := c.Services[target.service]
		if svc == nil {
			problems = append(problems, fmt.Sprintf("nginx upstream %s: no compose service %s", name, target.service))
			continue
		}
		want := svc.Environment[target.env]
		if p := listenPort(want); p != "" {
			want = p
		}
		if host == "127.0.0.1" || host == "localhost" {
			if target.service != "nextjs" {
				problems = append(problems, fmt.Sprintf("nginx upstream %s = %s: loopback inside the nginx container, not the %s service", name, value, target.service))
			}
			continue
		}
		if host != target.service {
			problems = append(problems, fmt.Sprintf("nginx upstream %s = %s: want host %s", name, value, target.service))
		}
		if port != want {
			problems = append(problems, fmt.Sprintf("nginx upstream %s = %s: service %s listens on port %s (%s)", name, value, target.service, want, target.env))
		}
	}
	return problems
}

func TestNginxUpstreamsMatchServicePorts(t *testing.T) {
	c := loadCompose(t)
	dotenv, _, _ := envExample(t)
	ups := nginxUpstreams(t)
	report(t, "nginx upstreams in compose", nginxPortProblems(c, ups, nginxDefaults(t), dotenv))
	// The app upstream, set as the app profile needs it, must reach the app.
	withApp := map[string]string{}
	for k, v := range dotenv {
		withApp[k] = v
	}
	withApp["NGINX_APP_UPSTREAM"] = "nextjs:3000"
	report(t, "nginx upstreams with the app profile", nginxPortProblems(c, ups, nginxDefaults(t), withApp))
	// nginx's own health check asks the port nginx listens on.
	hc := strings.Join(c.Services["nginx"].Healthcheck.Test, " ")
	listen := c.Services["nginx"].Environment["NGINX_HTTP_LISTEN"]
	if !strings.Contains(hc, "127.0.0.1:"+listen+"/healthz") {
		t.Errorf("nginx healthcheck %q does not ask /healthz on NGINX_HTTP_LISTEN %s", hc, listen)
	}
	published := false
	for _, p := range c.Services["nginx"].Ports {
		published = published || strings.HasSuffix(p, ":"+listen)
	}
	if !published {
		t.Errorf("nginx listens on %s but compose publishes %v", listen, c.Services["nginx"].Ports)
	}
}
