package deploytest

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// These tests break a copy of the real files in one way each and require the check
// to notice: a check that cannot fail proves nothing.

func wantProblem(t *testing.T, what string, problems []string, substr string) {
	t.Helper()
	for _, p := range problems {
		if strings.Contains(p, substr) {
			return
		}
	}
	t.Errorf("%s: no problem mentioning %q was reported; got %q", what, substr, problems)
}

func TestChecksCatchBrokenCompose(t *testing.T) {
	c := loadCompose(t)
	c.Services["proxy"].Environment["HARVEST_LISTN"] = "0.0.0.0:8080"
	c.Services["worker"].Command = stringList{"-amqp-url", "amqp://x"}
	p := composeEnvAndFlagProblems(t, c)
	wantProblem(t, "misspelt variable", p, "HARVEST_LISTN")
	wantProblem(t, "unknown flag", p, `"-amqp-url"`)

	c = loadCompose(t)
	c.Services["redis"].Healthcheck = nil
	c.Services["worker"].DependsOn["rabbitmq"] = "service_started"
	c.Services["nginx"].DependsOn["nextjs"] = "service_healthy"
	c.Services["grafana"].DependsOn["nosuch"] = "service_healthy"
	p = composeHealthProblems(c)
	wantProblem(t, "missing healthcheck", p, "service redis runs continuously but has no healthcheck")
	wantProblem(t, "weak depends_on", p, `depends_on rabbitmq has condition "service_started"`)
	wantProblem(t, "profiled dependency", p, "depends on nextjs, which runs only in profiles [app]")
	wantProblem(t, "unknown dependency", p, "depends on nosuch, which is not a service")

	c = loadCompose(t)
	c.Services["proxy"].Healthcheck.Test = stringList{"CMD", "/harvest-proxy", "healthcheck", "http://127.0.0.1:9999/readyz"}
	c.Services["worker"].Healthcheck.Test = stringList{"CMD", "/harvest-worker", "healthcheck", "http://127.0.0.1:9091/readyz"}
	p = composeHealthcheckTargetProblems(c, adminStatus(t))
	wantProblem(t, "wrong health port", p, "asks port 9999")
	wantProblem(t, "unserved health path", p, "path /readyz is not served by harvest-worker")

	c = loadCompose(t)
	c.Services["nginx"].Environment["NGINX_PROXY_UPSTREAM"] = "proxy:8081"
	c.Services["nginx"].Environment["NGINX_PROXY_ADMIN_UPSTREAM"] = "127.0.0.1:9090"
	c.Services["nginx"].Environment["NGINX_PROXY_UPSTRAEM"] = "proxy:8080"
	dotenv, _, _ := envExample(t)
	p = nginxPortProblems(c, nginxUpstreams(t), nginxDefaults(t), dotenv)
	wantProblem(t, "wrong upstream port", p, "proxy:8081: service proxy listens on port 8080")
	wantProblem(t, "loopback upstream", p, "loopback inside the nginx container")
	wantProblem(t, "unknown nginx placeholder", p, "NGINX_PROXY_UPSTRAEM is not a placeholder")
}

func TestChecksCatchLiteralSecrets(t *testing.T) {
	src := `
services:
  rabbitmq:
    environment:
      RABBITMQ_DEFAULT_PASS: guest
      GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:-admin}
      FINE_PASSWORD: ${FINE:?set it}
      RABBITMQ_URL: amqp://harvest:hunter2@rabbitmq:5672/
      GOOD_URL: amqp://${U}:${P}@rabbitmq:5672/
  x:
    enabled_token: false
env:
  - name: WEBHOOK_SECRET
    value: s3cr3t
data:
  rules.yaml: |
    worker:
      handlers:
        - name: a
          secret: ${WEBHOOK_SECRET:-dev}
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	p := secretProblems("x.yaml", &n)
	wantProblem(t, "literal password", p, "RABBITMQ_DEFAULT_PASS holds a literal")
	wantProblem(t, "default password", p, "GF_SECURITY_ADMIN_PASSWORD holds a literal")
	wantProblem(t, "URL password", p, "services.rabbitmq.environment.RABBITMQ_URL: a URL with a literal password")
	wantProblem(t, "k8s env literal", p, "env WEBHOOK_SECRET has a literal value")
	wantProblem(t, "embedded default secret", p, "embedded secret:")
	for _, q := range p {
		for _, ok := range []string{"FINE_PASSWORD", "GOOD_URL", "enabled_token"} {
			if strings.Contains(q, ok) {
				t.Errorf("false alarm: %s", q)
			}
		}
	}
	if len(p) != 5 {
		t.Errorf("want 5 problems, got %d: %q", len(p), p)
	}
}

func TestChecksCatchBadDashboard(t *testing.T) {
	reg := registeredMetrics(t)
	d := dashboard{Panels: []panel{{Title: "x", Type: "timeseries"}}}
	d.Panels[0].Datasource = &struct {
		UID string `json:"uid"`
	}{UID: "other"}
	d.Panels[0].Targets = append(d.Panels[0].Targets, struct {
		Expr string `json:"expr"`
	}{Expr: "rate(harvest_proxy_request_total[5m])"})
	p := dashboardProblems(d, "harvest-prometheus", reg)
	wantProblem(t, "misspelt metric", p, "queries harvest_proxy_request_total, which the Go code does not register")
	wantProblem(t, "wrong datasource", p, "does not use the provisioned datasource")
	wantProblem(t, "missing topic", p, "does not show harvest_worker_deliveries_total")
}

func TestChecksCatchBadSidecar(t *testing.T) {
	objs := k8sObjects(t)["deployment-app.yaml"]
	if len(objs) == 0 {
		t.Fatal("deployment-app.yaml has no Deployment")
	}
	pod := objs[0].Spec.Template.Spec
	proxy := pod.InitContainers[0]
	for i := range proxy.Env {
		switch proxy.Env[i].Name {
		case "HARVEST_LISTEN":
			proxy.Env[i].Value = "0.0.0.0:8080"
		case "HARVEST_OUTBOX_DIR":
			proxy.Env[i].Value = "/data/outbox"
		}
	}
	p := sidecarProblems("app", proxy, pod)
	wantProblem(t, "public sidecar", p, "serves the app on 127.0.0.1 only")
	wantProblem(t, "outbox on the read-only root", p, "is not an emptyDir or PVC mount")

}
