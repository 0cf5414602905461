package deploytest

import (
	"fmt"
	"net"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestPrometheusScrapesTheAdminListeners: each harvest service's admin port in
// compose.yaml is a scrape target, by service name.
func TestPrometheusScrapesTheAdminListeners(t *testing.T) {
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "deploy/prometheus/prometheus.yml"), &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	targets := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				targets[tg] = true
			}
		}
	}
	c := loadCompose(t)
	var problems []string
	for name, s := range c.Services {
		env, ok := adminAddrEnv[binaryOf(s)]
		if !ok {
			continue
		}
		_, port, err := net.SplitHostPort(s.Environment[env])
		if err != nil {
			problems = append(problems, fmt.Sprintf("service %s: %s: %v", name, env, err))
			continue
		}
		if !targets[name+":"+port] {
			problems = append(problems, fmt.Sprintf("prometheus.yml does not scrape %s:%s (service %s's %s)", name, port, name, env))
		}
	}
	for _, v := range c.Services["prometheus"].Volumes {
		if v == "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" {
			report(t, "prometheus.yml", problems)
			return
		}
	}
	problems = append(problems, "the prometheus service does not mount deploy/prometheus/prometheus.yml")
	report(t, "prometheus.yml", problems)
}
